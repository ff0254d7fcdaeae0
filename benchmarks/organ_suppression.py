"""Round eight of the segmentation recipe (issue 30): lesion false positives in physiological uptake, removed
with the network's own auxiliary organs (``postprocess.suppress_organs``, docs/segmentation-recipe.md).

Every arm comes from ONE forward pass per case and run (the class probabilities of
:func:`petctfm.inference.sliding_window.lesion_probability`, overlap and patch from the run's config, its final
weights as the ablation scores them): ``none`` (``prob > 0.5``), ``suppress`` (the pre-registered rule:
components with >= 50 % of their voxels in the predicted heart, brain, bladder or kidneys removed,
:func:`petctfm.inference.postprocess.suppress_in_organs`), and the exploratory thresholds ``t0.6`` .. ``t0.9``.
Per case it also records what the rule removed: its volume and the true-lesion volume inside it; and, where the
case has ground-truth organs, the true lesion lying in the rule's organs (``petctfm synth --organ-metastases``
puts lesions there; the default phantoms never do) and how much of it each arm's mask keeps.

Round nine (pre-registered 2026-12-07 12:14 UTC): with ``--organ-model RUN`` (a ``finetune --task organs`` run
folder or checkpoint), the arm ``organ_model`` applies the same organs and fraction with the organs taken from
that separate model's class argmax on the same harmonized grid
(:func:`petctfm.inference.postprocess.suppress_in_organ_map`); each case's organ map is predicted once, before
the lesion runs are scored, and saved under ``OUT/organ_maps/`` with the organ model's Dice per rule organ.

    # score runs (one worker per run, one thread each): OUT/<run name>.json
    OMP_NUM_THREADS=1 python benchmarks/organ_suppression.py --runs A,B --data DS --split val --out OUT
    OMP_NUM_THREADS=1 python benchmarks/organ_suppression.py --runs A,B --data DS --cases lesions --out OUT
    OMP_NUM_THREADS=1 python benchmarks/organ_suppression.py --runs A,B --data DS --split val --out OUT \
        --organ-model ORGANRUN/checkpoints/step_0000900 --organ-overlap 0.25
    # the table: per arm, Dice over cases (seed-averaged per case), paired differences against ``none``
    python benchmarks/organ_suppression.py --report OUT
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: The pre-registered rule (2026-12-07 09:16 UTC): the organs of physiological FDG uptake and excretion.
ORGANS = ["heart", "brain", "bladder", "kidney_left", "kidney_right"]
FRACTION = 0.5
THRESHOLDS = (0.6, 0.7, 0.8, 0.9)


def _ids(data: str, split: str | None, cases: str) -> list[str]:
    from petctfm.data import format as fmt

    sp = fmt.load_splits(data)
    ids = list(sp.get(split) or []) if split else sorted({c for k in ("train", "val", "test") for c in sp.get(k) or []})
    if cases == "lesions":
        ids = [c for c in ids if np.asarray(fmt.load_case(data, c, mmap=True)["label"]).any()]
    return ids


def organ_maps(organ_model: str, data: str, ids: list[str], out: Path, overlap: float = 0.25) -> dict:
    """The organ model's label map of each case (``out/<case>.npy``, uint8 in its organ values; one thread) and
    its Dice per rule organ against the case's ``organs`` (NaN where an organ is absent from both). Returns
    ``{"organ_model", "overlap", "classes", "dice": {case: {organ: dice}}, "seconds": [per case]}``."""
    import torch

    torch.set_num_threads(1)
    from petctfm.data import format as fmt
    from petctfm.evaluate.organs import organ_case_metrics
    from petctfm.inference.model import load_segmenter, output_classes
    from petctfm.predict.split import case_label_map

    model, cfg, path = load_segmenter(organ_model)
    model.eval()
    classes = output_classes(cfg)
    rule = {name: classes[name] for name in ORGANS}
    out.mkdir(parents=True, exist_ok=True)
    dice: dict[str, dict[str, float]] = {}
    seconds = []
    for cid in ids:
        case = fmt.load_case(data, cid, mmap=True)
        t0 = time.perf_counter()
        labels = case_label_map(model, cfg, np.asarray(case["image"]), overlap)
        seconds.append(time.perf_counter() - t0)
        np.save(out / f"{cid}.npy", labels)
        if case.get("organs") is not None:
            m = organ_case_metrics(labels, np.asarray(case["organs"]), rule, fmt.case_spacing(case["meta"]), nsd=False)
            dice[cid] = {name: m[name]["dice"] for name in ORGANS}
    return {"organ_model": str(path), "overlap": overlap, "classes": {k: int(v) for k, v in classes.items()},
            "dice": dice, "seconds": seconds}


def all_organ_maps(organ_model: str, data: str, ids: list[str], out: Path, overlap: float, workers: int) -> dict:
    """:func:`organ_maps` of ``ids`` over ``workers`` processes, merged into ``out/organ_maps.json``."""
    chunks = [ids[i::workers] for i in range(workers) if ids[i::workers]]
    with ProcessPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(organ_maps, [organ_model] * len(chunks), [data] * len(chunks), chunks,
                              [out] * len(chunks), [overlap] * len(chunks)))
    res = {k: parts[0][k] for k in ("organ_model", "overlap", "classes")}
    res["dice"] = {c: d for part in parts for c, d in part["dice"].items()}
    res["s_per_case"] = float(np.mean([s for part in parts for s in part["seconds"]]))
    (out / "organ_maps.json").write_text(json.dumps(res, indent=1))
    return res


def score_run(run: str, data: str, ids: list[str], overlap: float | None = None, maps: str | None = None) -> dict:
    """Every arm's case metrics of one trained run on the cases ``ids`` of ``data`` (``overlap``: the sliding
    window's, default the run's ``val.overlap``; ``maps``: the folder of :func:`organ_maps`, which adds the arm
    ``organ_model``)."""
    import torch

    torch.set_num_threads(1)
    from petctfm.data import format as fmt
    from petctfm.evaluate.metrics import case_metrics
    from petctfm.inference.normalize import normalized_input
    from petctfm.inference.postprocess import (lesion_mask, organ_map_suppression, suppress_in_organ_map,
                                               suppress_in_organs, suppression)
    from petctfm.inference.sliding_window import lesion_probability
    from petctfm.train.checkpoint import load_model

    summary = json.loads((Path(run) / "summary.json").read_text())
    ckpt = Path(summary["checkpoint"])
    model, cfg = load_model(ckpt, ema=(ckpt / "ema.safetensors").is_file())
    model.eval()
    overlap = float(cfg["val"]["overlap"] if overlap is None else overlap)
    sup = suppression({**cfg, "postprocess": {"suppress_organs": ORGANS, "suppress_fraction": FRACTION}})
    arms: dict[str, dict] = {"none": {}, "suppress": {}, **{f"t{t:g}": {} for t in THRESHOLDS}}
    om_sup = None
    if maps is not None:
        info = json.loads((Path(maps) / "organ_maps.json").read_text())
        om_sup = organ_map_suppression(ORGANS, info["classes"], FRACTION)
        arms["organ_model"] = {}
    removed: dict[str, dict] = {}
    seconds = []
    for cid in ids:
        case = fmt.load_case(data, cid, mmap=True)
        x, bg = normalized_input(np.asarray(case["image"]), cfg)
        t0 = time.perf_counter()
        probs = lesion_probability(model, x, cfg["data"]["patch_size"], overlap, bg=bg,
                                   sw_batch_size=int(cfg["val"]["sw_batch_size"]), channel=None)
        seconds.append(time.perf_counter() - t0)
        truth, spacing = np.asarray(case["label"]) > 0, fmt.case_spacing(case["meta"])
        voxel_ml = float(np.prod(spacing)) / 1000.0
        plain = lesion_mask(probs[1], spacing)
        kept = lesion_mask(suppress_in_organs(probs, sup), spacing)
        in_organs = _truth_in_rule_organs(case, truth)
        arms["none"][cid] = case_metrics(plain, truth, spacing)
        arms["suppress"][cid] = case_metrics(kept, truth, spacing)
        for t in THRESHOLDS:
            arms[f"t{t:g}"][cid] = case_metrics(lesion_mask(probs[1], spacing, threshold=t), truth, spacing)
        removed[cid] = _removed(plain, kept, truth, voxel_ml)
        masks = {"none": plain, "suppress": kept}
        if om_sup is not None:
            masks["organ_model"] = kept_om = suppress_in_organ_map(plain, np.load(Path(maps) / f"{cid}.npy"), om_sup)
            arms["organ_model"][cid] = case_metrics(kept_om, truth, spacing)
            removed[cid].update(_removed(plain, kept_om, truth, voxel_ml, "organ_model_"))
        removed[cid].update(_kept_in_organs(in_organs, voxel_ml, **masks))
    return {"run": run, "data": data, "cases": ids, "overlap": overlap, "patch": cfg["data"]["patch_size"],
            "steps": summary.get("steps"), "organs": ORGANS, "fraction": FRACTION, "arms": arms, "removed": removed,
            "s_per_case": float(np.mean(seconds)) if seconds else float("nan")}


def _truth_in_rule_organs(case: dict, truth: np.ndarray) -> np.ndarray | None:
    """The true lesion voxels whose ground-truth organ is one of the rule's :data:`ORGANS` (bool, the case's
    grid), or None for a case without an organ map."""
    if case.get("organs") is None:
        return None
    from petctfm.core.labels import ORGAN_LABELS

    return truth & np.isin(np.asarray(case["organs"]), [ORGAN_LABELS[n] for n in ORGANS])


def _kept_in_organs(in_organs: np.ndarray | None, voxel_ml: float, **masks: np.ndarray) -> dict:
    """``truth_in_organs_ml`` (the volume of ``in_organs``) and, per named mask, ``{name}_in_organs_ml``: how much
    of it that mask keeps; empty without an organ map."""
    if in_organs is None:
        return {}
    return {"truth_in_organs_ml": float(in_organs.sum() * voxel_ml),
            **{f"{k}_in_organs_ml": float(((m > 0) & in_organs).sum() * voxel_ml) for k, m in masks.items()}}


def _removed(plain: np.ndarray, kept: np.ndarray, truth: np.ndarray, voxel_ml: float, prefix: str = "") -> dict:
    """What a rule took out of the ``plain`` mask to leave ``kept``: ``{prefix}removed_ml`` and, of it, the true
    lesion ``{prefix}removed_truth_ml``."""
    gone = (plain > 0) & ~(kept > 0)
    return {f"{prefix}removed_ml": float(gone.sum() * voxel_ml),
            f"{prefix}removed_truth_ml": float((gone & truth).sum() * voxel_ml)}


def _seed_mean(results: list[dict], arm: str, key: str = "dice") -> dict[str, float]:
    """Per case, ``key`` of ``arm`` averaged over the runs (cases finite in every run)."""
    cases = set.intersection(*({c for c, m in r["arms"][arm].items() if math.isfinite(m[key])} for r in results))
    return {c: float(np.mean([r["arms"][arm][c][key] for r in results])) for c in sorted(cases)}


def report(out: Path) -> str:
    """The markdown table of every arm in ``out``: Dice [95 % CI] over cases with lesions (seed-averaged per
    case), paired difference against ``none``, FP / FN ml per case over all scored cases, and the rule's
    removed volume and removed true-lesion volume."""
    from seg_recipe_ablation import _ci_text as ci

    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not results:
        raise SystemExit(f"{out}: no scored run")

    base = _seed_mean(results, "none")
    lines = [f"runs: {', '.join(Path(r['run']).name for r in results)}; data {results[0]['data']}; "
             f"{len(results[0]['cases'])} cases, {len(base)} with lesions",
             "", "| arm | Dice [95 % CI] | per run | paired − none | FP ml / case | FN ml / case |",
             "| --- | --- | --- | --- | ---: | ---: |"]
    for arm in results[0]["arms"]:
        d = _seed_mean(results, arm)
        per = " / ".join(f"{np.mean([m['dice'] for m in r['arms'][arm].values() if math.isfinite(m['dice'])]):.3f}"
                         for r in results)
        diff = "" if arm == "none" else ci([d[c] - base[c] for c in base], sign=True)
        fp = np.mean([np.mean([m["fp_volume_ml"] for m in r["arms"][arm].values()]) for r in results])
        fn = np.mean([np.mean([m["fn_volume_ml"] for m in r["arms"][arm].values()]) for r in results])
        lines.append(f"| {arm} | {ci(list(d.values()), sign=False)} | {per} | {diff} | {fp:.1f} | {fn:.1f} |")
    lines.append("")
    for arm, key in (("suppress", ""), ("organ_model", "organ_model_")):
        if arm not in results[0]["arms"]:
            continue
        rem = np.mean([np.mean([v[key + "removed_ml"] for v in r["removed"].values()]) for r in results])
        rem_t = np.mean([np.mean([v[key + "removed_truth_ml"] for v in r["removed"].values()]) for r in results])
        lines.append(f"- {arm}: removed {rem:.1f} ml per case, of which {rem_t:.2f} ml true lesion")
    inside = [v for r in results for v in r["removed"].values() if v.get("truth_in_organs_ml", 0) > 0]
    if inside:  # true lesion in the rule's organs (an --organ-metastases cohort): how much each arm keeps
        tot = sum(v["truth_in_organs_ml"] for v in inside)
        kept = ", ".join(f"{arm} {sum(v[f'{arm}_in_organs_ml'] for v in inside) / tot:.0%}"
                         for arm in ("none", "suppress", "organ_model") if f"{arm}_in_organs_ml" in inside[0])
        lines.append(f"- true lesion inside {', '.join(ORGANS)} (ground-truth organs): {tot / len(results):.1f} ml "
                     f"in {len(inside) // len(results)} cases; share of it kept: {kept}")
    lines.append(f"- {np.mean([r['s_per_case'] for r in results]):.1f} s per case (all classes, 1 thread)")
    maps = out / "organ_maps" / "organ_maps.json"
    if maps.is_file():
        info = json.loads(maps.read_text())
        per = {n: [d[n] for d in info["dice"].values() if math.isfinite(d[n])] for n in ORGANS}
        lines.append("- the organ model's Dice on these cases: " + ", ".join(
            f"{n} {np.mean(v):.3f}" for n, v in per.items() if v) + f" ({info['s_per_case']:.1f} s per case, "
            f"overlap {info['overlap']:g})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", help="comma-separated trained runs (folders with summary.json)")
    ap.add_argument("--data")
    ap.add_argument("--split", default=None, help="a split of --data (default: every case of train, val and test)")
    ap.add_argument("--cases", default="all", choices=("all", "lesions"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: each run's)")
    ap.add_argument("--organ-model", default=None, help="a 'finetune --task organs' run or checkpoint: adds the arm "
                    "organ_model (round nine)")
    ap.add_argument("--organ-overlap", type=float, default=0.25, help="the organ model's sliding-window overlap")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report:
        print(report(out))
        return 0
    if args.split == "test":
        raise SystemExit("--split test: this round chooses on validation and confirms on a new cohort")
    out.mkdir(parents=True, exist_ok=True)
    ids = _ids(args.data, args.split, args.cases)
    runs = args.runs.split(",")
    maps = None
    if args.organ_model:
        maps = str(out / "organ_maps")
        all_organ_maps(args.organ_model, args.data, ids, Path(maps), args.organ_overlap, len(runs))
    with ProcessPoolExecutor(len(runs)) as pool:
        for res in pool.map(score_run, runs, [args.data] * len(runs), [ids] * len(runs), [args.overlap] * len(runs),
                            [maps] * len(runs)):
            (out / f"{Path(res['run']).name}.json").write_text(json.dumps(res, indent=1))
    print(report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
