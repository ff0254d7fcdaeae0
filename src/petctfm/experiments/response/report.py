"""Outputs of ``petctfm experiment response``: ``pairs.csv``, ``quarantine.csv``, ``response_experiment.png``
(confusion matrix + change scatter), ``results.md`` and ``summary.json`` (written last, as one set by
:func:`petctfm.io.atomic.atomic_outputs`)."""

from __future__ import annotations

import datetime as dt
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.experiments.response.plan import Settings
from petctfm.experiments.response.scoring import NE, f1
from petctfm.synth.followup import CATEGORIES

SUMMARY_JSON = "summary.json"
PAIRS_CSV = "pairs.csv"
QUARANTINE_CSV = "quarantine.csv"
RESULTS_MD = "results.md"
FIGURE = "response_experiment.png"
PREDICTED = (*CATEGORIES, NE)
COLUMNS = ["pair", "truth", "predicted", "correct", "reason", "truth_change_percent", "measured_change_percent",
           "baseline_sulpeak", "followup_sulpeak", "baseline_threshold", "shift_mm", "same_site", "tp", "fp", "fn"]


def _r(v: Any, nd: int = 4) -> Any:
    if v is None:
        return None
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def confusion(rows: list[dict[str, Any]]) -> np.ndarray:
    """Counts (len(CATEGORIES), len(PREDICTED)): rows the truth category, columns the predicted one (NE last)."""
    m = np.zeros((len(CATEGORIES), len(PREDICTED)), int)
    for r in rows:
        m[CATEGORIES.index(r["truth"]), PREDICTED.index(r["predicted"])] += 1
    return m


def _exact_ci(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def _errors(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    d = np.array([m - t for t, m in pairs], float)
    if not d.size:
        return {"n": 0, "mean_abs": None, "median_abs": None, "mean_signed": None, "max_abs": None}
    return {"n": int(d.size), "mean_abs": _r(np.abs(d).mean(), 2), "median_abs": _r(np.median(np.abs(d)), 2),
            "mean_signed": _r(d.mean(), 2), "max_abs": _r(np.abs(d).max(), 2)}


def summarize(s: Settings, rows: list[dict[str, Any]], quarantined: list[dict[str, str]], seconds: float
              ) -> dict[str, Any]:
    """The ``summary.json`` dict."""
    from petctfm.evaluate.bootstrap import mean_ci

    n = len(rows)
    k = sum(r["correct"] for r in rows)
    boot = mean_ci([r["correct"] for r in rows], n_resamples=s.bootstrap, seed=s.seed)
    lo, hi = _exact_ci(k, n)
    tp, fp, fn = (sum(r[x] for r in rows) for x in ("tp", "fp", "fn"))

    def sub_f1(sel):
        sub = [r for r in rows if sel(r)]
        counts = (sum(r[x] for r in sub) for x in ("tp", "fp", "fn"))
        return {"n_pairs": len(sub), **{a: _r(b) for a, b in f1(*counts).items()}}

    hottest = [(float(r["truth_change_percent"]), float(r["measured_change_percent"])) for r in rows
               if r["truth"] != "CMR" and r["measured_change_percent"] is not None]
    lesion = [c for r in rows for c in r["lesion_changes"]]
    m = confusion(rows)
    return {
        "experiment": "response",
        "category_accuracy": _r(k / n),
        "n_pairs": n,
        "n_correct": k,
        "accuracy_ci_bootstrap": [_r(boot["ci_low"]), _r(boot["ci_high"])],
        "accuracy_ci_exact": [_r(lo), _r(hi)],
        "confusion": {"rows_truth": list(CATEGORIES), "columns_predicted": list(PREDICTED), "counts": m.tolist()},
        "accuracy_by_category": {c: _r(m[i, i] / m[i].sum()) if m[i].sum() else None for i, c in enumerate(CATEGORIES)},
        "matching": {"tp": tp, "fp": fp, "fn": fn, **{a: _r(b) for a, b in f1(tp, fp, fn).items()},
                     "shift_at_least_30mm": sub_f1(lambda r: float(r["shift_mm"]) >= 30.0),
                     "other_site": sub_f1(lambda r: not r["same_site"])},
        "matching_f1": _r(f1(tp, fp, fn)["f1"]),
        "sulpeak_change_error_percent_points": {
            "hottest": _errors(hottest), "per_matched_lesion": _errors(lesion),
            "definition": "measured SULpeak % change (petctfm response) minus the planted SULmean % change "
                          "(response_truth.json); hottest: PERCIST's target, CMR pairs left out"},
        "quarantined": quarantined,
        "settings": s.to_json(),
        "seconds": round(seconds, 1),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "note": "synthetic phantoms (petctfm synth --followup); not clinical data; not a medical device",
    }


def plot(rows: list[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """The figure: the confusion matrix and the measured vs planted change of the hottest lesion (and of each
    matched lesion), with PERCIST's +-30 % lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array(summary["confusion"]["counts"])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.6))
    ax[0].imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax[0].text(j, i, str(m[i, j]), ha="center", va="center",
                       color="white" if m[i, j] > m.max() / 2 else "black")
    ax[0].set_xticks(range(len(PREDICTED)), PREDICTED)
    ax[0].set_yticks(range(len(CATEGORIES)), CATEGORIES)
    ax[0].set_xlabel("petctfm response (PERCIST 1.0)")
    ax[0].set_ylabel("truth (response_truth.json)")
    ax[0].set_title(f"accuracy {summary['category_accuracy']:.3f} (n = {summary['n_pairs']})")
    les = [c for r in rows for c in r["lesion_changes"]]
    if les:
        a = np.array(les)
        ax[1].scatter(a[:, 0], a[:, 1], s=10, c="0.6", label="matched lesion")
    hot = [(r["truth_change_percent"], r["measured_change_percent"], r["truth"]) for r in rows
           if r["measured_change_percent"] is not None]
    for c, col in zip(CATEGORIES, ("tab:green", "tab:blue", "tab:orange", "tab:red")):
        pts = np.array([(t, v) for t, v, cat in hot if cat == c], float).reshape(-1, 2)
        if len(pts):
            ax[1].scatter(pts[:, 0], pts[:, 1], s=24, c=col, label=f"hottest, {c}")
    lim = [-110, max(150.0, *(abs(float(v)) for _, v, _ in hot))] if hot else [-110, 150]
    ax[1].plot(lim, lim, "k:", lw=0.8)
    for y in (-30, 30):
        ax[1].axhline(y, color="0.4", lw=0.6, ls="--")
    ax[1].set_xlabel("planted SULmean change (%)")
    ax[1].set_ylabel("measured SULpeak change (%)")
    ax[1].set_title(f"matching F1 {summary['matching_f1']:.3f}")
    if ax[1].get_legend_handles_labels()[0]:
        ax[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("petctfm experiment response: synthetic phantoms, not clinical data", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def results_md(summary: dict[str, Any]) -> str:
    s, mt, e = summary["settings"], summary["matching"], summary["sulpeak_change_error_percent_points"]
    mode = "ground-truth masks (`--masks truth`)" if s["masks"] else f"predicted masks (`--model {s['model']}`)"
    lines = [
        "# Treatment response on follow-up phantoms", "",
        f"{summary['n_pairs']} pairs from `{s['data']}`, {mode}; {summary['date_utc']} UTC. Synthetic phantoms, "
        "not clinical data.", "",
        f"- PERCIST category accuracy: **{summary['category_accuracy']:.3f}** ({summary['n_correct']}/"
        f"{summary['n_pairs']}); 95 % CI bootstrap {summary['accuracy_ci_bootstrap']}, exact (Clopper-Pearson) "
        f"{summary['accuracy_ci_exact']}",
        f"- lesion-matching F1: **{summary['matching_f1']}** (TP {mt['tp']}, FP {mt['fp']}, FN {mt['fn']}); shifts "
        f">= 3 cm: {mt['shift_at_least_30mm']['f1']} ({mt['shift_at_least_30mm']['n_pairs']} pairs); another "
        f"site's scanner: {mt['other_site']['f1']} ({mt['other_site']['n_pairs']} pairs)",
        f"- SULpeak % change error (measured minus planted, percentage points): hottest lesion mean |error| "
        f"{e['hottest']['mean_abs']} (signed {e['hottest']['mean_signed']}, n {e['hottest']['n']}); per matched "
        f"lesion {e['per_matched_lesion']['mean_abs']} (signed {e['per_matched_lesion']['mean_signed']}, n "
        f"{e['per_matched_lesion']['n']})",
        f"- quarantined pairs: {len(summary['quarantined'])}", "",
        "## Confusion matrix (rows: truth, columns: predicted)", "",
        "| truth \\ predicted | " + " | ".join(PREDICTED) + " |", "|---" * (len(PREDICTED) + 1) + "|",
    ]
    for c, row in zip(CATEGORIES, summary["confusion"]["counts"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", f"Figure: `{FIGURE}`; per pair: `{PAIRS_CSV}` and `pairs/<pair>/` (response.json, lesions.csv).",
              "The planted change is the phantom's lesion SULmean (no blur, no noise); the measured SULpeak is a "
              "1 ml sphere in the blurred, noisy PET, so partial volume pulls its change towards 0.", ""]
    return "\n".join(lines)


def write_report(out: Path, s: Settings, rows: list[dict[str, Any]], quarantined: list[dict[str, str]],
                 seconds: float) -> dict[str, Any]:
    from petctfm.io.atomic import atomic_outputs, atomic_write_bytes, atomic_write_json, atomic_write_text
    from petctfm.io.tables import csv_text

    summary = summarize(s, rows, quarantined, seconds)
    with atomic_outputs(out, SUMMARY_JSON) as tmp:
        atomic_write_text(tmp / PAIRS_CSV, csv_text([{k: r[k] for k in COLUMNS} for r in rows], COLUMNS))
        atomic_write_text(tmp / QUARANTINE_CSV, csv_text(quarantined, ["pair", "reason"]))
        atomic_write_bytes(tmp / FIGURE, plot(rows, summary))
        atomic_write_text(tmp / RESULTS_MD, results_md(summary))
        atomic_write_json(tmp / SUMMARY_JSON, summary)
    summary["results_md"] = str(out / RESULTS_MD)
    return summary
