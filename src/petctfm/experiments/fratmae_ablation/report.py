"""The FratMAE ablation's results: per row (arm, label fraction) test Dice and IoU with 95% bootstrap CIs over
test cases (per-case values averaged over seeds first), staging macro sensitivity and accuracy (per test case
the seed-averaged probability, :func:`petctfm.methods.staging.classification_metrics`), paired Wilcoxon tests
against no pretraining at the same fraction; ``results.csv``, ``results.md``, ``fratmae_ablation.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.experiments.fratmae_ablation.plan import ARMS, LABELS, MORE, TABLE2, TABLE3, Planned, Settings
from petctfm.experiments.label_efficiency.plan import fmt_pct
from petctfm.experiments.label_efficiency.report import fmt_num
from petctfm.io.tables import csv_text

COLUMNS = ["table", "arm", "label", "fraction", "stack", "n_seeds", "n_train_cases", "n_test_cases",
           "dice", "dice_ci_low", "dice_ci_high", "iou", "iou_ci_low", "iou_ci_high",
           "dice_diff_vs_scratch", "diff_ci_low", "diff_ci_high", "wilcoxon_p_vs_scratch",
           "stage_sensitivity_macro", "stage_sens_ci_low", "stage_sens_ci_high",
           "stage_accuracy", "stage_acc_ci_low", "stage_acc_ci_high", "stage_n_test"]


def per_case(records: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Case -> the metric ``key`` (a {case: value} map in each record) averaged over the records (seeds);
    NaN where undefined in all of them (Dice of a case without lesions)."""
    out = {}
    for c in sorted({c for r in records for c in r[key]}):
        vals = [float(v) for r in records if (v := r[key].get(c)) is not None and math.isfinite(float(v))]
        out[c] = float(np.mean(vals)) if vals else float("nan")
    return out


def summarize(records: list[dict[str, Any]], n_resamples: int = 1000) -> dict[str, Any]:
    """``{"rows": [...], "stage": {arm: metrics}, "comparisons": [...]}`` from the finished runs' records."""
    from petctfm.evaluate.bootstrap import mean_ci, paired_comparison
    from petctfm.methods.staging import classification_metrics

    keyed: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in records:
        if r["kind"] == "finetune":
            keyed.setdefault((r["arm"], float(r["fraction"])), []).append(r)
    rows = []
    for (arm, pct), rs in keyed.items():
        dice, iou = per_case(rs, "case_dice"), per_case(rs, "case_iou")
        rows.append({"arm": arm, "fraction": pct, "stack": ARMS[arm][1], "n_seeds": len(rs),
                     "n_train_cases": rs[0]["n_train_cases"], "n_test_cases": len(dice), "case_dice": dice,
                     "dice": mean_ci(list(dice.values()), n_resamples, 0),
                     "iou": mean_ci(list(iou.values()), n_resamples, 0)})
    order = list(ARMS)
    rows.sort(key=lambda g: (g["fraction"], order.index(g["arm"])))
    find = {(g["arm"], g["fraction"]): g for g in rows}
    comps = []
    for g in rows:
        ref = find.get(("scratch", g["fraction"]))
        if ref is None or g is ref:
            continue
        ids = sorted(set(g["case_dice"]) & set(ref["case_dice"]))
        c = paired_comparison([g["case_dice"][i] for i in ids], [ref["case_dice"][i] for i in ids], n_resamples, 0)
        g["vs_scratch"] = c
        comps.append({"a": f"{LABELS[g['arm']]} {fmt_pct(g['fraction'])}%",
                      "b": f"{LABELS['scratch']} {fmt_pct(g['fraction'])}%", **c})
    stage: dict[str, Any] = {}
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["kind"] == "stage":
            by_arm.setdefault(r["arm"], []).append(r)
    for arm, rs in by_arm.items():
        prob = per_case(rs, "case_prob")
        ids = sorted(prob)
        stage[arm] = classification_metrics([rs[0]["case_label"][i] for i in ids], [prob[i] for i in ids],
                                            n_resamples=n_resamples, seed=0)
        stage[arm]["n_seeds"] = len(rs)
    return {"rows": rows, "stage": stage, "comparisons": comps}


def _ci(d: dict[str, Any] | None, value: str = "mean") -> str:
    if not d or not math.isfinite(float(d.get(value, float("nan")) if d.get(value) is not None else float("nan"))):
        return "n/a"
    return f"{fmt_num(d[value])} ({fmt_num(d['ci_low'])}-{fmt_num(d['ci_high'])})"


def result_rows(summary: dict[str, Any], fraction: float) -> list[dict[str, Any]]:
    out = []
    for g in summary["rows"]:
        table = "3" if g["arm"] in TABLE3 and g["fraction"] == fraction else ("2" if g["arm"] in TABLE2 else "3-more")
        c, s = g.get("vs_scratch") or {}, summary["stage"].get(g["arm"]) if g["fraction"] == fraction else None
        out.append({"table": table, "arm": g["arm"], "label": LABELS[g["arm"]], "fraction": fmt_pct(g["fraction"]),
                    "stack": g["stack"], "n_seeds": g["n_seeds"], "n_train_cases": g["n_train_cases"],
                    "n_test_cases": g["n_test_cases"], "dice": g["dice"]["mean"], "dice_ci_low": g["dice"]["ci_low"],
                    "dice_ci_high": g["dice"]["ci_high"], "iou": g["iou"]["mean"], "iou_ci_low": g["iou"]["ci_low"],
                    "iou_ci_high": g["iou"]["ci_high"], "dice_diff_vs_scratch": c.get("mean_diff"),
                    "diff_ci_low": c.get("ci_low"), "diff_ci_high": c.get("ci_high"),
                    "wilcoxon_p_vs_scratch": c.get("p_value"),
                    **({"stage_sensitivity_macro": s["balanced_accuracy"]["value"],
                        "stage_sens_ci_low": s["balanced_accuracy"]["ci_low"],
                        "stage_sens_ci_high": s["balanced_accuracy"]["ci_high"],
                        "stage_accuracy": s["accuracy"]["value"], "stage_acc_ci_low": s["accuracy"]["ci_low"],
                        "stage_acc_ci_high": s["accuracy"]["ci_high"], "stage_n_test": s["n"]} if s else {})})
    return out


def results_markdown(summary: dict[str, Any], settings: Settings, command: str, missing: list[str],
                     notes: list[str]) -> str:
    f = settings.fraction
    lines = ["# FratMAE ablation (Oh et al. 2025, Tables 2 and 3)", "",
             "Synthetic or user data; these numbers are only as clinical as the dataset. Test split, Dice and IoU:",
             "mean over test cases of the seed-averaged per-case value, 95% percentile-bootstrap CI over cases; "
             "Wilcoxon: paired signed-rank test of per-case Dice against no pretraining at the same fraction. "
             "Staging (early I-II vs advanced III-IV) from the central whole-body stack: "
             + ("the paper's fine-tuning (encoder + MLP end to end, cross-entropy, lr 5e-5, batch 2, "
                f"{settings.stage_epochs} epochs, on the stored "
                f"{fmt_pct(settings.stage_fraction or settings.fraction)}% of the training cases)"
                if settings.stage_mode == "finetune" else
                "MLP on pooled frozen-encoder features (probe, the whole train split)")
             + "; per test case the probability averaged over seeds; macro sensitivity = balanced accuracy.",
             "", f"Reproduce: `{command}`", ""]
    stage = summary["stage"]
    lines += [f"## Table 3: pretraining ablation at {fmt_pct(f)}% of the training labels", "",
              "| pretraining | Dice (95% CI) | IoU (95% CI) | dDice vs none (95% CI) | Wilcoxon p | "
              "staging sensitivity (macro) | staging accuracy | seeds |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in summary["rows"]:
        if g["fraction"] != f or g["arm"] not in TABLE3:
            continue
        c, s = g.get("vs_scratch"), stage.get(g["arm"])
        diff = f"{fmt_num(c['mean_diff'])} ({fmt_num(c['ci_low'])}-{fmt_num(c['ci_high'])})" if c else "-"
        lines.append(f"| {LABELS[g['arm']]} | {_ci(g['dice'])} | {_ci(g['iou'])} | {diff} | "
                     f"{fmt_num(c['p_value']) if c else '-'} | "
                     f"{_ci(s['balanced_accuracy'], 'value') if s else 'n/a'} | "
                     f"{_ci(s['accuracy'], 'value') if s else 'n/a'} | {g['n_seeds']} |")
    more = [g for g in summary["rows"] if g["fraction"] != f and g["arm"] in MORE]
    if more:
        lines += ["", "## More labels: no pretraining vs FratMAE", "",
                  "| fraction | pretraining | Dice (95% CI) | IoU (95% CI) | Wilcoxon p vs none |", "| --- | --- | --- | --- | --- |"]
        for g in more:
            c = g.get("vs_scratch")
            lines.append(f"| {fmt_pct(g['fraction'])}% | {LABELS[g['arm']]} | {_ci(g['dice'])} | {_ci(g['iou'])} | "
                         f"{fmt_num(c['p_value']) if c else '-'} |")
    t2 = [g for g in summary["rows"] if g["fraction"] == f and g["arm"] in ("scratch",) + TABLE2]
    if len(t2) > 1:
        lines += ["", f"## Table 2: coronal vs axial stacks, no pretraining, {fmt_pct(f)}% of the labels", "",
                  "| stacks | Dice (95% CI) | IoU (95% CI) | Wilcoxon p (axial vs coronal) | staging sensitivity "
                  "(macro) | staging accuracy |", "| --- | --- | --- | --- | --- | --- |"]
        for g in t2:
            c, s = g.get("vs_scratch"), stage.get(g["arm"])
            lines.append(f"| {g['stack']} | {_ci(g['dice'])} | {_ci(g['iou'])} | {fmt_num(c['p_value']) if c else '-'} | "
                         f"{_ci(s['balanced_accuracy'], 'value') if s else 'n/a'} | "
                         f"{_ci(s['accuracy'], 'value') if s else 'n/a'} |")
    lines += ["", "## Settings", "", f"- preset `{settings.preset}`, pretraining steps "
              f"{settings.pretrain_steps or 'preset'}, fine-tuning steps {settings.max_steps or 'preset'} (every arm)",
              f"- overrides: fine-tuning {settings.overrides or 'none'}, pretraining {settings.pretrain_overrides or 'none'}"]
    lines += [f"- {n}" for n in notes]
    if missing:
        lines += ["", f"**Incomplete**: {len(missing)} planned runs not finished ({', '.join(missing[:5])}...); "
                  "rerun the same command to continue."]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], png: Path) -> Path:
    """Test Dice (95% CI) per row, and staging macro sensitivity per pretraining (when staged)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from petctfm.io.atomic import atomic_path

    rows, stage = summary["rows"], summary["stage"]
    fig = Figure(figsize=(10 if stage else 6.5, 0.45 * max(len(rows), 4) + 1.2), dpi=110)
    axes = fig.subplots(1, 2) if stage else [fig.subplots()]
    labels = [f"{LABELS[g['arm']]} {fmt_pct(g['fraction'])}%" for g in rows]
    y = np.arange(len(rows))
    m = np.array([g["dice"]["mean"] if g["dice"]["n"] else np.nan for g in rows], dtype=float)
    lo = np.array([g["dice"]["ci_low"] if g["dice"]["n"] else np.nan for g in rows], dtype=float)
    hi = np.array([g["dice"]["ci_high"] if g["dice"]["n"] else np.nan for g in rows], dtype=float)
    axes[0].errorbar(m, y, xerr=[np.nan_to_num(m - lo), np.nan_to_num(hi - m)], fmt="o", capsize=4)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].set_xlim(0, 1.02)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("test Dice (mean, 95% bootstrap CI)")
    axes[0].grid(alpha=0.3, axis="x")
    if stage:
        arms = [a for a in TABLE3 if a in stage]
        v = [stage[a]["balanced_accuracy"] for a in arms]
        mv = np.array([d["value"] for d in v], dtype=float)
        axes[1].errorbar(mv, np.arange(len(arms)), fmt="s", color="C2", capsize=4,
                         xerr=[np.nan_to_num(mv - np.array([d["ci_low"] for d in v], dtype=float)),
                               np.nan_to_num(np.array([d["ci_high"] for d in v], dtype=float) - mv)])
        axes[1].set_yticks(range(len(arms)), [LABELS[a] for a in arms], fontsize=8)
        axes[1].set_xlim(0, 1.02)
        axes[1].invert_yaxis()
        axes[1].set_xlabel("staging macro sensitivity (95% CI)")
        axes[1].grid(alpha=0.3, axis="x")
    fig.suptitle("FratMAE ablation", fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    return png


def write_results(exp_dir: Path, records: list[dict[str, Any]], plan: list[Planned], settings: Settings,
                  command: str, notes: list[str]) -> dict[str, Any]:
    """results.csv, results.md and fratmae_ablation.png from the finished runs; returns the summary."""
    from petctfm.io.atomic import atomic_write_text

    summary = summarize(records, settings.n_resamples)
    done = {r["name"] for r in records}
    missing = [p.name for p in plan if p.kind != "pretrain" and p.name not in done]
    atomic_write_text(exp_dir / "results.csv", csv_text(result_rows(summary, settings.fraction), COLUMNS))
    atomic_write_text(exp_dir / "results.md", results_markdown(summary, settings, command, missing, notes))
    plot(summary, exp_dir / "fratmae_ablation.png")
    return summary


__all__ = ["COLUMNS", "per_case", "summarize", "result_rows", "results_markdown", "plot", "write_results"]
