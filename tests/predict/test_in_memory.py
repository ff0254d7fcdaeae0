"""``Predictor.predict``: the in-memory API gives exactly what ``petctfm predict`` writes, and writes nothing."""

from __future__ import annotations

import csv
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.predict.predictor import Predictor, predict_one
from petctfm.predict.sources import source_from_files

VOLATILE = {"timings_s", "outputs", "input"}  # wall times, files written, and how the input was given


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_run(tiny_model, device="cpu", overlap=0.25)


@pytest.fixture(scope="module")
def written(synth_tiny, predictor, tmp_path_factory):
    """The case folder the CLI path writes for one synthetic study."""
    case = synth_tiny / "autopet" / "PETCT_0000"
    out = tmp_path_factory.mktemp("cli") / "PETCT_0000"
    summary = predict_one(source_from_files(case / "SUV.nii.gz", case / "CT.nii.gz"), predictor, out, report=False)
    return case, out, summary


def _inputs(case, how):
    pet, ct = case / "SUV.nii.gz", case / "CT.nii.gz"
    if how == "nibabel":
        return nib.load(pet), nib.load(ct)
    if how == "arrays":
        return tuple((np.asanyarray(nib.load(p).dataobj), nib.load(p).affine) for p in (pet, ct))
    return sitk.ReadImage(str(pet)), sitk.ReadImage(str(ct))


@pytest.mark.parametrize("how", ["nibabel", "arrays", "sitk"])
def test_in_memory_prediction_equals_the_written_files(written, predictor, how, tmp_path, monkeypatch):
    case, out, cli_summary = written
    monkeypatch.chdir(tmp_path)
    mask, table, summary = predictor.predict(*_inputs(case, how), case_id="PETCT_0000")
    assert os.listdir(tmp_path) == []  # nothing written
    # the mask: uint8, the input PET's grid, the voxels of lesions.nii.gz
    on_disk = np.asanyarray(nib.load(out / "lesions.nii.gz").dataobj)
    assert mask.dtype == np.uint8 and mask.shape == nib.load(case / "SUV.nii.gz").shape
    np.testing.assert_array_equal(mask, on_disk)
    # the lesion table: the rows of lesions.csv (which rounds floats to 4 decimals)
    with open(out / "lesions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(table) == len(rows) == summary["lesion_count"]
    for mine, theirs in zip(table, rows):
        assert set(mine) == set(theirs)
        for k, v in mine.items():
            assert str(round(v, 4) if isinstance(v, float) else v) == theirs[k], k
    # the summary: summary.json but for timings, written files and the input's description
    assert {k: v for k, v in summary.items() if k not in VOLATILE} == \
        {k: v for k, v in cli_summary.items() if k not in VOLATILE}
    assert summary["outputs"] == [] and summary["input"]["kind"] == "memory"
    assert {k: v for k, v in summary["input"].items() if k not in ("kind", "source")} == \
        {k: v for k, v in cli_summary["input"].items() if k not in ("kind", "source", "fingerprint")}
    assert set(summary["timings_s"]) == {"preprocess", "inference", "postprocess", "total"}
