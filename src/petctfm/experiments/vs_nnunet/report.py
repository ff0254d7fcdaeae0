"""The vs-nnU-Net report: ``results.md``, ``results.csv``, ``vs_nnunet.png``.

Per arm (petctfm, nnU-Net per plan, the floors): each case's metric is averaged over seeds first, then the mean
and its percentile-bootstrap 95% CI over test cases (:func:`petctfm.evaluate.bootstrap.mean_ci`, the
label-efficiency convention). The nnU-Net plan petctfm is compared with is the stronger by nnU-Net's own
validation Dice (``perform_actual_validation`` on the val split, mean over seeds). Paired comparison per case:
:func:`petctfm.evaluate.bootstrap.paired_comparison` (mean difference with bootstrap CI, Wilcoxon).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from petctfm.experiments.vs_nnunet.plan import (ARM_METRICS, BOOTSTRAP_SEED, HOLDOUT_SPLIT, N_RESAMPLES, SPLIT,
                                                Settings)

NAN = float("nan")


def group_of(rec: dict[str, Any]) -> str:
    """The arm a run belongs to: ``petctfm``, ``nnunet_default``, ``nnunet_cpu``, ``floor_suv2.5``..."""
    if rec["kind"] == "nnunet":
        return f"nnunet_{rec['plan']}"
    if rec["kind"] == "floor":
        return rec["name"]
    return "petctfm"


def _num(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return NAN
    return f


def fmt(x: Any, digits: int = 3) -> str:
    f = _num(x)
    return "n/a" if not math.isfinite(f) else f"{f:.{digits}f}"


def seed_mean_cases(records: Sequence[dict], split: str) -> dict[str, dict[str, dict[str, float]]]:
    """group -> case -> metric -> mean over the group's seeds (NaN where undefined in every seed)."""
    import numpy as np

    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for rec in records:
        for row in (rec.get(split) or {}).get("cases", []):
            c = acc.setdefault(group_of(rec), {}).setdefault(row["case_id"], {})
            for m in ARM_METRICS:
                c.setdefault(m, []).append(_num(row.get(m)))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for g, cases in acc.items():
        out[g] = {}
        for cid, ms in cases.items():
            out[g][cid] = {}
            for m, vals in ms.items():
                v = np.array(vals, float)
                v = v[np.isfinite(v)]
                out[g][cid][m] = float(v.mean()) if len(v) else NAN
    return out


def _arm_order(groups: Sequence[str]) -> list[str]:
    key = {"petctfm": 0, "nnunet_default": 1, "nnunet_cpu": 2}
    return sorted(groups, key=lambda g: (key.get(g, 3), g))


def summarize(records: Sequence[dict], settings: Settings) -> dict[str, Any]:
    """Everything the report shows, as data (also returned by :func:`write_results`)."""
    import numpy as np

    from petctfm.evaluate.bootstrap import defined, mean_ci, paired_comparison

    splits = [SPLIT] + ([HOLDOUT_SPLIT] if settings.holdout_site else [])
    per_split = {s: seed_mean_cases(records, s) for s in splits}
    arms: dict[str, dict[str, Any]] = {}
    for g in _arm_order(list(per_split[SPLIT])):
        recs = [r for r in records if group_of(r) == g]
        vals = [r.get("val_dice") for r in recs]
        sec = [v for r in recs for v in (r.get("seconds_per_case") or {}).values()]
        seed_means = [float(np.mean(d)) for d in (defined(c["dice"] for c in r[SPLIT]["cases"]) for r in recs)
                      if len(d)]
        arms[g] = {
            "runs": [r["name"] for r in recs], "n_seeds": len(recs),
            "val_dice": float(np.mean(defined(vals))) if len(defined(vals)) else NAN,
            "seed_sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else NAN,
            "seconds_per_case": float(np.mean(sec)) if sec else NAN,
            **{s: {m: mean_ci([c[m] for c in per_split[s][g].values()], N_RESAMPLES, BOOTSTRAP_SEED)
                   for m in ARM_METRICS} for s in splits if g in per_split[s]},
        }
    nn = [g for g in arms if g.startswith("nnunet_")]
    stronger = max(nn, key=lambda g: (_num(arms[g]["val_dice"]) if math.isfinite(_num(arms[g]["val_dice"]))
                                      else -1.0, g == "nnunet_default")) if nn else None
    cases = sorted(per_split[SPLIT].get("petctfm", {}))
    comparisons = []

    def compare(a: str, b: str, metrics: Sequence[str], split: str = SPLIT) -> None:
        if a not in per_split[split] or b not in per_split[split]:
            return
        ids = sorted(set(per_split[split][a]) & set(per_split[split][b]))
        for m in metrics:
            res = paired_comparison([per_split[split][a][c][m] for c in ids], [per_split[split][b][c][m] for c in ids],
                                    N_RESAMPLES, BOOTSTRAP_SEED)
            comparisons.append({"a": a, "b": b, "split": split, "metric": m, **res})

    if stronger:
        compare("petctfm", stronger, ARM_METRICS)
    for g in [g for g in arms if g.startswith("floor_")]:
        compare("petctfm", g, ["dice"])
        if stronger:
            compare(stronger, g, ["dice"])
    if settings.holdout_site and stronger:
        compare("petctfm", stronger, ["dice"], HOLDOUT_SPLIT)
    return {"arms": arms, "stronger_nnunet": stronger, "comparisons": comparisons, "cases": cases,
            "per_case": per_split, "splits": splits}


# ------------------------------------------------------------------------------------------------ files


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _ci(s: dict) -> str:
    return f"{fmt(s['mean'])} [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"


def _markdown(summary: dict, records: Sequence[dict], settings: Settings, seeds: Sequence[int],
              plan_summary: dict, export: dict, command: str) -> str:
    arms, stronger = summary["arms"], summary["stronger_nnunet"]
    n_test = len(export["test"].get(SPLIT, []))
    out = [
        "# petctfm vs nnU-Net v2 at equal wall time",
        "",
        f"Synthetic phantoms: these numbers are synthetic results, not clinical ones. Data `{settings.data}`: "
        f"{len(export['train'])} train, {len(export['val'])} val, {n_test} test cases (nnU-Net fold 0 = this "
        f"train/val split). Training budget **{settings.minutes:g} min** per run on `{settings.device}`; seeds "
        f"{', '.join(map(str, seeds))}; {getattr(settings, 'jobs', 1)} run(s) at a time sharing the cores. petctfm: "
        f"`finetune(init='scratch', backbone='{settings.backbone}', preset='{settings.preset}', "
        f"plan={getattr(settings, 'recipe', None)!r}, max_time={settings.minutes * 60:g})`, best checkpoint by val "
        f"Dice, no TTA"
        + (f" (finished runs compared as they are, not trained here: `{settings.petctfm_runs}`; their steps and "
           "training seconds are in the runs table)" if getattr(settings, "petctfm_runs", None) else "")
        + ". nnU-Net 2.8.1 `3d_fullres`, budget trainer (docs/vs-nnunet.md), `checkpoint_final.pth`, "
        f"nnU-Net's predictor (Gaussian sliding window, step 0.5, "
        f"{'mirroring' if getattr(settings, 'tta', True) else 'no mirroring'}).",
        "",
        (f"Targets: both arms learn the lesion and, as extra classes, the organ map ({len(settings.organs)} organs: "
         f"petctfm's `task.aux_classes`, nnU-Net's labels 2..{len(settings.organs) + 1}); both are scored on the "
         "lesion alone." if getattr(settings, "organs", None) else
         "Targets: both arms learn the lesion alone (no organ classes)."),
        "",
        f"Reproduce: `{command}`",
        "",
        "## nnU-Net's plans",
        "",
        _md_table(["plan", "GPU memory target (GB)", "patch", "batch", "spacing (mm)", "stages",
                   "parameters (M)", "val Dice (nnU-Net validation, mean over seeds)"],
                  [[k, fmt(p.get("gpu_memory_target_gb"), 1), "x".join(map(str, p["patch_size"])), p["batch_size"],
                    "x".join(f"{s:g}" for s in p["spacing"]), p["n_stages"], f"{p['parameters'] / 1e6:.2f}",
                    fmt(arms.get(f"nnunet_{k}", {}).get("val_dice"))] for k, p in plan_summary.items()]),
        "",
        (f"**petctfm is compared with nnU-Net's `{stronger.removeprefix('nnunet_')}` plan**, the stronger of the "
         f"{len([g for g in arms if g.startswith('nnunet_')])} by nnU-Net's own validation Dice on the val split."
         if stronger else "No nnU-Net run finished."),
        "",
        "## Test split, per arm (mean over test cases [95% bootstrap CI]; per case averaged over seeds first)",
        "",
        _md_table(["arm", "Dice", "FP volume (ml)", "FN volume (ml)", "lesion F1", "seed SD of Dice",
                   "val Dice", "inference s/case"],
                  [[g, *(_ci(a[SPLIT][m]) for m in ARM_METRICS), fmt(a["seed_sd"]), fmt(a["val_dice"]),
                    fmt(a["seconds_per_case"], 2)] for g, a in arms.items()]),
        "",
        "Dice: mean over test cases with lesions (autoPET convention); FP volume counts every case. Val Dice: "
        "petctfm's best sliding-window val Dice; nnU-Net's final validation (`perform_actual_validation`).",
        "",
        "## Paired comparisons (A - B per test case; bootstrap CI of the mean difference; Wilcoxon signed-rank)",
        "",
        _md_table(["A", "B", "split", "metric", "n", "mean A", "mean B", "A - B [95% CI]", "wins A / B / ties",
                   "Wilcoxon p"],
                  [[c["a"], c["b"], c["split"], c["metric"], c["n"], fmt(c["mean_a"]), fmt(c["mean_b"]),
                    f"{fmt(c['mean_diff'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]",
                    f"{c['wins_a']} / {c['wins_b']} / {c['ties']}", fmt(c["p_value"])]
                   for c in summary["comparisons"]]),
        "",
        "## Per test case (Dice averaged over seeds; inference seconds, mean over seeds)",
        "",
    ]
    groups = list(arms)
    secs: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for cid, s in (r.get("seconds_per_case") or {}).items():
            secs.setdefault(group_of(r), {}).setdefault(cid, []).append(float(s))
    pc = summary["per_case"][SPLIT]
    rows = []
    for cid in sorted({c for g in groups for c in pc.get(g, {})}):
        row = [cid] + [fmt(pc.get(g, {}).get(cid, {}).get("dice")) for g in groups]
        if stronger and "petctfm" in pc:
            row.append(fmt(_num(pc["petctfm"].get(cid, {}).get("dice")) - _num(pc[stronger].get(cid, {}).get("dice"))))
        row += [fmt(sum(secs.get(g, {}).get(cid, [NAN])) / max(1, len(secs.get(g, {}).get(cid, []))), 2)
                for g in groups if not g.startswith("floor_")]
        rows.append(row)
    head = ["case"] + [f"Dice {g}" for g in groups] + (["petctfm - nnU-Net"] if stronger and "petctfm" in pc else [])
    head += [f"s {g}" for g in groups if not g.startswith("floor_")]
    out += [_md_table(head, rows), "",
            "petctfm's per-case seconds are the gaps between its written predictions (`predict_split`; the first "
            "includes loading the model); nnU-Net's are timed around its predictor per case (reading, "
            f"preprocessing, sliding window{' with mirroring' if getattr(settings, 'tta', True) else ''}, export).", "",
            "## Training each arm ran", ""]
    trows = []
    for r in records:
        t = r.get("train") or {}
        if r["kind"] == "floor":
            continue
        trows.append([r["name"], r.get("seed"), t.get("steps"), t.get("epochs", "-"),
                      t.get("iterations_per_epoch", "-"), t.get("val_iterations_per_epoch", "-"), t.get("stopped"),
                      fmt(_num(t.get("train_s")) / 60.0, 2), fmt(r.get("val_dice"))])
    out += [_md_table(["run", "seed", "steps / iterations", "epochs", "iterations per epoch",
                       "val iterations per epoch", "stopped by", "training minutes", "val Dice"], trows), ""]
    if settings.holdout_site:
        out += [f"## Held-out site `{settings.holdout_site}`", "",
                _md_table(["arm", "Dice", "lesion F1"],
                          [[g, _ci(a[HOLDOUT_SPLIT]["dice"]), _ci(a[HOLDOUT_SPLIT]["lesion_f1"])]
                           for g, a in arms.items() if HOLDOUT_SPLIT in a]), ""]
    out += ["`vs_nnunet.png`: validation Dice vs training minutes (petctfm: sliding-window Dice on the val split "
            "from `val.jsonl`; nnU-Net: its logged pseudo-Dice per epoch on sampled val patches: a different, "
            "usually optimistic measure of the same thing).", ""]
    return "\n".join(out)


def _csv(summary: dict, records: Sequence[dict]) -> str:
    cols = ["kind", "arm", "run", "split", "metric", "n", "mean", "ci_low", "ci_high", "case_id", "value",
            "b", "mean_diff", "p_value", "steps", "epochs", "stopped", "train_s", "val_dice", "seconds_per_case",
            "stronger_nnunet"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, extrasaction="ignore")
    w.writeheader()
    for r in records:
        t = r.get("train") or {}
        secs = list((r.get("seconds_per_case") or {}).values())
        w.writerow({"kind": "run", "arm": group_of(r), "run": r["name"], "steps": t.get("steps"),
                    "epochs": t.get("epochs"), "stopped": t.get("stopped"), "train_s": t.get("train_s"),
                    "val_dice": r.get("val_dice"), "seconds_per_case": sum(secs) / len(secs) if secs else ""})
    for g, a in summary["arms"].items():
        for s in summary["splits"]:
            for m in ARM_METRICS if s in a else ():
                w.writerow({"kind": "arm", "arm": g, "split": s, "metric": m, "val_dice": a["val_dice"],
                            "seconds_per_case": a["seconds_per_case"],
                            "stronger_nnunet": g == summary["stronger_nnunet"],
                            **{k: a[s][m][k] for k in ("n", "mean", "ci_low", "ci_high")}})
    for c in summary["comparisons"]:
        w.writerow({"kind": "paired", "arm": c["a"], "b": c["b"], "split": c["split"], "metric": c["metric"],
                    "n": c["n"], "mean_diff": c["mean_diff"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
                    "p_value": c["p_value"]})
    for s in summary["splits"]:
        for g, cases in summary["per_case"][s].items():
            for cid, ms in sorted(cases.items()):
                w.writerow({"kind": "case", "arm": g, "split": s, "case_id": cid, "metric": "dice",
                            "value": ms["dice"]})
    return buf.getvalue()


def _plot(records: Sequence[dict], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"petctfm": "tab:blue", "nnunet_default": "tab:red", "nnunet_cpu": "tab:orange"}
    seen = set()
    for r in records:
        g = group_of(r)
        curve = r.get("curve") or []
        if g.startswith("floor_") or not curve:
            continue
        label = {"petctfm": "petctfm (val Dice)"}.get(g, f"{g} (pseudo-Dice)")
        ax.plot([p["minutes"] for p in curve], [p["dice"] for p in curve], "-o" if g == "petctfm" else "--s",
                color=colors.get(g, "tab:gray"), ms=3, label=None if g in seen else label)
        seen.add(g)
    ax.axvline(minutes, color="k", lw=0.8, ls=":")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(0, 1)
    ax.set_title("petctfm vs nnU-Net v2: validation Dice vs wall time (synthetic)")
    if seen:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    from petctfm.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_results(exp_dir: Path, records: Sequence[dict], settings: Settings, seeds: Sequence[int],
                  plan_summary: dict, export: dict, command: str) -> dict[str, Any]:
    from petctfm.io.atomic import atomic_write_text

    summary = summarize(records, settings)
    atomic_write_text(exp_dir / "results.md", _markdown(summary, records, settings, seeds, plan_summary, export,
                                                        command))
    atomic_write_text(exp_dir / "results.csv", _csv(summary, records))
    _plot(records, exp_dir / "vs_nnunet.png", settings.minutes)
    return summary


__all__ = ["group_of", "seed_mean_cases", "summarize", "write_results"]
