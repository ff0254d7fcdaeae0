"""Files of ``petctfm experiment interactive``: ``steps.csv`` (one row per case, target, arm and step),
``results.csv`` (the summary as a long table with bootstrap CIs), ``results.md``, ``dice_vs_clicks.png``, and
``cases/<case>.png`` (clicks on the fused PET/CT view).

Summary (means over targets with 95 % bootstrap CIs, :func:`petctfm.evaluate.bootstrap.mean_ci`):

- per protocol, arm, target kind (organs split into ``seen`` and ``held_out``) and step: Dice, FP and FN volume;
- AUC over the steps of each metric: per target the trapezoid over the steps divided by the number of steps
  (so a Dice AUC lies in [0, 1]), then the mean over targets;
- Dice at 1, 3, 5, 10 clicks; clicks to reach Dice 0.8 / 0.9 (organs; a target that never reaches it counts as
  ``max_clicks + 1``, and the fraction reaching it is given);
- the learned model vs the isocontour at one click per lesion: paired differences over cases (model - iso) of
  Dice and FP volume (:func:`petctfm.evaluate.bootstrap.paired_comparison`);
- **out of distribution** (``info["ood"]``): the whole summary again per cohort (``cohort`` ``in`` / ``out``;
  the pooled rows have ``cohort = all``), and in results.md Dice at 1 / 3 / 5 clicks in distribution beside out
  of distribution (the layout of SegAnyPET's Fig. 4a);
- **annotation effort** (:func:`effort_table`, ``effort.csv``; :func:`effort_summary`, section ``effort``): per
  lesion and per organ and per arm (``model``: corrective clicks; ``iso_brush``: the isocontour, then brush
  strokes), the interactions and the seconds of compute to first reach Dice ``effort_dice`` (0.8) within the cap
  of ``max_clicks`` interactions. A target that does not reach it is censored at the cap: it counts as reached
  "never" (0) in the fraction reached and as ``cap + 1`` in the median number of interactions, so the median and
  its percentile-bootstrap CI are exact while they are <= cap and read "> cap" otherwise (a target censored at
  the cap needs more than ``cap`` interactions, whatever its true number); the seconds to reach are over the
  targets that reached it only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.provenance import data_words
from petctfm.evaluate.bootstrap import bootstrap_ci, mean_ci, paired_comparison

STEP_COLUMNS = ["case_id", "site", "tracer", "cohort", "protocol", "arm", "kind", "target", "seen", "clicks", "dice",
                "fp_volume_ml", "fn_volume_ml", "fp_voxels_ml", "seconds"]
ONE_CLICK_ARMS = ("model", "model_isoprior")  # learned arms compared with the isocontour at one click per lesion
#: compared at one click per lesion: autoPET Dice and FP volume, and every predicted voxel outside the truth (ml)
ONE_CLICK_METRICS = ("dice", "fp_volume_ml", "fp_voxels_ml")
SUMMARY_COLUMNS = ["section", "protocol", "arm", "kind", "group", "clicks", "metric", "n", "mean", "ci_low", "ci_high",
                   "cohort"]
#: one row per (case, target, arm) of the annotation-effort protocol (``effort.csv``): ``reached`` 1 / 0,
#: ``interactions`` to first reach the Dice goal (empty when not reached within ``cap``), ``seconds_to_reach``
#: (compute up to then; empty when not reached), ``seconds_total`` (compute of all ``steps`` interactions)
EFFORT_COLUMNS = ["case_id", "cohort", "site", "tracer", "kind", "group", "target", "arm", "goal", "cap", "reached",
                  "interactions", "seconds_to_reach", "seconds_total", "steps", "first_dice", "final_dice"]
EFFORT_ARMS = ("model", "iso_brush")  # corrective clicks vs the isocontour + simulated brush strokes


def _group(r: dict) -> str:
    return "all" if r["kind"] != "organ" else ("seen" if r["seen"] else "held_out")


def _series(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(protocol, arm, kind, group, case_id, target) -> that target's rows in step order."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["protocol"], r["arm"], r["kind"], _group(r), r["case_id"], r["target"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["clicks"]) for k, v in out.items()}


def clicks_to_reach(dices: list[float], threshold: float, first_click: int = 1) -> int | None:
    """The number of clicks at which Dice first reaches ``threshold`` (``dices[i]`` after ``first_click + i``
    clicks), None if never."""
    for i, d in enumerate(dices):
        if d is not None and not math.isnan(d) and d >= threshold:
            return first_click + i
    return None


def summarize(rows: list[dict], max_clicks: int, n_resamples: int = 1000) -> list[dict]:
    """The long summary table (:data:`SUMMARY_COLUMNS`)."""
    out: list[dict] = []

    def add(section, key, clicks, metric, values):
        out.append({"section": section, "protocol": key[0], "arm": key[1], "kind": key[2], "group": key[3],
                    "clicks": clicks, "metric": metric, **{k: v for k, v in mean_ci(values, n_resamples).items()
                                                           if k in ("n", "mean", "ci_low", "ci_high")}})

    series = _series(rows)
    groups: dict[tuple, list[list[dict]]] = {}
    for k, v in series.items():
        groups.setdefault(k[:4], []).append(v)
    for key, members in sorted(groups.items()):
        metrics = [m for m in ("dice", "fp_volume_ml", "fn_volume_ml", "fp_voxels_ml") if m in members[0][0]]
        steps = sorted({r["clicks"] for s in members for r in s})
        for c in steps:
            for m in metrics:
                add("per_step", key, c, m, [r.get(m) for s in members for r in s if r["clicks"] == c])
        if len(steps) > 1:
            for m in metrics:
                aucs = []
                for s in members:
                    v = np.array([r.get(m, np.nan) for r in s], float)
                    if len(v) > 1 and np.isfinite(v).all():
                        aucs.append(float(np.trapezoid(v) / (len(v) - 1)))
                add("auc", key, "", m, aucs)
        if key[2] == "organ" and key[0] == "corrective":
            for thr in (0.8, 0.9):
                reached = [clicks_to_reach([r["dice"] for r in s], thr, s[0]["clicks"]) for s in members]
                add(f"clicks_to_{thr}", key, "", "clicks", [max_clicks + 1 if c is None else c for c in reached])
                add(f"clicks_to_{thr}", key, "", "fraction_reached", [float(c is not None) for c in reached])
    one = {(r["case_id"], r["arm"]): r for r in rows if r["protocol"] == "one_per_lesion"}
    for arm in ONE_CLICK_ARMS:  # each learned arm vs the isocontour, paired over cases
        cases = sorted({c for c, a in one if a == arm and (c, "iso") in one})
        out += _minus_iso(one, cases, arm, {"section": f"{arm}_minus_iso_one_click_per_lesion",
                                            "protocol": "one_per_lesion", "arm": f"{arm}-iso", "kind": "lesions",
                                            "group": "all", "clicks": ""}, n_resamples)
    out += one_click_breakdown(one, n_resamples)
    return out


def _minus_iso(one: dict[tuple, dict], cases: list[str], arm: str, row: dict, n_resamples: int) -> list[dict]:
    """``row`` + (n, mean, ci_low, ci_high) of ``arm`` - iso paired over ``cases``, one per metric of
    :data:`ONE_CLICK_METRICS` that both arms recorded."""
    out = []
    for m in ONE_CLICK_METRICS:
        if not cases or not all(m in one[(c, a)] for c in cases for a in (arm, "iso")):
            continue
        cmp = paired_comparison([one[(c, arm)][m] for c in cases], [one[(c, "iso")][m] for c in cases], n_resamples)
        out.append({**row, "metric": m, "n": cmp["n"], "mean": cmp["mean_diff"], "ci_low": cmp["ci_low"],
                    "ci_high": cmp["ci_high"]})
    return out


def one_click_breakdown(one: dict[tuple, dict], n_resamples: int = 1000) -> list[dict]:
    """One click per lesion by site and by tracer: each arm's mean Dice / FP volume over that group's cases and
    model - iso paired over them (sections ``one_click_by_site`` / ``one_click_by_tracer``; ``group`` holds
    the site or tracer name, ``arm`` the arm or ``model-iso``)."""
    out: list[dict] = []
    for by in ("site", "tracer"):
        names = sorted({str(r.get(by) or "unknown") for r in one.values()})
        for name in names:
            cases = sorted({c for (c, a), r in one.items() if a == "iso" and str(r.get(by) or "unknown") == name})
            for arm in ("iso", *ONE_CLICK_ARMS):
                have = [c for c in cases if (c, arm) in one]
                row = {"section": f"one_click_by_{by}", "protocol": "one_per_lesion", "arm": arm,
                       "kind": "lesions", "group": name, "clicks": 1}
                for m in [m for m in ONE_CLICK_METRICS if have and all(m in one[(c, arm)] for c in have)]:
                    ci = mean_ci([one[(c, arm)][m] for c in have], n_resamples)
                    out.append({**row, "metric": m, **{k: ci[k] for k in ("n", "mean", "ci_low", "ci_high")}})
                if arm != "iso":
                    out += _minus_iso(one, have, arm, {**row, "arm": f"{arm}-iso"}, n_resamples)
    return out


def effort_table(rows: list[dict], cap: int, goal: float = 0.8) -> list[dict]:
    """One row per (case, single lesion or organ, arm of :data:`EFFORT_ARMS`) of the corrective protocol
    (:data:`EFFORT_COLUMNS`): interactions and compute seconds to first reach Dice ``goal``; ``cap``: the
    largest number of interactions (``max_clicks``)."""
    out = []
    for (protocol, arm, kind, group, case_id, target), s in sorted(_series(rows).items()):
        if protocol != "corrective" or arm not in EFFORT_ARMS or kind not in ("lesion", "organ"):
            continue
        k = clicks_to_reach([r["dice"] for r in s], goal, int(s[0]["clicks"]))
        sec = {int(r["clicks"]): r.get("seconds") for r in s}
        out.append({"case_id": case_id, "cohort": s[0].get("cohort", ""), "site": s[0].get("site", ""),
                    "tracer": s[0].get("tracer", ""), "kind": kind, "group": group, "target": target, "arm": arm,
                    "goal": goal, "cap": cap, "reached": int(k is not None), "interactions": "" if k is None else k,
                    "seconds_to_reach": "" if k is None or sec.get(k) in (None, "") else float(sec[k]),
                    "seconds_total": s[-1].get("seconds", ""), "steps": int(s[-1]["clicks"]),
                    "first_dice": s[0]["dice"], "final_dice": s[-1]["dice"]})
    return out


def median_ci(values: list[float], n_resamples: int = 1000) -> dict:
    """``{"n", "mean": the median, "ci_low", "ci_high"}``: the median with its percentile-bootstrap CI
    (:func:`petctfm.evaluate.bootstrap.bootstrap_ci`)."""
    x = np.asarray([float(v) for v in values if v not in (None, "") and math.isfinite(float(v))], float)
    if not len(x):
        return {"n": 0, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    med = float(np.median(x))
    lo = hi = med
    if np.unique(x).size > 1 and n_resamples > 0:
        lo, hi = bootstrap_ci(lambda i: np.median(x[i], axis=-1), len(x), n_resamples, vectorized=True)
    return {"n": len(x), "mean": med, "ci_low": lo, "ci_high": hi}


def effort_summary(table: list[dict], n_resamples: int = 1000) -> list[dict]:
    """Section ``effort`` per (arm, kind, group): ``fraction_reached`` (mean [CI]), ``interactions_median``
    (censored targets at ``cap + 1``; the ``mean`` column holds the median), ``seconds_to_reach_median`` (the
    targets that reached the goal), ``seconds_per_interaction`` (mean over targets of seconds_total / steps);
    section ``effort_model_minus_iso_brush``: the fraction reached, paired over the targets both arms ran."""
    out: list[dict] = []
    groups: dict[tuple, list[dict]] = {}
    for r in table:
        groups.setdefault((r["arm"], r["kind"], r["group"]), []).append(r)
    for (arm, kind, group), members in sorted(groups.items()):
        row = {"section": "effort", "protocol": "corrective", "arm": arm, "kind": kind, "group": group, "clicks": ""}

        def add(metric, stats, row=row):
            out.append({**row, "metric": metric, **{k: stats[k] for k in ("n", "mean", "ci_low", "ci_high")}})

        add("fraction_reached", mean_ci([r["reached"] for r in members], n_resamples))
        add("interactions_median", median_ci([r["interactions"] if r["reached"] else r["cap"] + 1
                                              for r in members], n_resamples))
        add("seconds_to_reach_median", median_ci([r["seconds_to_reach"] for r in members if r["reached"]],
                                                 n_resamples))
        add("seconds_per_interaction", mean_ci([float(r["seconds_total"]) / r["steps"] for r in members
                                                if r["seconds_total"] not in (None, "") and r["steps"]], n_resamples))
    by_target = {(r["case_id"], r["kind"], r["group"], r["target"], r["arm"]): r for r in table}
    for kind, group in sorted({(r["kind"], r["group"]) for r in table}):
        keys = sorted({k[:4] for k in by_target if k[1:3] == (kind, group)})
        keys = [k for k in keys if all((*k, a) in by_target for a in EFFORT_ARMS)]
        if keys:
            cmp = paired_comparison([by_target[(*k, "model")]["reached"] for k in keys],
                                    [by_target[(*k, "iso_brush")]["reached"] for k in keys], n_resamples)
            out.append({"section": "effort_model_minus_iso_brush", "protocol": "corrective", "arm": "model-iso_brush",
                        "kind": kind, "group": group, "clicks": "", "metric": "fraction_reached", "n": cmp["n"],
                        "mean": cmp["mean_diff"], "ci_low": cmp["ci_low"], "ci_high": cmp["ci_high"]})
    return out


def full_summary(rows: list[dict], info: dict, n_resamples: int = 1000) -> tuple[list[dict], list[dict]]:
    """(summary rows with a ``cohort`` column, the effort table): :func:`summarize` and :func:`effort_summary`
    over every row (``cohort = all``), then again per cohort of ``info["cohorts"]`` when ``info["ood"]``."""
    cap, goal = int(info["max_clicks"]), float(info.get("effort_dice", 0.8))
    table = effort_table(rows, cap, goal)
    out = [{**r, "cohort": "all"} for r in summarize(rows, cap, n_resamples) + effort_summary(table, n_resamples)]
    if info.get("ood"):
        for c in info.get("cohorts") or {}:
            sub = [r for r in rows if r.get("cohort") == c]
            out += [{**r, "cohort": c} for r in summarize(sub, cap, n_resamples)
                    + effort_summary([r for r in table if r["cohort"] == c], n_resamples)]
    return out, table


def _get(summary, **kw) -> dict | None:
    for r in summary:
        if all(str(r[k]) == str(v) for k, v in kw.items()):
            return r
    return None


def _ci(r: dict | None, digits: int = 3) -> str:
    if r is None or r["n"] == 0 or r["mean"] is None or math.isnan(r["mean"]):
        return "n/a"
    return f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] (n={r['n']})"


def _filters_line(info: dict) -> list[str]:
    """Which cases: the model's training filter and the test filter (``--train-filter`` / ``--test-filter``)."""
    train, test = info.get("train_filter") or [], info.get("test_filter") or []
    if not train and not test and not info.get("ood"):
        return []
    words = [f"Cases: the model was trained on {' and '.join(f'`{f}`' for f in train) if train else 'every case'}; "
             f"evaluated on {' and '.join(f'`{f}`' for f in test) if test else 'every case of the split'}"]
    if info.get("ood"):
        n = info.get("cohorts") or {}
        words.append(f"; out-of-distribution protocol: {n.get('in', 0)} in-distribution cases (they pass the "
                     f"training filter), {n.get('out', 0)} out-of-distribution cases (they do not)")
    return ["".join(words) + ".", ""]


def _cell(r: dict | None, digits: int = 3, cap: int | None = None, fmt: str = "f") -> str:
    """``mean [low, high]`` without n (``fmt`` "g": ``digits`` significant digits); with ``cap``, a value above
    it reads ``> cap`` (censored)."""
    if r is None or not r["n"] or r["mean"] is None or math.isnan(r["mean"]):
        return "n/a"

    def v(x):
        return f"> {cap}" if cap is not None and x > cap else f"{x:.{digits}{fmt}}"

    return f"{v(r['mean'])} [{v(r['ci_low'])}, {v(r['ci_high'])}]"


def ood_markdown(summary: list[dict], info: dict) -> list[str]:
    """Dice at 1 / 3 / 5 clicks, in distribution beside out of distribution (SegAnyPET Fig. 4a's layout)."""
    if not info.get("ood"):
        return []
    lines = ["## Out of distribution: Dice at 1 / 3 / 5 clicks, in distribution vs out of distribution", "",
             f"In: the cases that pass the model's training filter ({' and '.join(info.get('train_filter') or [])}); "
             "out: those that do not. Mean [95 % bootstrap CI] (n targets); the cohorts are different cases "
             "(not paired).", "",
             "| protocol | arm | target | group | in: 1 | in: 3 | in: 5 | out: 1 | out: 3 | out: 5 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["protocol"], r["arm"], r["kind"], r["group"]) for r in summary
                   if r["section"] == "per_step" and r["cohort"] in ("in", "out") and r["metric"] == "dice"
                   and r["protocol"] in ("autopet", "corrective", "one_per_lesion")})
    for p, a, k, g in keys:
        cells = []
        for cohort in ("in", "out"):
            for c in (1, 3, 5):
                r = _get(summary, section="per_step", protocol=p, arm=a, kind=k, group=g, clicks=c, metric="dice",
                         cohort=cohort)
                cells.append(_ci(r) if r is not None else ("" if p == "one_per_lesion" else "n/a"))
        lines.append(f"| {p} | {a} | {k} | {g} | " + " | ".join(cells) + " |")
    return lines + ["", "`one_per_lesion` is one click on every lesion (recorded as 1). The full summary per "
                    "cohort is in `results.csv` (column `cohort`).", ""]


def effort_markdown(summary: list[dict], info: dict) -> list[str]:
    """The annotation-effort table (section ``effort``), per cohort when the run had them."""
    if not any(r["section"] == "effort" for r in summary):
        return []
    cap, goal = int(info["max_clicks"]), float(info.get("effort_dice", 0.8))
    lines = [f"## Annotation effort: interactions and compute to reach Dice {goal:g}", "",
             f"Per lesion and per organ: `model` = corrective clicks (first click at the interior point, then one "
             f"click on the largest error region); `iso_brush` = the 41 % SUVmax isocontour from the same first "
             f"click, then simulated brush strokes of radius {info.get('brush_mm', 8.0):g} mm on the largest error "
             f"region (each fixes that region's voxels within the radius). Capped at {cap} interactions: a target "
             f"that does not reach {goal:g} is censored (counted as {cap + 1} in the median, shown as '> {cap}'). "
             "Seconds: measured compute (time.perf_counter) of the tool, not of the simulated user, not human time; "
             "to reach: over the targets that reached it.", "",
             "| cohort | target | group | arm | targets | fraction reached | median interactions | median s to reach "
             "| s per interaction |", "|---|---|---|---|---|---|---|---|---|"]
    cohorts = ["all"] + [c for c in ("in", "out") if any(r["cohort"] == c for r in summary)]
    keys = sorted({(r["kind"], r["group"], r["arm"]) for r in summary if r["section"] == "effort"},
                  key=lambda k: (k[0], k[1], EFFORT_ARMS.index(k[2]) if k[2] in EFFORT_ARMS else 9))
    for cohort in cohorts:
        for kind, group, arm in keys:
            def get(metric):
                return _get(summary, section="effort", kind=kind, group=group, arm=arm, metric=metric, cohort=cohort)
            frac = get("fraction_reached")
            if frac is None:
                continue
            lines.append(f"| {cohort} | {kind} | {group} | {arm} | {frac['n']} | {_cell(frac, 2)} "
                         f"| {_cell(get('interactions_median'), 1, cap)} "
                         f"| {_cell(get('seconds_to_reach_median'), 2, fmt='g')} "
                         f"| {_cell(get('seconds_per_interaction'), 2, fmt='g')} |")
    diffs = [r for r in summary if r["section"] == "effort_model_minus_iso_brush" and r["cohort"] == "all"]
    if diffs:
        lines += ["", "Fraction reached, model - iso_brush (paired over targets): " + "; ".join(
            f"{r['kind']} {r['group']} {_ci(r, 2)}" for r in diffs) + "."]
    return lines + ["", "Per target: `effort.csv`.", ""]


def markdown(summary: list[dict], info: dict) -> str:
    full = summary
    summary = [r for r in summary if r.get("cohort", "all") == "all"]  # pooled over cohorts (the sections below)
    label, warning = data_words(info.get("provenance"))  # the dataset's provenance (harmonize), not assumed
    lines = [f"# Interactive segmentation ({label}; not a clinical result)", "", warning, "",
             f"Model `{info['model']}`" + (f" (design {info['design']}, class prompts "
                                          f"{'on' if info.get('class_prompts') else 'off'})" if "design" in info else "")
             + f", data `{info['data']}` split `{info['split']}`, {info['n_cases']} cases, "
             f"up to {info['max_clicks']} clicks, auto-zoom limit {info.get('max_zoom', 4.0)}; isocontour box {info['iso_box_mm']} mm; held-out organs: "
             f"{', '.join(info['held_out']) or 'none'}; automatic baseline: `{info['auto'] or 'not given'}`; "
             f"{info['seconds']:.0f} s. Mean [95 % bootstrap CI] (n targets).", "",
             *_filters_line(info), *ood_markdown(full, info),
             "## One click per lesion: learned model vs 41 % SUVmax isocontour", "",
             "| metric | model | isocontour | model - iso (paired over cases) |", "|---|---|---|---|"]
    for m, digits in (("dice", 3), ("fp_volume_ml", 2), ("fp_voxels_ml", 2)):
        lines.append(f"| {m} | {_ci(_get(summary, section='per_step', protocol='one_per_lesion', arm='model', metric=m), digits)} "
                     f"| {_ci(_get(summary, section='per_step', protocol='one_per_lesion', arm='iso', metric=m), digits)} "
                     f"| {_ci(_get(summary, section='model_minus_iso_one_click_per_lesion', metric=m), digits)} |")
    if _get(summary, section="model_isoprior_minus_iso_one_click_per_lesion") is not None:
        lines += ["", "Isocontour-informed first click (`--iso-prior`: each lesion object starts from its click's 41 % "
                  "isocontour as the previous-mask prompt; not the pure model):", "",
                  "| metric | model + iso prior | model + iso prior - iso (paired over cases) |", "|---|---|---|"]
        for m, digits in (("dice", 3), ("fp_volume_ml", 2), ("fp_voxels_ml", 2)):
            lines.append(f"| {m} | {_ci(_get(summary, section='per_step', protocol='one_per_lesion', arm='model_isoprior', metric=m), digits)} "
                         f"| {_ci(_get(summary, section='model_isoprior_minus_iso_one_click_per_lesion', metric=m), digits)} |")
    for by in ("site", "tracer"):
        groups = sorted({r["group"] for r in summary if r["section"] == f"one_click_by_{by}"})
        if len(groups) < 2:
            continue
        lines += ["", f"One click per lesion by {by} (Dice / FP volume in ml; model - iso paired over the {by}'s cases):",
                  "", f"| {by} | cases | Dice model | Dice iso | Dice model - iso | FP model | FP iso | FP model - iso |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in groups:
            def cell(arm, m, digits, g=g):
                return _ci(_get(summary, section=f"one_click_by_{by}", group=g, arm=arm, metric=m), digits).split(" (n=")[0]
            n = _get(summary, section=f"one_click_by_{by}", group=g, arm="iso", metric="dice")
            lines.append(f"| {g} | {n['n'] if n else 0} | " + " | ".join(
                [cell("model", "dice", 3), cell("iso", "dice", 3), cell("model-iso", "dice", 3),
                 cell("model", "fp_volume_ml", 1), cell("iso", "fp_volume_ml", 1), cell("model-iso", "fp_volume_ml", 1)]) + " |")
    auto = [r for r in summary if r["protocol"] == "auto" and r["section"] == "per_step"]
    if auto:
        lines += ["", "## Automatic model (zero clicks)", ""] + [f"- {r['metric']}: {_ci(r)}" for r in auto]
    lines += ["", "## Dice at 1 / 3 / 5 / 10 clicks and AUC over the steps", "",
              "| protocol | arm | target | group | 1 | 3 | 5 | 10 | Dice AUC | FP-volume AUC (ml) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["protocol"], r["arm"], r["kind"], r["group"]) for r in summary
                   if r["section"] == "per_step" and r["protocol"] in ("autopet", "corrective")})
    for p, a, k, g in keys:
        cells = [_ci(_get(summary, section="per_step", protocol=p, arm=a, kind=k, group=g, clicks=c, metric="dice"))
                 for c in (1, 3, 5, 10)]
        auc = [_ci(_get(summary, section="auc", protocol=p, arm=a, kind=k, group=g, metric=m), d)
               for m, d in (("dice", 3), ("fp_volume_ml", 2))]
        lines.append(f"| {p} | {a} | {k} | {g} | " + " | ".join(cells + auc) + " |")
    org = [r for r in summary if r["section"].startswith("clicks_to_")]
    if org:
        lines += ["", "## Organs: clicks to reach Dice 0.8 / 0.9 (not reached = max + 1)", "",
                  "| threshold | group | clicks | fraction reached |", "|---|---|---|---|"]
        for thr in ("0.8", "0.9"):
            for g in ("seen", "held_out"):
                c = _get(summary, section=f"clicks_to_{thr}", arm="model", group=g, metric="clicks")
                f = _get(summary, section=f"clicks_to_{thr}", arm="model", group=g, metric="fraction_reached")
                if c is not None:
                    lines.append(f"| {thr} | {g} | {_ci(c, 2)} | {_ci(f, 2)} |")
    lines += ["", *effort_markdown(full, info)]
    lines += ["", "Files: `steps.csv` (every case, target, arm, step), `results.csv` (this summary), "
              "`dice_vs_clicks.png`, `cases/*.png`. Protocols and definitions: docs/promptable.md.", ""]
    return "\n".join(lines)


def plot(summary: list[dict], path: Path, data_label: str = "data of unknown provenance") -> Path:
    """Mean Dice vs clicks: autoPET protocol (model, isocontour), corrective (lesions, organs), automatic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petctfm.methods.promptable.figures import save_png

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    curves = [("autopet", "model", "lesions", "all", "model, autoPET protocol (lesions)", "C0", "-"),
              ("autopet", "iso", "lesions", "all", "41% isocontour, autoPET lesion clicks", "C1", "-"),
              ("corrective", "model", "lesions", "all", "model, corrective (all lesions)", "C0", "--"),
              ("corrective", "model", "lesion", "all", "model, corrective (one lesion)", "C2", "--"),
              ("corrective", "model", "organ", "seen", "model, corrective (seen organs)", "C3", "--"),
              ("corrective", "model", "organ", "held_out", "model, corrective (held-out organs)", "C4", ":")]
    for p, a, k, g, label, color, ls in curves:
        pts = sorted((int(r["clicks"]), r) for r in summary if r["section"] == "per_step" and r["protocol"] == p
                     and r["arm"] == a and r["kind"] == k and r["group"] == g and r["metric"] == "dice" and r["n"])
        if pts:
            x = [c for c, _ in pts]
            ax.plot(x, [r["mean"] for _, r in pts], ls, color=color, marker="o", ms=3, label=label)
            ax.fill_between(x, [r["ci_low"] for _, r in pts], [r["ci_high"] for _, r in pts], color=color, alpha=0.12)
    auto = _get(summary, section="per_step", protocol="auto", metric="dice")
    if auto is not None and auto["n"]:
        ax.axhline(auto["mean"], color="k", ls="-.", lw=1, label="automatic model (0 clicks)")
    ax.set_xlabel("clicks (autoPET protocol: lesion + background clicks per step)")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    if ax.get_legend_handles_labels()[0]:  # nothing drawn when only the one-click protocol ran
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Dice vs clicks ({data_label})", fontsize=9)
    return save_png(fig, path, dpi=90)


def case_figure(fig_case: dict, path: Path) -> Path:
    """Coronal slice through the first lesion click: CT grey, PET hot (fused), ground truth green, the model's
    mask after the autoPET protocol magenta, the isocontour cyan; lesion clicks +, background clicks x
    (all clicks projected onto the slice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    from petctfm.methods.promptable.figures import save_png

    fg, bg = fig_case["fg"], fig_case["bg"]
    y = int(fg[0][1]) if fg else fig_case["suv"].shape[1] // 2
    fig, ax = plt.subplots(figsize=(4.5, 6))
    ax.imshow(fig_case["ct"][:, y, :].T, cmap="gray", vmin=-160, vmax=240, origin="lower")
    pet = np.clip(fig_case["suv"][:, y, :].T / 10.0, 0, 1)
    rgba = colormaps["hot"](pet)
    rgba[..., 3] = np.clip(pet / 0.25, 0, 1) * 0.65
    ax.imshow(rgba, origin="lower")
    for key, color in (("gt", "lime"), ("mask", "magenta"), ("iso", "cyan")):
        m = fig_case.get(key)
        if m is not None and m[:, y, :].any():
            ax.contour(m[:, y, :].T.astype(float), levels=[0.5], colors=color, linewidths=1)
    for p in fg:
        ax.plot(p[0], p[2], "+", color="lime", ms=9, mew=2)
    for p in bg:
        ax.plot(p[0], p[2], "x", color="deepskyblue", ms=7, mew=2)
    ax.set_title(f"{fig_case['case_id']}: truth green, model magenta, 41% iso cyan\n+ lesion clicks, x background "
                 "clicks", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_png(fig, path)


def write_report(rows: list[dict], figures: list[dict], info: dict, out: str | Path) -> dict[str, Any]:
    """Write every file under ``out``; returns their paths, the summary and the rows."""
    from petctfm.io.atomic import atomic_write_json, atomic_write_text
    from petctfm.io.tables import csv_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, effort = full_summary(rows, info)
    steps = [{k: r.get(k, "") for k in STEP_COLUMNS} for r in rows]
    atomic_write_text(out / "steps.csv", csv_text(steps))
    if effort:
        atomic_write_text(out / "effort.csv", csv_text(effort, EFFORT_COLUMNS))
    atomic_write_text(out / "results.csv", csv_text([{k: r[k] for k in SUMMARY_COLUMNS} for r in summary]))
    atomic_write_text(out / "results.md", markdown(summary, info))
    atomic_write_json(out / "info.json", info)
    pngs = [case_figure(f, out / "cases" / f"{f['case_id']}.png") for f in figures]
    pooled = [r for r in summary if r["cohort"] == "all"]
    return {"results_md": out / "results.md", "results_csv": out / "results.csv", "steps_csv": out / "steps.csv",
            "effort_csv": out / "effort.csv" if effort else None,
            "plot": plot(pooled, out / "dice_vs_clicks.png", data_words(info.get("provenance"))[0]), "cases": pngs,
            "summary": summary, "effort": effort, "rows": rows}


__all__ = ["STEP_COLUMNS", "SUMMARY_COLUMNS", "EFFORT_COLUMNS", "EFFORT_ARMS", "clicks_to_reach", "summarize",
           "effort_table", "median_ci", "effort_summary", "full_summary", "ood_markdown", "effort_markdown",
           "markdown", "plot", "case_figure", "write_report"]
