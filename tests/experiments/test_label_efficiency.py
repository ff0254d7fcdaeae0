"""``petctfm experiment label-efficiency`` (:mod:`petctfm.experiments.label_efficiency`): the plan (names, exact stored subsets), the runs going through
finetune / probe / evaluate, results.csv / .md / .png, resume that skips finished runs, one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from petctfm.cli.main import main
from petctfm.data import format as fmt
from toy_data import write_toy_dataset
from petctfm.core.errors import InputError, UsageError
from petctfm.experiments.label_efficiency.plan import build_plan, parse_runs
from petctfm.experiments.label_efficiency.run import run_label_efficiency
from petctfm.io.atomic import atomic_write_json

# few steps, small patches, validation every 2 steps: seconds per run on one core
FAST = ["data.patch_size=[16,16,16]", "train.figure_every=2", "train.checkpoint_every=2", "train.log_every=1"]
TRAIN = ["toy000", "toy001", "toy002", "toy003"]
FRACTIONS = {"50": ["toy001", "toy003"], "100": TRAIN}  # 50% deliberately not a prefix of train


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_mae_run):
    root = tmp_path_factory.mktemp("le")
    data = write_toy_dataset(root / "data", n_cases=7, shape=(32, 32, 32))
    sp = json.loads((data / fmt.SPLITS_JSON).read_text())
    sp.update(train=TRAIN, val=["toy004"], test=["toy005", "toy006"], fractions=FRACTIONS,
              kshot={"1": ["toy002"], "5": []})
    atomic_write_json(data / fmt.SPLITS_JSON, sp)
    mae = tiny_mae_run(root / "mae", data, steps=1)
    return data, mae


@pytest.fixture(scope="module")
def experiment(env, tmp_path_factory):
    """One finished experiment: pretrained + scratch at 50 % and 100 %, 1-shot joint probe, one seed."""
    data, mae = env
    out = tmp_path_factory.mktemp("exp") / "le"
    res = run_label_efficiency(data, mae, out, fractions=[50, 100], seeds=[0], preset="tiny", overrides=FAST,
                                  max_steps=4, probe_kshot=1, probe_steps=3, progress=False)
    return data, mae, out, res


def test_plan_names_and_exact_subsets(env):
    data, mae = env
    plan = build_plan(data, fractions=[50, 100], seeds=[0, 1], probe_kshot=1, joint_encoder=str(mae),
                         separated=["pet_run", "ct_run"])
    assert [r.name for r in plan] == [
        "finetune_pretrained_f50_s0", "finetune_pretrained_f50_s1", "finetune_scratch_f50_s0",
        "finetune_scratch_f50_s1", "finetune_pretrained_f100_s0", "finetune_pretrained_f100_s1",
        "finetune_scratch_f100_s0", "finetune_scratch_f100_s1",
        "probe_joint_k1_s0", "probe_separated_k1_s0", "probe_joint_k1_s1", "probe_separated_k1_s1"]
    by = {r.name: r for r in plan}
    assert by["finetune_scratch_f50_s1"].cases == FRACTIONS["50"] and by["finetune_scratch_f50_s1"].seed == 1
    assert by["finetune_pretrained_f100_s0"].cases == TRAIN
    assert by["probe_separated_k1_s0"].cases == ["toy002"] and by["probe_separated_k1_s0"].encoders == ["pet_run",
                                                                                                       "ct_run"]
    # explicit runs replace the product; no separated runs -> no separated probe
    plan = build_plan(data, seeds=[0], runs=parse_runs("pretrained:50,scratch:50,scratch:100"),
                         probe_kshot=1, joint_encoder=str(mae))
    assert [r.name for r in plan] == ["finetune_pretrained_f50_s0", "finetune_scratch_f50_s0",
                                      "finetune_scratch_f100_s0", "probe_joint_k1_s0"]
    with pytest.raises(InputError, match=r"no stored 10% label fraction \(stored: 50%, 100%\)"):
        build_plan(data, fractions=[10], probe_kshot=None)
    with pytest.raises(InputError, match="no stored 5-shot subset"):
        build_plan(data, fractions=[50], probe_kshot=5, joint_encoder=str(mae))
    with pytest.raises(UsageError, match="runs='finetuned:10': unknown arm 'finetuned'"):
        parse_runs("finetuned:10")


def test_runs_results_and_files(experiment):
    data, mae, out, res = experiment
    names = ["finetune_pretrained_f50_s0", "finetune_scratch_f50_s0", "finetune_pretrained_f100_s0",
             "finetune_scratch_f100_s0", "probe_joint_k1_s0"]
    assert [r.name for r in res["plan"]] == names
    exp = yaml.safe_load((out / "experiment.yaml").read_text())
    assert [r["name"] for r in exp["runs"]] == names and exp["settings"]["preset"] == "tiny"
    assert exp["runs"][0]["cases"] == FRACTIONS["50"]
    for name in names:
        done = json.loads((out / name / "done.json").read_text())
        assert done["n_test_cases"] == 2 and set(done["case_dice"]) == {"toy005", "toy006"}
        per_case = list(csv.DictReader(open(out / name / "eval_test" / "per_case.csv")))
        assert [r["case_id"] for r in per_case] == ["toy005", "toy006"]
        dice = [float(r["dice"]) for r in per_case]
        assert all(0.0 <= d <= 1.0 for d in dice)
        assert done["metrics"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    # fine-tuning went through the finetune code: trainer config with the exact subset, predictions on disk
    ft = out / "finetune_scratch_f50_s0"
    cfg = yaml.safe_load((ft / "config.yaml").read_text())
    assert cfg["task"]["subset"]["cases"] == FRACTIONS["50"] and cfg["task"]["init"]["source"] == "scratch"
    assert cfg["task"]["model"]["backbone"] == "unet-resenc-tiny" and cfg["task"]["data"]["mode"] == "joint"
    assert cfg["train"]["max_steps"] == 4 and cfg["task"]["data"]["patch_size"] == [16, 16, 16]
    assert sorted(p.name for p in (ft / "pred_test").iterdir()) == ["toy005.nii.gz", "toy006.nii.gz"]
    pre = yaml.safe_load((out / "finetune_pretrained_f100_s0" / "config.yaml").read_text())
    assert pre["task"]["init"]["source"] == str(mae / "model.safetensors")

    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["row"], r["name"]) for r in rows if r["row"] == "run"] == [("run", n) for n in names]
    aggs = {r["name"]: r for r in rows if r["row"] == "aggregate"}
    assert set(aggs) == {"pretrained 50%", "scratch 50%", "pretrained 100%", "scratch 100%", "probe joint 1-shot"}
    run_dice = {r["name"]: float(r["dice_mean"]) for r in rows if r["row"] == "run"}
    assert float(aggs["scratch 50%"]["dice_mean"]) == pytest.approx(run_dice["finetune_scratch_f50_s0"])
    a = aggs["pretrained 100%"]
    assert float(a["dice_ci_low"]) <= float(a["dice_mean"]) <= float(a["dice_ci_high"])
    tests = [r["name"] for r in rows if r["row"] == "wilcoxon"]
    assert tests == ["pretrained vs scratch at 50%", "pretrained vs scratch at 100%",
                     "pretrained at 50% vs scratch at 100%"]

    md = (out / "results.md").read_text()
    assert "**Synthetic data.**" in md and "petctfm experiment label-efficiency --data" in md
    assert "| arm | 50% (2 cases) | 100% (4 cases) |" in md
    assert "| pretrained |" in md and "| scratch |" in md and "Wilcoxon" in md
    assert "separated** probe was skipped" in md and "--mode pet" in md and "--separated" in md
    img = imread(out / "label_efficiency.png")
    assert img.shape[0] > 300 and np.std(img) > 0.01


def test_rerun_skips_finished_runs(experiment, monkeypatch):
    data, mae, out, res = experiment
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/done.json")}
    ckpts = {p: p.stat().st_mtime_ns for p in out.glob("finetune_*/checkpoints/*/model.safetensors")}
    assert len(done) == 5 and ckpts

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("petctfm.train.trainer.train", no_training)
    monkeypatch.setattr("petctfm.methods.probe.run_probe", no_training)
    again = run_label_efficiency(data, mae, out, fractions=[50, 100], seeds=[0], preset="tiny", overrides=FAST,
                                    max_steps=4, probe_kshot=1, probe_steps=3, progress=False)
    assert [r["name"] for r in again["records"]] == [r["name"] for r in res["records"]]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/done.json")} == done
    assert {p: p.stat().st_mtime_ns for p in out.glob("finetune_*/checkpoints/*/model.safetensors")} == ckpts
    # other settings in the same folder are refused
    with pytest.raises(InputError, match="other settings"):
        run_label_efficiency(data, mae, out, fractions=[50], preset="tiny", max_steps=9, probe_kshot=None,
                                progress=False)


def test_killed_finetune_run_resumes(env, tmp_path):
    data, mae = env
    out = tmp_path / "le"
    kw = dict(runs="scratch:50", seeds=[0], preset="tiny", overrides=FAST, probe_kshot=None, progress=False)
    run_label_efficiency(data, mae, out, max_steps=4, **kw)
    run = out / "finetune_scratch_f50_s0"
    (run / "done.json").unlink()  # as if killed during training: checkpoint at step 2, no final summary
    (run / "summary.json").unlink()
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_0000004")
    seen = {}
    import petctfm.train.trainer as T

    real = T.train

    def spy(task, cfg, run_dir, resume=False):
        seen["resume"] = resume
        return real(task, cfg, run_dir, resume=resume)

    import unittest.mock as um

    with um.patch.object(T, "train", spy):
        res = run_label_efficiency(data, mae, out, max_steps=4, **kw)
    assert seen == {"resume": True}
    assert res["records"][0]["train"]["steps"] == 4 and (run / "done.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["start_step"] == 2 and summary["steps"] == 4  # went on from the step-2 checkpoint
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the log of steps 3-4 appended, nothing redone


def test_cli_errors_are_one_line(env, tmp_path, capsys):
    data, mae = env
    bad = tmp_path / "no_such_run"
    assert main(["experiment", "label-efficiency", "--data", str(data), "--pretrained", str(bad), "--out",
                 str(tmp_path / "x"), "--preset", "tiny"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}: no such checkpoint file or run folder"
    assert main(["experiment", "label-efficiency", "--data", str(data), "--pretrained", str(mae), "--out",
                 str(tmp_path / "x"), "--runs", "scratch:10,pretrained:abc"]) == 2  # a usage error
    assert capsys.readouterr().err.strip() == ("error: --runs 'scratch:10,pretrained:abc': bad item 'pretrained:abc'; "
                                               "must be ARM:PERCENT, e.g. pretrained:10")


@pytest.mark.slow
def test_separated_probe_runs_beside_the_joint_one(env, tmp_path, tiny_mae_run):
    data, mae = env
    pet = tiny_mae_run(tmp_path / "mae_pet", data, "pet", steps=1)
    ct = tiny_mae_run(tmp_path / "mae_ct", data, "ct", steps=1)
    with pytest.raises(InputError, match="expects a PET-only pretraining run"):
        run_label_efficiency(data, mae, tmp_path / "bad", runs="scratch:50", separated=[ct, pet], probe_kshot=1,
                                progress=False)
    res = run_label_efficiency(data, mae, tmp_path / "le", runs="scratch:50", seeds=[0], preset="tiny",
                                  overrides=FAST, max_steps=2, separated=[pet, ct], probe_kshot=1, probe_steps=2,
                                  progress=False)
    assert [r.name for r in res["plan"]] == ["finetune_scratch_f50_s0", "probe_joint_k1_s0", "probe_separated_k1_s0"]
    sep = json.loads((tmp_path / "le" / "probe_separated_k1_s0" / "config.json").read_text())
    assert [e["mode"] for e in sep["encoders"]] == ["pet", "ct"] and sep["train_cases"] == ["toy002"]
    md = (tmp_path / "le" / "results.md").read_text()
    assert "| separated: PET-only + CT-only side by side | 1 | 1 |" in md and "Joint - separated (Dice):" in md
    assert "Joint - separated (AP):" in md and "probe was skipped" not in md
    rows = list(csv.DictReader(open(tmp_path / "le" / "results.csv")))
    assert [r["name"] for r in rows if r["row"] == "wilcoxon"] == [
        "1-shot probe: joint vs separated", "1-shot probe: joint vs separated, AP"]
    # the probes' AP: per-case values from per_case.csv, aggregated like the Dice
    aggs = {r["name"]: r for r in rows if r["row"] == "aggregate"}
    for arm in ("joint", "separated"):
        per_case = list(csv.DictReader(open(tmp_path / "le" / f"probe_{arm}_k1_s0" / "per_case.csv")))
        aps = [float(r["ap"]) for r in per_case if r["ap"]]
        assert aps and all(0 < a <= 1 for a in aps)
        assert float(aggs[f"probe {arm} 1-shot"]["ap_mean"]) == pytest.approx(np.mean(aps))
    assert aggs["scratch 50%"]["ap_mean"] == ""  # fine-tuning runs report Dice only


def test_plan_gives_both_arms_the_recipe_on_the_pretrained_network(env, tmp_path):
    """``--plan cpu``: both arms are planned (patch, batch, schedule, oversampling) from their own training cases,
    and the scratch arm keeps the pretrained network (the plan does not swap in a planned one)."""
    data, mae = env
    out = tmp_path / "le_plan"
    res = run_label_efficiency(data, mae, out, runs="pretrained:50,scratch:50", seeds=[0], preset="tiny",
                               overrides=["train.figure_every=2", "train.checkpoint_every=2"], max_steps=2,
                               probe_kshot=None, plan="cpu", progress=False)
    cfgs = {r.arm: yaml.safe_load((out / r.name / "config.yaml").read_text()) for r in res["plan"]}
    from petctfm.experiments.label_efficiency.plan import check_pretrained

    pcfg = check_pretrained(mae)[1]
    for arm, cfg in cfgs.items():
        assert cfg["task"]["plan"]["target"] == "cpu" and not cfg["task"]["plan"]["planned_network"], arm
        assert cfg["task"]["model"]["backbone"] == pcfg["model"]["backbone"]
        assert cfg["task"]["model"]["overrides"] == (pcfg["model"].get("overrides") or {})
        assert cfg["task"]["data"]["fg_balance"] == "lesion" and cfg["train"]["lr_schedule"] == "poly"
    # same training cases -> the same planned patch and batch in both arms
    assert cfgs["pretrained"]["task"]["data"]["patch_size"] == cfgs["scratch"]["task"]["data"]["patch_size"]
    assert cfgs["pretrained"]["task"]["data"]["batch_size"] == cfgs["scratch"]["task"]["data"]["batch_size"]
    spec = yaml.safe_load((out / "experiment.yaml").read_text())
    assert spec["settings"]["plan"] == "cpu" and "--plan cpu" in spec["command"]
    # the cpu target is timed: timed once before the first run, every run gets that budget and times nothing
    budget = spec["settings"]["plan_voxels"]
    assert isinstance(budget, int) and budget > 0
    for arm, cfg in cfgs.items():
        assert cfg["task"]["plan"]["rule"]["patch_voxels"] == budget and "timing" not in cfg["task"]["plan"], arm
    assert f"one voxel budget timed once ({budget} voxels per patch)" in (out / "results.md").read_text()
    assert "segmentation recipe planned for `cpu`" in (out / "results.md").read_text()
    with pytest.raises(UsageError, match="plan"):
        run_label_efficiency(data, mae, tmp_path / "bad", runs="scratch:50", plan="tpu", progress=False)


def test_plan_spacing_trains_every_run_on_the_copy_and_scores_on_the_datasets_grid(env, tmp_path):
    """``--plan-spacing MM``: both arms train on the dataset's copy at the coarser grid (the pretrained network
    kept); their test predictions come back on the dataset's own grid, where they are scored."""
    import nibabel as nib

    from petctfm.harmonize.respace import respaced_dir

    data, mae = env
    out = tmp_path / "le_grid"
    res = run_label_efficiency(data, mae, out, runs="pretrained:50,scratch:50", seeds=[0], preset="tiny",
                               overrides=FAST, max_steps=2, probe_kshot=None, plan="cpu", plan_spacing=4,
                               progress=False)
    copy = respaced_dir(data, [4, 4, 4])
    for run in res["plan"]:
        task = yaml.safe_load((out / run.name / "config.yaml").read_text())["task"]
        assert task["dataset"] == str(copy) and task["plan"]["dataset"]["source"] == str(data), run.name
        assert task["plan"]["fingerprint"]["spacing"] == [4.0, 4.0, 4.0] and not task["plan"]["planned_network"]
        for cid in ("toy005", "toy006"):
            pred = nib.load(str(out / run.name / "pred_test" / f"{cid}.nii.gz"))
            assert pred.shape == fmt.load_case(data, cid)["label"].shape == (32, 32, 32), (run.name, cid)
    spec = yaml.safe_load((out / "experiment.yaml").read_text())
    assert spec["settings"]["plan_spacing"] == 4.0 and "--plan-spacing 4" in spec["command"]
    assert "no finer than 4 mm" in (out / "results.md").read_text()
    with pytest.raises(UsageError, match="plan_spacing"):
        run_label_efficiency(data, mae, tmp_path / "bad", runs="scratch:50", plan_spacing=4, progress=False)


def test_jobs_run_the_same_runs_in_parallel_processes(env, tmp_path):
    """``jobs=2``: the runs train in two spawned processes; every run reaches its steps, writes its record and
    predictions, and the report is the same as a sequential experiment writes. A wrong value is a UsageError."""
    data, mae = env
    out = tmp_path / "le_jobs"
    res = run_label_efficiency(data, mae, out, runs="pretrained:50,scratch:50,scratch:100", seeds=[0],
                               preset="tiny", overrides=FAST, max_steps=3, probe_kshot=None, jobs=2, progress=False)
    assert [r["name"] for r in res["records"]] == [r.name for r in res["plan"]]  # plan order
    for rec in res["records"]:
        assert rec["train"]["steps"] == 3 and rec["train"]["stopped"] == "max_steps"
        assert 0.0 <= rec["metrics"]["dice"]["mean"] <= 1.0
        assert sorted(p.name for p in (out / rec["name"] / "pred_test").iterdir()) == ["toy005.nii.gz",
                                                                                      "toy006.nii.gz"]
    assert (out / "results.md").is_file() and len(res["summary"]["groups"]) == 3
    with pytest.raises(UsageError, match="jobs"):
        run_label_efficiency(data, mae, tmp_path / "bad", runs="scratch:50", jobs=0, progress=False)
