"""Per-lesion table (volume, SUVmax/mean/peak, TLG, centroid, bbox) against hand computations."""

import math

import numpy as np
import pytest

from petctfm.core.errors import InputError
from petctfm.evaluate.geometry import grid_of
from petctfm.evaluate.lesions import (
    SPHERE_1ML_RADIUS_MM, label_lesions, lesion_table, sphere_kernel, suv_peak, summary,
)
from petctfm.io.images import image_from_array

SPACING = (2.0, 2.0, 3.0)
VOX = 0.012


def brute_force_peak(suv, lesion, spacing, r=SPHERE_1ML_RADIUS_MM):
    """Reference SUVpeak: for every lesion voxel, the mean of all in-image voxels within r mm; the max."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in suv.shape], indexing="ij"), -1).astype(float)
    best = -np.inf
    for c in np.argwhere(lesion):
        d2 = (((grid - c) * np.asarray(spacing)) ** 2).sum(-1)
        best = max(best, suv[d2 <= r * r].mean())
    return best


def test_sphere_is_one_ml():
    assert 4 / 3 * math.pi * SPHERE_1ML_RADIUS_MM**3 == pytest.approx(1000.0)
    k = sphere_kernel(SPACING)
    assert k.shape == (7, 7, 5)  # half-widths floor(6.2/2)=3, floor(6.2/3)=2
    assert k[3, 3, 2] and not k[0, 0, 0] and k[0, 3, 2] and k[3, 3, 0]


def test_table_values_by_hand_and_ordering():
    mask = np.zeros((10, 10, 10), np.uint8)
    suv = np.zeros(mask.shape, np.float32)
    mask[7, 7, 7] = 1  # small lesion, 1 voxel, SUV 10
    suv[7, 7, 7] = 10
    mask[1:3, 2:4, 3:5] = 1  # 2x2x2 lesion, SUV 1..8
    suv[1:3, 2:4, 3:5] = np.arange(1, 9).reshape(2, 2, 2)
    img = image_from_array(mask, SPACING, origin=(10.0, 20.0, 30.0))
    rows = lesion_table(mask, suv, img)
    assert [r["label"] for r in rows] == [1, 2]  # largest first
    big, small = rows
    assert big["n_voxels"] == 8 and big["volume_ml"] == pytest.approx(8 * VOX)
    assert big["suv_max"] == 8 and big["suv_mean"] == pytest.approx(4.5)
    assert big["tlg"] == pytest.approx(4.5 * 8 * VOX)
    # centroid index (1.5, 2.5, 3.5) -> LPS = origin + index * spacing (identity direction)
    assert (big["centroid_x_mm"], big["centroid_y_mm"], big["centroid_z_mm"]) == pytest.approx((13, 25, 40.5))
    assert [big[k] for k in ("bbox_x0", "bbox_y0", "bbox_z0", "bbox_x1", "bbox_y1", "bbox_z1")] == [1, 2, 3, 2, 3, 4]
    assert small["volume_ml"] == pytest.approx(VOX) and small["suv_max"] == 10 and small["suv_mean"] == 10
    s = summary(rows)
    assert s["lesion_count"] == 2 and s["tmtv_ml"] == pytest.approx(9 * VOX)
    assert s["total_tlg"] == pytest.approx((36 + 10) * VOX) and s["suv_max"] == 10
    empty = summary(lesion_table(np.zeros_like(mask), suv, img))
    assert empty == {"lesion_count": 0, "tmtv_ml": 0.0, "total_tlg": 0.0, "suv_max": None, "suv_peak": None}


def test_centroid_in_lps_from_sitk_direction_and_from_ras_affine():
    mask = np.zeros((6, 6, 6), np.uint8)
    mask[4, 1, 2] = 1
    direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # a RAS-stored image seen in LPS
    img = image_from_array(mask, SPACING, origin=(100.0, 50.0, -20.0), direction=direction)
    (row,) = lesion_table(mask, None, img)
    expected = (100 - 4 * 2, 50 - 1 * 2, -20 + 2 * 3)
    assert (row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]) == pytest.approx(expected)
    assert math.isnan(row["suv_max"]) and math.isnan(row["tlg"])
    # the same grid as a nibabel-style voxel->RAS affine gives the same LPS centroid
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid_of(img).index_to_lps
    (row2,) = lesion_table(mask, None, ras)
    assert row2["centroid_x_mm"] == pytest.approx(expected[0]) and row2["centroid_y_mm"] == pytest.approx(expected[1])
    with pytest.raises(InputError, match="4x4"):
        lesion_table(mask, None, np.eye(3))


def test_suv_peak_uniform_hot_sphere_equals_its_value():
    shape = (24, 24, 16)
    c = np.array([12, 12, 8])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    inside = (((idx - c) * np.array(SPACING)) ** 2).sum(-1) <= 15.0**2  # radius 15 mm sphere
    suv = np.where(inside, 5.0, 1.0).astype(np.float32)
    (row,) = lesion_table(inside, suv, image_from_array(inside.astype(np.uint8), SPACING))
    assert row["suv_peak"] == pytest.approx(5.0, abs=1e-9)
    assert row["suv_max"] == 5.0 and row["suv_mean"] == pytest.approx(5.0)


def test_suv_peak_gradient_matches_brute_force_including_image_border():
    rng = np.random.default_rng(3)
    shape = (14, 12, 9)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    suv = (0.3 * x + 0.2 * y - 0.1 * z + rng.random(shape)).astype(np.float64)
    lesion = np.zeros(shape, bool)
    lesion[9:14, 3:8, 0:4] = True  # touches the x-max and z-min borders
    spacing = (2.0, 2.5, 3.0)
    ref = brute_force_peak(suv, lesion, spacing)
    assert suv_peak(suv, lesion, spacing) == pytest.approx(ref, rel=1e-10)
    (row,) = lesion_table(lesion, suv, image_from_array(lesion.astype(np.uint8), spacing))
    assert row["suv_peak"] == pytest.approx(ref, rel=1e-10)
    assert row["suv_peak"] < row["suv_max"]  # smoothing lowers the peak below the maximum on noise


def test_label_lesions_connectivity():
    m = np.zeros((5, 5, 5), np.uint8)
    m[1, 1, 1] = m[2, 2, 1] = 1  # edge neighbours
    assert label_lesions(m, 6)[1] == 2
    labels, n = label_lesions(m, 18)
    assert n == 1 and labels[1, 1, 1] == labels[2, 2, 1] == 1


def test_label_map_numbering_matches_table():
    rng = np.random.default_rng(1)
    mask = (rng.random((12, 12, 12)) > 0.8).astype(np.uint8)
    labels, n = label_lesions(mask, 18)
    rows = lesion_table(mask, None, np.diag([1.0, 1.0, 1.0, 1.0]), connectivity=18)
    assert n == len(rows) > 3
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    assert [r["n_voxels"] for r in rows] == counts.tolist()
    assert all(np.diff(counts) <= 0)  # largest first
    assert ((labels > 0) == (mask > 0)).all()
