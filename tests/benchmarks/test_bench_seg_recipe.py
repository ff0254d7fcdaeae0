"""The recipe's benchmark scripts run: ``bench_seg_step.py --quick`` prints the ratio to its same-run reference;
``seg_recipe_ablation.py`` calibrates rows, trains each for the steps that fill the budget, scores them on the
validation split and writes its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def test_bench_seg_step_quick():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_seg_step.py"), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=_env())
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert [r["case"] for r in rows] == ["planned net fp32 (reference)", "planned net bf16"]
    assert rows[0]["ratio_to_reference"] == 1.0 and rows[1]["s_per_step"] > 0


@pytest.mark.slow
def test_seg_recipe_ablation_smoke(tmp_path):
    from toy_data import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_cases=3, shape=(32, 24, 40))
    out = tmp_path / "abl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "seg_recipe_ablation.py"), "--data", str(data), "--out",
           str(out), "--minutes", "0.05", "--rows", "before,recipe", "--workers", "1", "--calib", "4"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env())
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    cal = json.loads((out / "calibration.json").read_text())
    assert set(cal) == {"before", "recipe"} and all(v > 0 for v in cal.values())
    for row in ("before", "recipe"):
        r = json.loads((out / f"{row}_s0.json").read_text())
        assert r["steps"] == max(1, int(0.05 * 60 / cal[row])) and 0.0 <= r["val_dice"] <= 1.0
    assert "| before |" in p.stdout and "| recipe |" in p.stdout
    bad = subprocess.run(cmd[:-6] + ["--rows", "before", "--split", "test", "--workers", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=_env())
    assert bad.returncode != 0 and "never on test" in (bad.stdout + bad.stderr)


@pytest.mark.slow
def test_seg_recipe_ablation_fixed_steps_on_a_dev_cohort(tmp_path):
    """``--steps`` trains every row for the same steps (no calibration); ``--score-data`` scores every case of a
    separate development cohort; the SGD row really uses nnU-Net's SGD."""
    from toy_data import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_cases=3, shape=(32, 24, 40))
    dev = write_toy_dataset(tmp_path / "dev", n_cases=3, shape=(32, 24, 40), seed=5)
    out = tmp_path / "abl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "seg_recipe_ablation.py"), "--data", str(data), "--out",
           str(out), "--steps", "5", "--rows", "sgd_nnunet", "--workers", "1", "--score-data", str(dev)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env())
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert not (out / "calib").exists()
    r = json.loads((out / "sgd_nnunet_s0.json").read_text())
    assert r["steps"] == 5 and r["scored_on"] == str(dev) and r["s_per_step"] > 0
    from petctfm.data import format as fmt

    sp = fmt.load_splits(dev)
    assert set(r["val_cases"]) == {c for k in ("train", "val", "test") for c in sp.get(k) or []}
    cfg = (out / "sgd_nnunet_s0" / "config.yaml").read_text()
    assert "optimizer: sgd" in cfg
    # --confirm: no training, the trained row scored on every case of another cohort, into OUT/confirm/
    conf = write_toy_dataset(tmp_path / "conf", n_cases=2, shape=(32, 24, 40), seed=9)
    p = subprocess.run(cmd[:6] + ["--rows", "sgd_nnunet", "--workers", "1", "--confirm", str(conf)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=_env())
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    c = json.loads((out / "confirm" / "sgd_nnunet_s0.json").read_text())
    assert c["scored_on"] == str(conf) and c["steps"] == 5 and len(c["val_cases"]) == 2
    assert "| sgd_nnunet |" in p.stdout
    png = tmp_path / "rows.png"
    p = subprocess.run(cmd[:6] + ["--figure", str(png)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=_env())
    assert p.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p.stderr[-2000:]


def test_ablation_table_averages_seeds_per_case_and_pairs_by_case(tmp_path):
    """A row with several seeds: per case the Dice is averaged over seeds, the CI is over cases, the per-seed
    means are listed, and Δ vs recipe pairs the same cases over the same seeds (hand-computed values)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("abl", ROOT / "benchmarks" / "seg_recipe_ablation.py")
    abl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(abl)
    nan = float("nan")
    scores = {("recipe", 0): {"a": 0.2, "b": 0.4, "n": nan}, ("recipe", 1): {"a": 0.0, "b": 0.2, "n": nan},
              ("lesion_balance", 0): {"a": 0.6, "b": 0.4, "n": nan}, ("lesion_balance", 1): {"a": 0.2, "b": 0.2, "n": nan}}
    for (row, seed), cases in scores.items():
        (tmp_path / f"{row}_s{seed}.json").write_text(json.dumps(
            {"row": row, "seed": seed, "steps": 10, "val_cases": cases, "val_fp_ml": 1.0, "val_fn_ml": 2.0,
             "params_M": 5.45, "s_per_step": 1.0}))
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in abl.table(tmp_path).splitlines()[2:]}
    assert lines["recipe"][1] == "0,1" and lines["recipe"][4].startswith("0.200 ")  # cases a 0.1, b 0.3
    assert lines["recipe"][5] == "0.300 / 0.100"
    assert lines["lesion_balance"][4].startswith("0.350 ") and lines["lesion_balance"][5] == "0.500 / 0.200"
    assert lines["lesion_balance"][6].startswith("+0.150 ")  # a: 0.4-0.1, b: 0.3-0.3


def _bench(script: str):
    """A benchmark script of benchmarks/ loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(script, ROOT / "benchmarks" / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _abl():
    return _bench("seg_recipe_ablation")


def test_ablation_table_versus_pairs_the_same_row_of_another_folder(tmp_path):
    """``table(out, versus)``: Δ of each row against the same row (same seeds, same cases) of another folder,
    e.g. the same recipe trained for fewer steps; rows outside ``ROWS`` (the floors) are listed too."""
    abl = _abl()
    long_, short = tmp_path / "long", tmp_path / "short"
    for d, cases in ((long_, {"a": 0.6, "b": 0.5}), (short, {"a": 0.2, "b": 0.5})):
        d.mkdir()
        (d / "lesion_balance_s0.json").write_text(json.dumps(
            {"row": "lesion_balance", "seed": 0, "steps": 10, "val_cases": cases, "val_fp_ml": 1.0,
             "val_fn_ml": 2.0, "params_M": 5.45}))
    (long_ / "floor_suv2.5_s0.json").write_text(json.dumps(
        {"row": "floor_suv2.5", "seed": 0, "steps": 0, "val_cases": {"a": 0.1, "b": 0.0}, "val_fp_ml": 9.0,
         "val_fn_ml": 0.5}))
    text = abl.table(long_, short)
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines()[2:]}
    assert "same row of" in text.splitlines()[0]
    assert lines["lesion_balance"][6].startswith("+0.200 ")  # a: +0.4, b: 0.0
    assert lines["floor_suv2.5"][4].startswith("0.050 ") and lines["floor_suv2.5"][6] == ""


def test_floor_row_scores_the_suv_threshold_on_every_case(tmp_path):
    """The floor row: SUV >= t components of >= 1 ml, scored per case by ``case_metrics``, every case."""
    from toy_data import write_toy_dataset

    from petctfm.data import format as fmt
    from petctfm.evaluate.metrics import case_metrics
    from petctfm.data.format import case_spacing
    from petctfm.experiments.vs_nnunet.floor import threshold_mask

    abl = _abl()
    conf = write_toy_dataset(tmp_path / "conf", n_cases=2, shape=(32, 24, 40), seed=9)
    r = abl.floor_row(tmp_path, 2.5, str(conf))
    saved = json.loads((tmp_path / "confirm" / "floor_suv2.5_s0.json").read_text())
    assert saved["row"] == "floor_suv2.5" and set(saved["val_cases"]) == set(r["val_cases"])
    ids = sorted(r["val_cases"])
    assert len(ids) == 2
    case = fmt.load_case(str(conf), ids[0])
    sp = case_spacing(case["meta"])
    want = case_metrics(threshold_mask(np.asarray(case["image"][0]), sp, 2.5), np.asarray(case["label"]), sp)
    got = r["val_cases"][ids[0]]
    assert (got == want["dice"]) or (np.isnan(got) and np.isnan(want["dice"]))
    # cases="lesions": only the cases whose label has a lesion
    with_lesion = [c for c in ids if np.asarray(fmt.load_case(str(conf), c)["label"]).any()]
    assert sorted(abl.floor_row(tmp_path, 4.0, str(conf), "lesions")["val_cases"]) == with_lesion


def test_bench_seg_step_skips_emulated_bf16_rows(monkeypatch, capsys):
    """Without native bf16 the bf16 rows (minutes per step there) are left out unless --emulated-bf16; the rows
    and the reference are otherwise the script's own (step timing stubbed: this checks the selection)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_seg_step", ROOT / "benchmarks" / "bench_seg_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import petctfm.core.device as device

    ran = []
    monkeypatch.setattr(mod, "step_seconds", lambda b, patch, bf16, cl, ov, steps: ran.append(bf16) or 2.0)
    for native, flag, expect_bf16 in ((False, [], False), (False, ["--emulated-bf16"], True), (True, [], True)):
        monkeypatch.setattr(device, "cpu_has_bf16", lambda native=native: native)
        ran.clear()
        assert mod.main(["--steps", "1", *flag]) == 0
        out = capsys.readouterr().out
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert (True in ran) == expect_bf16 and len(rows) == len(ran)
        assert rows[0]["case"] == "planned net fp32 (reference)" and rows[0]["ratio_to_reference"] == 1.0
        assert ("bf16 rows skipped" in out) == (not expect_bf16)
        assert len(ran) == (len(mod.CASES) if expect_bf16 else sum(not c[3] for c in mod.CASES))


def test_timed_row_calibrates_with_the_budget_and_trains_every_seed_on_the_calibrations_plan(tmp_path, monkeypatch):
    """A row with a step-time budget is timed by the planner once, in its calibration run; its training runs get
    that run's voxel budget (``plan_rule``), not a new measurement that a busy machine would change."""
    import yaml

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import seg_recipe_ablation as A

    from petctfm.methods.segmentation import api

    seen = []
    monkeypatch.setattr(api, "finetune", lambda data, out, **kw: seen.append(kw) or {"steps": 1})
    row = A.ROWS["aux_organs_1s"]
    A._finetune("data", tmp_path / "calib" / "aux_organs_1s", row, 12, 0)
    assert seen[-1]["plan_step_seconds"] == 1.0 and "plan_rule" not in seen[-1]
    with pytest.raises(SystemExit, match="calibrate it first"):
        A._timed_rule(tmp_path, "aux_organs_1s")
    run = tmp_path / "calib" / "aux_organs_1s"
    run.mkdir(parents=True)
    rule = {"patch_voxels": 38652, "base_features": 16}
    (run / "config.yaml").write_text(yaml.safe_dump({"task": {"plan": {"rule": rule}}, "train": {}}))
    assert A._timed_rule(tmp_path, "aux_organs_1s") == rule
    assert A._timed_rule(tmp_path, "aux_organs") is None  # not a timed row
    A._finetune("data", tmp_path / "aux_organs_1s_s1", row, 100, 1, A._timed_rule(tmp_path, "aux_organs_1s"))
    assert seen[-1]["plan_rule"] == {"patch_voxels": 38652, "step_seconds": None} and "plan_step_seconds" not in seen[-1]
    assert seen[-1]["plan"] == "cpu" and seen[-1]["seed"] == 1
    A._finetune("data", tmp_path / "aux_organs_s0", A.ROWS["aux_organs"], 10, 0)  # an untimed row stays untimed
    assert seen[-1]["plan_step_seconds"] == 0


def test_patch_voxels_trains_a_timed_row_at_the_given_budget_without_a_calibration(tmp_path, monkeypatch):
    """Round ten: ``--patch-voxels V`` gives a timed row the voxel budget V (no calibration run, no timing), so
    two harmonizations of one dataset train with equal voxels per step; it needs ``--steps``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import seg_recipe_ablation as A

    seen = []
    monkeypatch.setattr(A, "_finetune", lambda data, run, row, steps, seed, timed=None: seen.append(
        (row, steps, seed, timed)) or {"steps": steps, "precision": "fp32"})
    monkeypatch.setattr(A, "_score", lambda name, seed, summary, data, split, ids: {"row": name, "seed": seed})
    from petctfm.train import run_dir

    monkeypatch.setattr(run_dir, "median_step_seconds", lambda run: 1.0)
    A.train_and_score("ds", tmp_path, "aux_organs_1s", 7, 1, patch_voxels=65536)
    assert seen[-1][1:] == (7, 1, {"patch_voxels": 65536})
    with pytest.raises(SystemExit, match="calibrate it first"):  # without V a timed row needs its calibration
        A.train_and_score("ds", tmp_path, "aux_organs_1s", 7, 0)
    A.train_and_score("ds", tmp_path, "aux_organs", 7, 0, patch_voxels=65536)  # an untimed row ignores V
    assert seen[-1][3] is None
    with pytest.raises(SystemExit):
        A.main(["--data", "ds", "--out", str(tmp_path / "x"), "--patch-voxels", "65536"])  # no --steps


def test_organ_suppression_scores_every_arm_from_one_pass(tmp_path):
    """benchmarks/organ_suppression.py (rounds eight and nine): the arms of one run on a split, the organ model's
    maps and arm, and the report's table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import organ_suppression as osup
    from quick_train import make_tiny_model

    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.data import format as fmt
    from petctfm.train.checkpoint import load_model

    aux = {k: v for k, v in ORGAN_LABELS.items() if v}
    run = make_tiny_model(tmp_path / "run", tmp_path / "data", aux=aux)
    (run / "summary.json").write_text(json.dumps({"checkpoint": str(run / "model.safetensors"), "steps": 5}))
    data = load_model(run / "model.safetensors")[1]["dataset"]
    ids = osup._ids(data, "train", "all")
    res = osup.score_run(str(run), data, ids, overlap=0.25)
    assert res["overlap"] == 0.25 and res["cases"] == ids and res["organs"] == osup.ORGANS
    assert set(res["arms"]) == {"none", "suppress", "t0.6", "t0.7", "t0.8", "t0.9"}
    for cid in ids:
        none, sup = res["arms"]["none"][cid], res["arms"]["suppress"][cid]
        assert sup["fp_volume_ml"] <= none["fp_volume_ml"] + 1e-9  # the rule only removes
        assert 0 <= res["removed"][cid]["removed_truth_ml"] <= res["removed"][cid]["removed_ml"]
        assert res["arms"]["t0.9"][cid]["fp_volume_ml"] <= none["fp_volume_ml"] + 1e-9
    # round nine: a separate organ model's maps (a tiny organ model, 3 steps on the same cases)
    from quick_train import train_and_save

    from petctfm.core.config import deep_merge
    from petctfm.methods.segmentation.presets import get_preset
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG, FinetuneTask

    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(patch_size=[16, 16, 16], augment=False, batch_size=2)
    cfg["task"] = {"name": "organs", "classes": aux}
    cfg["subset"] = {"name": "train", "cases": ids}
    organ_run = train_and_save(FinetuneTask(cfg, data), tmp_path / "organ_run", 3)
    maps = tmp_path / "out" / "organ_maps"
    info = osup.all_organ_maps(str(organ_run), data, ids, maps, 0.25, workers=1)
    assert sorted(info["dice"]) == sorted(ids) and set(info["dice"][ids[0]]) == set(osup.ORGANS)
    assert all(0 <= d <= 1 for v in info["dice"].values() for d in v.values() if d == d)
    res = osup.score_run(str(run), data, ids, overlap=0.25, maps=str(maps))
    for cid in ids:
        lab = np.load(maps / f"{cid}.npy")
        assert lab.shape == np.asarray(fmt.load_case(data, cid, mmap=True)["label"]).shape
        om, none = res["arms"]["organ_model"][cid], res["arms"]["none"][cid]
        assert om["fp_volume_ml"] <= none["fp_volume_ml"] + 1e-9
        assert 0 <= res["removed"][cid]["organ_model_removed_truth_ml"] <= res["removed"][cid]["organ_model_removed_ml"]
    (tmp_path / "out" / "run.json").write_text(json.dumps(res))
    table = osup.report(tmp_path / "out")
    assert "| suppress |" in table and "| t0.9 |" in table and "| organ_model |" in table
    assert "- suppress: removed" in table and "- organ_model: removed" in table and "the organ model's Dice" in table
    with pytest.raises(SystemExit, match="test"):
        osup.main(["--runs", str(run), "--data", data, "--split", "test", "--out", str(tmp_path / "o2")])


def test_organ_suppression_counts_true_lesion_inside_the_rule_organs():
    """What each arm keeps of the true lesion lying in the rule's organs (an --organ-metastases cohort), by hand."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import organ_suppression as osup

    from petctfm.core.labels import ORGAN_LABELS

    organs = np.zeros((4, 4, 4), np.uint8)
    organs[:2] = ORGAN_LABELS["brain"]  # a rule organ
    organs[2:] = ORGAN_LABELS["liver"]  # not one
    truth = np.zeros_like(organs, bool)
    truth[0, :2, :2] = True  # 4 voxels in the brain
    truth[3, :2, :2] = True  # 4 in the liver: not counted
    inside = osup._truth_in_rule_organs({"organs": organs}, truth)
    assert inside.sum() == 4 and not inside[3].any()
    assert osup._truth_in_rule_organs({"organs": None}, truth) is None
    plain = truth.astype(np.uint8)
    kept = plain.copy()
    kept[0, 0, :2] = 0  # the rule took 2 of the 4 brain voxels
    got = osup._kept_in_organs(inside, 0.5, none=plain, suppress=kept)
    assert got == {"truth_in_organs_ml": 2.0, "none_in_organs_ml": 2.0, "suppress_in_organs_ml": 1.0}
    assert osup._kept_in_organs(None, 0.5, none=plain) == {}


def _svp():
    return _bench("score_via_predict")


def test_score_via_predict_report_pairs_seed_averaged_cases_against_the_first_arm(tmp_path):
    """Round ten's table: per arm the Dice over the cases with lesions is averaged over the arm's runs per case;
    the paired difference is taken case by case against the first arm; FP / FN / inference seconds are the mean
    over runs of the per-case means over ALL scored cases (hand-computed values)."""
    svp = _svp()

    def case(dice, gt, fp=0.0, fn=0.0, f1=1.0):
        return {"dice": dice, "gt_tmtv_ml": gt, "fp_volume_ml": fp, "fn_volume_ml": fn, "lesion_f1": f1}

    runs = {"4mm": [{"a": case(0.2, 5, fp=4), "b": case(0.4, 3), "n": case(float("nan"), 0, fp=2)},
                    {"a": case(0.0, 5), "b": case(0.2, 3), "n": case(float("nan"), 0)}],
            "6mm": [{"a": case(0.6, 5), "b": case(0.4, 3), "n": case(float("nan"), 0, fn=0)},
                    {"a": case(0.2, 5), "b": case(0.2, 3, fn=6), "n": case(float("nan"), 0)}]}
    (tmp_path / "arms.json").write_text(json.dumps({"data": "ds", "split": "val", "overlap": 0.25,
                                                    "arms": {a: [f"run{a}{k}" for k in range(2)] for a in runs}}))
    for arm, rs in runs.items():
        for k, cases in enumerate(rs):
            (tmp_path / f"{arm}_{k}").mkdir()
            (tmp_path / f"{arm}_{k}" / "result.json").write_text(json.dumps(
                {"run": f"run{arm}{k}", "cases": cases, "inference_s_per_case": 10.0 + k}))
    text = svp.report(tmp_path)
    assert "3 cases, 2 with lesions" in text
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in text.splitlines()
            if ln.startswith("| 4mm") or ln.startswith("| 6mm")}
    assert rows["4mm"][2].startswith("0.200 ") and rows["4mm"][3] == "0.300 / 0.100"  # a 0.1, b 0.3
    assert rows["6mm"][2].startswith("0.350 ") and rows["6mm"][4].startswith("+0.150 ")  # a +0.3, b 0.0
    assert rows["4mm"][4] == "" and rows["4mm"][5] == "1.0" and rows["6mm"][6] == "1.0"  # FP (4+2)/3/2, FN 6/3/2
    assert rows["4mm"][8] == "10.5"
    against = svp.report(tmp_path, against="6mm")
    assert "paired − 6mm" in against and "-0.150 [" in against


def test_score_via_predict_refuses_the_test_split_and_a_bad_arm(tmp_path):
    svp = _svp()
    with pytest.raises(SystemExit):
        svp.main(["--data", "ds", "--out", str(tmp_path), "--split", "test", "--arm", "a=r"])
    with pytest.raises(SystemExit):
        svp.main(["--data", "ds", "--out", str(tmp_path), "--arm", "no_runs"])
