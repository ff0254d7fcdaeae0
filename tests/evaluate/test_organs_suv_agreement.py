"""SUVmean from predicted organs against the truth (``evaluate --organs``): hand-computed relative errors, the
ground-truth lesion voxels left out of both means, sources without SUV, the summary's median / within-5 %
fraction and the pooled value over the target organs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.core.labels import ORGAN_LABELS
from petctfm.evaluate import organs as O
from petctfm.predict.split import write_label_nifti

LIVER, SPLEEN = ORGAN_LABELS["liver"], ORGAN_LABELS["spleen"]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
CLASSES = {"liver": LIVER, "spleen": SPLEEN}


def _case():
    """True liver x in {1, 2} (SUV 2 and 4: mean 3), predicted liver x in {2, 3} (SUV 4 and 1: mean 2.5);
    a 2-voxel lesion in the liver at x = 2 (in both maps)."""
    suv = np.ones((6, 6, 6), np.float32)
    suv[1], suv[2] = 2.0, 4.0
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1:3, 1:5, 1:5] = LIVER
    pred = np.zeros_like(gt)
    pred[2:4, 1:5, 1:5] = LIVER
    lesion = np.zeros(gt.shape, bool)
    lesion[2, 1, 1:3] = True
    return suv, pred, gt, lesion


def test_partial_miss_gives_the_hand_computed_relative_error():
    suv, pred, gt, _ = _case()
    m = O.organ_suv_agreement(suv, pred, gt, None, CLASSES, (2, 2, 2))
    assert m["liver"]["suv_mean_true"] == pytest.approx(3.0)  # 16 x 2 + 16 x 4 over 32
    assert m["liver"]["suv_mean_pred"] == pytest.approx(2.5)  # 16 x 4 + 16 x 1 over 32
    assert m["liver"]["suv_mean_rel_err"] == pytest.approx(-1 / 6)
    # absent from both: NaN everywhere; the truth's mean is the readout's suv_mean
    assert all(math.isnan(v) for v in m["spleen"].values())
    readout = {r["organ"]: r for r in O.organ_readout(suv, gt, None, (2, 2, 2), labels=CLASSES, references=False)}
    assert m["liver"]["suv_mean_true"] == readout["liver"]["suv_mean"]


def test_lesion_voxels_are_left_out_of_both_means():
    suv, pred, gt, lesion = _case()
    suv[lesion] = 50.0
    m = O.organ_suv_agreement(suv, pred, gt, lesion, CLASSES, (2, 2, 2))["liver"]
    assert m["suv_mean_true"] == pytest.approx(88 / 30)  # 16 x 2 + 14 x 4 over 30
    assert m["suv_mean_pred"] == pytest.approx(72 / 30)  # 14 x 4 + 16 x 1 over 30
    assert m["suv_mean_rel_err"] == pytest.approx(-2 / 11)
    suv[lesion] = 5000.0  # the lesion's uptake changes nothing
    assert O.organ_suv_agreement(suv, pred, gt, lesion, CLASSES, (2, 2, 2))["liver"] == m
    # without the lesion mask the hot voxels would count
    assert O.organ_suv_agreement(suv, pred, gt, None, CLASSES, (2, 2, 2))["liver"]["suv_mean_true"] > 100


def test_missed_organ_and_false_positive_are_undefined():
    suv, _, gt, _ = _case()
    empty = np.zeros_like(gt)
    m = O.organ_suv_agreement(suv, empty, gt, None, CLASSES, (2, 2, 2))["liver"]
    assert m["suv_mean_true"] == pytest.approx(3.0) and math.isnan(m["suv_mean_pred"])
    assert math.isnan(m["suv_mean_rel_err"])
    fp = O.organ_suv_agreement(suv, gt, empty, None, CLASSES, (2, 2, 2))["liver"]
    assert math.isnan(fp["suv_mean_true"]) and math.isnan(fp["suv_mean_rel_err"])


def _entry(rel, true=2.0):
    return {"dice": 0.9, "nsd": 0.5, "suv_mean_true": true,
            "suv_mean_pred": true * (1 + rel) if rel == rel else float("nan"), "suv_mean_rel_err": rel}


NAN = float("nan")


def test_summary_median_ci_and_within_5_percent_fraction():
    rels = [0.01, -0.04, 0.06, -0.2, NAN]  # the last: truth defined, organ missed by the prediction
    per_case = {f"c{i}": {"liver": _entry(r), "bone": _entry(0.5)} for i, r in enumerate(rels)}
    per_case["c5"] = {"liver": _entry(NAN, true=NAN), "bone": _entry(0.5)}  # no liver in the truth: left out
    row = {r["organ"]: r for r in O.organ_summary(per_case, n_resamples=500)}["liver"]
    assert row["n_suv"] == 5 and row["n_suv_missed"] == 1
    assert row["suv_within_5pct"] == pytest.approx(2 / 5)  # 0.01 and 0.04; the missed organ counts as outside
    assert row["suv_abs_rel_err_median"] == pytest.approx(0.05)  # median of 0.01, 0.04, 0.06, 0.2
    assert row["suv_abs_rel_err_ci_low"] <= 0.05 <= row["suv_abs_rel_err_ci_high"]
    assert row["dice_mean"] == pytest.approx(0.9)  # the Dice columns are unchanged
    # pooled over the target organs only (bone is not one), cases resampled with all their organs
    per_case["c0"]["spleen"] = _entry(0.03)
    pooled = O.organ_suv_pooled(per_case, n_resamples=500)
    assert pooled["organs"] == ["liver", "spleen"]
    assert pooled["n_suv"] == 6 and pooled["n_suv_missed"] == 1
    assert pooled["suv_abs_rel_err_median"] == pytest.approx(0.04)  # 0.01, 0.03, 0.04, 0.06, 0.2
    assert pooled["suv_within_5pct"] == pytest.approx(3 / 6)
    assert pooled["suv_abs_rel_err_ci_low"] <= 0.04 <= pooled["suv_abs_rel_err_ci_high"]


def test_summary_without_suv_keys_is_empty_not_an_error():
    per_case = {"a": {"liver": {"dice": 1.0, "nsd": 1.0}}, "b": {"liver": {"dice": 0.5, "nsd": 0.4}}}
    row = O.organ_summary(per_case, n_resamples=100)[0]
    assert row["n_suv"] == 0 and row["n_suv_missed"] == 0
    assert all(math.isnan(row[k]) for k in ("suv_abs_rel_err_median", "suv_abs_rel_err_ci_low", "suv_within_5pct"))
    pooled = O.organ_suv_pooled(per_case, n_resamples=100)
    assert pooled["n_suv"] == 0 and math.isnan(pooled["suv_abs_rel_err_median"])


def _write(path, arr):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr, np.float32), AFFINE), str(path))


def _rows(path):
    return list(csv.DictReader(open(path, newline="")))


def _evaluate(tmp_path, pred):
    """``pred`` as c1's prediction, then ``petctfm evaluate --organs`` against ``tmp_path/gt``; the report folder."""
    write_label_nifti(pred, AFFINE, tmp_path / "pred" / "c1.nii.gz")
    out = tmp_path / "rep"
    out.mkdir()
    assert main(["evaluate", "--organs", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(out), "--bootstrap", "100"]) == 0
    return out


def test_autopet_folder_with_suv_and_seg_through_the_cli(tmp_path, capsys):
    suv, pred, gt, lesion = _case()
    suv[lesion] = 50.0
    _write(tmp_path / "gt" / "c1" / "ORGANS.nii.gz", gt)
    _write(tmp_path / "gt" / "c1" / "SUV.nii.gz", suv)
    _write(tmp_path / "gt" / "c1" / "SEG.nii.gz", lesion)
    out = _evaluate(tmp_path, pred)
    per = {r["organ"]: r for r in _rows(out / "organs_per_case.csv")}
    assert list(per["liver"])[:4] == ["case_id", "organ", "dice", "nsd"]  # old columns first, in order
    assert float(per["liver"]["suv_mean_true"]) == pytest.approx(88 / 30, abs=1e-4)
    assert float(per["liver"]["suv_mean_pred"]) == pytest.approx(72 / 30, abs=1e-4)
    assert float(per["liver"]["suv_mean_rel_err"]) == pytest.approx(-2 / 11, abs=1e-4)
    assert per["spleen"]["suv_mean_true"] == ""
    summary = _rows(out / "organs_summary.csv")
    assert list(summary[0])[:9] == ["organ", "n_dice", "dice_mean", "dice_ci_low", "dice_ci_high", "n_nsd",
                                    "nsd_mean", "nsd_ci_low", "nsd_ci_high"]
    liver = {r["organ"]: r for r in summary}["liver"]
    assert liver["n_suv"] == "1" and float(liver["suv_abs_rel_err_median"]) == pytest.approx(2 / 11, abs=1e-4)
    assert float(liver["suv_within_5pct"]) == 0.0
    assert summary[-1]["organ"] == "target_organs_pooled" and summary[-1]["dice_mean"] == ""
    assert float(summary[-1]["suv_abs_rel_err_median"]) == pytest.approx(2 / 11, abs=1e-4)
    md = (out / "organs_summary.md").read_text()
    assert "SUVmean from the predicted organs" in md and "| liver | 1 | 0 | 0.182 |" in md
    assert "median |rel err| 0.182" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["plain", "autopet_without_suv"])
def test_ground_truth_without_suv_leaves_the_columns_empty(tmp_path, layout):
    _, pred, gt, _ = _case()
    target = tmp_path / "gt" / ("c1.nii.gz" if layout == "plain" else "c1/ORGANS.nii.gz")
    write_label_nifti(gt, AFFINE, target)
    out = _evaluate(tmp_path, pred)
    per = {r["organ"]: r for r in _rows(out / "organs_per_case.csv")}
    assert float(per["liver"]["dice"]) == pytest.approx(0.5)
    assert per["liver"]["suv_mean_true"] == per["liver"]["suv_mean_rel_err"] == ""
    summary = {r["organ"]: r for r in _rows(out / "organs_summary.csv")}
    assert summary["liver"]["n_suv"] == "0" and summary["liver"]["suv_abs_rel_err_median"] == ""
    assert summary["target_organs_pooled"]["n_suv"] == "0"
    assert "no SUV image" in (out / "organs_summary.md").read_text()
