"""The segmentation recipe's ablation: validation Dice at equal CPU time, one row per choice (issue 30, item 2).

Equal time without a wall-clock cap (a loaded machine would cut some rows short and not others): each row is
first *calibrated* (``--calib`` training steps of its exact config, timed from its ``metrics.jsonl``, all rows
back to back in one process per worker), then trained for ``steps = budget / seconds per step`` fixed steps.
So every row gets the same planned CPU time, and a busy machine makes the whole table slower, not different.
Each row: 1 thread (``OMP_NUM_THREADS=1``); ``--workers`` rows at a time (one per core). Scored on the
validation split (sliding window, the run's final weights; EMA weights when the row has EMA), never on test.

    OMP_NUM_THREADS=1 python benchmarks/seg_recipe_ablation.py --data DS --out OUT --minutes 10 --workers 2
    python benchmarks/seg_recipe_ablation.py --data DS --out OUT --table    # the markdown table of OUT
    # rows of equal step cost at equal steps, scored on every case of a development cohort (a new synth seed):
    OMP_NUM_THREADS=1 python benchmarks/seg_recipe_ablation.py --data DS --out OUT --steps 1200 --score-data DEV
    # then, after the choice: the trained rows on a confirmation cohort drawn afterwards (no training)
    OMP_NUM_THREADS=1 python benchmarks/seg_recipe_ablation.py --data DS --out OUT --rows a,b --confirm CONF

Rows (``ROWS``): ``before`` is the recipe petctfm had (the demo's fine-tuning: DynUNet stand-in 8..64 filters,
32^3 patch, fp32, cosine, no deep supervision); ``recipe`` is ``--plan cpu`` (plan.py); each other row changes
one thing of ``recipe``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from petctfm.core.labels import ORGAN_LABELS

RECIPE = {"backbone": "nnunet-plain", "plan": "cpu"}
#: Every organ of the phantoms' organ map but the background.
AUX_ORGANS = {k: v for k, v in ORGAN_LABELS.items() if v}
ROWS_BEFORE = {"backbone": "unet-resenc-tiny", "preset": "tiny", "plan": None}
ROWS: dict[str, dict] = {
    "before": {**ROWS_BEFORE, "overrides": {}},
    "recipe": {**RECIPE, "overrides": {}},
    "fp32": {**RECIPE, "overrides": {"train.precision": "fp32"}},
    "no_deep_supervision": {**RECIPE, "overrides": {"model.overrides.deep_supervision": False}},
    "cosine": {**RECIPE, "overrides": {"train.lr_schedule": "cosine"}},
    "patch_64cube": {**RECIPE, "overrides": {"data.patch_size": [64, 64, 64],
                                             "model.overrides.strides": [[1, 1, 1]] + [[2, 2, 2]] * 4}},
    "fg_prob_0.5": {**RECIPE, "overrides": {"data.fg_prob": 0.5}},
    "ema": {**RECIPE, "overrides": {"train.ema_decay": 0.99}},
    # exploration after the first table (the planned recipe had not found lesions in 8 min): LR, oversampling,
    # smaller patches
    "lr3e-3_fg0.66": {**RECIPE, "overrides": {"train.lr": 3e-3, "data.fg_prob": 0.66}},
    "patch48x32x64_lr3e-3_fg0.66": {**RECIPE, "overrides": {"train.lr": 3e-3, "data.fg_prob": 0.66,
                                                             "data.patch_size": [48, 32, 64]}},
    "before_lr3e-3_fg0.66": {**ROWS_BEFORE, "overrides": {"train.lr": 3e-3, "data.fg_prob": 0.66}},
    "lr3e-3": {**RECIPE, "overrides": {"train.lr": 3e-3}},
    "lr1e-2_fg0.66": {**RECIPE, "overrides": {"train.lr": 1e-2, "data.fg_prob": 0.66}},
    "patch48x32x64_lr1e-2_fg0.66": {**RECIPE, "overrides": {"train.lr": 1e-2, "data.fg_prob": 0.66,
                                                             "data.patch_size": [48, 32, 64]}},
    # second round (the 60-minute run's validation Dice swung 0.32 -> 0.15 with FP volume 11 -> 467 ml: an
    # unstable optimization). Same network and step cost as ``recipe``, so compared at equal steps (--steps).
    "adamw_lr1e-3": {**RECIPE, "overrides": {"train.lr": 1e-3}},
    "sgd_nnunet": {**RECIPE, "overrides": {"train.optimizer": "sgd", "train.lr": 1e-2, "train.beta1": 0.99,
                                           "train.weight_decay": 3e-5}},
    "ema_0.999": {**RECIPE, "overrides": {"train.ema_decay": 0.999}},
    "hot_neg_0.2": {**RECIPE, "overrides": {"data.hot_neg_prob": 0.2}},
    # third round: lesion-balanced oversampling (chosen, so the plan's own since then; ``recipe`` rows trained
    # before 2026-12-06 03:30 UTC had voxel balance, which ``voxel_balance`` reproduces)
    "lesion_balance": {**RECIPE, "overrides": {"data.fg_balance": "lesion"}},
    # round five: the organs of organs.npy as auxiliary output classes (task.aux_classes), on the round-three recipe
    "aux_organs": {**RECIPE, "overrides": {"data.fg_balance": "lesion", "task.aux_classes": AUX_ORGANS}},
    "voxel_balance": {**RECIPE, "overrides": {"data.fg_balance": "voxel"}},
    # 2026-12-07, the planner with a step-time budget (plan.py item 5): the round-five recipe, its patch shrunk
    # until a timed step takes <= 1 s on this machine (1 thread), as the cpu target was sized on the AMX VM
    "aux_organs_1s": {**RECIPE, "step_seconds": 1.0,
                      "overrides": {"data.fg_balance": "lesion", "task.aux_classes": AUX_ORGANS}},
    # 2026-12-07, a CPU without native bf16 (7x fewer steps per minute for the planned net): the round-five
    # recipe on the demo's small network (DynUNet 8..64 at 32^3, 0.33 s/step there against 6.7 s)
    "aux_organs_tiny": {"backbone": "unet-resenc-tiny", "preset": "tiny", "plan": "cpu",
                        "overrides": {"data.fg_balance": "lesion", "task.aux_classes": AUX_ORGANS,
                                      "data.patch_size": [32, 32, 32]}},
}


def _finetune(data: str, out: Path, row: dict, max_steps: int, seed: int, timed: dict | None = None) -> dict:
    """Train ``row`` into ``out``. A row with a step-time budget (``step_seconds``) is timed by the planner in
    its calibration run; its training runs get that run's patch budget (``timed``: the calibration's
    ``plan.rule``), so every seed trains the network and patch the calibration timed, not a re-measurement."""
    from petctfm.methods.segmentation.api import finetune

    kw = dict(backbone=row["backbone"], preset=row.get("preset", "cpu"), plan=row.get("plan"))
    if row.get("step_seconds"):
        if timed is None:
            kw["plan_step_seconds"] = float(row["step_seconds"])
        else:
            kw["plan_rule"] = {"patch_voxels": int(timed["patch_voxels"]), "step_seconds": None}
    elif row.get("plan"):
        kw["plan_step_seconds"] = 0  # the rows before the budget existed: the untimed plan they were measured with
    ov = dict(row.get("overrides") or {})
    return finetune(data, out, max_steps=max_steps, progress=False, figure_every=0, checkpoint_every=10 ** 6,
                    num_workers=0, seed=seed, log_every=1, warmup_steps=min(50, max(1, max_steps // 20)),
                    overrides=ov, **kw)


def calibrate(data: str, out: Path, name: str, steps: int) -> float:
    """Seconds per training step of row ``name`` (median of steps 3..``steps``)."""
    run = out / "calib" / name
    if (run / "summary.json").is_file():
        import shutil

        shutil.rmtree(run)
    from petctfm.train.run_dir import median_step_seconds

    _finetune(data, run, ROWS[name], steps, 0)
    return median_step_seconds(run)


def _timed_rule(out: Path, name: str) -> dict | None:
    """The plan rule (``patch_voxels`` ...) the calibration run of a timed row chose, or None (not a timed row)."""
    if not ROWS[name].get("step_seconds"):
        return None
    from petctfm.train.config import saved_run_configs

    saved = saved_run_configs(out / "calib" / name)
    if saved is None:
        raise SystemExit(f"{out / 'calib' / name}: a timed row trains with its calibration's plan; calibrate it first")
    return dict(saved[0]["plan"]["rule"])


def _score_ids(score_data: str | None, cases: str = "all") -> list[str] | None:
    """Every case of a separate development cohort (all its splits; ``cases="lesions"``: those with a lesion,
    as vs-nnunet's confirmation picks them), or None: the dataset's own split."""
    if not score_data:
        return None
    if cases != "all":
        from petctfm.experiments.vs_nnunet.confirm import cohort_cases

        return cohort_cases(score_data, cases)
    from petctfm.data import format as fmt

    sp = fmt.load_splits(score_data)
    return sorted({c for k in ("train", "val", "test") for c in (sp.get(k) or [])})


def _score(name: str, seed: int, summary: dict, data: str, split: str, ids: list[str] | None) -> dict:
    """The row's scores: its final weights (EMA when the run has them) by sliding window on ``split`` of
    ``data``, or on the cases ``ids`` of ``data``; the fields every table row has."""
    import torch

    from petctfm.methods.segmentation.validation import validate
    from petctfm.train.checkpoint import load_model

    ckpt = Path(summary["checkpoint"])
    model, cfg = load_model(ckpt, ema=(ckpt / "ema.safetensors").is_file())
    t0 = time.perf_counter()
    res = validate(model.eval(), cfg, data, split=split, ids=ids)
    torch.set_num_threads(1)
    return {"row": name, "seed": seed, "steps": summary["steps"],
            "val_dice": res["dice"], "val_fp_ml": res["fp_volume_ml"], "val_fn_ml": res["fn_volume_ml"],
            "val_s": round(time.perf_counter() - t0, 1), "val_cases": res["cases"], "patch": cfg["data"]["patch_size"],
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def train_and_score(data: str, out: Path, name: str, steps: int, seed: int, split: str = "val",
                    score_data: str | None = None, patch_voxels: int | None = None) -> dict:
    """Train row ``name`` (seed ``seed``, ``steps`` steps) into ``OUT/<name>_s<seed>`` and score it. A timed row
    trains with its calibration's voxel budget, or with ``patch_voxels`` when given (the same budget on
    differently harmonized copies of one dataset: equal voxels per step, no timing)."""
    from petctfm.train.run_dir import median_step_seconds

    run = out / f"{name}_s{seed}"
    t0 = time.perf_counter()
    done = run / "summary.json"
    summary = json.loads(done.read_text()) if done.is_file() else None
    if summary is None or summary.get("steps") != steps:  # else trained before (the scoring was interrupted)
        timed = ({"patch_voxels": int(patch_voxels)} if patch_voxels and ROWS[name].get("step_seconds")
                 else _timed_rule(out, name))
        summary = _finetune(data, run, ROWS[name], steps, seed, timed)
    train_s = time.perf_counter() - t0
    row = _score(name, seed, summary, score_data or data, split, _score_ids(score_data))
    try:
        s_per_step = median_step_seconds(run)
    except ValueError:  # a run of fewer than 4 logged steps (a smoke test): no step time
        s_per_step = float("nan")
    row.update({"train_s": round(train_s, 1), "s_per_step": s_per_step, "scored_on": score_data or f"{data}:{split}",
                "precision": summary["precision"]})
    (out / f"{name}_s{seed}.json").write_text(json.dumps(row, indent=1))
    return row


def confirm_row(out: Path, name: str, seed: int, confirm_data: str, cases: str = "all") -> dict:
    """Score the trained row ``name`` (seed ``seed``, its final weights) on every case of a confirmation cohort
    drawn after the choice; written to ``out/confirm/<row>_s<seed>.json`` (the row format of the table)."""
    summary = json.loads((out / f"{name}_s{seed}" / "summary.json").read_text())
    row = {**_score(name, seed, summary, confirm_data, "val", _score_ids(confirm_data, cases)), "scored_on": confirm_data}
    dest = out / "confirm"
    dest.mkdir(exist_ok=True)
    (dest / f"{name}_s{seed}.json").write_text(json.dumps(row, indent=1))
    return row


def floor_row(out: Path, threshold: float, confirm_data: str, cases: str = "all") -> dict:
    """The non-learned floor (SUV >= ``threshold``, components >= 1 ml; vs-nnunet's own) scored like a row on
    every case of ``confirm_data``: ``out/confirm/floor_suv<t>_s0.json``."""
    from petctfm.data import format as fmt
    from petctfm.evaluate.metrics import case_metrics
    from petctfm.data.format import case_spacing
    from petctfm.experiments.vs_nnunet.floor import threshold_mask
    from petctfm.methods.segmentation.validation import summarize_cases

    name, rows = f"floor_suv{threshold:g}", {}
    for cid in _score_ids(confirm_data, cases):
        case = fmt.load_case(confirm_data, cid, mmap=True)
        spacing = case_spacing(case["meta"])
        mask = threshold_mask(np.asarray(case["image"][0]), spacing, threshold)
        rows[cid] = case_metrics(mask, np.asarray(case["label"]), spacing)
    res = summarize_cases(rows)
    row = {"row": name, "seed": 0, "steps": 0, "val_dice": res["dice"], "val_fp_ml": res["fp_volume_ml"],
           "val_fn_ml": res["fn_volume_ml"], "val_cases": res["cases"], "params_M": 0, "scored_on": confirm_data}
    dest = out / "confirm"
    dest.mkdir(exist_ok=True)
    (dest / f"{name}_s0.json").write_text(json.dumps(row, indent=1))
    return row


def _init():
    import torch

    torch.set_num_threads(1)


def _seed_mean(rs: list[dict]) -> dict[str, float]:
    """Per case, the Dice averaged over the seeds ``rs`` of one row (cases scored finite by every seed)."""
    cases = set.intersection(*({c for c, v in r["val_cases"].items() if math.isfinite(v)} for r in rs))
    return {c: sum(r["val_cases"][c] for r in rs) / len(rs) for c in sorted(cases)}


def table(out: Path, versus: Path | None = None, against: str = "recipe") -> str:
    """One line per row of ``out`` (the rows of ``ROWS`` first, then any other, e.g. the floors): Dice over
    cases (per case averaged over the row's seeds), mean [95 % CI] over cases; the per-seed means; Δ paired by
    case over the seeds both have, against the row ``against`` of ``out`` (default ``recipe``), or with
    ``versus`` against the same row of that folder (e.g. the same recipe trained for fewer steps, scored on the
    same cases)."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*_s*.json"))]
    other = [json.loads(p.read_text()) for p in sorted(versus.glob("*_s*.json"))] if versus else []
    cal = json.loads((out / "calibration.json").read_text()) if (out / "calibration.json").is_file() else {}
    recipe = {r["seed"]: r for r in rows if r["row"] == against}
    baseline, against = against, (f"same row of {versus}" if versus else against)
    lines = ["| row | seeds | s/step (calibrated, else measured) | steps | Dice [95 % CI] (seed-averaged per case) | "
             f"per-seed Dice | Δ vs {against} (paired by case, same seeds) | FP ml | FN ml | params M |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name in list(ROWS) + sorted({r["row"] for r in rows} - set(ROWS)):
        rs = sorted((r for r in rows if r["row"] == name), key=lambda r: r["seed"])
        if not rs:
            continue
        base = {r["seed"]: r for r in other if r["row"] == name} if versus else recipe
        per_case = _seed_mean(rs)
        d = _ci_text(list(per_case.values()), sign=False) if per_case else "nan"
        seeds_text = " / ".join(f"{np.mean([v for v in r['val_cases'].values() if math.isfinite(v)]):.3f}" for r in rs)
        dtext = ""
        both = [r for r in rs if r["seed"] in base]
        if (versus or name != baseline) and both:
            mine, theirs = _seed_mean(both), _seed_mean([base[r["seed"]] for r in both])
            dtext = _ci_text([mine[c] - theirs[c] for c in mine if c in theirs])
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{cal.get(name, np.median([r.get('s_per_step', float('nan')) for r in rs])):.2f} | "
                     f"{int(np.mean([r['steps'] for r in rs]))} | {d} | {seeds_text} | {dtext} | "
                     f"{np.mean([r['val_fp_ml'] for r in rs]):.1f} | {np.mean([r['val_fn_ml'] for r in rs]):.1f} | "
                     f"{rs[0].get('params_M', '')} |")
    return "\n".join(lines)


def figure(out: Path, png: Path, extra: Sequence[Path] = ()) -> Path:
    """Dice [95 % CI] of every scored row (OUT, then OUT/confirm/, then each folder of ``extra``), one point per
    row and seed (coloured by row and steps), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petctfm.evaluate.bootstrap import mean_ci

    files = sorted(out.glob("*_s*.json")) + sorted((out / "confirm").glob("*_s*.json"))
    files += [f for d in extra for f in sorted(Path(d).glob("*_s*.json"))]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(files) + 1), 3.8))
    i, colours = 0, {}
    for f in files:
        r = json.loads(f.read_text())
        d = [v for v in r["val_cases"].values() if math.isfinite(v)]
        if not d:
            continue
        ci = mean_ci(d)
        c = colours.setdefault((r["row"], r.get("steps")), f"C{len(colours) % 10}")
        ax.errorbar(i, ci["mean"], yerr=[[ci["mean"] - ci["ci_low"]], [ci["ci_high"] - ci["mean"]]], fmt="o",
                    color=c, capsize=4)
        where = Path(r.get("scored_on", "")).name or "val"
        ax.annotate(f"{r['row']}\n{r.get('steps', '?')} steps\ns{r['seed']} · {where}", (i, 0), xytext=(0, -34),
                    textcoords="offset points",
                    ha="center", fontsize=6, annotation_clip=False)
        i += 1
    ax.set_xticks([])
    ax.set_xlim(-0.6, i - 0.4)
    ax.set_ylim(0, None)
    ax.set_ylabel("Dice over cases with lesions\nmean [95 % CI]")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _ci_text(values: list[float], sign: bool = True) -> str:
    """``mean [low, high]`` (95 % bootstrap CI), signed for differences."""
    from petctfm.evaluate.bootstrap import mean_ci

    ci, f = mean_ci(values), ("{:+.3f}" if sign else "{:.3f}").format
    return f"{f(ci['mean'])} [{f(ci['ci_low'])}, {f(ci['ci_high'])}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--calib", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--figure", default=None, metavar="PNG", help="draw every scored row of OUT (and OUT/confirm) as a PNG")
    ap.add_argument("--split", default="val", help="the split rows are scored on (never test)")
    ap.add_argument("--patch-voxels", type=int, default=None, metavar="V",
                    help="with --steps: timed rows train at this patch voxel budget instead of a calibration's")
    ap.add_argument("--steps", type=int, default=None,
                    help="equal fixed steps for every row instead of calibrated equal time (rows of equal step cost)")
    ap.add_argument("--confirm", default=None, metavar="DATASET",
                    help="no training: score the trained --rows on every case of this confirmation cohort (drawn "
                         "after the choice) into OUT/confirm/, and print its table")
    ap.add_argument("--confirm-cases", default="all", choices=("all", "lesions"),
                    help="with --confirm: every case, or only those with a lesion (Dice is over those; the FP "
                         "volume then leaves the lesion-free cases out)")
    ap.add_argument("--floors", action="store_true",
                    help="with --confirm: also score the SUV >= 2.5 and >= 4 floors on the cohort")
    ap.add_argument("--against", default="recipe", metavar="ROW",
                    help="with --table: Δ against this row of OUT (default recipe)")
    ap.add_argument("--versus", default=None, metavar="DIR",
                    help="with --table: Δ against the same row of DIR (scored on the same cases) instead of recipe; "
                         "with --figure: DIR's rows are drawn too")
    ap.add_argument("--score-data", default=None,
                    help="score on every case of this harmonized development cohort (a new synth seed, never the "
                         "test or confirmation cohort) instead of --data's validation split")
    a = ap.parse_args(argv)
    if a.patch_voxels is not None and (a.steps is None or a.patch_voxels < 1):
        ap.error("--patch-voxels V needs --steps (no calibration) and V >= 1")
    if a.split == "test":
        ap.error("--split test: the ablation chooses, so it is scored on validation data, never on test")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.table or a.figure:
        if a.table:
            print(table(out, Path(a.versus) if a.versus else None, a.against))
        if a.figure:
            print(figure(out, Path(a.figure), [Path(a.versus)] if a.versus else []))
        return 0
    names = a.rows.split(",")
    if a.confirm:
        jobs = [(n, int(s)) for s in a.seeds.split(",") for n in names]
        with ProcessPoolExecutor(a.workers, initializer=_init) as ex:
            for r in ex.map(confirm_row, [out] * len(jobs), *zip(*jobs), [a.confirm] * len(jobs),
                            [a.confirm_cases] * len(jobs)):
                print(json.dumps({k: v for k, v in r.items() if k != "val_cases"}), flush=True)
        if a.floors:
            from petctfm.experiments.vs_nnunet.plan import FLOOR_THRESHOLDS

            for t in FLOOR_THRESHOLDS:
                floor_row(out, float(t), a.confirm, a.confirm_cases)
        print(table(out / "confirm"))
        return 0
    cal_file = out / "calibration.json"
    cal = json.loads(cal_file.read_text()) if cal_file.is_file() else {}
    todo = [n for n in names if n not in cal] if a.steps is None else []
    with ProcessPoolExecutor(a.workers, initializer=_init) as ex:
        for n, s in zip(todo, ex.map(calibrate, [a.data] * len(todo), [out] * len(todo), todo, [a.calib] * len(todo))):
            cal[n] = s
            print(f"calibrated {n}: {s:.3f} s/step", flush=True)
        cal_file.write_text(json.dumps(cal, indent=1))
        jobs = [(n, int(s)) for s in a.seeds.split(",") for n in names if not (out / f"{n}_s{s}.json").is_file()]
        steps = {n: a.steps or max(1, int(a.minutes * 60 / cal[n])) for n in names}
        futs = [ex.submit(train_and_score, a.data, out, n, steps[n], s, a.split, a.score_data, a.patch_voxels)
                for n, s in jobs]
        for f in futs:
            r = f.result()
            print(json.dumps({k: v for k, v in r.items() if k != "val_cases"}), flush=True)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
