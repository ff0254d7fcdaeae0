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
from matplotlib.image import imread

from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.experiments.vs_nnunet.export import export_splits, lesion_only
from petctfm.experiments.vs_nnunet.floor import threshold_mask
from petctfm.experiments.vs_nnunet.plan import dataset_folder_name, nnunet_dirs
from petctfm.io.atomic import atomic_write_json
from toy_data import write_toy_dataset

IDS = [f"toy{k:03d}" for k in range(7)]
SPLIT = {"train": IDS[:4], "val": IDS[4:5], "test": IDS[5:]}


def _dataset(root, organs=False):
    root = write_toy_dataset(root, n_cases=7, shape=(32, 32, 40), seed=0, organs=organs)
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


def test_export_with_organ_classes(tmp_path):
    """The organ map goes to nnU-Net as classes 2.. in the table's order (petctfm's auxiliary-class order), the
    lesion stays 1 on top; a case without organs.npy is a one-line error naming it."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.methods.segmentation.api import organ_task

    data = _dataset(tmp_path / "data", organs=True)
    table = organ_task(data, None)["classes"]
    out = export_splits(data, tmp_path / "exp", organs=table)
    assert out["organs"] == table
    ds = json.loads((out["raw"] / "dataset.json").read_text())
    names = list(table)
    assert ds["labels"] == {"background": 0, "lesion": 1, **{n: i + 2 for i, n in enumerate(names)}}
    case = fmt.load_case(data, "toy001", mmap=False)
    lab = np.asarray(nib.load(out["raw"] / "labelsTr" / "toy001.nii.gz").dataobj)
    lesion = case["label"] > 0
    assert np.all(lab[lesion] == 1)
    for organ in ("liver", "spleen", "bone"):
        where = (case["organs"] == ORGAN_LABELS[organ]) & ~lesion
        assert where.any() and np.all(lab[where] == names.index(organ) + 2)
    assert np.all(lab[(case["organs"] == 0) & ~lesion] == 0)
    (fmt.case_dir(data, "toy002") / "organs.npy").unlink()
    with pytest.raises(InputError, match=r"toy002/organs.npy: missing"):
        export_splits(data, tmp_path / "exp2", organs=table)


def test_lesion_only_keeps_class_one(tmp_path):
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[0, 0, :3] = 1
    arr[1, 1, :] = 3  # an organ class
    arr[2, 2, 2] = 2
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    lesion_only(path)
    img = nib.load(str(path))
    out = np.asarray(img.dataobj)
    assert out.dtype == np.uint8 and out.sum() == 3 and np.array_equal(out, (arr == 1).astype(np.uint8))
    np.testing.assert_allclose(img.affine, aff)


def test_resolve_organs_matches_the_recipe(tmp_path):
    """auto: the organ table exactly when petctfm's recipe trains organs and every train/val case has a map;
    on: required; off: never."""
    from petctfm.experiments.vs_nnunet.run import resolve_organs
    from petctfm.methods.segmentation.api import organ_task

    data = _dataset(tmp_path / "data", organs=True)
    table = organ_task(data, None)["classes"]
    assert resolve_organs(data, "auto", "cpu") == table == resolve_organs(data, "on", None)
    assert resolve_organs(data, "auto", None) is None and resolve_organs(data, "off", "cpu") is None
    plain = _dataset(tmp_path / "plain")
    assert resolve_organs(plain, "auto", "cpu") is None
    with pytest.raises(InputError, match=r"organs.npy: missing \(5 of 5 train and val cases"):
        resolve_organs(plain, "on", "cpu")
    (fmt.case_dir(data, SPLIT["val"][0]) / "organs.npy").unlink()
    assert resolve_organs(data, "auto", "cpu") is None  # the val case lacks a map: lesion only in both arms
    with pytest.raises(InputError, match="1 of 5 train and val cases"):
        resolve_organs(data, "on", "cpu")
    with pytest.raises(InputError, match="--organs must be"):
        resolve_organs(data, "yes", "cpu")


def _finished_run(path, cases, aux=None, stopped="max_steps", name="lesions"):
    path.mkdir(parents=True)
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / "latest").write_text("step_0000010\n")
    atomic_write_json(path / "summary.json", {"steps": 10, "stopped": stopped, "time_s": 12.0})
    task = {"task": {"name": name, **({"aux_classes": aux} if aux else {})}, "subset": {"cases": list(cases)}}
    (path / "config.yaml").write_text(yaml.safe_dump({"task": task}))
    return path


def test_adopt_petctfm_runs_checks_then_copies(tmp_path):
    """--petctfm-runs: finished lesion runs on exactly the train split with nnU-Net's targets are copied into
    E/petctfm_s<seed>/run (the source untouched, one in place kept); anything else is refused before any copy."""
    from petctfm.experiments.vs_nnunet.plan import Settings
    from petctfm.experiments.vs_nnunet.run import adopt_petctfm_runs

    data = _dataset(tmp_path / "data")
    organs = {"liver": 1, "spleen": 2}
    for seed in (0, 1):
        _finished_run(tmp_path / f"runs/r_s{seed}", SPLIT["train"], aux=organs)

    def settings(template, with_organs=True):
        return Settings(data=str(data), minutes=1, device="cpu", preset="tiny", backbone="nnunet-plain",
                        organs=organs if with_organs else None, petctfm_runs=str(template))

    exp = tmp_path / "E"
    placed = adopt_petctfm_runs(settings(tmp_path / "runs/r_s{seed}"), exp, [0, 1])
    assert placed == [exp / "petctfm_s0" / "run", exp / "petctfm_s1" / "run"]
    assert json.loads((placed[1] / "summary.json").read_text())["steps"] == 10
    assert (placed[0] / "checkpoints" / "latest").read_text() == "step_0000010\n"
    (placed[0] / "marker").write_text("kept")
    adopt_petctfm_runs(settings(tmp_path / "runs/r_s{seed}"), exp, [0])  # already in place: kept as it is
    assert (placed[0] / "marker").is_file() and not (tmp_path / "runs/r_s0/marker").exists()

    with pytest.raises(InputError, match="auxiliary organ classes.*--organs on"):
        adopt_petctfm_runs(settings(tmp_path / "runs/r_s{seed}", with_organs=False), tmp_path / "E2", [0])
    with pytest.raises(InputError, match="not a finished petctfm fine-tuning run"):
        adopt_petctfm_runs(settings(tmp_path / "runs/r_s{seed}"), tmp_path / "E3", [0, 2])
    assert not (tmp_path / "E3").exists()  # refused before anything was copied
    _finished_run(tmp_path / "runs/half", SPLIT["train"][:3], aux=organs)
    with pytest.raises(InputError, match="trained on 3 cases, not the 4"):
        adopt_petctfm_runs(settings(tmp_path / "runs/half"), tmp_path / "E4", [0])
    _finished_run(tmp_path / "runs/killed", SPLIT["train"], aux=organs, stopped=None)
    with pytest.raises(InputError, match="not a finished"):
        adopt_petctfm_runs(settings(tmp_path / "runs/killed"), tmp_path / "E5", [0])
    _finished_run(tmp_path / "runs/organ_model", SPLIT["train"], name="organs")
    with pytest.raises(InputError, match="'organs' run"):
        adopt_petctfm_runs(settings(tmp_path / "runs/organ_model"), tmp_path / "E6", [0])


def test_confirm_averages_each_arms_seeds_per_case_then_pairs(tmp_path):
    """The confirmation's per-arm reading: each case averaged over the arm's seeds (an undefined Dice left out),
    the mean over cases, petctfm paired by case against every other arm; the figure is written."""
    from petctfm.experiments.vs_nnunet.confirm import _figure, arm_summary

    def rec(kind, dice):
        return {"kind": kind, "cases": [{"case_id": c, "dice": d, "fp_volume_ml": 1.0, "fn_volume_ml": 0.0,
                                          "lesion_f1": 1.0} for c, d in zip(("a", "b", "c"), dice)]}

    per_arm = {"petctfm_s0": rec("petctfm", [0.8, 0.6, 0.5]), "petctfm_s1": rec("petctfm", [0.6, 0.4, float("nan")]),
               "nnunet_cpu_s0": rec("nnunet", [0.5, 0.5, 0.2]), "nnunet_cpu_s1": rec("nnunet", [0.3, 0.1, 0.4]),
               "floor_suv4": rec("floor", [0.0, 0.1, 0.2])}
    spec = {"runs": [{"name": "nnunet_cpu_s0", "plan": "cpu"}, {"name": "nnunet_cpu_s1", "plan": "cpu"},
                     {"name": "petctfm_s0"}, {"name": "petctfm_s1"}, {"name": "floor_suv4"}]}
    out = arm_summary(per_arm, spec)
    assert out["per_case"]["petctfm"]["a"]["dice"] == pytest.approx(0.7)
    assert out["per_case"]["petctfm"]["c"]["dice"] == pytest.approx(0.5)  # the NaN seed left out
    assert out["per_case"]["nnunet_cpu"]["b"]["dice"] == pytest.approx(0.3)
    assert out["by_arm"]["petctfm"]["dice"]["mean"] == pytest.approx((0.7 + 0.5 + 0.5) / 3)
    assert out["by_arm"]["nnunet_cpu"]["runs"] == ["nnunet_cpu_s0", "nnunet_cpu_s1"]
    assert out["by_arm"]["nnunet_cpu"]["per_run_dice"]["nnunet_cpu_s1"] == pytest.approx(0.8 / 3)
    d = out["paired_by_arm"]["petctfm - nnunet_cpu"]["dice"]
    assert d["n"] == 3 and d["mean_diff"] == pytest.approx(((0.7 - 0.4) + (0.5 - 0.3) + (0.5 - 0.3)) / 3)
    assert set(out["paired_by_arm"]) == {"petctfm - nnunet_cpu", "petctfm - floor_suv4"}
    _figure({**out, "data": "/x/cohort", "n_cases": 3, "cases": "lesions"}, tmp_path / "confirm.png")
    assert imread(tmp_path / "confirm.png").shape[0] > 100


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
    data = _dataset(tmp_path / "data", organs=True)  # both arms learn the organ classes too (--organs auto)
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

    # the same targets in both arms: the organ classes (auto: the recipe trains them), scored on the lesion alone
    from petctfm.methods.segmentation.api import organ_task

    table = organ_task(data, None)["classes"]
    assert saved["task"]["task"]["aux_classes"] == table
    ds = json.loads((exp / "nnunet" / "raw" / dataset_folder_name() / "dataset.json").read_text())
    assert len(ds["labels"]) == len(table) + 2 and ds["labels"]["lesion"] == 1
    for cid in SPLIT["test"]:
        pred = np.asarray(nib.load(exp / "nnunet_cpu_s0" / "pred_test" / f"{cid}.nii.gz").dataobj)
        assert set(np.unique(pred).tolist()) <= {0, 1}
    assert "the organ map" in md and "--organs on" in md

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
    assert set(res["by_arm"]) == {"petctfm", "nnunet_cpu", "floor_suv2.5", "floor_suv4"}
    assert res["paired_by_arm"]["petctfm - nnunet_cpu"]["dice"]["n"] == res["n_cases"]
    assert imread(conf["out"] / "confirm.png").shape[2] in (3, 4)

    # a rerun trains nothing; other settings are refused
    def fail(*a, **k):
        raise AssertionError("a finished arm was run again")

    monkeypatch.setattr(run_mod, "execute_arm", fail)
    monkeypatch.setattr(run_mod, "run_child", fail)
    assert main(argv) == 0
    with pytest.raises(InputError, match="other settings"):
        run_mod.run_vs_nnunet(data, exp, minutes=0.5, plans=["cpu"], preset="tiny", device="cpu", progress=False)
