"""The label-efficiency report: per-run and per-group statistics (bootstrap CIs, paired Wilcoxon tests),
``results.csv``, ``results.md`` and ``label_efficiency.png``. See :mod:`petctfm.experiments.label_efficiency`."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.experiments.label_efficiency.plan import (ARMS, BOOTSTRAP_SEED, N_RESAMPLES, PROBE_ARMS, RUN_METRICS,
                                                       PlannedRun, Settings, fmt_pct)
from petctfm.experiments.common import data_words_of
from petctfm.io.tables import csv_text


def _nan(x: Any) -> float:
    return float("nan") if x is None or x == "" else float(x)


def _case_matrix(records: list[dict[str, Any]], key: str = "case_dice") -> dict[str, float]:
    """Per test case, the metric ``key`` (``case_dice``, or ``case_ap`` for probes) averaged over the records
    (seeds); NaN where undefined (negative cases)."""
    cases = sorted({c for r in records for c in r.get(key, {})})
    out = {}
    for c in cases:
        vals = [_nan(r.get(key, {}).get(c)) for r in records]
        vals = [v for v in vals if math.isfinite(v)]
        out[c] = float(np.mean(vals)) if vals else float("nan")
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate finished runs: per (kind, arm, fraction|kshot) over seeds, and the paired comparisons.

    Returns ``{"groups": [...], "comparisons": [...]}``. A group's ``dice`` is the mean over test cases of
    the seed-averaged per-case Dice with its bootstrap CI over cases (:func:`mean_ci`), ``dice_sd`` the SD of
    the per-seed means (NaN with one seed); the other metrics are means over seeds of the per-run means.
    """
    groups = [_group_stats(kind, arm, level, rs) for (kind, arm, level), rs in _runs_by_group(records).items()]
    groups.sort(key=lambda g: (g["kind"] != "finetune", ARMS.index(g["arm"]) if g["arm"] in ARMS
                               else PROBE_ARMS.index(g["arm"]), g["fraction"] or g["kshot"] or 0))
    return {"groups": groups, "comparisons": _comparisons(groups)}


def _runs_by_group(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The records by ``(kind, arm, level)``, level = fraction (fine-tuning) or k (probes), in record order."""
    keyed: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        level = r["fraction"] if r["kind"] == "finetune" else r["kshot"]
        keyed.setdefault((r["kind"], r["arm"], level), []).append(r)
    return keyed


def _group_stats(kind: str, arm: str, level: Any, rs: list[dict[str, Any]]) -> dict[str, Any]:
    """One group of :func:`summarize` from its runs ``rs`` (one per seed): Dice (and AP for probes) with
    bootstrap CIs over the seed-averaged test cases, the secondary metrics, the held-out site's statistics."""
    from petctfm.evaluate.bootstrap import mean_ci

    per_case = _case_matrix(rs)
    seed_means = [_nan(r["metrics"]["dice"]["mean"]) for r in rs]
    g = {"kind": kind, "arm": arm, "fraction": level if kind == "finetune" else None,
         "kshot": level if kind == "probe" else None, "n_seeds": len(rs), "seeds": [r["seed"] for r in rs],
         "n_train_cases": rs[0]["n_train_cases"], "n_test_cases": rs[0]["n_test_cases"],
         "dice": mean_ci(list(per_case.values()), N_RESAMPLES, BOOTSTRAP_SEED),
         "dice_sd": float(np.std(seed_means, ddof=1)) if len(rs) > 1 else float("nan"),
         "case_dice": per_case}
    if any("case_ap" in r for r in rs):  # probes: threshold-free voxel-wise average precision
        g["case_ap"] = _case_matrix(rs, "case_ap")
        g["ap"] = mean_ci(list(g["case_ap"].values()), N_RESAMPLES, BOOTSTRAP_SEED)
    for m in RUN_METRICS[1:]:
        g[m] = float(np.nanmean([_nan(r["metrics"][m]["mean"]) for r in rs])) if rs else float("nan")
    held = [r["holdout"] for r in rs if r.get("holdout")]
    if held:  # the held-out site, the same statistics over its cases
        g["holdout"] = _holdout_stats(held)
    return g


def _holdout_stats(held: list[dict[str, Any]]) -> dict[str, Any]:
    """A group's ``holdout`` entry from its runs' held-out-site records: site, cases, per-case Dice, Dice
    (and AP when the runs have it) with bootstrap CIs."""
    from petctfm.evaluate.bootstrap import mean_ci

    h_case = _case_matrix(held)
    out = {"site": held[0]["site"], "n_test_cases": held[0]["n_test_cases"], "case_dice": h_case,
           "dice": mean_ci(list(h_case.values()), N_RESAMPLES, BOOTSTRAP_SEED)}
    if any("case_ap" in h for h in held):
        out["ap"] = mean_ci(list(_case_matrix(held, "case_ap").values()), N_RESAMPLES, BOOTSTRAP_SEED)
    return out


def _compare(a: dict, b: dict, label: str, key: str = "case_dice") -> dict[str, Any]:
    """Paired comparison of groups ``a`` and ``b`` on their common test cases (``case_dice`` or ``case_ap``)."""
    from petctfm.evaluate.bootstrap import paired_comparison

    ids = sorted(set(a[key]) & set(b[key]))
    c = paired_comparison([a[key][i] for i in ids], [b[key][i] for i in ids], N_RESAMPLES, BOOTSTRAP_SEED)
    return {"comparison": label, "metric": "ap" if key == "case_ap" else "dice", "a": _group_label(a),
            "b": _group_label(b), **c}


def _comparisons(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paired tests: pretrained vs scratch at every fraction, the smallest pretrained fraction vs scratch
    at 100 %, and per k the joint vs separated probe (Dice, and AP when both have it)."""
    find = {(g["kind"], g["arm"], g["fraction"] if g["kind"] == "finetune" else g["kshot"]): g for g in groups}
    comps = []
    fracs = sorted({g["fraction"] for g in groups if g["kind"] == "finetune"})
    for f in fracs:
        if ("finetune", "pretrained", f) in find and ("finetune", "scratch", f) in find:
            comps.append(_compare(find[("finetune", "pretrained", f)], find[("finetune", "scratch", f)],
                                  f"pretrained vs scratch at {fmt_pct(f)}%"))
    pre = sorted(f for (k, a, f) in find if k == "finetune" and a == "pretrained")
    if pre and ("finetune", "scratch", 100.0) in find and pre[0] < 100:
        comps.append(_compare(find[("finetune", "pretrained", pre[0])], find[("finetune", "scratch", 100.0)],
                              f"pretrained at {fmt_pct(pre[0])}% vs scratch at 100%"))
    ks = sorted({g["kshot"] for g in groups if g["kind"] == "probe"})
    for k in ks:
        if ("probe", "joint", k) in find and ("probe", "separated", k) in find:
            joint, sep = find[("probe", "joint", k)], find[("probe", "separated", k)]
            comps.append(_compare(joint, sep, f"{k}-shot probe: joint vs separated"))
            if "case_ap" in joint and "case_ap" in sep:
                comps.append(_compare(joint, sep, f"{k}-shot probe: joint vs separated, AP", "case_ap"))
    return comps


def _group_label(g: dict[str, Any]) -> str:
    if g["kind"] == "finetune":
        return f"{g['arm']} {fmt_pct(g['fraction'])}%"
    return f"probe {g['arm']} {g['kshot']}-shot"


def fmt_num(x: Any, digits: int = 3) -> str:
    x = _nan(x)
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def format_dice(g: dict[str, Any]) -> str:
    d = g["dice"]
    if not d["n"]:
        return "n/a"
    sd = f" ± {fmt_num(g['dice_sd'])}" if g["n_seeds"] > 1 else ""
    return f"{fmt_num(d['mean'])}{sd} [{fmt_num(d['ci_low'])}, {fmt_num(d['ci_high'])}]"


RESULT_COLUMNS = [
    "row", "name", "kind", "arm", "fraction", "kshot", "seed", "n_seeds", "n_train_cases", "n_test_cases",
    "dice_n", "dice_mean", "dice_ci_low", "dice_ci_high", "dice_sd", "fp_volume_ml", "fn_volume_ml", "lesion_f1",
    "ap_mean", "ap_ci_low", "ap_ci_high",
    "steps", "stopped", "time_s", "a", "b", "mean_diff", "diff_ci_low", "diff_ci_high", "wins_a", "wins_b", "ties",
    "p_value",
]


def result_rows(records: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """results.csv rows: one per run (``row=run``), per group over seeds (``aggregate``), per test (``wilcoxon``)."""
    rows = []
    for r in records:
        m = r["metrics"]
        rows.append({"row": "run", "name": r["name"], "kind": r["kind"], "arm": r["arm"], "fraction": r["fraction"],
                     "kshot": r["kshot"], "seed": r["seed"], "n_seeds": 1, "n_train_cases": r["n_train_cases"],
                     "n_test_cases": r["n_test_cases"], "dice_n": m["dice"]["n"], "dice_mean": m["dice"]["mean"],
                     "dice_ci_low": m["dice"]["ci_low"], "dice_ci_high": m["dice"]["ci_high"],
                     **{k: m[k]["mean"] for k in RUN_METRICS[1:]},
                     "steps": (r.get("train") or {}).get("steps"), "stopped": (r.get("train") or {}).get("stopped"),
                     "time_s": r.get("time_s")})
        if r.get("holdout"):
            h = r["holdout"]["metrics"]
            rows.append({"row": "run_holdout", "name": f"{r['name']} @ {r['holdout']['site']}", "kind": r["kind"],
                         "arm": r["arm"], "fraction": r["fraction"], "kshot": r["kshot"], "seed": r["seed"],
                         "n_seeds": 1, "n_train_cases": r["n_train_cases"], "n_test_cases": r["holdout"]["n_test_cases"],
                         "dice_n": h["dice"]["n"], "dice_mean": h["dice"]["mean"], "dice_ci_low": h["dice"]["ci_low"],
                         "dice_ci_high": h["dice"]["ci_high"], **{k: h[k]["mean"] for k in RUN_METRICS[1:]}})
    for g in summary["groups"]:
        rows.append({"row": "aggregate", "name": _group_label(g), "kind": g["kind"], "arm": g["arm"],
                     "fraction": g["fraction"], "kshot": g["kshot"], "seed": " ".join(map(str, g["seeds"])),
                     "n_seeds": g["n_seeds"], "n_train_cases": g["n_train_cases"], "n_test_cases": g["n_test_cases"],
                     "dice_n": g["dice"]["n"], "dice_mean": g["dice"]["mean"], "dice_ci_low": g["dice"]["ci_low"],
                     "dice_ci_high": g["dice"]["ci_high"], "dice_sd": g["dice_sd"],
                     **{k: g[k] for k in RUN_METRICS[1:]},
                     **({f"ap_{k}": g["ap"][k] for k in ("mean", "ci_low", "ci_high")} if "ap" in g else {})})
        if "holdout" in g:
            h = g["holdout"]
            rows.append({"row": "aggregate_holdout", "name": f"{_group_label(g)} @ {h['site']}", "kind": g["kind"],
                         "arm": g["arm"], "fraction": g["fraction"], "kshot": g["kshot"],
                         "seed": " ".join(map(str, g["seeds"])), "n_seeds": g["n_seeds"],
                         "n_train_cases": g["n_train_cases"], "n_test_cases": h["n_test_cases"],
                         "dice_n": h["dice"]["n"], "dice_mean": h["dice"]["mean"], "dice_ci_low": h["dice"]["ci_low"],
                         "dice_ci_high": h["dice"]["ci_high"],
                         **({f"ap_{k}": h["ap"][k] for k in ("mean", "ci_low", "ci_high")} if "ap" in h else {})})
    for c in summary["comparisons"]:
        rows.append({"row": "wilcoxon", "name": c["comparison"],  # dice_n: cases compared (Dice or AP) "a": c["a"], "b": c["b"], "dice_n": c["n"],
                     "mean_diff": c["mean_diff"], "diff_ci_low": c["ci_low"], "diff_ci_high": c["ci_high"],
                     "wins_a": c["wins_a"], "wins_b": c["wins_b"], "ties": c["ties"], "p_value": c["p_value"]})
    return rows


def results_markdown(records: list[dict[str, Any]], summary: dict[str, Any], plan: list[PlannedRun],
                     settings: Settings, command: str, missing: list[str]) -> str:
    """The report: the seed-style table, secondary metrics, paired tests, the probe table, the runs."""
    ft = [g for g in summary["groups"] if g["kind"] == "finetune"]
    pr = [g for g in summary["groups"] if g["kind"] == "probe"]
    lines = _intro_markdown(records, summary, settings, command)
    if missing:
        lines += [f"**Unfinished runs** (not in the tables; rerun the command to resume): {', '.join(missing)}", ""]
    if ft:
        lines += _finetune_markdown(ft)
    lines += holdout_markdown(summary["groups"], settings)
    lines += _paired_markdown([c for c in summary["comparisons"] if "probe" not in c["comparison"]])
    if settings.probe_kshot:
        lines += _probe_markdown(pr, [c for c in summary["comparisons"] if "probe" in c["comparison"]], settings)
    lines += _runs_markdown(records)
    return "\n".join(lines)


def _intro_markdown(records: list[dict[str, Any]], summary: dict[str, Any], settings: Settings,
                    command: str) -> list[str]:
    """Title, the data's provenance (synthetic or not), the settings (data, encoder, preset, Dice convention), the command."""
    n_test = records[0]["n_test_cases"] if records else 0
    n_pos = next((g["dice"]["n"] for g in summary["groups"]), 0)
    return [
        "# Label-efficiency experiment",
        "",
        data_words_of(settings.data)[1],  # synthetic or not: the dataset's provenance, as harmonize recorded it
        "",
        f"- dataset: `{settings.data}`; test split: {n_test} cases ({n_pos} with lesions; Dice is undefined on "
        "cases without lesions, autoPET convention, so those count only in the FP volume)",
        f"- pretrained encoder: `{settings.pretrained}` ({settings.backbone}, mode {settings.mode}); scratch = the "
        "same network with random weights",
        f"- fine-tuning preset `{settings.preset}`"
        + (f", at most {settings.max_steps} steps" if settings.max_steps is not None else "")
        + (f", at most {settings.max_time:g} s" if settings.max_time is not None else "") + " per run"
        + (f"; the segmentation recipe planned for `{settings.plan}` from each run's training cases "
           "(docs/segmentation-recipe.md; the network kept)" if settings.plan else "")
        + (f", every run at one voxel budget timed once ({settings.plan_voxels} voxels per patch)"
           if settings.plan_voxels else "")
        + (f", trained on a grid no finer than {settings.plan_spacing:g} mm (the dataset's copy; test predictions "
           "resampled back to the dataset's grid)" if settings.plan_spacing else "")
        + (f"; overrides {', '.join(f'`{o}`' for o in settings.overrides)}" if settings.overrides else "")
        + "; best checkpoint by val Dice predicts the test split",
        f"- Dice: mean over test cases with lesions [percentile bootstrap 95% CI over cases, {N_RESAMPLES} "
        f"resamples, seed {BOOTSTRAP_SEED}]; with several seeds, per-case Dice averaged over seeds first, "
        "± the SD of the per-seed means",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
    ]


def _finetune_markdown(ft: list[dict[str, Any]]) -> list[str]:
    """Fine-tuning groups ``ft``: the Dice table (arm x label fraction) and the secondary-metrics table."""
    fracs = sorted({g["fraction"] for g in ft})
    by = {(g["arm"], g["fraction"]): g for g in ft}
    train_n = {g["fraction"]: g["n_train_cases"] for g in ft}
    lines = ["## Fine-tuning: test Dice by label fraction", "",
             "| arm | " + " | ".join(f"{fmt_pct(f)}% ({train_n[f]} cases)" for f in fracs) + " |",
             "|---|" + "---|" * len(fracs)]
    for arm in [a for a in ARMS if any(g["arm"] == a for g in ft)]:
        lines.append(f"| {arm} | " + " | ".join(format_dice(by[(arm, f)]) if (arm, f) in by else "—"
                                                for f in fracs) + " |")
    lines += ["", "Secondary metrics (means over test cases, averaged over seeds):", "",
              "| arm | fraction | training cases | seeds | Dice | FP volume (ml) | FN volume (ml) | lesion F1 |",
              "|---|---|---|---|---|---|---|---|"]
    for g in ft:
        lines.append(f"| {g['arm']} | {fmt_pct(g['fraction'])}% | {g['n_train_cases']} | {g['n_seeds']} | "
                     f"{fmt_num(g['dice']['mean'])} | {fmt_num(g['fp_volume_ml'], 2)} | "
                     f"{fmt_num(g['fn_volume_ml'], 2)} | "
                     f"{fmt_num(g['lesion_f1'])} |")
    lines.append("")
    return lines


def _paired_markdown(comps: list[dict[str, Any]]) -> list[str]:
    """The fine-tuning paired comparisons (Dice differences, CI, Wilcoxon); [] without any."""
    if not comps:
        return []
    lines = ["## Paired comparison (Dice, test cases)", "",
             "Difference A - B per test case (seed-averaged Dice), bootstrap 95% CI of the mean difference, "
             "two-sided Wilcoxon signed-rank test (zero differences dropped). With few test cases the test "
             "has little power: read the CI.", "",
             "| A vs B | n | mean diff [95% CI] | A better / B better / ties | Wilcoxon p |",
             "|---|---|---|---|---|"]
    for c in comps:
        lines.append(f"| {c['a']} vs {c['b']} | {c['n']} | {fmt_num(c['mean_diff'])} [{fmt_num(c['ci_low'])}, "
                     f"{fmt_num(c['ci_high'])}] | {c['wins_a']} / {c['wins_b']} / {c['ties']} | "
                     f"{fmt_num(c['p_value'], 4)} |")
    lines.append("")
    return lines


def _probe_markdown(pr: list[dict[str, Any]], probe_comps: list[dict[str, Any]], settings: Settings) -> list[str]:
    """The k-shot probe section: the table of probe groups ``pr``, what AP means, the joint - separated tests
    ``probe_comps``, and how to produce the separated runs when they were skipped."""
    k = settings.probe_kshot
    lines = [f"## {k}-shot linear probe: joint vs separated pretraining", "",
             "Frozen encoder(s), one voxel-wise linear head on all encoder scales (`petctfm probe`), trained on "
             f"the stored {k}-shot subset, evaluated on the test split.", ""]
    if pr:
        lines += ["| encoders | training cases | seeds | Dice [95% CI] | AP [95% CI] | FP volume (ml) | lesion F1 |",
                  "|---|---|---|---|---|---|---|"]
        for g in pr:
            what = ("joint PET+CT (the pretrained run)" if g["arm"] == "joint"
                    else "separated: PET-only + CT-only side by side")
            ap = g.get("ap") or {"n": 0}
            ap_text = (f"{fmt_num(ap['mean'])} [{fmt_num(ap['ci_low'])}, {fmt_num(ap['ci_high'])}]"
                       if ap["n"] else "n/a")
            lines.append(f"| {what} | {g['n_train_cases']} | {g['n_seeds']} | {format_dice(g)} | {ap_text} | "
                         f"{fmt_num(g['fp_volume_ml'], 2)} | {fmt_num(g['lesion_f1'])} |")
        lines += ["", "AP: voxel-wise average precision of the head's lesion probability on each test case with "
                  "lesions (area under the precision-recall curve; chance level = the lesion prevalence, well "
                  "under 0.01 here). It is threshold-free: a head whose probabilities rank lesion voxels first "
                  "but never cross 0.5 has Dice 0 and a high AP, so AP is the fairer test of linear "
                  "separability."]
        for c in probe_comps:
            lines += ["", f"Joint - separated ({'AP' if c.get('metric') == 'ap' else 'Dice'}): "
                      f"{fmt_num(c['mean_diff'])} [{fmt_num(c['ci_low'])}, {fmt_num(c['ci_high'])}]"
                      f", Wilcoxon p = {fmt_num(c['p_value'], 4)} (n = {c['n']})."]
        lines.append("")
    if not settings.separated:
        data = settings.data
        lines += ["The **separated** probe was skipped: it needs a PET-only and a CT-only pretraining run on the "
                  "same data, given as `--separated PET_RUN CT_RUN`. Produce them with the same preset as the "
                  "joint run, then rerun the command above with `--separated runs/mae_pet runs/mae_ct` "
                  "(finished runs are skipped):", "",
                  "```bash",
                  f"petctfm pretrain --data {shlex.quote(data)} --out runs/mae_pet --mode pet --preset PRESET",
                  f"petctfm pretrain --data {shlex.quote(data)} --out runs/mae_ct --mode ct --preset PRESET",
                  "```", ""]
    return lines


def _runs_markdown(records: list[dict[str, Any]]) -> list[str]:
    """The table of every finished run (steps, stop reason, Dice with CI, seconds, per-case file), the plot."""
    chosen = any((r.get("best") or {}).get("min_lesion_ml") is not None for r in records)
    lines = ["## Runs", "",
             "| run | training cases | steps | stopped | Dice [95% CI] | seconds | per-case metrics |"
             + (" min lesion volume (ml, chosen on val) |" if chosen else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if chosen else "")]
    for r in records:
        d = r["metrics"]["dice"]
        t = r.get("train") or {}
        ml = (r.get("best") or {}).get("min_lesion_ml")
        lines.append(f"| `{r['name']}` | {r['n_train_cases']} | {t.get('steps', '')} | {t.get('stopped', '')} | "
                     f"{fmt_num(d['mean'])} [{fmt_num(d['ci_low'])}, {fmt_num(d['ci_high'])}] | "
                     f"{r.get('time_s', '')} | "
                     f"`{r['name']}/{r['per_case']}` |" + (f" {'' if ml is None else f'{ml:g}'} |" if chosen else ""))
    lines += ["", "![Dice vs label fraction](label_efficiency.png)", ""]
    return lines


def _ci_text(d: dict[str, Any] | None) -> str:
    if not d or not d["n"]:
        return "n/a"
    return f"{fmt_num(d['mean'])} [{fmt_num(d['ci_low'])}, {fmt_num(d['ci_high'])}]"


def holdout_markdown(groups: list[dict[str, Any]], settings: Settings) -> list[str]:
    """The held-out-site section: per arm and fraction (or probe), in-domain test vs held-out site, Dice (and AP
    for probes) with bootstrap CIs over each split's cases; [] without a held-out site."""
    held = [g for g in groups if "holdout" in g]
    if not held:
        return []
    site = held[0]["holdout"]["site"]
    lines = [f"## Held-out site `{site}`: generalization to an unseen site", "",
             f"The dataset keeps every case of `{site}` out of train/val/test, the label fractions, the k-shot subsets "
             "and the normalization statistics (`petctfm harmonize --holdout-site`); the pretraining run was checked "
             "to use that dataset's statistics. Every model below is trained on the other sites only and scored on "
             f"the in-domain test split and on the held-out site ({held[0]['holdout']['n_test_cases']} cases).", "",
             "| run | training cases | seeds | in-domain test Dice [95% CI] | held-out Dice [95% CI] | "
             "in-domain AP | held-out AP |", "|---|---|---|---|---|---|---|"]
    for g in held:
        lines.append(f"| {_group_label(g)} | {g['n_train_cases']} | {g['n_seeds']} | {_ci_text(g['dice'])} | "
                     f"{_ci_text(g['holdout']['dice'])} | {_ci_text(g.get('ap')) if 'ap' in g else '—'} | "
                     f"{_ci_text(g['holdout'].get('ap')) if 'ap' in g['holdout'] else '—'} |")
    return lines + [""]


def plot_results(summary: dict[str, Any], png: Path, data_label: str = "data of unknown provenance") -> Path:
    """Dice vs label fraction (log x), one line per arm with its CI band; probes (Dice filled, AP open
    markers) as a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from petctfm.io.atomic import atomic_path

    ft = [g for g in summary["groups"] if g["kind"] == "finetune"]
    pr = [g for g in summary["groups"] if g["kind"] == "probe"]
    fig = Figure(figsize=(9.5 if pr else 6.5, 4.0), dpi=110)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.3]}) if pr else [fig.subplots()]
    ax = axes[0]
    colors = {"pretrained": "C0", "scratch": "C1"}
    for arm in ARMS:
        gs = sorted([g for g in ft if g["arm"] == arm and g["dice"]["n"]], key=lambda g: g["fraction"])
        if not gs:
            continue
        x = np.array([g["fraction"] for g in gs])
        y, lo, hi = (np.array([g["dice"][k] for g in gs]) for k in ("mean", "ci_low", "ci_high"))
        ax.plot(x, y, "o-", color=colors[arm], label=f"{arm} ({gs[0]['n_seeds']} seed{'s' * (gs[0]['n_seeds'] > 1)})")
        if len(gs) > 1:
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.2, lw=0)
        else:
            ax.errorbar(x, y, yerr=[y - lo, hi - y], color=colors[arm], capsize=4, ls="none")
    fr = sorted({g["fraction"] for g in ft})
    ax.set_xscale("log")
    if fr:
        ax.set_xticks(fr, [f"{fmt_pct(f)}%" for f in fr])
        ax.set_xlim(min(fr) / 1.4, max(fr) * 1.4)
    ax.minorticks_off()
    ax.set_ylim(0, 1)
    ax.set_xlabel("labeled training cases (fraction of the train split, log scale)")
    ax.set_ylabel("test Dice (mean, 95% bootstrap CI)")
    ax.set_title(f"Fine-tuning: pretrained vs scratch ({data_label})", fontsize=10)
    ax.grid(alpha=0.3)
    if ft:
        ax.legend(loc="best", fontsize=8)
    if pr:
        bx = axes[1]
        for i, g in enumerate(pr):
            color = "C2" if g["arm"] == "joint" else "C3"
            for metric, dx, marker in (("dice", -0.12, "s"), ("ap", 0.12, "o")):
                d = g.get(metric)
                if not d or not d["n"]:
                    continue
                y = _nan(d["mean"])
                bx.errorbar([i + dx], [y], yerr=[[y - _nan(d["ci_low"])], [_nan(d["ci_high"]) - y]], fmt=marker,
                            color=color, mfc="white" if metric == "ap" else color, capsize=4,
                            label=metric.replace("dice", "Dice").upper() if metric == "ap" else "Dice")
        handles, labels = bx.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(labels, handles))
            bx.legend(uniq.values(), uniq.keys(), loc="upper right", fontsize=8)
        bx.set_xticks(range(len(pr)), [f"{g['arm']}\n{g['kshot']}-shot" for g in pr])
        bx.set_xlim(-0.6, len(pr) - 0.4)
        bx.set_ylim(0, 1)
        bx.set_title("Linear probe", fontsize=10)
        bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    return png


def write_results(exp_dir: Path, records: list[dict[str, Any]], plan: list[PlannedRun], settings: Settings,
                  command: str) -> dict[str, Any]:
    """results.csv, results.md, label_efficiency.png from the finished runs; returns the summary."""
    from petctfm.io.atomic import atomic_write_text

    summary = summarize(records)
    done = {r["name"] for r in records}
    missing = [r.name for r in plan if r.name not in done]
    atomic_write_text(exp_dir / "results.csv", csv_text(result_rows(records, summary), RESULT_COLUMNS))
    atomic_write_text(exp_dir / "results.md", results_markdown(records, summary, plan, settings, command, missing))
    plot_results(summary, exp_dir / "label_efficiency.png", data_words_of(settings.data)[0])
    return summary


__all__ = ["summarize", "fmt_num", "format_dice", "RESULT_COLUMNS", "result_rows", "results_markdown", "holdout_markdown",
           "plot_results", "write_results"]
