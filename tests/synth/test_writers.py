"""synthesize(): real tiny generated cases in all layouts, determinism across workers and seeds, bad input."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from petctfm.core.errors import UsageError
from petctfm.io.images import array_xyz, read_image
from petctfm.core.labels import METADATA_FIELDS
from petctfm.synth.writers import synthesize


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(data.decode().splitlines()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 2 tiny cases written in-process and with 2 workers, and once with another seed.

    DICOM is written once only (it is the slow layout; its own byte-determinism is in tests/io).
    """
    base = tmp_path_factory.mktemp("synth")
    rows = synthesize(base / "w1", n_cases=2, seed=11, size="tiny", workers=1, progress=False)
    synthesize(base / "w2", n_cases=2, seed=11, size="tiny", workers=2, formats=["autopet", "nnunet"],
               progress=False)
    synthesize(base / "other", n_cases=2, seed=12, size="tiny", formats=["autopet"], progress=False)
    return base, rows


def test_all_layouts_written(runs):
    base, rows = runs
    out = base / "w1"
    ids = [r["case_id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 2
    for cid in ids:
        assert {p.name for p in (out / "autopet" / cid).iterdir()} == {
            "CT.nii.gz", "CTres.nii.gz", "SUV.nii.gz", "PET.nii.gz", "SEG.nii.gz", "ORGANS.nii.gz"}
        assert (out / "nnunet" / "imagesTr" / f"{cid}_0000.nii.gz").is_file()
        assert (out / "nnunet" / "imagesTr" / f"{cid}_0001.nii.gz").is_file()
        assert (out / "nnunet" / "labelsTr" / f"{cid}.nii.gz").is_file()
        assert len(list((out / "dicom" / cid / "CT").glob("*.dcm"))) == read_image(
            out / "autopet" / cid / "CT.nii.gz").GetSize()[2]
        assert len(list((out / "dicom" / cid / "PT").glob("*.dcm"))) == read_image(
            out / "autopet" / cid / "PET.nii.gz").GetSize()[2]
        assert (out / "dicom" / cid / "SEG" / "seg.dcm").is_file()
    assert json.loads((out / "nnunet" / "dataset.json").read_text())["numTraining"] == 2
    with open(out / "metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[: len(METADATA_FIELDS)] == METADATA_FIELDS
        table = list(reader)
    assert [r["case_id"] for r in table] == ids
    assert all(r["site"] and r["tracer"] and r["injected_activity_bq"] for r in table)
    assert {r["dicom_seg"] for r in table} <= {"lesion", "empty"}


def test_generated_case_suv_from_dicom_tags_matches_nifti(runs):
    """The issue's key check on a real generated case: SUV by hand from the PT tags == SUV.nii.gz (1 %)."""
    base, rows = runs
    cid = rows[0]["case_id"]
    suv_img = read_image(base / "w1" / "autopet" / cid / "SUV.nii.gz")
    suv = array_xyz(suv_img)
    n = 0
    for path in sorted((base / "w1" / "dicom" / cid / "PT").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        start = datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
        scan = datetime.strptime(ds.SeriesDate + ds.SeriesTime[:6], "%Y%m%d%H%M%S")
        half_lives = (scan - start).total_seconds() / float(rp.RadionuclideHalfLife)
        decayed = float(rp.RadionuclideTotalDose) * 2 ** (-half_lives)
        bqml = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        by_hand = bqml * float(ds.PatientWeight) * 1000.0 / decayed
        k = suv_img.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
        ref = suv[:, :, k].T
        np.testing.assert_allclose(by_hand, ref, rtol=0.01, atol=0.01 * max(float(np.abs(ref).max()), 1e-3))
        n += 1
    assert n == suv.shape[2]


def test_deterministic_across_workers_and_seed_sensitive(runs):
    base, _ = runs
    one, two, other = _tree(base / "w1"), _tree(base / "w2"), _tree(base / "other")
    nifti = [k for k in one if not k.startswith("dicom/") and k != "metadata.csv"]
    assert sorted(nifti) == sorted(k for k in two if k != "metadata.csv") and len(nifti) == 2 * 6 + 2 * 3 + 1
    assert [k for k in nifti if one[k] != two[k]] == []
    without_dicom = [{k: v for k, v in r.items() if k != "dicom_seg"} for r in _csv_rows(one["metadata.csv"])]
    assert without_dicom == _csv_rows(two["metadata.csv"])
    images = [k for k in other if k.endswith(".nii.gz")]
    assert images and all(other[k] != one.get(k) for k in images if "SEG" not in k and "labelsTr" not in k)
    assert other["metadata.csv"] != one["metadata.csv"]
    assert not (base / "other" / "dicom").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"formats": ["autopet", "png"]}, "^formats=png: must be among autopet, nnunet, dicom$"),
        ({"sites": ["atlantis"]}, "^sites=atlantis: must be among "),
        ({"size": "huge"}, "^size='huge': must be one of tiny, small, full$"),
        ({"tracers": ["dotatate"]}, "^tracers=dotatate: must be among fdg, psma$"),
        ({"n_cases": 0}, "^n_cases=0: must be an integer >= 1$"),
        ({"workers": 0}, "^workers=0: must be an integer >= 1$"),
        ({"seed": -1}, "^seed=-1: must be an integer >= 0$"),
    ],
)
def test_bad_arguments_raise_usage_error_before_writing(tmp_path, kwargs, message):
    args = {"n_cases": 1, "seed": 0, "size": "tiny", "progress": False} | kwargs
    with pytest.raises(UsageError, match=message):
        synthesize(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
