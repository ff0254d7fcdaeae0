"""Parameters and one forward+backward of the UNet backbones on a 64^3 patch, against ``unet-resenc`` (the MONAI
DynUNet stand-in) measured in the same run.

Each repeat times every backbone once, each right after one step of the reference (so a machine whose load
changes during the run, as the shared 2-core VM's does, affects both sides of each ratio alike); the table
reports the median over repeats of each backbone's seconds and of its ratio to the reference step just
before it. One thread (``OMP_NUM_THREADS=1``), CPU, float32, training mode, MSE to a random target,
``in_channels = out_channels = 2`` (the joint MAE), batch ``--batch`` (the cpu presets use 2).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_backbones.py --repeats 5 --out /tmp/backbones.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from petctfm.models.backbones import build_backbone, count_parameters  # noqa: E402

REFERENCE = "unet-resenc"
NAMES = [REFERENCE, "nnunet-plain", "nnunet-resenc", "unet-resenc-tiny", "nnunet-plain-tiny", "nnunet-resenc-tiny"]


def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one forward + backward (gradients zeroed first)."""
    net.zero_grad(set_to_none=True)
    t = time.perf_counter()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--names", default=",".join(NAMES))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = a.names.split(",")
    names = [REFERENCE] + [n for n in names if n != REFERENCE]
    torch.manual_seed(0)
    nets = {n: build_backbone(n, 2, 2).train() for n in names}
    x = torch.randn(a.batch, 2, a.patch, a.patch, a.patch)
    y = torch.randn_like(x)
    for n in names:  # warm-up (allocator, first-call overheads)
        step(nets[n], x, y)
    times: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.repeats):
        for n in names[1:]:
            t_ref = step(nets[REFERENCE], x, y)
            t = step(nets[n], x, y)
            times[REFERENCE].append(t_ref)
            times[n].append(t)
            ratios[REFERENCE].append(1.0)
            ratios[n].append(t / t_ref)
        print(f"repeat {r + 1}/{a.repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s ({ratios[n][-1]:.2f}x)"
                                                          for n in names[1:]), flush=True)
    rows = []
    for n in names:
        rows.append({
            "backbone": n, "params_M": round(count_parameters(nets[n]) / 1e6, 3),
            "median_s": round(statistics.median(times[n]), 3),
            "ratio_vs_reference": round(statistics.median(ratios[n]), 3),
            "times_s": [round(t, 3) for t in times[n]], "ratios": [round(q, 3) for q in ratios[n]],
        })
    result = {"patch": a.patch, "batch": a.batch, "repeats": a.repeats, "threads": torch.get_num_threads(),
              "reference": REFERENCE, "torch": torch.__version__, "rows": rows}
    print(f"\n| backbone | params | fwd+bwd {a.patch}^3 x{a.batch} (median s) | vs {REFERENCE} |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| `{row['backbone']}` | {row['params_M']:.2f} M | {row['median_s']:.2f} | "
              f"{row['ratio_vs_reference']:.2f}x |")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
