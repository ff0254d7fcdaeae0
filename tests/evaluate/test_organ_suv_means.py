"""petctfm.evaluate.organs.organ_suv_means, the one owner of the metabolic network's per-organ SUVmean: erosion by N
voxels (6-connected), lesion voxels excluded, small organs measured whole, absent organs NaN; hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from petctfm.evaluate import organs as O

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney_left": 3}


def _volume():
    """A 12^3 grid: a 8x8x8 'liver' (value 1) of SUV 2 whose outer shell is SUV 4 (spill-over from a hot
    neighbour), a 2x2x2 'spleen' (value 2) of SUV 1.5, no kidney; background SUV 0.5."""
    org = np.zeros((12, 12, 12), np.uint8)
    org[2:10, 2:10, 2:10] = 1
    org[0:2, 0:2, 0:2] = 2
    suv = np.full(org.shape, 0.5, np.float32)
    suv[org == 1] = 4.0
    suv[3:9, 3:9, 3:9] = 2.0  # the liver's interior: the shell (one voxel thick) stays at 4
    suv[org == 2] = 1.5
    return suv, org


def test_erosion_removes_the_edge_voxels_of_an_organ():
    suv, org = _volume()
    whole, _ = O.organ_suv_means(suv, org, None, LABELS, erode=0)
    shell = (org == 1) & ~((np.indices(org.shape) >= 3) & (np.indices(org.shape) < 9)).all(axis=0)
    assert shell.sum() == 8 ** 3 - 6 ** 3
    assert whole["liver"] == pytest.approx((4.0 * shell.sum() + 2.0 * 6 ** 3) / 8 ** 3)  # 3.156: the rim biases it
    eroded, small = O.organ_suv_means(suv, org, None, LABELS, erode=1)
    assert eroded["liver"] == pytest.approx(2.0)  # exactly the 6^3 interior (6-connected erosion of a cube)
    two, _ = O.organ_suv_means(suv, org, None, LABELS, erode=2)
    assert two["liver"] == pytest.approx(2.0)  # the 4^3 core
    # the 2x2x2 spleen vanishes under erosion: measured whole, and said so
    assert eroded["spleen"] == pytest.approx(1.5) and small == ["spleen"]
    # the background entry is not an organ; an absent organ is NaN
    assert "background" not in eroded and math.isnan(eroded["kidney_left"])


def test_lesion_voxels_are_excluded_before_and_after_erosion():
    suv, org = _volume()
    lesion = np.zeros(org.shape, np.uint8)
    lesion[5:7, 5:7, 5:7] = 1  # inside the liver's interior
    suv[lesion > 0] = 40.0
    lesion[2, 2:10, 2:10] = 1  # and a lesion on one face of the liver's shell
    suv[2, 2:10, 2:10] = 40.0
    means, small = O.organ_suv_means(suv, org, lesion, LABELS, erode=0)
    keep = (org == 1) & (lesion == 0)
    assert means["liver"] == pytest.approx(float(suv[keep].mean())) and means["liver"] < 4.0
    eroded, _ = O.organ_suv_means(suv, org, lesion, LABELS, erode=1)
    interior = ndimage.binary_erosion(org == 1) & (lesion == 0)
    assert eroded["liver"] == pytest.approx(float(suv[interior].mean())) == pytest.approx(2.0)
    with_lesions, _ = O.organ_suv_means(suv, org, None, LABELS, erode=1)
    assert with_lesions["liver"] > 3.0  # the 8 lesion voxels of SUV 40 in 216
    # erode=0 agrees with the readout's suv_mean (organ minus lesions)
    rows = {r["organ"]: r for r in O.organ_readout(suv, org, lesion, (2, 2, 2), labels=LABELS, references=False)}
    assert rows["liver"]["suv_mean"] == pytest.approx(means["liver"])
    assert rows["spleen"]["suv_mean"] == pytest.approx(means["spleen"])


def test_an_organ_that_is_all_lesion_is_nan_and_a_lesion_can_force_the_whole_organ():
    suv, org = _volume()
    lesion = (org == 2).astype(np.uint8)  # the spleen is all lesion
    means, _ = O.organ_suv_means(suv, org, lesion, LABELS, erode=1)
    assert math.isnan(means["spleen"])
    # a 3x3x3 organ eroded keeps its centre voxel only (< MIN_ERODED_VOXELS): measured whole, the lesion still out
    org = np.zeros((7, 7, 7), np.uint8)
    org[2:5, 2:5, 2:5] = 3
    suv = np.arange(org.size, dtype=np.float32).reshape(org.shape)
    lesion = np.zeros(org.shape, np.uint8)
    lesion[2, 2, 2] = 1
    means, small = O.organ_suv_means(suv, org, lesion, {"kidney_left": 3}, erode=1)
    assert O.MIN_ERODED_VOXELS == 3 and small == ["kidney_left"]
    assert means["kidney_left"] == pytest.approx(float(suv[(org == 3) & (lesion == 0)].mean()))
