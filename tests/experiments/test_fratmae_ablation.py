"""``petctfm experiment fratmae-ablation`` end to end on toy data with tiny ViTs: the planned rows, results
files with Dice / IoU CIs, Wilcoxon against no pretraining and staging, resume without retraining, and a
changed setting refused."""

from __future__ import annotations

import csv

import pytest

from petctfm.cli.main import main
from petctfm.data import format as fmt
from petctfm.experiments.fratmae_ablation.plan import build_plan
from petctfm.io.atomic import atomic_write_json
from toy_data import write_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("ablation"), n_cases=8, shape=(32, 32, 48))
    ids = [f"toy{i:03d}" for i in range(8)]
    atomic_write_json(root / fmt.SPLITS_JSON, {"train": ids[:5], "val": ids[5:6], "test": ids[6:],
                                               "fractions": {"20": ids[:1], "40": ids[:2], "100": ids[:5]},
                                               "kshot": {}})
    stages = ["early", "advanced"] * 4
    (root / fmt.MANIFEST_CSV).write_text("case_id,split,site,stage\n" + "".join(
        f"{c},x,toy,{s}\n" for c, s in zip(ids, stages)))
    return root


def test_plan_rows():
    plan = build_plan(20, [40, 100], [0, 1])
    ft = {(p.arm, p.fraction) for p in plan if p.kind == "finetune"}
    assert ft == {(a, 20.0) for a in ("scratch", "mae", "mae+ca", "fratmae-noca", "fratmae", "scratch-axial")} | {
        (a, f) for a in ("scratch", "fratmae") for f in (40.0, 100.0)}
    assert [p.name for p in plan if p.kind == "pretrain"] == [
        "pretrain_mae", "pretrain_mae_ca", "pretrain_fratmae-noca", "pretrain_fratmae"]
    assert len([p for p in plan if p.kind == "finetune"]) == 10 * 2 and len([p for p in plan if p.kind == "stage"]) == 10
    axial = next(p for p in plan if p.arm == "scratch-axial")
    assert axial.stack == "axial" and axial.pretrain is None


@pytest.mark.slow
def test_ablation_runs_reports_and_resumes(toy, tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "fratmae-ablation", "--data", str(toy), "--out", str(out), "--preset", "tiny",
            "--fraction", "20", "--more-fractions", "100", "--max-steps", "1", "--set", "train.figure_every=0",
            "--pretrain-set", "train.figure_every=0", "--stage-epochs", "5", "--bootstrap", "20", "--no-progress"]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["arm"], r["fraction"]) for r in rows] == [
        ("scratch", "20"), ("mae", "20"), ("mae+ca", "20"), ("fratmae-noca", "20"), ("fratmae", "20"),
        ("scratch-axial", "20"), ("scratch", "100"), ("fratmae", "100")]
    for r in rows:
        assert r["n_test_cases"] == "2" and 0.0 <= float(r["iou"]) <= float(r["dice"]) + 1e-9 <= 1.0 + 1e-9
        assert float(r["dice_ci_low"]) <= float(r["dice"]) <= float(r["dice_ci_high"])
    assert rows[0]["wilcoxon_p_vs_scratch"] == "" and rows[1]["dice_diff_vs_scratch"] != ""
    assert rows[0]["n_train_cases"] == "1" and rows[6]["n_train_cases"] == "5"
    assert all(r["stage_sensitivity_macro"] != "" for r in rows[:5]) and rows[5]["stage_accuracy"] == ""
    md = (out / "results.md").read_text()
    assert "Table 3" in md and "Table 2" in md and "FratMAE w/o ContextAlign" in md and "Incomplete" not in md
    assert (out / "fratmae_ablation.png").stat().st_size > 1000
    from petctfm.train.config import saved_run_configs

    assert saved_run_configs(out / "finetune_scratch-axial_f20_s0")[0]["data"]["stack"] == "axial"
    assert saved_run_configs(out / "finetune_fratmae_f20_s0")[0]["init"]["source"].startswith(str(out / "pretrain_fratmae"))
    # resume: nothing is retrained
    before = (out / "finetune_fratmae_f20_s0" / "done.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "(0 run now)" in capsys.readouterr().out
    assert (out / "finetune_fratmae_f20_s0" / "done.json").stat().st_mtime_ns == before
    # a killed run (no done.json) is redone, the others are kept
    (out / "stage_fratmae_s0" / "done.json").unlink()
    assert main(argv) == 0
    assert "(1 run now)" in capsys.readouterr().out
    # other settings in the same folder: one-line error
    assert main([*argv[:-1], "--max-steps", "2", "--no-progress"]) == 3
    assert "other settings" in capsys.readouterr().err
