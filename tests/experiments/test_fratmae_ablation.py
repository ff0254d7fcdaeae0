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
    assert len([p for p in plan if p.kind == "finetune"]) == 10 * 2 and len([p for p in plan if p.kind == "stage"]) == 12
    axial = next(p for p in plan if p.arm == "scratch-axial")
    assert axial.stack == "axial" and axial.pretrain is None
    stage_axial = next(p for p in plan if p.kind == "stage" and p.arm == "scratch-axial")  # Table 2's staging row
    assert stage_axial.stack == "axial" and stage_axial.variant is None and stage_axial.pretrain == "pretrain_fratmae"


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
    assert all(r["stage_sensitivity_macro"] != "" for r in rows[:6]) and rows[6]["stage_accuracy"] == ""
    md = (out / "results.md").read_text()
    assert "Table 3" in md and "Table 2" in md and "FratMAE w/o ContextAlign" in md and "Incomplete" not in md
    assert "frozen-encoder features" in md
    from petctfm.train.checkpoint import read_weights

    assert read_weights(out / "init_axial" / "model.safetensors")[1]["data"]["stack"] == "axial"
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


@pytest.mark.slow
def test_ablation_with_the_papers_fine_tuned_staging(toy, tmp_path):
    """``--stage-mode finetune``: every staging row (Table 3's five and Table 2's axial one) fine-tunes end to
    end on the stored fraction; a fraction without both stages is skipped with a note."""
    out = tmp_path / "exp_ft"
    base = ["experiment", "fratmae-ablation", "--data", str(toy), "--preset", "tiny", "--fraction", "20",
            "--more-fractions", "none", "--seeds", "0", "--max-steps", "1", "--set", "train.figure_every=0",
            "--pretrain-set", "train.figure_every=0", "--stage-epochs", "2", "--bootstrap", "10",
            "--stage-mode", "finetune", "--no-progress"]
    assert main([*base, "--out", str(out), "--stage-fraction", "100"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["arm"] for r in rows] == ["scratch", "mae", "mae+ca", "fratmae-noca", "fratmae", "scratch-axial"]
    assert all(r["stage_sensitivity_macro"] != "" and r["stage_n_test"] == "2" for r in rows)
    import json

    m = json.loads((out / "stage_scratch-axial_s0" / "metrics.json").read_text())
    assert m["stack"]["stack"] == "axial" and m["n_train"] == 5 and m["training"]["epochs_run"] == 2
    assert "the paper's fine-tuning" in (out / "results.md").read_text()
    # 20 % = one case: staging cannot train, so it is skipped and the results say why
    assert main([*base, "--out", str(tmp_path / "exp_20")]) == 0
    md = (tmp_path / "exp_20" / "results.md").read_text()
    assert "staging skipped" in md and not list((tmp_path / "exp_20").glob("stage_*"))
