"""The organ readout (organs.csv) and the per-organ metrics of petctfm.evaluate.organs, on hand-built volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petctfm.core.labels import ORGAN_LABELS
from petctfm.evaluate import organs as O

L = ORGAN_LABELS


def test_janmahasatian_lean_body_mass_by_hand():
    # 80 kg, 180 cm: BMI = 80 / 1.8^2 = 24.691...; male 9270*80 / (6680 + 216*BMI)
    bmi = 80 / 1.8 ** 2
    assert O.lean_body_mass(80, 180, "M") == pytest.approx(9270 * 80 / (6680 + 216 * bmi))
    assert O.lean_body_mass(80, 180, "female") == pytest.approx(9270 * 80 / (8780 + 244 * bmi))
    assert O.lean_body_mass(80, 180, "M") == pytest.approx(61.73, abs=0.01)  # 741600 / 12013.3
    for bad in ((None, 180, "M"), (80, None, "M"), (80, 180, None), (80, 180, "x"), (-1, 180, "F")):
        assert math.isnan(O.lean_body_mass(*bad))


def _two_organs():
    """A 10x10x10 grid, 2 mm voxels: a 4x4x4 'spleen' of SUV 2 (64 voxels) with one lesion voxel of SUV 30,
    and a 2x2x2 'kidney_left' split SUV 1 / SUV 3 (4 voxels each)."""
    suv = np.zeros((10, 10, 10), np.float32)
    org = np.zeros((10, 10, 10), np.uint8)
    les = np.zeros((10, 10, 10), np.uint8)
    org[1:5, 1:5, 1:5] = L["spleen"]
    suv[1:5, 1:5, 1:5] = 2.0
    suv[2, 2, 2] = 30.0
    les[2, 2, 2] = 1
    org[7:9, 7:9, 7:9] = L["kidney_left"]
    suv[7:9, 7:9, 7] = 1.0
    suv[7:9, 7:9, 8] = 3.0
    return suv, org, les


def test_organ_rows_match_hand_computation_and_exclude_lesion_voxels():
    suv, org, les = _two_organs()
    rows = O.organ_readout(suv, org, les, (2.0, 2.0, 2.0), weight_kg=80, height_cm=180, sex="M", references=False)
    by = {r["organ"]: r for r in rows}
    assert list(by) == ["spleen", "kidney_left"]  # label order, only organs present
    s = by["spleen"]
    assert s["n_voxels"] == 64 and s["volume_ml"] == pytest.approx(64 * 8 / 1000)  # lesion voxel in the volume
    assert s["excluded_lesion_ml"] == pytest.approx(8 / 1000)
    # the SUV-30 lesion voxel is excluded: every remaining voxel is 2
    assert s["suv_mean"] == pytest.approx(2.0) and s["suv_max"] == pytest.approx(2.0)
    assert s["suv_median"] == pytest.approx(2.0) and s["suv_sd"] == pytest.approx(0.0)
    assert s["suv_peak"] == pytest.approx(2.0)
    k = by["kidney_left"]
    assert k["n_voxels"] == 8 and k["volume_ml"] == pytest.approx(0.064)
    assert k["suv_mean"] == pytest.approx(2.0) and k["suv_median"] == pytest.approx(2.0)
    assert k["suv_max"] == pytest.approx(3.0)
    assert k["suv_sd"] == pytest.approx(np.std([1] * 4 + [3] * 4, ddof=1))
    # no 1 ml sphere (radius 6.2 mm) fits in 4 x 4 x 4 mm: the clipped sphere at any voxel holds all 8 -> 2.0
    assert k["suv_peak"] == pytest.approx(2.0)
    lbm = O.lean_body_mass(80, 180, "M")
    assert k["sul_mean"] == pytest.approx(2.0 * lbm / 80)
    # without the lesion mask the lesion voxel counts
    plain = {r["organ"]: r for r in O.organ_readout(suv, org, None, (2, 2, 2), references=False)}
    assert plain["spleen"]["suv_max"] == pytest.approx(30.0)
    assert plain["spleen"]["suv_mean"] == pytest.approx((63 * 2 + 30) / 64)
    assert math.isnan(plain["spleen"]["sul_mean"])  # weight / height / sex unknown


def test_suv_peak_is_the_best_full_sphere_mean():
    # a 20^3 organ, 2 mm voxels, SUV 1 except a hot 5^3 cube of SUV 5 in a corner of the organ
    suv = np.ones((24, 24, 24), np.float32)
    org = np.zeros(suv.shape, np.uint8)
    org[2:22, 2:22, 2:22] = L["liver"]
    suv[2:7, 2:7, 2:7] = 5.0
    row = O.organ_readout(suv, org, None, (2, 2, 2), references=False)[0]
    k = O.sphere_kernel((2, 2, 2), O.SPHERE_1ML_RADIUS_MM)
    h = k.shape[0] // 2
    inside = np.zeros(suv.shape, bool)
    inside[2:22, 2:22, 2:22] = True
    best = 0.0
    for c in np.argwhere(inside):  # brute force over centres whose sphere lies fully in the organ
        box = tuple(slice(int(i) - h, int(i) + h + 1) for i in c)
        if min(b.start for b in box) < 0 or max(b.stop for b in box) > 24 or not inside[box][k].all():
            continue
        best = max(best, float(suv[box][k].mean()))
    assert row["suv_peak"] == pytest.approx(best, rel=1e-6)
    assert 1.0 < row["suv_peak"] < 5.0


def _liver_case(lesion_at=None):
    """A 120 x 100 x 80 mm box liver (4 mm voxels) in a 40 x 35 x 30 grid; patient right = high x (RAS +x)."""
    org = np.zeros((40, 35, 30), np.uint8)
    org[5:35, 5:30, 5:25] = L["liver"]
    les = np.zeros(org.shape, np.uint8)
    if lesion_at is not None:
        x, y, z = lesion_at
        les[x - 1:x + 2, y - 1:y + 2, z - 1:z + 2] = 1
    return org, les


@pytest.mark.parametrize("lesion_at", [None, (25, 17, 15), (20, 17, 15)])
def test_liver_sphere_avoids_lesions_and_edges_in_the_right_lobe(lesion_at):
    sp = np.array([4.0, 4.0, 4.0])
    org, les = _liver_case(lesion_at)
    sphere, note = O.liver_reference_sphere(org == L["liver"], les, sp)
    assert sphere is not None, note
    # 3 cm diameter: every voxel centre within 15 mm of the centre; about (4/3) pi 15^3 mm^3 of voxels
    assert abs(sphere.sum() * 64 - 4 / 3 * math.pi * 15 ** 3) < 0.25 * 4 / 3 * math.pi * 15 ** 3
    # fully inside the liver eroded by the 5 mm edge margin: distance to the outside > 5 mm for every voxel
    from scipy.ndimage import distance_transform_edt

    deep = distance_transform_edt(np.pad(org == L["liver"], 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    assert deep[sphere].min() > 5.0
    if les.any():
        d_les = distance_transform_edt(les == 0, sampling=sp)
        assert d_les[sphere].min() >= 10.0  # lesion margin
    centre = np.argwhere(sphere).mean(axis=0)
    assert centre[0] > np.argwhere(org == L["liver"]).mean(axis=0)[0]  # patient's right (RAS: +x, high index)
    # with an LPS-style affine (x axis flipped) the right lobe is the low-index half
    aff = np.diag([-4.0, 4.0, 4.0, 1.0])
    sphere2, _ = O.liver_reference_sphere(org == L["liver"], les, affine=aff)
    assert np.argwhere(sphere2).mean(axis=0)[0] < np.argwhere(org == L["liver"]).mean(axis=0)[0]


def test_liver_sphere_none_when_it_cannot_fit():
    org = np.zeros((20, 20, 20), np.uint8)
    org[5:12, 5:12, 5:12] = L["liver"]  # 28 mm cube at 4 mm: no 30 mm sphere + margin fits
    sphere, note = O.liver_reference_sphere(org == L["liver"], None, (4, 4, 4))
    assert sphere is None and "no 3 cm sphere" in note
    rows = O.organ_readout(np.ones(org.shape), org, None, (4, 4, 4))
    ref = [r for r in rows if r["organ"] == O.LIVER_REFERENCE][0]
    assert ref["n_voxels"] == 0 and math.isnan(ref["suv_mean"]) and "no 3 cm sphere" in ref["note"]


def test_blood_pool_in_the_descending_aorta_away_from_lesions():
    # RAS grid, 2 mm: lungs span z 10..49; ascending aorta anterior (y 30..34) z 20..34, descending posterior
    # (y 8..12) z 5..54 beside the 'spine'; SUV 1.8 in the descending, 3.0 in the ascending
    shape = (30, 40, 60)
    org = np.zeros(shape, np.uint8)
    suv = np.zeros(shape, np.float32)
    org[2:8, 5:35, 10:50] = L["lung_right"]
    org[22:28, 5:35, 10:50] = L["lung_left"]
    org[13:18, 30:35, 20:35] = L["aorta"]
    suv[13:18, 30:35, 20:35] = 3.0
    org[13:18, 8:13, 5:55] = L["aorta"]
    suv[13:18, 8:13, 5:55] = 1.8
    les = np.zeros(shape, np.uint8)
    les[15, 10, 28:31] = 1  # a lesion in the descending aorta, near the middle of the thoracic run
    suv[15, 10, 28:31] = 12.0
    roi, note = O.blood_pool_roi(org == L["aorta"], np.isin(org, [L["lung_left"], L["lung_right"]]), les, (2, 2, 2))
    assert roi is not None, note
    idx = np.argwhere(roi)
    assert (idx[:, 1] < 13).all()  # posterior tube only
    assert idx[:, 2].min() >= 10 and idx[:, 2].max() < 50  # within the lungs' span
    assert (idx[:, 2].max() - idx[:, 2].min() + 1) * 2 <= 22  # ~2 cm long
    from scipy.ndimage import distance_transform_edt

    assert distance_transform_edt(les == 0, sampling=(2, 2, 2))[roi].min() > 10.0
    rows = {r["organ"]: r for r in O.organ_readout(suv, org, les, (2, 2, 2))}
    assert rows[O.BLOOD_POOL_REFERENCE]["suv_mean"] == pytest.approx(1.8)
    assert rows[O.BLOOD_POOL_REFERENCE]["kind"] == "reference"
    # the aorta organ row excludes the lesion voxels: a mix of 1.8 and 3.0 only
    assert rows["aorta"]["suv_max"] == pytest.approx(3.0)


def test_organ_metrics_follow_nnunet_for_absent_classes():
    classes = {"liver": 1, "spleen": 2, "heart": 5}
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    pred = gt.copy()
    pred[2:6, 2:6, 2:4] = 0  # half the liver
    pred[8:10, 8:10, 8:10] = 2  # a spleen absent from the ground truth
    m = O.organ_case_metrics(pred, gt, classes, (1, 1, 1), nsd_tolerance_mm=1.0)
    assert m["liver"]["dice"] == pytest.approx(2 * 32 / (32 + 64))
    assert m["spleen"]["dice"] == 0.0 and m["spleen"]["nsd"] == 0.0  # only in the prediction -> 0
    assert math.isnan(m["heart"]["dice"]) and math.isnan(m["heart"]["nsd"])  # in neither -> NaN
    assert 0.0 < m["liver"]["nsd"] < 1.0
    perfect = O.organ_case_metrics(gt, gt, classes, (1, 1, 1))
    assert perfect["liver"]["dice"] == 1.0 and perfect["liver"]["nsd"] == 1.0
    summ = {r["organ"]: r for r in O.organ_summary({"a": m, "b": perfect}, n_resamples=200)}
    assert summ["liver"]["dice_mean"] == pytest.approx((m["liver"]["dice"] + 1) / 2)
    assert summ["liver"]["dice_ci_low"] <= summ["liver"]["dice_mean"] <= summ["liver"]["dice_ci_high"]
    assert summ["heart"]["n_dice"] == 0 and math.isnan(summ["heart"]["dice_mean"])
    assert summ["spleen"]["n_dice"] == 1  # the perfect case has no spleen anywhere: left out
