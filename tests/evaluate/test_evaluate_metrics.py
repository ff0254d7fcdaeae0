"""Per-case metrics against hand-computed toy volumes (spacing 2 x 2 x 3 mm -> 0.012 ml per voxel)."""

import math

import numpy as np
import pytest

from petctfm.evaluate.metrics import CASE_METRICS, case_metrics, voxel_overlap

SPACING = (2.0, 2.0, 3.0)
VOX = 0.012  # ml


def vol(shape=(16, 16, 16)):
    return np.zeros(shape, dtype=np.uint8)


def test_known_overlap_voxel_metrics_and_tmtv():
    gt, pred = vol(), vol()
    gt[2:6, 2:6, 2:4] = 1  # 4*4*2 = 32 voxels
    pred[3:7, 2:6, 2:5] = 1  # 4*4*3 = 48 voxels; overlap 3*4*2 = 24
    m = case_metrics(pred, gt, SPACING)
    assert m["dice"] == pytest.approx(2 * 24 / (32 + 48))  # 0.6
    assert m["iou"] == pytest.approx(24 / 56)
    assert m["sensitivity"] == pytest.approx(24 / 32)
    assert m["precision"] == pytest.approx(24 / 48)
    assert m["fp_volume_ml"] == 0 and m["fn_volume_ml"] == 0
    assert m["gt_tmtv_ml"] == pytest.approx(32 * VOX)
    assert m["pred_tmtv_ml"] == pytest.approx(48 * VOX)
    assert m["tmtv_error_ml"] == pytest.approx(16 * VOX)
    assert m["tmtv_abs_error_ml"] == pytest.approx(16 * VOX)
    assert m["tmtv_rel_error"] == pytest.approx(0.5)
    assert m["voxel_volume_ml"] == pytest.approx(VOX)
    assert m["negative"] is False
    assert list(m) == CASE_METRICS
    assert math.isnan(m["gt_tlg"])  # no SUV given


def test_voxel_counts_exact_beyond_uint8():
    gt, pred = vol((30, 30, 30)), vol((30, 30, 30))
    gt[:20] = 1  # 18000 voxels
    pred[10:] = 1  # 18000 voxels, overlap 9000
    m = voxel_overlap(pred, gt)
    assert m["dice"] == pytest.approx(0.5) and m["iou"] == pytest.approx(1 / 3, rel=1e-12)
    # bool inputs give the same (MONAI's own confusion matrix miscounts bool tensors)
    assert voxel_overlap(pred.astype(bool), gt.astype(bool)) == m


def test_missed_lesion_false_positive_blob_and_lesionwise():
    gt, pred = vol(), vol()
    gt[2:6, 2:6, 2:4] = 1  # lesion A, 32 voxels
    gt[10:12, 10:12, 10:13] = 1  # lesion B, 12 voxels, missed
    pred[3:6, 2:6, 2:4] = 1  # hits A (24 voxels)
    pred[14:16, 0:2, 0:1] = 1  # FP blob, 4 voxels, far from any lesion
    m = case_metrics(pred, gt, SPACING)
    assert m["fn_volume_ml"] == pytest.approx(12 * VOX)  # 0.144 ml
    assert m["fp_volume_ml"] == pytest.approx(4 * VOX)  # 0.048 ml
    assert (m["n_gt_lesions"], m["n_pred_lesions"], m["n_detected"], m["n_fp_lesions"]) == (2, 2, 1, 1)
    assert m["lesion_recall"] == pytest.approx(0.5)
    assert m["lesion_precision"] == pytest.approx(0.5)
    assert m["lesion_f1"] == pytest.approx(0.5)
    assert m["dice"] == pytest.approx(2 * 24 / (44 + 28))


def test_partial_overlap_is_not_fp_or_fn_volume():
    """autoPET counts whole components: a component touching the other mask adds nothing to FP/FN volume."""
    gt, pred = vol(), vol()
    gt[2:8, 2:8, 2:8] = 1
    pred[7:12, 7:12, 7:12] = 1  # shares one voxel corner-cube (7,7,7) with gt
    m = case_metrics(pred, gt, SPACING)
    assert m["fp_volume_ml"] == 0 and m["fn_volume_ml"] == 0
    assert m["lesion_recall"] == 1 and m["lesion_precision"] == 1


def test_detection_iou_threshold():
    gt, pred = vol(), vol()
    gt[2:5, 2:5, 2:5] = 1  # 27 voxels
    pred[2, 2, 2] = 1  # IoU 1/27 = 0.037
    loose = case_metrics(pred, gt, SPACING, detection_iou=0.0)
    strict = case_metrics(pred, gt, SPACING, detection_iou=0.1)
    assert loose["lesion_recall"] == 1 and loose["lesion_precision"] == 1
    assert strict["lesion_recall"] == 0 and strict["lesion_precision"] == 0 and strict["lesion_f1"] == 0
    assert strict["n_fp_lesions"] == 1
    # the autoPET volumes do not depend on the detection rule
    assert strict["fn_volume_ml"] == loose["fn_volume_ml"] == 0


def test_empty_ground_truth_autopet_convention():
    gt, pred = vol(), vol()
    pred[1:2, 1:2, 1:6] = 1  # 5 voxels
    m = case_metrics(pred, gt, SPACING)
    assert math.isnan(m["dice"]) and math.isnan(m["iou"]) and math.isnan(m["sensitivity"])
    assert m["precision"] == 0.0
    assert m["fp_volume_ml"] == pytest.approx(5 * VOX)
    assert m["fn_volume_ml"] == 0
    assert math.isnan(m["lesion_recall"]) and m["lesion_precision"] == 0 and math.isnan(m["lesion_f1"])
    assert m["negative"] is True and math.isnan(m["tmtv_rel_error"])
    both_empty = case_metrics(vol(), vol(), SPACING)
    assert math.isnan(both_empty["dice"]) and math.isnan(both_empty["precision"])
    assert both_empty["fp_volume_ml"] == 0


def test_empty_prediction_on_positive_case():
    gt = vol()
    gt[2:4, 2:4, 2:4] = 1
    m = case_metrics(vol(), gt, SPACING)
    assert m["dice"] == 0 and m["sensitivity"] == 0 and math.isnan(m["precision"])
    assert m["fn_volume_ml"] == pytest.approx(8 * VOX)
    assert m["lesion_recall"] == 0 and math.isnan(m["lesion_precision"]) and m["lesion_f1"] == 0


def test_connectivity_6_18_26_on_diagonal_touching_voxels():
    gt, pred = vol(), vol()
    gt[1, 1, 1] = 1
    pred[1, 1, 1] = 1
    pred[2, 2, 1] = 1  # edge-neighbour of (1,1,1): joined under 18 and 26, separate under 6
    pred[3, 3, 2] = 1  # corner-neighbour of (2,2,1): joined only under 26
    fp = {c: case_metrics(pred, gt, SPACING, connectivity=c)["fp_volume_ml"] / VOX for c in (6, 18, 26)}
    assert fp[6] == pytest.approx(2) and fp[18] == pytest.approx(1) and fp[26] == pytest.approx(0)
    n_pred = {c: case_metrics(pred, gt, SPACING, connectivity=c)["n_pred_lesions"] for c in (6, 18, 26)}
    assert n_pred == {6: 3, 18: 2, 26: 1}
    with pytest.raises(ValueError, match="connectivity"):
        case_metrics(pred, gt, SPACING, connectivity=8)


def test_tlg_from_suv():
    gt, pred = vol(), vol()
    gt[2:4, 2:4, 2:4] = 1  # 8 voxels
    pred[2:4, 2:4, 2:5] = 1  # 12 voxels: gt + one extra slab of 4
    suv = np.ones(gt.shape, dtype=np.float32)
    suv[2:4, 2:4, 2:4] = 5.0
    m = case_metrics(pred, gt, SPACING, suv=suv)
    gt_tlg = 8 * 5.0 * VOX  # SUVmean 5 x 0.096 ml
    pred_tlg = (8 * 5.0 + 4 * 1.0) * VOX
    assert m["gt_tlg"] == pytest.approx(gt_tlg)
    assert m["pred_tlg"] == pytest.approx(pred_tlg)
    assert m["tlg_error"] == pytest.approx(pred_tlg - gt_tlg)
    assert m["tlg_rel_error"] == pytest.approx((pred_tlg - gt_tlg) / gt_tlg)
    with pytest.raises(ValueError, match="SUV shape"):
        case_metrics(pred, gt, SPACING, suv=suv[:-1])


def autopet_reference(gt, pred, vox_ml):
    """The autoPET challenge's compute_metrics (FP/FN volume, Dice), transcribed loop for loop."""
    import cc3d

    pred_cc = cc3d.connected_components(pred, connectivity=18)
    fp = sum(int((pred_cc == i).sum()) for i in range(1, pred_cc.max() + 1) if ((pred_cc == i) * gt).sum() == 0)
    gt_cc = cc3d.connected_components(gt, connectivity=18)
    fn = sum(int((gt_cc == i).sum()) for i in range(1, gt_cc.max() + 1) if ((gt_cc == i) * pred).sum() == 0)
    dice = 2 * (gt * pred).sum() / (gt.sum() + pred.sum())
    return fp * vox_ml, fn * vox_ml, dice


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_autopet_reference_on_random_blobs(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    gt = (ndimage.gaussian_filter(rng.random((20, 20, 14)), 1.2) > 0.56).astype(np.uint8)
    pred = (ndimage.gaussian_filter(rng.random((20, 20, 14)), 1.2) > 0.56).astype(np.uint8) | np.roll(gt, 2, 0)
    fp, fn, dice = autopet_reference(gt, pred, VOX)
    m = case_metrics(pred, gt, SPACING)
    assert m["n_gt_lesions"] > 2 and m["fp_volume_ml"] > 0 and m["fn_volume_ml"] > 0  # a non-trivial case
    assert m["fp_volume_ml"] == pytest.approx(fp) and m["fn_volume_ml"] == pytest.approx(fn)
    assert m["dice"] == pytest.approx(dice)


def test_average_precision_by_hand_ties_and_brute_force():
    from petctfm.evaluate.metrics import average_precision

    # ranks 1..4 = [lesion, bg, lesion, bg]: P@R=0.5 is 1, P@R=1 is 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # all scores tied: one threshold, precision = prevalence
    assert average_precision(np.full(4, 0.5), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert average_precision(np.array([0.9, 0.1]), np.array([1, 0])) == 1.0
    assert math.isnan(average_precision(np.array([0.3, 0.2]), np.zeros(2)))  # negative case: undefined
    # brute force over thresholds on a 3D map with many ties (bf16-like rounding)
    rng = np.random.default_rng(0)
    target = rng.random((6, 7, 8)) < 0.1
    scores = np.round(np.clip(target * 0.3 + rng.random(target.shape) * 0.7, 0, 1), 2)
    ap, prev_r = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        sel = scores >= t
        p, r = (sel & target).sum() / sel.sum(), (sel & target).sum() / target.sum()
        ap += (r - prev_r) * p
        prev_r = r
    assert average_precision(scores, target) == pytest.approx(ap)
    assert target.mean() < average_precision(scores, target) < 1.0  # informative scores beat the prevalence
