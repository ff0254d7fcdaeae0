"""Seconds per segmentation training step (forward, cross-entropy, backward, AdamW) of candidate CPU configurations,
as ratios to a reference measured in the same run (this machine is noisy; ratios travel, seconds do not).

What the recipe's CPU choices rest on (docs/segmentation-recipe.md): patch size, network width, bf16 autocast
on a CPU with AMX / AVX512-BF16, channels-last. One thread (``torch.set_num_threads(1)``), random inputs, the
median of ``--steps`` steps after one warm-up step.

    OMP_NUM_THREADS=1 python benchmarks/bench_seg_step.py [--steps 4] [--quick] [--emulated-bf16]

On a CPU without native bf16 the bf16 rows are left out unless ``--emulated-bf16`` (emulated bf16 is 31x slower
than fp32 on the AMD VM of 2026-12-06: a bf16 row of the full patch takes minutes per step).
"""

from __future__ import annotations

import argparse
import json

import torch


def plain(base: int, n: int) -> dict:
    """``nnunet-plain`` overrides: ``n`` isotropic stages from ``base`` features (capped at 320)."""
    return dict(n_stages=n, features_per_stage=[min(base * 2 ** s, 320) for s in range(n)],
                kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1))


#: (name, backbone, patch, bf16, channels_last, overrides); the first is the reference.
CASES = [
    ("planned net fp32 (reference)", "nnunet-plain", (56, 32, 144), False, False,
     dict(plain(16, 5), strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2]])),
    ("planned net bf16", "nnunet-plain", (56, 32, 144), True, False,
     dict(plain(16, 5), strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2]])),
    ("planned net fp32 channels-last", "nnunet-plain", (56, 32, 144), False, True,
     dict(plain(16, 5), strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2]])),
    ("16..256 64^3 bf16", "nnunet-plain", (64, 64, 64), True, False, plain(16, 5)),
    ("8..128 64^3 bf16", "nnunet-plain", (64, 64, 64), True, False, plain(8, 5)),
    ("32..320 64^3 fp32 (nnU-Net widths)", "nnunet-plain", (64, 64, 64), False, False, {}),
    ("16..128 48^3 bf16", "nnunet-plain", (48, 48, 48), True, False, plain(16, 4)),
    ("DynUNet tiny 32^3 fp32 (the old demo)", "unet-resenc-tiny", (32, 32, 32), False, False, {}),
]


def step_seconds(backbone: str, patch, bf16: bool, channels_last: bool, overrides: dict, steps: int) -> float:
    """Median seconds of one step (the planner's own timing, ``plan.measure_step``)."""
    from petctfm.methods.segmentation.plan import measure_step

    return measure_step(backbone, overrides, patch, precision="bf16" if bf16 else "fp32", steps=steps,
                        channels_last=channels_last)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true",
                    help="two cases, one step, on a 32 x 16 x 48 patch (a smoke test: without native bf16 the full "
                         "planned patch takes minutes per step)")
    ap.add_argument("--emulated-bf16", action="store_true",
                    help="also the bf16 rows on a CPU without native bf16 (emulated there: tens of times slower, "
                         "minutes per step; skipped by default)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from petctfm.core.device import cpu_has_bf16

    native = cpu_has_bf16()
    skip_bf16 = not (a.quick or native or a.emulated_bf16)
    cases = CASES[:2] if a.quick else CASES
    if skip_bf16:
        cases = [c for c in cases if not c[3]]
    ref = None
    print(f"native bf16 on this CPU: {native}" + (" (bf16 rows skipped: --emulated-bf16 runs them)" if skip_bf16 else ""))
    for name, backbone, patch, bf16, cl, ov in cases:
        patch = (32, 16, 48) if a.quick else patch
        s = step_seconds(backbone, patch, bf16, cl, ov, 1 if a.quick else a.steps)
        ref = ref or s
        print(json.dumps({"case": name, "s_per_step": round(s, 3), "ratio_to_reference": round(s / ref, 3)}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
