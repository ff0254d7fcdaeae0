"""The annotation-effort protocol of experiment interactive: the simulated brush by hand, the isocontour + brush
baseline, the effort table (censoring at the cap) and its summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petctfm.evaluate.metrics import voxel_overlap
from petctfm.experiments.interactive.clicks import brush_stroke, iso_brush
from petctfm.experiments.interactive.report import (EFFORT_COLUMNS, effort_markdown, effort_summary, effort_table,
                                                    full_summary)


def _dice(a, b):
    return voxel_overlap(a, b)["dice"]


def _strokes_to(target, pred, goal, radius_mm, spacing=(1.0, 1.0, 1.0), cap=10):
    """(strokes to first reach ``goal``, Dice after each stroke)."""
    dices = []
    for k in range(1, cap + 1):
        stroke = brush_stroke(target, pred, radius_mm, spacing)
        if stroke is None:
            break
        pred, seconds = stroke
        assert seconds >= 0
        dices.append(_dice(pred, target))
        if dices[-1] >= goal:
            return k, dices
    return None, dices


def test_brush_fills_a_missed_line_in_the_hand_computed_number_of_strokes():
    # a 7-voxel line (1 voxel thick), nothing predicted. Every voxel of the line is 1 voxel from its boundary, so
    # the interior point is its first voxel (C-order tie-break); a 2 mm brush at 1 mm spacing covers it and the
    # next 2 voxels. Stroke 1: 3 of 7 -> Dice 6/10 = 0.6; stroke 2 (centre z=3): 6 of 7 -> 12/13 = 0.923 >= 0.8.
    target = np.zeros((5, 5, 12), bool)
    target[2, 2, 2:9] = True
    k, dices = _strokes_to(target, np.zeros_like(target), 0.8, radius_mm=2.0)
    assert k == 2 and dices == pytest.approx([0.6, 12 / 13])
    k, dices = _strokes_to(target, np.zeros_like(target), 1.0, radius_mm=2.0)  # the last voxel: a third stroke
    assert k == 3 and dices[-1] == 1.0
    # a 4 mm brush covers 5 voxels at once: 10/12 = 0.833 after one stroke
    k, dices = _strokes_to(target, np.zeros_like(target), 0.8, radius_mm=4.0)
    assert k == 1 and dices == pytest.approx([10 / 12])
    # anisotropic spacing: 2 mm along z covers only the centre and 1 neighbour at 2 mm spacing (2 voxels per stroke)
    k, dices = _strokes_to(target, np.zeros_like(target), 0.8, radius_mm=2.0, spacing=(1.0, 1.0, 2.0))
    assert k == 3 and dices == pytest.approx([4 / 9, 8 / 11, 12 / 13])


def test_brush_erases_the_largest_false_positive_and_never_touches_other_voxels():
    target = np.zeros((12, 12, 16), bool)
    target[1:4, 1:4, 1:4] = True  # 27 voxels, predicted exactly
    pred = target.copy()
    pred[8, 8, 2:9] = True  # a 7-voxel false-positive line, the only error
    pred[10, 1, 1] = True  # a 1-voxel false positive: smaller, so not the first stroke's region
    assert _dice(pred, target) == pytest.approx(54 / 62)
    # stroke 1 erases 3 voxels of the line (2 mm brush): FP 5 -> 54/59; stroke 2: FP 2 -> 54/56 = 0.964
    k, dices = _strokes_to(target, pred, 0.95, radius_mm=2.0)
    assert k == 2 and dices == pytest.approx([54 / 59, 54 / 56])
    one, _ = brush_stroke(target, pred, 2.0)
    assert np.array_equal(one & target, target) and one[10, 1, 1]  # TP and the other FP untouched
    assert brush_stroke(target, target, 2.0) is None  # nothing to fix


def test_iso_brush_starts_from_the_isocontour_then_strokes():
    suv = np.ones((20, 20, 20), np.float32)
    target = np.zeros(suv.shape, bool)
    target[8:12, 8:12, 8:12] = True  # 64 voxels
    suv[8:12, 8:12, 8:12] = 10.0
    suv[9:11, 9:11, 12:14] = 8.0  # hot spill above the lesion, inside the isocontour (>= 4.1): 8 FP voxels
    target[8:12, 8:12, 4:8] = True  # a faint part of the lesion (SUV 1): 64 FN voxels the isocontour misses
    rows = iso_brush(suv, target, (9, 9, 9), (5, 5, 5), 4, lambda p: {"dice": _dice(p, target)}, radius_mm=2.0)
    assert [r["clicks"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["dice"] == pytest.approx(2 * 64 / (72 + 128))  # the isocontour: lesion core + spill
    dices = [r["dice"] for r in rows]
    assert all(b > a for a, b in zip(dices, dices[1:]))  # each stroke fixes part of the missed region
    assert all(b >= a >= 0 for a, b in zip([r["seconds"] for r in rows], [r["seconds"] for r in rows][1:]))


def _series(case, target, arm, kind, dices, seen="", cohort="", dt=0.5):
    return [{"case_id": case, "site": "s", "tracer": "fdg", "cohort": cohort, "protocol": "corrective", "arm": arm,
             "kind": kind, "target": target, "seen": seen, "clicks": k, "dice": d, "seconds": dt * k}
            for k, d in enumerate(dices, 1)]


def test_effort_table_and_summary_count_interactions_and_censor_at_the_cap():
    rows = []
    rows += _series("a", "lesion_1", "model", "lesion", [0.5, 0.85, 0.9])  # reaches 0.8 at 2
    rows += _series("a", "lesion_1", "iso_brush", "lesion", [0.82, 0.9, 0.95], dt=0.01)  # at 1
    rows += _series("b", "lesion_1", "model", "lesion", [0.3, 0.4, 0.5])  # never: censored
    rows += _series("b", "lesion_1", "iso_brush", "lesion", [0.2, 0.5, 0.81], dt=0.01)  # at 3
    rows += _series("c", "lesion_1", "model", "lesion", [0.81, 0.9, 0.9])  # at 1
    rows += _series("c", "lesion_1", "iso_brush", "lesion", [0.1, 0.2, 0.3], dt=0.01)  # never
    rows += _series("a", "liver", "model", "organ", [0.9, 0.9, 0.9], seen=True)
    rows += _series("a", "lesions", "model", "lesions", [0.9, 0.9, 0.9])  # all lesions: not an effort target
    table = effort_table(rows, cap=3)
    assert all(list(r) == EFFORT_COLUMNS for r in table) and len(table) == 7
    by = {(r["case_id"], r["target"], r["arm"]): r for r in table}
    assert by[("a", "lesion_1", "model")]["interactions"] == 2 and by[("a", "lesion_1", "model")]["reached"] == 1
    assert by[("a", "lesion_1", "model")]["seconds_to_reach"] == pytest.approx(1.0)
    assert by[("b", "lesion_1", "model")]["interactions"] == "" and by[("b", "lesion_1", "model")]["reached"] == 0
    assert by[("b", "lesion_1", "model")]["seconds_to_reach"] == "" and by[("b", "lesion_1", "model")]["seconds_total"] == 1.5
    assert by[("a", "liver", "model")]["group"] == "seen"
    summary = effort_summary(table, n_resamples=200)

    def get(arm, metric, kind="lesion", section="effort"):
        return next(r for r in summary if r["section"] == section and r["arm"] == arm and r["kind"] == kind
                    and r["metric"] == metric)

    assert get("model", "fraction_reached")["mean"] == pytest.approx(2 / 3)
    assert get("model", "interactions_median")["mean"] == 2  # 2, censored (4), 1 -> median 2
    assert get("iso_brush", "interactions_median")["mean"] == 3  # 1, 3, censored (4) -> 3
    assert get("model", "seconds_to_reach_median")["n"] == 2  # reached ones only: 1.0 and 0.5 s
    assert get("model", "seconds_to_reach_median")["mean"] == pytest.approx(0.75)
    assert get("iso_brush", "seconds_per_interaction")["mean"] == pytest.approx(0.01)
    diff = get("model-iso_brush", "fraction_reached", section="effort_model_minus_iso_brush")
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(0.0)
    full, _ = full_summary(rows, {"max_clicks": 3, "effort_dice": 0.8})
    md = "\n".join(effort_markdown(full, {"max_clicks": 3, "brush_mm": 8.0}))
    assert "| all | lesion | all | model | 3 |" in md and "> 3" not in md.split("iso_brush")[0]
    censored = effort_summary(effort_table(_series("d", "l", "model", "lesion", [0.1, 0.2]), cap=2), 0)
    assert next(r for r in censored if r["metric"] == "interactions_median")["mean"] == 3  # > cap
    assert math.isnan(next(r for r in censored if r["metric"] == "seconds_to_reach_median")["mean"])
