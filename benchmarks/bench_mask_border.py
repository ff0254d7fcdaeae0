"""The seed's physics claim: intensity discontinuities at mask borders, zero-mean imputation vs learnable token.

Trains the early-fusion MAE twice with identical data, seed, network and schedule, once with zero-mean
imputation and once with a learnable mask token, then reconstructs held-out patches (rank 1's sample
stream, never seen in training) and measures
:func:`petctfm.methods.early_fusion_mae.mae.border_discontinuity`: mean |finite difference| across mask-block
borders divided by the mean within regions. The same ratio on the ground truth patch (~1 for random block
positions) is printed for reference, and ``excess = ratio(reconstruction) / ratio(target)``: 1 = seamless,
> 1 = a jump at the borders.

    python benchmarks/bench_mask_border.py                       # tiny, CPU, about a minute
    python benchmarks/bench_mask_border.py --data DATASET --backbone swinunetr-small --patch 64 \\
        --block 16 --steps 500 --device cuda --out border.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # toy_dataset.py

from toy_dataset import write_bench_dataset  # noqa: E402
from petctfm.io.atomic import atomic_write_json  # noqa: E402
from petctfm.methods.early_fusion_mae.mae import (  # noqa: E402
    DEFAULT_CONFIG, EarlyFusionMAETask, border_discontinuity,
)
from petctfm.core.config import deep_merge  # noqa: E402
from petctfm.methods.early_fusion_mae.presets import get_preset  # noqa: E402


def train_and_measure(data, token: str, args, device: torch.device) -> dict:
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg = deep_merge(cfg, {"seed": args.seed, "model": {"backbone": args.backbone}, "mask": {"token": token, "block": args.block},
                           "data": {"patch_size": [args.patch] * 3, "batch_size": args.batch}})
    task = EarlyFusionMAETask(cfg, data)
    torch.manual_seed(args.seed)
    model = task.build_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    it = task.batches(0, 1, 0)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        b = {k: v.to(device) for k, v in next(it).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, logs = task.training_step(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    held_out = task.batches(1, 2, 0)  # another rank's stream: patches never trained on
    r_rec, r_tgt, r_in, l_m, l_v = [], [], [], [], []
    with torch.no_grad():
        for _ in range(args.eval_batches):
            b = {k: v.to(device) for k, v in next(held_out).items()}
            x = b["image"]
            x_in, mask = model.masked_input(x, b["mask"])
            pred = model.backbone(x_in).float()
            r_rec.append(border_discontinuity(pred, mask))
            r_tgt.append(border_discontinuity(x, mask))
            r_in.append(border_discontinuity(x_in, mask))
            m = mask.expand_as(x)
            l_m.append(float(((pred - x) ** 2)[m].mean()))
            l_v.append(float(((pred - x) ** 2)[~m].mean()))
    res = {"token": token, "ratio_reconstruction": float(np.nanmean(r_rec)), "ratio_target": float(np.nanmean(r_tgt)),
           "ratio_masked_input": float(np.nanmean(r_in)), "mse_masked": float(np.mean(l_m)),
           "mse_visible": float(np.mean(l_v)), "train_s": train_s, "final_train_loss": float(loss.detach())}
    res["excess"] = res["ratio_reconstruction"] / res["ratio_target"]
    if model.mask_token is not None:
        res["mask_token"] = model.mask_token.detach().cpu().tolist()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="mask-border discontinuity: zero imputation vs learnable token")
    ap.add_argument("--data", help="harmonized dataset (default: a tiny synthetic one in a temp folder)")
    ap.add_argument("--backbone", default="unet-resenc-tiny")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--toy-shape", type=int, nargs=3, default=[48, 48, 64], help="shape of the synthetic cases")
    ap.add_argument("--out", help="JSON results path")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    tmp = None
    data = args.data
    if not data:
        tmp = tempfile.TemporaryDirectory()
        data = write_bench_dataset(Path(tmp.name) / "ds", n_cases=4, shape=tuple(args.toy_shape))
    results = {"args": vars(args), "runs": [train_and_measure(data, t, args, device) for t in ("zero", "learnable")]}
    for r in results["runs"]:
        print(f"{r['token']:>9}: border/interior gradient ratio reconstruction {r['ratio_reconstruction']:.3f} "
              f"(target {r['ratio_target']:.3f}, excess {r['excess']:.3f}); masked input {r['ratio_masked_input']:.3f}; "
              f"MSE masked {r['mse_masked']:.4f} visible {r['mse_visible']:.4f}")
    if args.out:
        atomic_write_json(args.out, results)
    print(json.dumps(results["runs"]))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
