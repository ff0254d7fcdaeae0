"""A check shared by the tests of the opt-in lesion-site tables (organ metastases, extranodal sites)."""

from __future__ import annotations

import numpy as np
import pytest


def check_site_table(table, draw, regions, seed: int, n: int = 1500) -> dict:
    """Check an opt-in site table (``burden.ORGAN_METASTASES``, ``burden.EXTRANODAL_SITES``) drawn by ``draw``
    on ``n`` advanced plans per diagnosis: each site's rate within 4 SE of its probability, at most its lesions,
    volumes in its range, regions among ``regions``, SUVmean in 2.5-20, totals summed. Returns, per diagnosis,
    the per-case lists of each site's lesions (``{diagnosis: {site: [[lesion, ...], ...]}}``)."""
    from petctfm.synth.burden import draw_plan

    out: dict = {}
    for diagnosis, sites in table.items():
        base = [draw_plan(diagnosis, True, np.random.default_rng([5, i])) for i in range(n)]
        extra = [draw(p, np.random.default_rng([seed, i])) for i, p in enumerate(base)]
        out[diagnosis] = {}
        for site, p, most, lo, hi in sites:
            per_case = [[les for les in e.lesions if les.region.split("_")[0] == site] for e in extra]
            rate = np.mean([bool(c) for c in per_case])
            assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.005, (diagnosis, site, rate, p)
            assert max(len(c) for c in per_case) <= most
            vols = [les.volume_ml for c in per_case for les in c]
            assert min(vols) >= lo - 1e-9 and max(vols) <= hi + 1e-9
            out[diagnosis][site] = per_case
        for e in extra:
            assert all(les.kind == "organ" and les.region in regions for les in e.lesions)
            assert all(2.5 <= les.suv_mean <= 20.0 for les in e.lesions)
            assert e.total_ml == pytest.approx(sum(e.volumes_ml))
    return out


def place_one(body, region: str, diagnosis: str, volume_ml: float):
    """One planned ``region`` lesion of ``volume_ml`` placed (rng 1) and rendered (rng 2) into a copy of the
    ``body`` fixture's maps; returns ``(anat, lesion, occupancy)``; asserts it was placed in its region."""
    from petctfm.synth.burden import LesionPlan, PlannedLesion
    from petctfm.synth.lesions import place_lesions, render_lesions

    anat, hu0, suv0 = body
    hu, suv = hu0.copy(), suv0.copy()
    plan = LesionPlan(diagnosis, True, volume_ml,
                      (PlannedLesion(region, "organ", volume_ml, 8.0, 0.2, False, False),))
    lesions = place_lesions(anat, diagnosis, plan, np.random.default_rng(1), min_gap_mm=6.0, min_diameter_mm=9.0)
    assert len(lesions) == 1 and lesions[0].region == region
    owner = np.zeros(anat.labels.shape, np.uint8)
    occ = render_lesions(anat, lesions, hu, suv, np.random.default_rng(2), owner=owner)
    return anat, lesions[0], occ


def check_same_case_with_flag(index: int, seed: int, flag: str, count_key: str, regions):
    """Case ``index`` of ``seed`` at ``tiny`` without and with the opt-in ``flag`` (a ``generate_case`` keyword):
    only the lesions in ``regions`` are added, counted in ``meta[count_key]`` (absent without the flag), the case
    is advanced in both, and the organs and the other lesions are unchanged. Returns ``(off, on)``."""
    import SimpleITK as sitk

    from petctfm.synth.generator import generate_case

    off = generate_case(index, seed, size="tiny")
    on = generate_case(index, seed, size="tiny", **{flag: True})
    assert count_key not in off.meta
    assert on.meta[count_key] >= 1 and on.meta["stage"] == off.meta["stage"] == "advanced"
    new = [les for les in on.meta["lesions"] if les["region"] in regions]
    assert len(new) == on.meta[count_key] and on.meta["n_lesions"] == off.meta["n_lesions"] + len(new)
    # the same patient and organs, and the other lesions where they were
    assert np.array_equal(sitk.GetArrayFromImage(off.organs), sitk.GetArrayFromImage(on.organs))
    assert [les["center_mm"] for les in off.meta["lesions"]] == [les["center_mm"] for les in on.meta["lesions"]
                                                                if les["region"] not in regions]
    return off, on
