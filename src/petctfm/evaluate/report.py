"""Evaluate a folder of predictions against ground truth and write the report (CSV, markdown, PNG).

:func:`evaluate_folder` returns plain structures (lists of dicts), no pandas; :func:`write_report` writes
``per_case.csv``, ``summary.csv``, ``summary.md``, ``dice_per_case.png`` and, with a comparison set,
``per_case_compare.csv`` and ``comparison.csv``. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.checks import check_choice, check_float, check_int
from petctfm.core.version import __version__
from petctfm.core.errors import InputError
from petctfm.evaluate.bootstrap import aggregate, paired_comparison
from petctfm.evaluate.cases import (
    BREAKDOWN_COLUMNS, auto_manifest, explicit_suv, find_ground_truth, find_predictions, load_ground_truth,
    read_manifest, read_mask, read_suv,
)
from petctfm.evaluate.geometry import grid_mismatch
from petctfm.evaluate.metrics import CASE_METRICS, case_metrics
from petctfm.io.atomic import atomic_path, atomic_write_text, ensure_output_dir
from petctfm.io.tables import csv_text

# Metrics summarized with bootstrap CIs (the rest of CASE_METRICS are counts / bookkeeping).
SUMMARY_METRICS = [
    "dice", "iou", "sensitivity", "precision", "fp_volume_ml", "fn_volume_ml",
    "lesion_recall", "lesion_precision", "lesion_f1",
    "tmtv_error_ml", "tmtv_abs_error_ml", "tmtv_rel_error", "tlg_error", "tlg_abs_error", "tlg_rel_error",
]
BREAKDOWN_METRICS = ["dice", "fp_volume_ml", "fn_volume_ml", "lesion_f1"]
COMPARE_METRICS = ["dice", "fp_volume_ml", "fn_volume_ml", "lesion_f1", "tmtv_abs_error_ml"]


CONNECTIVITIES = (6, 18, 26)


def check_options(connectivity: int = 18, detection_iou: float = 0.0, n_resamples: int = 1000, seed: int = 0) -> None:
    """The settings of :func:`evaluate_folder`, before any case is read: ``connectivity`` 6, 18 or 26,
    ``detection_iou`` in [0, 1), ``n_resamples`` >= 0 (0 = no CI), ``seed`` >= 0. A value out of range is a
    UsageError naming it."""
    check_choice("connectivity", connectivity, CONNECTIVITIES)
    check_float("detection_iou", detection_iou, lo=0, hi=1, hi_open=True)
    check_int("n_resamples", n_resamples, lo=0)
    check_int("seed", seed, lo=0)


def evaluate_folder(pred: str | Path, gt: str | Path, suv: str | None = None, manifest: str | Path | None = None,
                    compare: str | Path | None = None, allow_missing: bool = False, connectivity: int = 18,
                    detection_iou: float = 0.0, n_resamples: int = 1000, seed: int = 0,
                    split: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Evaluate every ground-truth case against its prediction (and optionally a second prediction set).

    Returns a dict with ``cases`` (one dict per case: case_id, manifest columns, CASE_METRICS),
    ``cases_compare`` (same for ``compare`` or None), ``summary`` (:func:`aggregate` rows),
    ``comparison`` (one :func:`paired_comparison` dict per metric in COMPARE_METRICS, or None),
    ``breakdown_columns`` and ``info`` (inputs and settings, for the report header).

    A ground-truth case without prediction is an error listing all such cases, unless ``allow_missing``
    (then the prediction is taken as empty and the case is flagged ``missing_prediction``). Settings out of
    range: :func:`check_options`.
    """
    check_options(connectivity, detection_iou, n_resamples, seed)
    gt_cases = find_ground_truth(gt, split)
    pred_sets = {"pred": find_predictions(pred)}
    if compare is not None:
        pred_sets["compare"] = find_predictions(compare)
    for key, found in pred_sets.items():
        missing = sorted(set(gt_cases) - set(found))
        if missing and not allow_missing:
            folder = pred if key == "pred" else compare
            raise InputError(f"{folder}: no prediction for {len(missing)} ground-truth case(s): "
                             f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''} "
                             "(use --allow-missing to count them as empty predictions)")
    extra = sorted(set(pred_sets["pred"]) - set(gt_cases))

    manifest_path = Path(manifest) if manifest else auto_manifest(gt)
    meta = read_manifest(manifest_path) if manifest_path else {}
    columns = [c for c in BREAKDOWN_COLUMNS if any(c in row for row in meta.values())]

    results: dict[str, list[dict]] = {k: [] for k in pred_sets}
    from rich.progress import track

    for case_id, case in track(list(gt_cases.items()), description="evaluating", disable=not progress):
        gt_mask, gt_suv, grid, _ = load_ground_truth(case)
        if suv is not None:
            gt_suv = read_suv(explicit_suv(suv, case_id), grid, case.name)
        for key, found in pred_sets.items():
            row: dict[str, Any] = {"case_id": case_id}
            row.update({c: meta.get(case_id, {}).get(c, "") for c in columns})
            if case_id in found:
                mask, pgrid = read_mask(found[case_id])
                problem = grid_mismatch(grid, pgrid)
                if problem:
                    raise InputError(f"mismatched geometry: prediction {found[case_id]} vs ground truth "
                                     f"{case.name}: {problem}")
                row["missing_prediction"] = False
            else:
                mask = np.zeros_like(gt_mask)
                row["missing_prediction"] = True
            row.update(case_metrics(mask, gt_mask, grid.spacing, gt_suv, connectivity, detection_iou))
            results[key].append(row)

    info = {
        "pred": str(pred), "gt": str(gt), "compare": str(compare) if compare else None,
        "suv": suv, "manifest": str(manifest_path) if manifest_path else None, "split": split,
        "connectivity": connectivity, "detection_iou": detection_iou, "allow_missing": allow_missing,
        "extra_predictions": extra,
    }
    return build_result(results["pred"], results.get("compare"), columns, n_resamples, seed, info)


def build_result(cases: list[dict], cases_compare: list[dict] | None = None, breakdown_columns=(),
                 n_resamples: int = 1000, seed: int = 0, info: dict | None = None) -> dict[str, Any]:
    """Aggregate per-case rows (``{"case_id", <breakdown columns>, **case_metrics(...)}``) into the
    structure :func:`write_report` writes; for callers that evaluate arrays in memory (the experiment).

    ``cases_compare`` must list the same cases in the same order.
    """
    if cases_compare is not None and [r["case_id"] for r in cases] != [r["case_id"] for r in cases_compare]:
        raise ValueError("cases and cases_compare must list the same case ids in the same order")
    columns = [c for c in breakdown_columns if any(c in r for r in cases)]
    comparison = None
    if cases_compare is not None:
        comparison = [{"metric": m, **paired_comparison([r[m] for r in cases], [r[m] for r in cases_compare],
                                                        n_resamples, seed)} for m in COMPARE_METRICS]
    full_info = {"pred": "A", "gt": "", "compare": "B" if cases_compare is not None else None, "suv": None,
                 "manifest": None, "split": None, "connectivity": 18, "detection_iou": 0.0,
                 "allow_missing": False, "extra_predictions": [], **(info or {}),
                 "n_resamples": n_resamples, "seed": seed, "version": __version__}
    return {
        "cases": [{"missing_prediction": False, **r} for r in cases],
        "cases_compare": cases_compare,
        "summary": aggregate(cases, SUMMARY_METRICS, columns, n_resamples, seed),
        "comparison": comparison,
        "breakdown_columns": columns,
        "info": full_info,
    }


# ----------------------------------------------------------------------------------------------- writing
def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _mean_ci(s: dict, digits: int = 3) -> str:
    if s["n"] == 0:
        return "n/a"
    return f"{_fmt(s['mean'], digits)} [{_fmt(s['ci_low'], digits)}, {_fmt(s['ci_high'], digits)}]"


def _markdown(result: dict) -> str:
    info, cases = result["info"], result["cases"]
    n_neg = sum(1 for r in cases if r["negative"])
    lines = [
        "# Segmentation evaluation",
        "",
        f"- predictions: `{info['pred']}`; ground truth: `{info['gt']}`"
        + (f" (split `{info['split']}`)" if info["split"] else ""),
        f"- cases: {len(cases)} ({len(cases) - n_neg} with lesions, {n_neg} negative)"
        + (f"; {sum(r['missing_prediction'] for r in cases)} missing predictions counted as empty"
           if info["allow_missing"] else ""),
        f"- manifest: `{info['manifest']}`" if info["manifest"] else "- manifest: none (no breakdowns)",
        f"- lesions: {info['connectivity']}-connected components; a lesion is detected when the predicted "
        f"components touching it reach IoU > {info['detection_iou']:g}"
        + (" (any overlap)" if info["detection_iou"] == 0 else ""),
        f"- mean [95% CI]: percentile bootstrap over cases, {info['n_resamples']} resamples, seed {info['seed']};"
        " Dice/IoU/sensitivity exclude negative cases (autoPET convention), the FP volume includes them",
        f"- petctfm {info['version']}",
    ]
    if info["extra_predictions"]:
        lines.append(f"- {len(info['extra_predictions'])} prediction(s) without ground truth ignored: "
                     + ", ".join(info["extra_predictions"][:10]))
    lines += ["", "## All cases", "", "| metric | n | mean [95% CI] | median |", "|---|---|---|---|"]
    for s in result["summary"]:
        if s["group_by"] == "all":
            lines.append(f"| {s['metric']} | {s['n']} | {_mean_ci(s)} | {_fmt(s['median'])} |")
    for col in result["breakdown_columns"]:
        rows = [s for s in result["summary"] if s["group_by"] == col]
        groups = list(dict.fromkeys(s["group"] for s in rows))
        lines += ["", f"## By {col}", "",
                  f"| {col} | cases | " + " | ".join(BREAKDOWN_METRICS) + " |",
                  "|---|---|" + "---|" * len(BREAKDOWN_METRICS)]
        for g in groups:
            by_metric = {s["metric"]: s for s in rows if s["group"] == g}
            n_cases = next(iter(by_metric.values()))["n_cases"]
            lines.append(f"| {g} | {n_cases} | "
                         + " | ".join(_mean_ci(by_metric[m]) for m in BREAKDOWN_METRICS) + " |")
    if result["comparison"]:
        lines += ["", "## Paired comparison", "",
                  f"A = `{info['pred']}`, B = `{info['compare']}`; difference A - B over cases where both are "
                  "defined; Wilcoxon signed-rank test (two-sided, zero differences dropped).", "",
                  "| metric | n | mean A | mean B | mean diff [95% CI] | A better / B better / ties | Wilcoxon p |",
                  "|---|---|---|---|---|---|---|"]
        for c in result["comparison"]:
            higher_better = c["metric"] in ("dice", "lesion_f1")
            a_better, b_better = (c["wins_a"], c["wins_b"]) if higher_better else (c["wins_b"], c["wins_a"])
            lines.append(f"| {c['metric']} | {c['n']} | {_fmt(c['mean_a'])} | {_fmt(c['mean_b'])} | "
                         f"{_fmt(c['mean_diff'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | "
                         f"{a_better} / {b_better} / {c['ties']} | {_fmt(c['p_value'], 4)} |")
    lines += ["", "![Dice per case](dice_per_case.png)", ""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    """Dice per case (positive cases), box + jittered points per group of the first breakdown column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    col = result["breakdown_columns"][0] if result["breakdown_columns"] else None
    info = result["info"]
    sets = [(f"A: {Path(info['pred']).name}", result["cases"])]
    if result["cases_compare"]:
        sets.append((f"B: {Path(info['compare']).name}", result["cases_compare"]))
    groups = sorted({str(r.get(col) or "unknown") for r in result["cases"]}) if col else ["all"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(groups) * len(sets) + 1.5), 3.6), dpi=110)
    rng = np.random.default_rng(0)
    width = 0.8 / len(sets)
    for k, (name, rows) in enumerate(sets):
        data = [[r["dice"] for r in rows if not math.isnan(r["dice"])
                 and (col is None or str(r.get(col) or "unknown") == g)] for g in groups]
        pos = np.arange(len(groups)) + (k - (len(sets) - 1) / 2) * width
        nonempty = [i for i, d in enumerate(data) if d]
        if nonempty:
            ax.boxplot([data[i] for i in nonempty], positions=pos[nonempty], widths=width * 0.7,
                       showfliers=False, boxprops={"color": f"C{k}"}, medianprops={"color": f"C{k}"},
                       whiskerprops={"color": f"C{k}"}, capprops={"color": f"C{k}"})
        for i, d in enumerate(data):
            ax.scatter(pos[i] + rng.uniform(-width / 5, width / 5, len(d)), d, s=10, alpha=0.7,
                       color=f"C{k}")
        if len(sets) > 1:
            ax.scatter([], [], s=10, color=f"C{k}", label=name)
    counts = [sum(1 for r in result["cases"] if not math.isnan(r["dice"])
                  and (col is None or str(r.get(col) or "unknown") == g)) for g in groups]
    ax.set_xticks(np.arange(len(groups)), [f"{g}\n(n={c})" for g, c in zip(groups, counts)])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice (cases with lesions)")
    ax.set_xlabel(col or "")
    if len(sets) > 1:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-case Dice")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(result: dict, out: str | Path) -> dict[str, Path]:
    """Write the report files into ``out`` (created if needed); returns them by name."""
    out = ensure_output_dir(out, "--out")  # a file, /proc, read-only: one-line OutputError (exit 4)
    lead = ["case_id", *result["breakdown_columns"], "missing_prediction"]
    files = {
        "per_case.csv": atomic_write_text(out / "per_case.csv", csv_text(result["cases"], lead + CASE_METRICS)),
        "summary.csv": atomic_write_text(out / "summary.csv", csv_text(result["summary"])),
    }
    if result["comparison"]:
        files["per_case_compare.csv"] = atomic_write_text(
            out / "per_case_compare.csv", csv_text(result["cases_compare"], lead + CASE_METRICS))
        files["comparison.csv"] = atomic_write_text(out / "comparison.csv", csv_text(result["comparison"]))
    _plot(result, out / "dice_per_case.png")
    files["dice_per_case.png"] = out / "dice_per_case.png"
    files["summary.md"] = atomic_write_text(out / "summary.md", _markdown(result))
    return files


__all__ = ["CONNECTIVITIES", "check_options", "evaluate_folder", "build_result", "write_report", "SUMMARY_METRICS",
           "BREAKDOWN_METRICS", "COMPARE_METRICS"]
