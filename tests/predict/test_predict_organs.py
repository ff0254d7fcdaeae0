"""``petctfm predict --organs``: organs.nii.gz on the PET grid, organs.csv equal to the readout of the written
files (lesion voxels excluded), reference rows, report, DICOM-SEG organ segments with SNOMED CT codes, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.evaluate.organs import ORGAN_COLUMNS, organ_readout
from petctfm.io.images import array_xyz
from petctfm.predict.organs import ras_affine
from petctfm.predict.predictor import Predictor


@pytest.fixture(scope="module")
def organ_model(tmp_path_factory):
    """A tiny organ model (task organs, all ORGAN_LABELS), 3 steps on toy organ maps at the 8 mm spacing."""
    from quick_train import train_and_save
    from toy_data import write_toy_dataset

    from petctfm.core.config import deep_merge
    from petctfm.data import format as fmt
    from petctfm.io.atomic import atomic_write_json
    from petctfm.methods.segmentation.presets import get_preset
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG, FinetuneTask

    root = write_toy_dataset(tmp_path_factory.mktemp("orgdata"), n_cases=2, shape=(24, 24, 24), organs=True)
    info = json.loads((root / fmt.DATASET_JSON).read_text())
    info.update(spacing=[8.0, 8.0, 8.0], ct_window=[-1000.0, 1000.0])
    atomic_write_json(root / fmt.DATASET_JSON, info)
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(patch_size=[16, 16, 16], augment=False, batch_size=2)
    cfg["task"] = {"name": "organs", "classes": {k: v for k, v in ORGAN_LABELS.items() if v}}
    cfg["subset"] = {"name": "train", "cases": ["toy000", "toy001"]}
    return train_and_save(FinetuneTask(cfg, root), tmp_path_factory.mktemp("org_run"), 3)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_lesions_and_organs_written_and_table_matches_the_files(synth_tiny, tiny_model, organ_model, tmp_path):
    case = synth_tiny / "autopet" / "PETCT_0000"
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model), "--organs", str(organ_model), "--pet", str(case / "SUV.nii.gz"),
               "--ct", str(case / "CT.nii.gz"), "--out", str(out), "--overlap", "0.25", "--device", "cpu"])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert names >= {"lesions.nii.gz", "lesions.csv", "organs.nii.gz", "organs.csv", "summary.json", "report.png"}
    pet = sitk.ReadImage(str(case / "SUV.nii.gz"))
    org = sitk.ReadImage(str(out / "organs.nii.gz"))
    assert org.GetSize() == pet.GetSize()
    np.testing.assert_allclose(org.GetOrigin(), pet.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(org.GetDirection(), pet.GetDirection(), atol=1e-6)
    rows = _rows(out / "organs.csv")
    assert list(rows[0]) == ORGAN_COLUMNS
    assert [r["organ"] for r in rows[-2:]] == ["liver_reference", "blood_pool_reference"]
    # organs.csv is the readout of the written files: organ map, lesion mask (excluded) and the input PET
    organs = array_xyz(org)
    lesions = array_xyz(sitk.ReadImage(str(out / "lesions.nii.gz")))
    want = organ_readout(array_xyz(pet).astype(np.float32), organs, lesions, None, affine=ras_affine(pet),
                         labels={k: v for k, v in ORGAN_LABELS.items() if v})
    assert [r["organ"] for r in rows] == [r["organ"] for r in want]
    for mine, ref in zip(rows, want):
        for k in ("volume_ml", "excluded_lesion_ml", "suv_mean", "suv_max"):
            v = ref[k]
            assert mine[k] == ("" if v != v else str(round(v, 4))), (mine["organ"], k)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["organs"]["found"] == [r["organ"] for r in rows if r["kind"] == "organ"]
    assert summary["organs_model"]["path"].endswith("model.safetensors")
    assert set(summary["outputs"]) >= {"organs.nii.gz", "organs.csv"}


def test_lesion_voxels_are_excluded_through_predict_all(synth_tiny, tiny_model, organ_model):
    import nibabel as nib

    case = synth_tiny / "autopet" / "PETCT_0000"
    pred = Predictor.load(tiny_model, "cpu", overlap=0.25, organs=organ_model)
    out = pred.predict_all(nib.load(case / "SUV.nii.gz"), nib.load(case / "CT.nii.gz"), case_id="c",
                           patient={"weight_kg": 70, "height_cm": 170, "sex": "F"})
    assert out["organs"].shape == out["mask"].shape == nib.load(case / "SUV.nii.gz").shape
    # a lesion mask covering every voxel of one organ leaves that organ without SUV values
    organs, mask = out["organs"], out["mask"]
    rows = {r["organ"]: r for r in out["organ_table"]}
    some = next(r for r in out["organ_table"] if r["kind"] == "organ")
    full = organs == some["label"]
    pet = sitk.ReadImage(str(case / "SUV.nii.gz"))
    again = {r["organ"]: r for r in organ_readout(array_xyz(pet), organs, mask | full, None, affine=ras_affine(pet))}
    assert np.isnan(again[some["organ"]]["suv_mean"]) and again[some["organ"]]["note"] == "all voxels are lesion"
    assert np.isfinite(rows[some["organ"]]["sul_mean"]) or np.isnan(rows[some["organ"]]["suv_mean"])


def test_organ_model_alone_writes_organs_only(synth_tiny, organ_model, tmp_path, capsys):
    case = synth_tiny / "autopet" / "PETCT_0001"
    out = tmp_path / "o"
    rc = main(["predict", "--organs", str(organ_model), "--pet", str(case / "SUV.nii.gz"), "--ct",
               str(case / "CT.nii.gz"), "--out", str(out), "--device", "cpu", "--no-report"])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert "organs.nii.gz" in names and "organs.csv" in names and not any(n.startswith("lesions") for n in names)
    assert "organ(s)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["task"] == "organs"


def test_dicom_seg_organ_segments_carry_snomed_codes(synth_tiny, tmp_path):
    import highdicom as hd

    from petctfm.harmonize.resample import resample_xyz
    from petctfm.io.dicom_read import read_volume
    from petctfm.predict.organs import write_organ_seg

    study = synth_tiny / "dicom" / "PETCT_0000"
    pt_files = sorted(str(p.relative_to(study)) for p in (study / "PT").iterdir())
    suv, pt = read_volume(study, pt_files)
    truth = sitk.ReadImage(str(synth_tiny / "autopet" / "PETCT_0000" / "ORGANS.nii.gz"))
    organs = resample_xyz(truth, suv, False, 0, dtype=np.uint8)
    classes = {k: v for k, v in ORGAN_LABELS.items() if v}
    path = write_organ_seg(organs, classes, pt, tmp_path / "organs.seg.dcm", "petctfm test")
    seg = hd.seg.segread(path)
    by_label = {s.SegmentLabel: s for s in seg.SegmentSequence}
    liver = by_label["Liver"]
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # anatomical structure
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT liver
    assert by_label["Kidney left"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"  # kidney
    present = {v for v in np.unique(organs).tolist() if v}
    assert len(seg.SegmentSequence) == len(present)
    # the liver segment decodes to the liver voxels of the map
    arr = seg.get_volume(combine_segments=False).array if hasattr(seg, "get_volume") else None
    if arr is not None:
        assert arr[..., liver.SegmentNumber - 1].sum() == int((organs == ORGAN_LABELS["liver"]).sum())


def test_organ_errors_are_one_line(synth_tiny, tiny_model, tmp_path, capsys):
    case = synth_tiny / "autopet" / "PETCT_0000"
    io = ["--pet", str(case / "SUV.nii.gz"), "--ct", str(case / "CT.nii.gz"), "--device", "cpu"]
    for args, code, needle in (
        (["--model", str(tiny_model), "--organs", str(tmp_path / "nope")], 3, "organ model not found"),
        (["--model", str(tiny_model), "--organs", str(tiny_model)], 3, "not an organ model"),
        (["--organs", str(tiny_model)], 3, "not an organ model"),
        ([], 2, "--organs"),
    ):
        rc = main(["predict", *args, *io, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == code and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_rerun_with_an_organ_model_is_not_skipped(synth_tiny, tiny_model, organ_model, tmp_path, capsys):
    case = synth_tiny / "autopet" / "PETCT_0001"
    io = ["--pet", str(case / "SUV.nii.gz"), "--ct", str(case / "CT.nii.gz"), "--device", "cpu", "--no-report",
          "--out", str(tmp_path / "o")]
    assert main(["predict", "--model", str(tiny_model), *io]) == 0
    assert not (tmp_path / "o" / "organs.csv").exists()
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model), "--organs", str(organ_model), *io]) == 0
    assert "another organ model" in capsys.readouterr().out
    assert (tmp_path / "o" / "organs.csv").is_file()
    assert main(["predict", "--model", str(tiny_model), "--organs", str(organ_model), *io]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_suppression_by_the_organ_model(synth_tiny, tiny_model, organ_model):
    """--suppress-organs with --organs: the organ model's map decides (round nine), on the PET grid: the mask is
    the plain mask without its components mostly inside the named organs of the written organ map."""
    import nibabel as nib

    from petctfm.inference.postprocess import suppress_in_organ_map

    case = synth_tiny / "autopet" / "PETCT_0000"
    names = [k for k, v in ORGAN_LABELS.items() if v]
    pet, ct = nib.load(case / "SUV.nii.gz"), nib.load(case / "CT.nii.gz")
    thr = 0.05  # a tiny model: a low threshold gives the rule components to judge
    plain = Predictor.load(tiny_model, "cpu", overlap=0.25, organs=organ_model, threshold=thr).predict_all(pet, ct)
    pred = Predictor.load(tiny_model, "cpu", overlap=0.25, organs=organ_model, threshold=thr, suppress_organs=names)
    assert pred.suppress["source"] == "organ_model" and pred.suppress["labels"] == [ORGAN_LABELS[n] for n in names]
    assert pred.describe()["inference"]["suppress_source"] == "organ_model"
    out = pred.predict_all(pet, ct)
    assert plain["mask"].any() and (plain["organs"] > 0).any()
    np.testing.assert_array_equal(out["organs"], plain["organs"])
    want = suppress_in_organ_map(plain["mask"], plain["organs"], pred.suppress)
    np.testing.assert_array_equal(out["mask"], want)
    assert out["mask"].sum() < plain["mask"].sum()  # the rule removed something here
    with pytest.raises(InputError, match="organ model does not predict"):
        Predictor.load(tiny_model, "cpu", organs=organ_model, suppress_organs=["pancreas"])
