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
  Dice and FP volume (:func:`petctfm.evaluate.bootstrap.paired_comparison`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.provenance import data_words
from petctfm.evaluate.bootstrap import mean_ci, paired_comparison

STEP_COLUMNS = ["case_id", "site", "tracer", "protocol", "arm", "kind", "target", "seen", "clicks", "dice",
                "fp_volume_ml", "fn_volume_ml", "fp_voxels_ml"]
ONE_CLICK_ARMS = ("model", "model_isoprior")  # learned arms compared with the isocontour at one click per lesion
#: compared at one click per lesion: autoPET Dice and FP volume, and every predicted voxel outside the truth (ml)
ONE_CLICK_METRICS = ("dice", "fp_volume_ml", "fp_voxels_ml")
SUMMARY_COLUMNS = ["section", "protocol", "arm", "kind", "group", "clicks", "metric", "n", "mean", "ci_low", "ci_high"]


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


def _get(summary, **kw) -> dict | None:
    for r in summary:
        if all(str(r[k]) == str(v) for k, v in kw.items()):
            return r
    return None


def _ci(r: dict | None, digits: int = 3) -> str:
    if r is None or r["n"] == 0 or r["mean"] is None or math.isnan(r["mean"]):
        return "n/a"
    return f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] (n={r['n']})"


def markdown(summary: list[dict], info: dict) -> str:
    label, warning = data_words(info.get("provenance"))  # the dataset's provenance (harmonize), not assumed
    lines = [f"# Interactive segmentation ({label}; not a clinical result)", "", warning, "",
             f"Model `{info['model']}`" + (f" (design {info['design']}, class prompts "
                                          f"{'on' if info.get('class_prompts') else 'off'})" if "design" in info else "")
             + f", data `{info['data']}` split `{info['split']}`, {info['n_cases']} cases, "
             f"up to {info['max_clicks']} clicks, auto-zoom limit {info.get('max_zoom', 4.0)}; isocontour box {info['iso_box_mm']} mm; held-out organs: "
             f"{', '.join(info['held_out']) or 'none'}; automatic baseline: `{info['auto'] or 'not given'}`; "
             f"{info['seconds']:.0f} s. Mean [95 % bootstrap CI] (n targets).", "",
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
                c = _get(summary, section=f"clicks_to_{thr}", group=g, metric="clicks")
                f = _get(summary, section=f"clicks_to_{thr}", group=g, metric="fraction_reached")
                if c is not None:
                    lines.append(f"| {thr} | {g} | {_ci(c, 2)} | {_ci(f, 2)} |")
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
    summary = summarize(rows, int(info["max_clicks"]))
    steps = [{k: r.get(k, "") for k in STEP_COLUMNS} for r in rows]
    atomic_write_text(out / "steps.csv", csv_text(steps))
    atomic_write_text(out / "results.csv", csv_text([{k: r[k] for k in SUMMARY_COLUMNS} for r in summary]))
    atomic_write_text(out / "results.md", markdown(summary, info))
    atomic_write_json(out / "info.json", info)
    pngs = [case_figure(f, out / "cases" / f"{f['case_id']}.png") for f in figures]
    return {"results_md": out / "results.md", "results_csv": out / "results.csv", "steps_csv": out / "steps.csv",
            "plot": plot(summary, out / "dice_vs_clicks.png", data_words(info.get("provenance"))[0]), "cases": pngs, "summary": summary, "rows": rows}


__all__ = ["STEP_COLUMNS", "SUMMARY_COLUMNS", "clicks_to_reach", "summarize", "markdown", "plot", "case_figure",
           "write_report"]
