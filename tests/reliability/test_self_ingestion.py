"""Self-ingestion (issue 28, item 3): ``harmonize --in X --out X --nifti`` run twice used to ingest its own
NIfTI exports (4 cases from 2, one study in train and test, ``duplicates.csv`` empty). The output's own folders
are never read, and an exported NIfTI carries a marker the duplicate check recognizes."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib

from harmonize_phantoms import synth_case
from petctfm.harmonize.export import EXPORT_MARKER, export_marker
from petctfm.synth.layouts import write_autopet_case
from test_values_and_outputs import run_cli

FAST = ["--spacing", "8", "8", "8", "--no-thumbnails"]


def _cases(out):
    return sorted(p.name for p in (out / "cases").iterdir())


def test_harmonize_into_its_own_input_twice_reads_none_of_its_outputs(tmp_path, capsys):
    x = tmp_path / "X"
    write_autopet_case(synth_case("S0"), x)
    write_autopet_case(synth_case("S1", lesion=False), x)
    for _ in range(2):
        rc, stdout, err = run_cli(["harmonize", "--in", x, "--out", x, "--nifti", *FAST], capsys)
        assert rc == 0, err
        assert "2 cases found" in stdout, stdout
    ids = _cases(x)
    assert len(ids) == 2 and sorted(p.name for p in (x / "nifti").iterdir()) == ids
    rows = list(csv.DictReader(open(x / "manifest.csv", encoding="utf-8")))
    assert sorted(r["case_id"] for r in rows) == ids


def test_exported_nifti_is_recognized_as_its_source_study(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "ds"
    write_autopet_case(synth_case("E0"), src)
    rc, _, err = run_cli(["harmonize", "--in", src, "--out", out, "--nifti", *FAST], capsys)
    assert rc == 0, err
    (cid,) = _cases(out)
    exported = out / "nifti" / cid
    for name in ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"):
        assert export_marker(exported / name) == cid
        assert nib.load(exported / name).header["descrip"].tobytes().decode().startswith(EXPORT_MARKER)
    assert export_marker(src / "E0" / "SUV.nii.gz") is None  # a source study carries no marker
    # the export copied next to its source (another input folder): the same study, not a new one
    other = tmp_path / "copies"
    shutil.copytree(exported, other / "E0_export")
    rc, stdout, err = run_cli(["harmonize", "--in", src, "--in", other, "--out", out, *FAST], capsys)
    assert rc == 0, err
    assert _cases(out) == [cid]
    dup = list(csv.DictReader(open(out / "duplicates.csv", encoding="utf-8")))
    assert len(dup) == 1 and dup[0]["duplicate_of"] == cid and dup[0]["evidence"] == f"a petctfm export of {cid}"
    assert dup[0]["source_path"] == "E0_export"
