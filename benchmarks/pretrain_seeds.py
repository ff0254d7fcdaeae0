"""Label efficiency over several *pretraining* seeds (issue 15): one table from several experiment folders.

``petctfm experiment label-efficiency`` fine-tunes one pretraining run with several fine-tuning seeds. A claim
about pretraining needs several pretraining runs too. Run the experiment once per pretraining run (same data,
same ``--runs``, ``--seeds``, ``--max-steps`` and overrides; the scratch arms do not depend on the pretraining,
so one copy of them serves every folder), then::

    python benchmarks/pretrain_seeds.py --exp E_p0 --exp E_p1 --exp E_p2 --out TABLE_DIR

Per arm and label fraction it pools every finished run (pretraining seeds x fine-tuning seeds), and reports the
mean over test cases of the run-averaged per-case Dice with its 95 % bootstrap CI over cases (the report's own
:func:`petctfm.experiments.label_efficiency.report.summarize`), the SD across pretraining seeds (of each
pretraining run's mean over its fine-tuning seeds) and across all runs, and the paired comparisons of the report
(pretrained vs scratch, pretrained at the lowest fraction vs scratch at 100 %), for the in-domain test split and,
when the experiments used ``--holdout-site``, for the held-out site. Scratch runs found in several folders are
counted once (by run name). Writes ``TABLE_DIR/table.md`` and ``table.json``. Not a test: numbers go to
docs/results.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np


def _records(exp_dirs: list[Path]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Finished fine-tuning records of every folder; pretrained runs tagged with their pretraining index."""
    from petctfm.experiments.label_efficiency.run import load_done

    records, seen, pre_of = [], set(), {}
    for k, exp in enumerate(exp_dirs):
        for run_dir in sorted(p for p in exp.iterdir() if p.is_dir()):
            rec = load_done(run_dir)
            if rec is None or rec.get("kind") != "finetune":
                continue
            if rec["arm"] == "pretrained":
                rec = {**rec, "pretrain_index": k}
                pre_of.setdefault(str(rec["fraction"]), []).append(f"p{k}/{rec['name']}")
            elif rec["name"] in seen:
                continue
            seen.add(rec["name"])
            records.append(rec)
    return records, pre_of


def _per_pretraining_sd(records: list[dict[str, Any]], split: str) -> dict[str, float]:
    """SD across pretraining runs of (mean over that run's fine-tuning seeds of the per-run mean Dice)."""
    out = {}
    for frac in sorted({r["fraction"] for r in records if r["arm"] == "pretrained"}):
        by_pre: dict[int, list[float]] = {}
        for r in records:
            if r["arm"] != "pretrained" or r["fraction"] != frac:
                continue
            src = r if split == "test" else r.get("holdout")
            if not src:
                continue
            vals = [float(v) for v in src["case_dice"].values() if v is not None and math.isfinite(float(v))]
            if vals:
                by_pre.setdefault(r["pretrain_index"], []).append(float(np.mean(vals)))
        means = [float(np.mean(v)) for v in by_pre.values()]
        out[str(frac)] = {"n_pretraining_runs": len(means), "means": means,
                          "sd": float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")}
    return out


def _fmt(d: dict[str, Any] | None) -> str:
    if not d or d.get("n", 0) == 0 or not math.isfinite(d.get("mean", float("nan"))):
        return "—"
    return f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _holdout_view(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with their held-out-site results in place of the in-domain test ones."""
    return [{**r, "case_dice": r["holdout"]["case_dice"], "metrics": r["holdout"].get("metrics", r["metrics"]),
             "n_test_cases": r["holdout"]["n_test_cases"]} for r in records if r.get("holdout")]


def table(exp_dirs: list[Path]) -> dict[str, Any]:
    from petctfm.experiments.label_efficiency.report import summarize

    records, _ = _records(exp_dirs)
    if not records:
        raise SystemExit(f"no finished fine-tuning run in {', '.join(map(str, exp_dirs))}")
    result = {"experiments": [str(e) for e in exp_dirs], "n_runs": len(records)}
    for split, recs in (("test", records), ("holdout", _holdout_view(records))):
        if not recs:
            continue
        s = summarize(recs)
        result[split] = {
            "groups": [{k: g[k] for k in ("arm", "fraction", "n_seeds", "n_train_cases", "n_test_cases", "dice",
                                          "dice_sd")} for g in s["groups"] if g["kind"] == "finetune"],
            "comparisons": s["comparisons"], "pretraining_sd": _per_pretraining_sd(records, split)}
    return result


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Pooled over {len(res['experiments'])} experiment folders ({res['n_runs']} fine-tuning runs).", ""]
    for split in ("test", "holdout"):
        if split not in res:
            continue
        r = res[split]
        lines += [f"**{'In-domain test' if split == 'test' else 'Held-out site'}**", "",
                  "| arm | fraction | runs | training cases | test cases | Dice [95% CI over cases] | SD over runs | "
                  "SD over pretraining runs |", "|---|---|---|---|---|---|---|---|"]
        for g in r["groups"]:
            psd = r["pretraining_sd"].get(str(g["fraction"])) if g["arm"] == "pretrained" else None
            psd_txt = (f"{psd['sd']:.3f} (n={psd['n_pretraining_runs']})" if psd and math.isfinite(psd["sd"])
                       else "—")
            lines.append(f"| {g['arm']} | {g['fraction']:g} % | {g['n_seeds']} | {g['n_train_cases']} | "
                         f"{g['n_test_cases']} | {_fmt(g['dice'])} | {g['dice_sd']:.3f} | {psd_txt} |")
        lines += ["", "| comparison | pairs | mean difference [95% CI] | wins A / B | Wilcoxon p |",
                  "|---|---|---|---|---|"]
        for c in r["comparisons"]:
            lines.append(f"| {c['comparison']} | {c['n']} | {c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, "
                         f"{c['ci_high']:+.3f}] | {c['wins_a']} / {c['wins_b']} | {c['p_value']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    from petctfm.io.atomic import atomic_write_json, atomic_write_text, json_safe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp", action="append", required=True, type=Path, help="an experiment folder (repeat)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    res = table(args.exp)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "table.json", json_safe(res))
    text = markdown(res)
    atomic_write_text(args.out / "table.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
