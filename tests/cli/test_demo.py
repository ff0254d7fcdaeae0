"""The README's main job, end to end at tiny size: synth -> harmonize (from DICOM) -> view -> pretrain ->
fine-tune (pretrained 10%, scratch 10% and 100%) -> test predictions -> evaluation -> report."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from petctfm.cli.main import main
from petctfm.data import format as fmt


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--preset", "tiny", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report" / "README.md") in printed.replace("\n", "")

    # the harmonized dataset came from the DICOM export: every case, no identifiers in the manifest
    info = fmt.load_dataset_info(out / "dataset")
    assert info["num_cases"] == 8 and info["orientation"] == "RAS"
    manifest = (out / "dataset" / "manifest.csv").read_text()
    names = [line.split(",")[16] for line in (out / "synth" / "metadata.csv").read_text().splitlines()[1:]]
    assert names and not any(n and n in manifest for n in names)

    # pretraining ran its 30 steps, logged finite losses every 5 steps and left a checkpoint. (That the loss
    # decreases is tested in tests/pretrain on a longer run: 30 tiny steps on whole-body phantoms are noisy,
    # a patch with the bladder in it costs 10x one without.)
    rows = [json.loads(x) for x in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert (out / "pretrain" / "checkpoints" / "latest").exists()

    report = out / "report"
    text = (report / "README.md").read_text()
    assert "synthetic" in text and "| pretrain |" in text
    for png in ("pretrain_loss.png", "reconstruction.png", "site_histograms.png"):
        img = imread(report / png)
        assert img.shape[0] > 100 and np.std(img) > 0.01, png
    assert len(list(report.glob("case_*.png"))) == 3

    # fine-tuning: exactly the three demo runs, on the stored subsets, evaluated on the test split
    splits = fmt.load_splits(out / "dataset")
    assert len(splits["fractions"]["10"]) >= 1 and len(splits["test"]) >= 2
    ft = out / "finetune"
    names = ["finetune_pretrained_f10_s0", "finetune_scratch_f10_s0", "finetune_scratch_f100_s0"]
    assert sorted(p.name for p in ft.iterdir() if p.is_dir()) == sorted(names)
    for name in names:
        done = json.loads((ft / name / "done.json").read_text())
        assert done["cases"] == splits["fractions"]["10" if "f10_" in name else "100"]
        assert done["n_test_cases"] == len(splits["test"])
        assert done["train"]["steps"] == 20 and done["train"]["stopped"] == "max_steps"  # fixed steps, no time cap
        # the recipe, with the organ map the synthetic DICOM-SEG carries as auxiliary classes, and the minimum
        # lesion volume chosen on validation, carried by the best checkpoint
        cfg = yaml.safe_load((ft / name / "config.yaml").read_text())
        assert cfg["task"]["plan"]["target"] == "cpu" and cfg["task"]["task"]["aux_classes"]
        assert (out / "dataset" / "cases" / splits["train"][0] / "organs.npy").is_file()
        val = [json.loads(x) for x in (ft / name / "val.jsonl").read_text().splitlines()]
        assert val and all(set(map(float, v["dice_by_min_lesion_ml"])) == {0.0, 0.5} for v in val)
        assert done["best"] is None or done["best"]["min_lesion_ml"] in (0.0, 0.5)  # tiny val: maybe no lesion
        assert sorted(p.name for p in (ft / name / "pred_test").iterdir()) == sorted(
            f"{c}.nii.gz" for c in splits["test"])
        # the evaluation's Dice of every test case, recounted here from the written masks and the labels
        with open(ft / name / "eval_test" / "per_case.csv", newline="") as f:
            rows = {r["case_id"]: r for r in csv.DictReader(f)}
        assert sorted(rows) == sorted(splits["test"])
        for cid in splits["test"]:
            pred = np.asarray(nib.load(str(ft / name / "pred_test" / f"{cid}.nii.gz")).dataobj) > 0
            gt = np.asarray(fmt.load_case(out / "dataset", cid)["label"]) > 0
            assert pred.shape == gt.shape, (name, cid)
            if gt.any() or pred.any():
                dice = 2 * (pred & gt).sum() / (pred.sum() + gt.sum())
                assert float(rows[cid]["dice"]) == pytest.approx(dice, abs=1e-6), (name, cid)
    assert "| pretrained 10% |" in text and "| scratch 100% |" in text and "results.md" in text
    # the report says how many steps each arm ran (pretraining and the three fine-tuning runs)
    for row in ("| pretraining (early-fusion MAE) | 30 | 30 | max_steps |", "| fine-tuning pretrained 10% | 20 | 20 |",
                "| fine-tuning scratch 10% | 20 | 20 |", "| fine-tuning scratch 100% | 20 | 20 |"):
        assert row in text, row
    results = (report / "results.md").read_text()
    assert "**Synthetic data.**" in results and "--runs pretrained:10,scratch:10,scratch:100" in results
    assert "## Training steps" in results and "--max-time" not in results
    preds = sorted(report.glob("pred_*.png"))
    assert len(preds) == min(3, len(splits["test"])) and all(f"]({p.name})" in text for p in preds)
    for png in [report / "label_efficiency.png", *preds]:
        img = imread(png)
        assert img.shape[0] > 100 and np.std(img) > 0.01, png


def test_demo_fine_tunes_all_three_runs_at_once_when_it_has_workers():
    from petctfm.experiments.demo import DEMO_RUNS, finetune_jobs

    assert finetune_jobs(1) == 1  # --workers 1: one run at a time, as the tiny test above
    assert finetune_jobs(2) == finetune_jobs(8) == len(DEMO_RUNS) == 3
