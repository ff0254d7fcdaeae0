"""Tumour burden (issue 15): the lesion plan's distributions, and placed lesions staying where they belong.

The plan (``synth.burden.draw_plan``) is a pure function of the rng, so its distributions are tested on
many draws without rendering; placement and rendering are tested on one truth-grid anatomy (no scanner).
"""

from __future__ import annotations

import json
import time
from statistics import NormalDist

import numpy as np
import pytest
from scipy import ndimage

from petctfm.synth.tissues import T
from petctfm.synth.burden import (BURDEN, MIN_LESION_ML, SITE_MAX_ML, LesionPlan, PlannedLesion, draw_plan,
                                  total_quantile)
from petctfm.synth.generator import generate_case
from petctfm.synth.lesions import allowed_tissues, place_lesions, render_lesions

N_DRAWS = 200
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _plans(diagnosis: str, advanced: bool, seed: int = 2024, n: int = N_DRAWS) -> list[LesionPlan]:
    return [draw_plan(diagnosis, advanced, np.random.default_rng([seed, i])) for i in range(n)]


@pytest.fixture(scope="module")
def all_plans() -> dict:
    return {key: _plans(key[0], key[1] == "advanced") for key in BURDEN}


@pytest.mark.parametrize("key", list(BURDEN), ids=lambda k: f"{k[0]}-{k[1]}")
def test_total_volume_matches_configured_quantiles(all_plans, key):
    """Per-patient planned tumour volume on 200 draws vs the configured log-normal, within sampling error."""
    cfg = BURDEN[key]
    tot = np.array([sum(p.volumes_ml) for p in all_plans[key]])
    for q in QUANTILES:
        z = NormalDist().inv_cdf(q)
        # standard error of an empirical quantile, in log space: sigma * sqrt(q(1-q)/n) / phi(z)
        se = cfg.total_sigma * np.sqrt(q * (1 - q) / N_DRAWS) / NormalDist().pdf(z)
        emp = float(np.quantile(tot, q))
        assert abs(np.log(emp) - np.log(total_quantile(cfg, q))) < 4 * se + 0.02, (key, q, emp, total_quantile(cfg, q))


def test_burden_spans_real_disease(all_plans):
    tot = np.array([sum(p.volumes_ml) for plans in all_plans.values() for p in plans])
    assert tot.min() < 2.0 and tot.max() > 1000.0  # ~1 ml to > 1 l per patient
    adv_lym = np.array([sum(p.volumes_ml) for p in all_plans[("lymphoma", "advanced")]])
    assert 150 < np.median(adv_lym) < 700 and (adv_lym > 1000).mean() > 0.05  # DLBCL-like cohorts
    early_mel = np.array([sum(p.volumes_ml) for p in all_plans[("melanoma", "early")]])
    assert np.median(early_mel) < 10


def test_plan_counts_sizes_and_uptake(all_plans):
    for key, plans in all_plans.items():
        cfg = BURDEN[key]
        for p in plans:
            assert 1 <= len(p.lesions) <= cfg.count_max
            for les in p.lesions:
                assert MIN_LESION_ML - 1e-9 <= les.volume_ml <= SITE_MAX_ML["node_mass"] + 1e-6
                assert 2.5 <= les.suv_mean <= 20.0 and 0.0 < les.heterogeneity < 0.5
                if les.kind == "organ":
                    fam = les.region.split("_")[0]
                    assert les.volume_ml <= SITE_MAX_ML[fam] + 1e-6, les
        suv = np.median([les.suv_mean for p in plans for les in p.lesions])
        assert 3.0 <= suv <= 15.0, key
    # early intent keeps to one region; advanced lymphoma has nodes on both sides of the diaphragm
    for p in all_plans[("melanoma", "early")]:
        assert len({les.region for les in p.lesions}) == 1 and p.lesions[0].region.startswith("skin_")
    for p in all_plans[("lung_cancer", "early")]:
        assert len({les.region for les in p.lesions}) == 1 and p.lesions[0].region.startswith("lung_")
    for p in all_plans[("lymphoma", "early")]:
        assert all(les.kind == "node" for les in p.lesions)


def test_every_lesion_type_occurs(all_plans):
    seen: dict[str, set] = {}
    for (diagnosis, _), plans in all_plans.items():
        seen.setdefault(diagnosis, set()).update(t for p in plans for les in p.lesions for t in les.types)
    union = set().union(*seen.values())
    assert {"node", "confluent", "bulky", "necrotic", "low_contrast", "bone", "liver", "lung", "spleen", "skin",
            "prostate", "near_ureter", "near_bowel", "near_brown_fat"} <= union, union
    assert {"node", "confluent", "bulky", "necrotic", "spleen", "bone", "liver", "lung"} <= seen["lymphoma"]
    assert {"skin", "node", "lung", "liver", "bone", "near_bowel"} <= seen["melanoma"]
    assert {"lung", "node", "liver", "bone", "necrotic"} <= seen["lung_cancer"]
    assert {"prostate", "bone", "node", "near_ureter"} <= seen["prostate_cancer"]


def test_plan_is_pure_and_fast():
    a = draw_plan("lymphoma", True, np.random.default_rng(7))
    b = draw_plan("lymphoma", True, np.random.default_rng(7))
    assert a == b
    assert draw_plan("negative", False, np.random.default_rng(7)).lesions == ()
    t0 = time.perf_counter()
    _plans("melanoma", True, seed=5)
    assert time.perf_counter() - t0 < 5.0  # 200 plans: well under a second normally
    # a small patient caps the total (5 % of the body volume)
    small = [sum(draw_plan("lymphoma", True, np.random.default_rng(i), body_ml=20000).volumes_ml) for i in range(200)]
    assert max(small) <= 0.05 * 20000 + 1e-6


# ----------------------------------------------------------------------------------------------------------
# Placement and rendering on a truth-grid anatomy (tiny-like spacing)

def _render(body, plan, seed):
    anat, hu0, suv0 = body
    hu, suv = hu0.copy(), suv0.copy()
    rng = np.random.default_rng(seed)
    lesions = place_lesions(anat, plan.diagnosis, plan, rng, min_gap_mm=6.0, min_diameter_mm=9.0)
    owner = np.zeros(anat.labels.shape, np.uint8)
    occ = render_lesions(anat, lesions, hu, suv, rng, owner=owner)
    return lesions, occ, owner, suv


def test_lesions_stay_in_body_and_organ(body):
    anat = body[0]
    vox_ml = float(np.prod(anat.spacing)) / 1000.0
    checked = set()
    for i, (diagnosis, adv) in enumerate([("lymphoma", True), ("melanoma", True), ("lung_cancer", True),
                                          ("prostate_cancer", True), ("lymphoma", True), ("melanoma", True)]):
        plan = draw_plan(diagnosis, adv, np.random.default_rng([77, i]))
        lesions, occ, owner, suv = _render(body, plan, i)
        assert lesions, plan
        assert occ.max() <= 1.0 + 1e-6
        assert not (occ[np.isin(anat.labels, (T.AIR, T.TABLE))] > 0).any()  # nothing outside the body
        for k, les in enumerate(lesions):
            tissues, inclusive = allowed_tissues(les)
            lab = anat.labels[owner == k + 1]
            ok = np.isin(lab, tissues) if inclusive else ~np.isin(lab, tissues)
            assert ok.all(), (les.region, np.unique(lab[~ok]))
            assert les.volume_ml <= les.planned_volume_ml * 1.6 + 2 * vox_ml  # never much larger than planned
            checked.add(les.region.split("_")[0] if les.kind == "organ" else "node")
            if les.parts:  # a confluent mass is (nearly) one connected mass
                lab_k, n = ndimage.label(owner == k + 1)
                sizes = np.bincount(lab_k.ravel())[1:]
                assert sizes.max() >= 0.8 * sizes.sum()
            if les.suv_mean > 0 and not les.low_contrast:
                assert les.suv_max >= les.suv_mean
    assert {"node", "bone", "liver", "lung"} <= checked, checked


def test_near_hot_physiology_lesions_touch_it(body):
    anat = body[0]
    plan = LesionPlan("prostate_cancer", True, 6.0, tuple(
        PlannedLesion("paraaortic", "node", 1.0, 8.0, 0.2, False, False, 1, "ureter") for _ in range(3))
        + (PlannedLesion("mesenteric", "node", 1.0, 8.0, 0.2, False, False, 1, "bowel"),) * 3)
    lesions, occ, owner, suv = _render(body, plan, 0)
    near = [les for les in lesions if les.near]
    assert {les.near for les in near} >= {"bowel"}
    hot = {"ureter": (T.URETER,), "bowel": (T.BOWEL, T.COLON)}
    for les in near:
        dist = ndimage.distance_transform_edt(~np.isin(anat.labels, hot[les.near]), sampling=anat.spacing)
        i = anat.index_of(les.center)
        assert dist[tuple(i)] <= les.diameter_mm / 2 + 2 * max(anat.spacing) + 4.0


def test_huge_burden_does_not_swallow_the_body(body):
    anat = body[0]
    plan = draw_plan("lymphoma", True, np.random.default_rng(0))
    big = LesionPlan("lymphoma", True, 4000.0, tuple(
        PlannedLesion(r, "node", 900.0, 10.0, 0.2, True, False, 8) for r in
        ("mediastinum", "paraaortic", "mesenteric", "axilla_left", "iliac_right"))
        + tuple(les for les in plan.lesions if les.kind == "node"))
    lesions, occ, owner, suv = _render(body, big, 1)
    vox_ml = float(np.prod(anat.spacing)) / 1000.0
    body_vox = (~np.isin(anat.labels, (T.AIR, T.TABLE))).sum()
    assert occ.sum() < 0.08 * body_vox  # at most a few % of the body
    assert occ.sum() * vox_ml > 300  # but really bulky
    for t in (T.LIVER, T.SPLEEN, T.BRAIN, T.MYOCARDIUM, T.AORTA, T.BLADDER):
        assert (occ[anat.labels == t] > 0).mean() < 0.01, t  # nodal masses never cover these organs


def test_generator_deterministic_with_big_burden():
    a = generate_case(1, 0, "tiny")
    assert a.meta["diagnosis"] != "negative" and a.meta["n_lesions"] >= 3
    b = generate_case(1, 0, "tiny")
    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayFromImage(a.seg), sitk.GetArrayFromImage(b.seg))
    assert np.array_equal(sitk.GetArrayFromImage(a.suv), sitk.GetArrayFromImage(b.suv))
    assert json.dumps(a.meta, sort_keys=True) == json.dumps(b.meta, sort_keys=True)
    vols = a.meta["lesion_volumes_ml"]
    assert len(vols) == a.meta["n_lesions"] and abs(sum(vols) - a.meta["lesion_volume_ml"]) < 1e-2
    assert a.meta["planned_lesion_volume_ml"] >= 0.5 * a.meta["lesion_volume_ml"]
    assert [les["seg_volume_ml"] for les in a.meta["lesions"]] == vols
