"""PET intensity transform for learning: ``clip`` (z-score of SUV clipped to [0, 20]) vs ``log1p`` (z-score of
log(1 + clipped SUV)), at equal ``max_steps``, on a harmonized dataset (synthetic). Numbers in docs/pretrain.md.

Per transform and seed: a tiny joint MAE pretraining run, then a tiny fine-tuning run from it on the whole train
split, predicted on the test split and scored (Dice with a bootstrap CI). Pretraining stability is read from the
masked-PET loss of ``metrics.jsonl``: the two transforms have different units, so the scale-free numbers are
compared: coefficient of variation of the logged values, the largest jump between consecutive logs relative
to their median, and the ratio last-third / first-third mean (< 1: it learns).

    python benchmarks/bench_pet_transform.py --data DATASET --out /tmp/pt --pretrain-steps 200 \\
        --finetune-steps 300 --seeds 0,1 --ft-set data.fg_prob=0.67 --ft-set train.warmup_steps=20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def loss_stats(run: Path, key: str = "loss_masked_pet") -> dict[str, float]:
    vals = [json.loads(line).get(key) for line in (run / "metrics.jsonl").read_text().splitlines()]
    v = np.array([x for x in vals if x is not None], float)
    n = max(len(v) // 3, 1)
    med = float(np.median(v))
    return {"n_logs": len(v), "median": med, "cv": float(v.std() / v.mean()),
            "max_jump_rel": float(np.abs(np.diff(v)).max() / med) if len(v) > 1 else 0.0,
            "last_over_first": float(v[-n:].mean() / v[:n].mean()), "max": float(v.max()), "min": float(v.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--finetune-steps", type=int, default=100)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--transforms", default="clip,log1p")
    ap.add_argument("--ft-set", action="append", default=[], metavar="KEY=VALUE",
                    help="fine-tuning override (repeatable), e.g. data.fg_prob=0.67")
    args = ap.parse_args()

    from petctfm.evaluate import evaluate_folder
    from petctfm.methods.early_fusion_mae.api import pretrain
    from petctfm.methods.finetune import finetune
    from petctfm.predict.split import predict_split

    from petctfm.evaluate.bootstrap import paired_comparison

    out = Path(args.out)
    rows, per_case = [], {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for transform in args.transforms.split(","):
        for seed in seeds:
            pre = out / f"mae_{transform}_s{seed}"
            ft = out / f"ft_{transform}_s{seed}"
            # resumable: a finished run (summary.json) is kept, a half-written one resumed
            if not (pre / "summary.json").is_file():
                pretrain(args.data, pre, "tiny", max_steps=args.pretrain_steps, seed=seed, progress=False,
                         overrides=[f"data.pet_transform={transform}"], resume=(pre / "checkpoints").is_dir())
            if not (ft / "summary.json").is_file():
                every = max(args.finetune_steps // 2, 1)  # validate twice (best checkpoint), not every 10 steps
                finetune(args.data, ft, init=pre, preset="tiny", max_steps=args.finetune_steps, seed=seed,
                         progress=False, resume=(ft / "checkpoints").is_dir(),
                         overrides=[f"train.checkpoint_every={every}", f"train.figure_every={every}", *args.ft_set])
            if not (ft / "pred_test" / "done.json").is_file():
                predict_split(ft, args.data, split="test", out_dir=ft / "pred_test", progress=False)
                (ft / "pred_test" / "done.json").write_text("{}")
            res = evaluate_folder(ft / "pred_test", args.data, split="test", n_resamples=1000, seed=0,
                                  progress=False)
            dice = next(s for s in res["summary"] if s["group_by"] == "all" and s["metric"] == "dice")
            per_case[(transform, seed)] = {c["case_id"]: c["dice"] for c in res["cases"]}
            best = json.loads((ft / "best" / "best.json").read_text()) if (ft / "best" / "best.json").is_file() else {}
            row = {"transform": transform, "seed": seed, **{f"pet_{k}": v for k, v in loss_stats(pre).items()},
                   "ct_cv": loss_stats(pre, "loss_masked_ct")["cv"],
                   "test_dice": dice["mean"], "test_dice_ci": [dice["ci_low"], dice["ci_high"]], "n_test": dice["n"],
                   "best_val_dice": best.get("dice")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"runs": rows}
    names = args.transforms.split(",")
    if len(names) == 2:  # B - A per case, each case's Dice averaged over the seeds first (cases with lesions)
        a, b = names
        cases = sorted(per_case[(a, seeds[0])])

        def seed_mean(t: str, c: str) -> float:
            v = [per_case[(t, s)].get(c) for s in seeds]
            v = [x for x in v if x is not None and np.isfinite(x)]
            return float(np.mean(v)) if v else float("nan")

        result["paired"] = {"diff": f"{b} - {a}", **paired_comparison(
            [seed_mean(b, c) for c in cases], [seed_mean(a, c) for c in cases], n_resamples=2000, seed=0)}
        print(json.dumps(result["paired"]), flush=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
