"""``petctfm experiment vs-nnunet`` (:mod:`petctfm.experiments.vs_nnunet`): the export reproduces our split as
nnU-Net's fold 0, nnU-Net really plans, preprocesses and trains a few iterations (budget trainer, CPU plan), its
predictor and petctfm's predict the test split, both and the SUV floors are scored, paired per case, reported;
a rerun trains nothing; other settings are refused. The fast tests (export, floor) need no nnunetv2."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import yaml

from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.experiments.vs_nnunet.export import export_splits
from petctfm.experiments.vs_nnunet.floor import threshold_mask
from petctfm.experiments.vs_nnunet.plan import dataset_folder_name, nnunet_dirs
from petctfm.io.atomic import atomic_write_json
from toy_data import write_toy_dataset

IDS = [f"toy{k:03d}" for k in range(7)]
SPLIT = {"train": IDS[:4], "val": IDS[4:5], "test": IDS[5:]}


def _dataset(root):
    root = write_toy_dataset(root, n_cases=7, shape=(32, 32, 40), seed=0)
    atomic_write_json(root / fmt.SPLITS_JSON, {**SPLIT, "fractions": {}, "kshot": {}})
    return root


def test_export_reproduces_our_split(tmp_path):
    data = _dataset(tmp_path / "data")
    out = export_splits(data, tmp_path / "exp")
    raw = nnunet_dirs(tmp_path / "exp")["nnUNet_raw"] / dataset_folder_name()
    assert out["raw"] == raw
    splits = json.loads((out["preprocessed"] / "splits_final.json").read_text())
    assert splits == [{"train": SPLIT["train"], "val": SPLIT["val"]}]
    ds = json.loads((raw / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT", "1": "PET"} and ds["labels"] == {"background": 0, "lesion": 1}
    assert ds["numTraining"] == 5 and ds["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in IDS[:5]]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [f"{c}_000{i}.nii.gz" for c in IDS[5:]
                                                                    for i in (0, 1)]
    case = fmt.load_case(data, "toy000", mmap=False)
    ct, pet = (nib.load(raw / "imagesTr" / f"toy000_000{i}.nii.gz") for i in (0, 1))
    np.testing.assert_allclose(np.asarray(ct.dataobj), case["image"][1])
    np.testing.assert_allclose(np.asarray(pet.dataobj), case["image"][0])
    np.testing.assert_allclose(pet.affine, np.asarray(case["meta"]["affine"]))
    lab = np.asarray(nib.load(raw / "labelsTr" / "toy000.nii.gz").dataobj)
    assert lab.dtype == np.uint8 and np.array_equal(lab, case["label"] > 0)
    mtime = (raw / "dataset.json").stat().st_mtime_ns
    export_splits(data, tmp_path / "exp")  # same splits: nothing rewritten
    assert (raw / "dataset.json").stat().st_mtime_ns == mtime


def test_floor_keeps_components_of_one_ml():
    suv = np.zeros((20, 20, 20), np.float32)
    suv[2:7, 2:7, 2:7] = 5.0  # 125 voxels of 8 ul = 1.0 ml: kept
    suv[12:15, 12:15, 12:15] = 5.0  # 27 voxels = 0.216 ml: dropped
    suv[15:20, 2:7, 2:7] = 3.0  # 1 ml at SUV 3: kept at 2.5, not at 4
    m25 = threshold_mask(suv, (2.0, 2.0, 2.0), 2.5)
    m40 = threshold_mask(suv, (2.0, 2.0, 2.0), 4.0)
    assert m25.dtype == np.uint8 and m25.sum() == 250 and m40.sum() == 125
    assert m25[13, 13, 13] == 0


@pytest.mark.slow
def test_vs_nnunet_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (pip install 'petctfm[nnunet]')")
    from petctfm.cli.main import main
    from petctfm.experiments.vs_nnunet import run as run_mod

    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    data = _dataset(tmp_path / "data")
    exp = tmp_path / "exp"
    argv = ["experiment", "vs-nnunet", "--data", str(data), "--out", str(exp), "--minutes", "0.2", "--plans", "cpu",
            "--preset", "tiny", "--device", "cpu", "--no-progress", "--jobs", "2", "--no-tta"]
    assert main(argv) == 0
    assert not any(k in os.environ for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))

    # nnU-Net planned, preprocessed and trained fold 0 = our split, stopped by the budget
    plans = json.loads((exp / "nnunet" / "plans_summary.json").read_text())
    assert plans["cpu"]["batch_size"] >= 1 and plans["cpu"]["parameters"] > 0 and len(plans["cpu"]["patch_size"]) == 3
    nn = json.loads((exp / "nnunet_cpu_s0" / "done.json").read_text())
    assert nn["nnunet_split"] == {"train": sorted(SPLIT["train"]), "val": sorted(SPLIT["val"])}
    assert nn["train"]["steps"] >= 1 and nn["train"]["epochs"] >= 1 and nn["train"]["stopped"] == "budget"
    assert nn["curve"] and 0.0 <= nn["curve"][-1]["dice"] <= 1.0
    assert sorted(nn["seconds_per_case"]) == SPLIT["test"] and all(s > 0 for s in nn["seconds_per_case"].values())
    pet = json.loads((exp / "petctfm_s0" / "done.json").read_text())
    assert pet["train"]["steps"] >= 1 and pet["curve"]

    # every arm scored on every test case, Dice in [0, 1]
    rows = list(csv.DictReader(open(exp / "results.csv")))
    arms = {r["arm"]: r for r in rows if r["kind"] == "arm" and r["metric"] == "dice" and r["split"] == "test"}
    assert set(arms) == {"petctfm", "nnunet_cpu", "floor_suv2.5", "floor_suv4"}
    for r in arms.values():
        assert 0.0 <= float(r["mean"]) <= 1.0
    assert arms["nnunet_cpu"]["stronger_nnunet"] == "True"
    cases = [r for r in rows if r["kind"] == "case" and r["split"] == "test"]
    for arm in arms:
        assert sorted(r["case_id"] for r in cases if r["arm"] == arm) == SPLIT["test"]
    paired = [r for r in rows if r["kind"] == "paired" and r["arm"] == "petctfm" and r["b"] == "nnunet_cpu"]
    assert {r["metric"] for r in paired} == {"dice", "fp_volume_ml", "fn_volume_ml", "lesion_f1"}
    assert all(int(r["n"]) == len(SPLIT["test"]) for r in paired if r["metric"] == "fp_volume_ml")
    md = (exp / "results.md").read_text()
    assert "compared with nnU-Net's `cpu` plan" in md and "synthetic" in md
    for cid in SPLIT["test"]:
        assert f"| {cid} |" in md
    assert (exp / "vs_nnunet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the recipe planned petctfm's run, its steps calibrated to the budget
    cal = json.loads((exp / "petctfm_s0" / "calibration.json").read_text())
    assert cal["steps"] >= 1 and cal["seconds_per_step"] > 0
    saved = yaml.safe_load((exp / "petctfm_s0" / "run" / "config.yaml").read_text())
    assert saved["task"]["plan"]["target"] == "cpu" and saved["task"]["model"]["backbone"] == "nnunet-plain"
    assert saved["train"]["max_steps"] == cal["steps"] and saved["train"]["lr_schedule"] == "poly"

    # a confirmation cohort: every finished run predicts its cases with lesions, scored and paired
    from petctfm.experiments.vs_nnunet.confirm import run_confirm

    data2 = _dataset(tmp_path / "data2")
    conf = run_confirm(exp, data2, cases="lesions", progress=False)
    res = json.loads((conf["out"] / "results.json").read_text())
    assert res["n_cases"] == len(SPLIT["train"] + SPLIT["val"] + SPLIT["test"]) and res["cases"] == "lesions"
    assert set(res["arms"]) == {"petctfm_s0", "nnunet_cpu_s0", "floor_suv2.5", "floor_suv4"}
    for a in res["arms"].values():
        assert 0.0 <= a["dice"]["mean"] <= 1.0 and a["seconds_per_case_median"] >= 0
    assert res["paired"]["petctfm_s0 - nnunet_cpu_s0"]["dice"]["n"] == res["n_cases"]
    assert "| petctfm_s0 - nnunet_cpu_s0 | dice |" in (conf["out"] / "results.md").read_text()

    # a rerun trains nothing; other settings are refused
    def fail(*a, **k):
        raise AssertionError("a finished arm was run again")

    monkeypatch.setattr(run_mod, "execute_arm", fail)
    monkeypatch.setattr(run_mod, "run_child", fail)
    assert main(argv) == 0
    with pytest.raises(InputError, match="other settings"):
        run_mod.run_vs_nnunet(data, exp, minutes=0.5, plans=["cpu"], preset="tiny", device="cpu", progress=False)
