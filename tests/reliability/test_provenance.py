"""Reports say what the data is (issue 28, item 7): harmonize records whether each source was written by
``petctfm synth`` (NIfTI header note, DICOM SoftwareVersions) and ``dataset.json["provenance"]`` sums it up;
the label-efficiency and interactive reports take "synthetic" from there instead of hard-coding it."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np

from harmonize_phantoms import synth_case
from petctfm.experiments.interactive.report import markdown as interactive_markdown
from petctfm.experiments.label_efficiency.plan import Settings
from petctfm.experiments.label_efficiency.report import results_markdown
from petctfm.synth.dicom import write_dicom_case
from petctfm.synth.layouts import write_autopet_case
from test_values_and_outputs import run_cli

FAST = ["--spacing", "8", "8", "8", "--no-thumbnails"]


def _strip_marks(folder):
    """The same study saved by another program: the images without petctfm synth's header note."""
    for f in folder.glob("*.nii.gz"):
        img = nib.load(f)
        img = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
        img.header["descrip"] = b""
        nib.save(img, f)


def _harmonize(inputs, out, capsys):
    argv = ["harmonize", "--out", out, *FAST]
    for i in inputs:
        argv += ["--in", i]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 0, err
    return json.loads((out / "dataset.json").read_text())


def _le_intro(data) -> str:
    s = Settings(data=str(data), pretrained="w.safetensors", preset="tiny", backbone="b", mode="petct",
                 model_overrides={}, probe_kshot=None)
    return results_markdown([], {"groups": [], "comparisons": []}, [], s, "cmd", [])


def _ia_intro(info_json) -> str:
    info = {"model": "m", "data": "d", "split": "test", "n_cases": 1, "max_clicks": 1, "iso_box_mm": 60,
            "held_out": [], "auto": None, "seconds": 1.0, "provenance": info_json.get("provenance")}
    return interactive_markdown([], info)


def test_reports_take_synthetic_from_the_datasets_provenance(tmp_path, capsys):
    synth_in, real_in = tmp_path / "synth", tmp_path / "real"
    write_autopet_case(synth_case("Y0"), synth_in / "autopet")
    write_dicom_case(synth_case("Y1"), synth_in / "dicom", seed=1)
    write_autopet_case(synth_case("R0"), real_in)
    _strip_marks(real_in / "R0")

    syn = _harmonize([synth_in / "autopet", synth_in / "dicom"], tmp_path / "ds_synth", capsys)
    assert syn["provenance"] == {"data": "synthetic", "synthetic_cases": 2, "cases": 2}
    metas = [json.loads(p.read_text()) for p in (tmp_path / "ds_synth" / "cases").glob("*/meta.json")]
    assert sorted(m["source_format"] for m in metas) == ["autopet", "dicom"] and all(m["synthetic"] for m in metas)
    real = _harmonize([real_in], tmp_path / "ds_real", capsys)
    assert real["provenance"] == {"data": "real", "synthetic_cases": 0, "cases": 1}
    mixed = _harmonize([synth_in / "autopet", synth_in / "dicom", real_in], tmp_path / "ds_mixed", capsys)
    assert mixed["provenance"] == {"data": "mixed", "synthetic_cases": 2, "cases": 3}

    # label efficiency: the warning follows the data
    assert "**Synthetic data.**" in _le_intro(tmp_path / "ds_synth")
    md = _le_intro(tmp_path / "ds_real")
    assert "synthetic data" not in md.lower() and "not written by `petctfm synth`" in md
    assert "2 of 3 cases come from `petctfm synth`" in _le_intro(tmp_path / "ds_mixed")
    # interactive: the heading follows the data
    assert _ia_intro(syn).startswith("# Interactive segmentation (synthetic data;")
    assert _ia_intro(real).startswith("# Interactive segmentation (real data;")
    # a dataset harmonized before provenance was recorded: said so, not guessed
    old = tmp_path / "ds_old"
    shutil.copytree(tmp_path / "ds_real", old)
    info = json.loads((old / "dataset.json").read_text())
    del info["provenance"]
    (old / "dataset.json").write_text(json.dumps(info))
    assert "**Provenance unknown.**" in _le_intro(old)
    assert _ia_intro(info).startswith("# Interactive segmentation (data of unknown provenance;")
