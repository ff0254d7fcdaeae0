"""The plausibility ranges of ``petctfm.core.plausibility``, at and around their limits (docs/reliability.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petctfm.core import plausibility as plaus
from petctfm.core.errors import InputError

BODY = np.concatenate([np.zeros(500), np.full(400, 1.0), np.full(100, 2.2)]).astype(np.float32)  # SUV
CT = np.concatenate([np.full(500, -1000.0), np.full(450, 40.0), np.full(50, 400.0)]).astype(np.float32)  # HU


@pytest.mark.parametrize("pet, fragment", [
    (np.zeros(100), "every voxel is <= 0"),
    (-BODY, "every voxel is <= 0"),
    (0.01 - BODY, "more negative than positive"),
    (CT, "this is a CT"),
    (BODY * 3000.0, "impossible for SUV"),
    (np.where(BODY > 2, 1001.0, BODY), "impossible for SUV"),
])
def test_impossible_pet_is_refused(pet, fragment):
    with pytest.raises(InputError, match=fragment):
        plaus.check_pet_values(pet)


@pytest.mark.parametrize("pet, flags", [
    (BODY, []),
    (np.where(BODY > 2, 999.0, BODY), ["SUVmax 999.0 > 100"]),
    (np.where(BODY == 0, -1.5, BODY), ["negative SUV down to -1.50"]),
])
def test_unusual_pet_is_flagged(pet, flags):
    got = plaus.check_pet_values(pet)
    assert len(got) == len(flags) and all(f in g for f, g in zip(flags, got)), got


@pytest.mark.parametrize("ct, fragment", [
    (np.full(100, 40.0), "an empty CT"),
    (BODY, "not a CT in HU"),
    (CT + 1024.0, "not a CT in HU"),  # raw stored values, RescaleIntercept not applied
])
def test_impossible_ct_is_refused(ct, fragment):
    with pytest.raises(InputError, match=fragment):
        plaus.check_ct_values(ct)


def test_ct_body_median_is_flagged_not_refused():
    assert plaus.check_ct_values(CT) == []
    assert "body median" in plaus.check_ct_values(np.where(CT > -500, CT * 10, CT))[0]


@pytest.mark.parametrize("weight, ok", [(0.5, False), (1.0, True), (80.0, True), (350.0, True), (351.0, False),
                                        (80000.0, False), (math.nan, False), (math.inf, False)])
def test_body_weight_range(weight, ok):
    if ok:
        plaus.check_weight_kg(weight, "PT_0001.dcm")
    else:
        with pytest.raises(InputError, match="PT_0001.dcm: body weight"):
            plaus.check_weight_kg(weight, "PT_0001.dcm")
    if weight == 80000.0:
        with pytest.raises(InputError, match=r"grams\? 80 kg"):
            plaus.check_weight_kg(weight, "PT_0001.dcm")


@pytest.mark.parametrize("spacing, outcome", [
    ((2.0, 2.0, 3.0), "ok"), ((9.2, 9.2, 14.9), "ok"), ((0.2, 0.2, 1.0), "flag"), ((4.0, 4.0, 25.0), "flag"),
    ((2.0, 2.0, 0.0), "refuse"), ((2.0, 2.0, math.nan), "refuse"), ((0.002, 0.002, 0.003), "refuse"),
    ((2000.0, 2000.0, 3000.0), "refuse"),
])
def test_spacing_range(spacing, outcome):
    if outcome == "refuse":
        with pytest.raises(InputError, match="PET: voxel spacing"):
            plaus.check_spacing(spacing, "PET")
    else:
        assert bool(plaus.check_spacing(spacing, "PET")) == (outcome == "flag")


@pytest.mark.parametrize("fraction, outcome", [(None, "ok"), (1.0, "ok"), (0.8, "ok"), (0.79, "flag"),
                                               (0.5, "flag"), (0.49, "refuse")])
def test_body_overlap_range(fraction, outcome):
    if outcome == "refuse":
        with pytest.raises(InputError, match="do not show the same body"):
            plaus.check_body_overlap(fraction)
    else:
        assert bool(plaus.check_body_overlap(fraction)) == (outcome == "flag")


def test_label_kept_needs_a_real_lesion_to_refuse():
    with pytest.raises(InputError, match="affine is off"):
        plaus.check_label_kept(14.2, 0.0, 0.012)
    assert plaus.check_label_kept(14.2, 13.9, 0.012) == []
    assert plaus.check_label_kept(0.2, 0.0, 0.012) == []  # a 0.2 ml speck may vanish on a coarser grid
    assert plaus.check_label_kept(None, 0.0) == []
