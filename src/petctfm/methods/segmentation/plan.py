"""The segmentation recipe's planner: a dataset fingerprint and, from it, nnU-Net-style rules for the patch, the
network's depth, strides and width, the batch and the numerics, sized to a compute target (CPU or GPU).

nnU-Net v2's rules are the starting point (its ``ExperimentPlanner`` for ``3d_fullres``); what differs is the
budget they are sized against (``docs/segmentation-recipe.md`` says why and shows the measurements):

0. **Training grid** (:func:`train_spacing`, the rule's ``min_spacing``): None trains at the dataset's spacing;
   a number (mm) trains on a copy of the dataset resampled so that no axis is finer
   (:func:`petctfm.harmonize.respace.respace_dataset`, made once beside the dataset), nnU-Net's ``3d_lowres``
   trade for a compute budget. The fingerprint and everything after it are then the copy's; the model records
   its grid, and ``petctfm predict`` resamples any study to it and brings the probability back. The ``cpu``
   target trains a planned lesion network at 6 mm (:data:`MIN_SPACING_CPU`); the ``gpu`` target at the dataset's
   spacing.
1. **Fingerprint** (:func:`fingerprint`, the training cases only): voxel spacing, each case's shape, the median
   shape, the share of cases with lesions, lesion counts and volumes (connected components, ``cc3d``) and the PET
   SUV / CT HU percentiles inside lesions (nnU-Net's foreground intensities). Labels are read: this is the
   supervised recipe, never self-supervision.
2. **Patch** (:func:`plan_patch`): nnU-Net's rule. Start from the median shape; while the patch holds more than
   ``patch_voxels`` voxels, shrink the axis that is largest relative to the median shape; round each side to
   its pooling divisor. On a CPU the budget is what keeps one step near a second (``TARGETS``).
3. **Network** (:func:`plan_network`): nnU-Net's ``PlainConvUNet`` topology: an axis is pooled (stride 2) while
   its feature map stays >= 4 voxels (nnU-Net's minimum edge), at most ``max_stages`` stages; features
   ``min(base * 2^s, cap)``; 3^3 kernels; deep supervision on.
4. **Numerics and optimization**: batch 2 (nnU-Net's minimum); bf16 autocast where the CPU computes bf16
   natively (AVX512-BF16 / AMX: 1.9-2.4x faster steps measured, ``docs/segmentation-recipe.md``), else fp32;
   AdamW at ``lr`` 1e-2 with nnU-Net's poly decay; foreground oversampling ``fg_prob``, lesion by lesion
   (``fg_balance``); the organ map as auxiliary output classes (``aux_organs``: ``task.aux_classes`` = the
   dataset's organ table, when every training case has ``organs.npy``). The LR, the oversampling and the
   auxiliary organs were chosen on validation / development-cohort Dice (the tables in the docs). A lesion run's
   sliding window: ``overlap`` 0.25 on the ``cpu`` target (:data:`OVERLAP_CPU`, chosen on validation), nnU-Net's
   0.5 on the ``gpu`` target.

5. **A step-time budget** (``step_seconds``, the ``cpu`` target's default :data:`STEP_SECONDS` for a lesion
   run; an organ run is untimed unless given one; :func:`timed_patch_voxels`): the CPU's analogue of
   nnU-Net's GPU-memory target. The ``cpu`` numbers above give a step of about a second on the AMX VM they were
   measured on, and 7 s on a CPU without native bf16 (docs/segmentation-recipe.md, "The machine matters"). With a
   budget, the planner times one training step of the planned network and patch on this machine
   (:func:`measure_step`: random inputs, the run's threads and precision) and, while the step is slower than the
   budget, shrinks the patch's voxel budget by the measured ratio and plans again (nnU-Net's patch rule, the
   network following the patch), down to :data:`MIN_PATCH_VOXELS`. The measurements are written into the plan.

The plan is a plain dict written into the run's config (``plan``), with the fingerprint summary, so a run is
reproduced from its ``config.yaml`` alone (a timed plan too: its patch and network are in it, not re-measured).

Shapes: patch (X, Y, Z) voxels; strides per stage ``[[sx, sy, sz], ...]`` (the first stage ``[1, 1, 1]``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

#: Foreground oversampling of the recipe (chosen on validation, docs/segmentation-recipe.md).
FG_PROB = 0.66
#: How a lesion-centred patch picks its lesion: ``lesion`` = every lesion of a case alike (round three of
#: docs/segmentation-recipe.md: +0.10 Dice over nnU-Net's voxel-uniform rule on a development cohort, 3 seeds).
FG_BALANCE = "lesion"
#: Whether a lesion run learns the organ map as auxiliary classes (``task.aux_classes``) when every training case
#: has one (round five of docs/segmentation-recipe.md: +0.05 Dice over the round-three recipe on a development
#: cohort, 3 seeds, with less false-positive volume).
AUX_ORGANS = True
#: The ``cpu`` target's step-time budget (item 5), seconds per training step on this machine: the step the
#: ``cpu`` numbers had on the AMX VM where the recipe was tuned. Chosen on validation on an AMD CPU without
#: native bf16 (docs/segmentation-recipe.md, "the plan with a step-time budget": +0.110 Dice over the untimed
#: plan at 30 CPU-minutes, paired CI above 0). Lesion runs only: an organ run is untimed unless given a budget
#: (``api.apply_plan``; timed, an organ model lost its context: docs/segmentation-recipe.md, round nine).
STEP_SECONDS = 1.0
#: The ``cpu`` target's sliding-window overlap for a lesion run (``val.overlap``: validation, ``predict_split`` and
#: ``petctfm predict`` of the run). nnU-Net's 0.5 covers a voxel by about 8 windows, 0.25 by 2.4: round seven of
#: docs/segmentation-recipe.md chose 0.25 on validation (the timed plan's model: +0.030 Dice, half the
#: false-positive volume, 2.5x faster per case). The ``gpu`` target keeps nnU-Net's 0.5; organ runs keep the
#: config's (0.5: not measured).
OVERLAP_CPU = 0.25
#: The ``cpu`` target's training grid for a lesion run whose network the plan plans (``api.apply_plan``): a copy
#: of the dataset no finer than 6 mm on any axis (:func:`train_spacing`; nnU-Net's ``3d_lowres`` trade: the same
#: voxels per step cover 3.4x the body they cover at 4 mm). Round ten of docs/segmentation-recipe.md chose it on
#: validation and confirmed it on a cohort drawn after the choice, at equal steps and at equal CPU time (+0.195
#: Dice [+0.111, +0.280] over 4 mm, predictions scored on the 4 mm grid), on the AMD VM without native bf16; not
#: measured on a CPU with it. None would train at the dataset's spacing (``--plan-spacing 0``).
MIN_SPACING_CPU: float | None = 6.0
#: Compute targets: voxels per patch (the budget's starting point when timed), base / maximum features, maximum
#: stages, batch, step-time budget (None: untimed), sliding-window overlap of a lesion run. ``cpu``: one step of
#: about a second on 1 core (64^3 with bf16 on the AMX VM; timed elsewhere, docs/segmentation-recipe.md);
#: ``gpu``: nnU-Net's own 3d_fullres sizes (a 128^3-class patch, 32..320 features), untimed.
TARGETS: dict[str, dict[str, Any]] = {
    "cpu": {"patch_voxels": 64 ** 3, "base_features": 16, "max_features": 256, "max_stages": 5, "batch_size": 2,
            "lr": 1e-2, "fg_prob": FG_PROB, "fg_balance": FG_BALANCE, "aux_organs": AUX_ORGANS,
            "step_seconds": STEP_SECONDS, "overlap": OVERLAP_CPU, "min_spacing": MIN_SPACING_CPU},
    "gpu": {"patch_voxels": 128 ** 3, "base_features": 32, "max_features": 320, "max_stages": 6, "batch_size": 2,
            "lr": 1e-2, "fg_prob": FG_PROB, "fg_balance": FG_BALANCE, "aux_organs": AUX_ORGANS,
            "step_seconds": None, "overlap": 0.5, "min_spacing": None},
}
MIN_EDGE = 4  # nnU-Net: an axis is pooled only while its feature map stays >= 4 voxels after pooling
#: The smallest patch a step-time budget shrinks to: 24^3 voxels (~10 cm at 4 mm, the p95 lesion of the phantoms
#: with its surroundings); a CPU too slow for the budget at this patch gets it anyway, recorded in the plan.
MIN_PATCH_VOXELS = 24 ** 3


# ------------------------------------------------------------------------------------------------ fingerprint


def fingerprint(dataset: str | Path, cases: Sequence[str], max_cases: int = 200) -> dict[str, Any]:
    """The training cases' fingerprint (module docstring, item 1). ``cases``: the run's training case ids
    (at most ``max_cases`` are read, evenly spaced; ``cases_with_organs`` checks every one). Returns a JSON-able
    dict::

        {"n_cases", "spacing": [mm x3], "median_shape": [X, Y, Z], "min_shape", "max_shape",
         "cases_with_lesions": share, "lesions_per_case": median, "lesion_volume_ml": {"p5","p50","p95"},
         "lesion_suv": {"p5","p50","p95"}, "lesion_hu": {"p5","p50","p95"}}
    """
    import cc3d

    from petctfm.data import format as fmt

    ids = all_ids = list(cases)
    if len(ids) > max_cases:
        ids = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, max_cases)]
    shapes, n_les, vols, suv, hu, spacing = [], [], [], [], [], None
    rng = np.random.default_rng(0)
    for cid in ids:
        case = fmt.load_case(dataset, cid, mmap=True)
        image, label = case["image"], np.asarray(case["label"])
        spacing = spacing or [float(s) for s in case["meta"]["spacing"]]
        shapes.append(list(label.shape))
        if not label.any():
            n_les.append(0)
            continue
        cc, n = cc3d.connected_components(label > 0, connectivity=26, return_N=True)
        n_les.append(int(n))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        vols.extend((np.bincount(cc.ravel())[1:] * voxel_ml).tolist())
        where = np.flatnonzero(label.ravel() > 0)
        pick = where if where.size <= 2000 else rng.choice(where, 2000, replace=False)
        suv.extend(np.asarray(image[0]).ravel()[pick].tolist())
        hu.extend(np.asarray(image[1]).ravel()[pick].tolist())

    def pct(v: list[float]) -> dict[str, float] | None:
        return {f"p{q}": round(float(np.percentile(v, q)), 3) for q in (5, 50, 95)} if v else None

    arr = np.array(shapes)
    return {
        "n_cases": len(ids), "spacing": spacing,
        "median_shape": [int(v) for v in np.median(arr, axis=0)],
        "min_shape": [int(v) for v in arr.min(axis=0)], "max_shape": [int(v) for v in arr.max(axis=0)],
        "cases_with_lesions": round(float(np.mean([n > 0 for n in n_les])), 3),
        "lesions_per_case": float(np.median(n_les)),
        "lesion_volume_ml": pct(vols), "lesion_suv": pct(suv), "lesion_hu": pct(hu),
        # every training case, not only the sampled ones: aux_organs needs an organ map in each (a file check)
        "cases_with_organs": round(float(np.mean([(fmt.case_dir(dataset, c) / "organs.npy").is_file()
                                                  for c in all_ids])), 3),
    }


# ------------------------------------------------------------------------------------------------ rules


def train_spacing(spacing: Sequence[float], min_spacing: float | None) -> list[float] | None:
    """The grid a run trains on (mm, X, Y, Z) when the dataset is at ``spacing`` and the rule's ``min_spacing``
    (module docstring, item 0): every axis at least ``min_spacing``; None when that is the dataset's own
    spacing (no ``min_spacing``, or the dataset already as coarse)."""
    if min_spacing is None:
        return None
    if not float(min_spacing) > 0:
        from petctfm.core.config import ConfigError

        raise ConfigError("plan.min_spacing", min_spacing, "must be > 0 mm (None: the dataset's spacing)")
    out = [max(float(s), float(min_spacing)) for s in spacing]
    return None if out == [float(s) for s in spacing] else out


def pools_per_axis(patch: Sequence[int], max_stages: int) -> list[int]:
    """How often each axis is pooled by 2 while its feature map stays >= :data:`MIN_EDGE` (nnU-Net's rule),
    at most ``max_stages - 1`` times."""
    out = []
    for side in patch:
        n = 0
        while side / 2 ** (n + 1) >= MIN_EDGE and n < max_stages - 1:
            n += 1
        out.append(n)
    return out


def plan_patch(median_shape: Sequence[int], patch_voxels: int, max_stages: int,
               divisor: Sequence[int] | None = None) -> list[int]:
    """nnU-Net's patch rule (module docstring, item 2): the median shape, shrunk axis by axis (the one largest
    relative to the median first) to at most ``patch_voxels`` voxels, each side a multiple of its pooling
    divisor (``divisor``: fixed per-axis divisors of a given network; default: planned with the patch)."""
    med = np.array([max(int(s), 1) for s in median_shape], float)
    patch = med.copy()
    while np.prod(patch) > patch_voxels:
        rel = patch / med
        axis = int(np.argmax(rel + 1e-6 * patch))  # ties: the longer side
        patch[axis] = max(patch[axis] - max(patch[axis] * 0.05, 1.0), 8.0)
    sides = []
    for i, side in enumerate(patch):
        div = int(divisor[i]) if divisor is not None else 2 ** pools_per_axis([side], max_stages)[0]
        sides.append(max(div, int(round(side / div)) * div))
    while int(np.prod(sides)) > patch_voxels * 1.15:  # rounding up went over: take a step off the largest side
        axis = int(np.argmax(sides))
        div = int(divisor[axis]) if divisor is not None else 2 ** pools_per_axis([sides[axis]], max_stages)[0]
        if sides[axis] - div < div:
            break
        sides[axis] -= div
    return sides


def plan_network(patch: Sequence[int], base_features: int, max_features: int, max_stages: int,
                 deep_supervision: bool = True) -> dict[str, Any]:
    """``model.overrides`` of an nnU-Net ``PlainConvUNet`` for ``patch`` (module docstring, item 3)."""
    pools = pools_per_axis(patch, max_stages)
    n_stages = max(pools) + 1
    strides = [[1, 1, 1]] + [[2 if pools[a] >= s else 1 for a in range(3)] for s in range(1, n_stages)]
    return {
        "n_stages": n_stages,
        "features_per_stage": [min(base_features * 2 ** s, max_features) for s in range(n_stages)],
        "kernel_sizes": [[3, 3, 3]] * n_stages,
        "strides": strides,
        "deep_supervision": bool(deep_supervision),
    }


def stride_divisor(strides: Sequence[Sequence[int]]) -> list[int]:
    """Per-axis patch divisor of a network with these per-stage strides (the product along each axis)."""
    return [int(math.prod(int(s[a]) for s in strides)) for a in range(3)]


def measure_step(backbone: str, overrides: dict[str, Any], patch: Sequence[int], *, in_channels: int = 2,
                 out_channels: int = 2, batch_size: int = 2, precision: str = "fp32", steps: int = 2,
                 channels_last: bool = False) -> float:
    """Median seconds of one training step of ``backbone`` built with ``overrides`` on this machine: forward
    (bf16 autocast when ``precision`` is ``bf16``), cross-entropy on the full-resolution output (the deep
    supervision outputs' means added: the loss costs little next to the network), backward, AdamW; a batch of
    ``batch_size`` random ``(in_channels, X, Y, Z)`` patches, the current torch thread count, after one warm-up
    step; ``channels_last``: network and input in channels-last-3d memory format. ``benchmarks/bench_seg_step.py``
    compares configurations with the same step."""
    import time

    import torch
    import torch.nn.functional as F

    from petctfm.models.backbones import build_backbone

    with torch.random.fork_rng():  # the run's own RNG stream is not consumed by the timing
        torch.manual_seed(0)
        net = build_backbone(backbone, in_channels, out_channels, **overrides).train()
        x = torch.randn(batch_size, in_channels, *patch)
        y = torch.randint(0, out_channels, (batch_size, *patch))
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last_3d), x.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = F.cross_entropy(outs[0].float(), y) + sum(o.float().mean() for o in outs[1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    rest = sorted(times[1:])
    return float(rest[len(rest) // 2])


def timed_patch_voxels(plan_at: Callable[[int], tuple[list[int], dict[str, Any]]], patch_voxels: int,
                       step_seconds: float, timer: Callable[[list[int], dict[str, Any]], float],
                       max_tries: int = 6) -> tuple[int, list[dict[str, Any]]]:
    """The largest voxel budget, from ``patch_voxels`` down to :data:`MIN_PATCH_VOXELS`, whose planned step
    takes at most ``step_seconds`` (module docstring, item 5). ``plan_at(voxels)`` -> (patch, network overrides);
    ``timer(patch, network)`` -> seconds per step. A step's time grows about linearly with the voxels, so each try
    scales the budget by ``0.95 * step_seconds / measured`` (clamped to [0.25, 0.9]). Returns (voxels, the
    measurements ``[{"patch_voxels", "patch_size", "seconds"}, ...]``). The voxels returned are always the last
    measured ones: when ``max_tries`` run out before a step fits, that is the smallest patch timed, and its
    measurement (over ``step_seconds``) says so; an untimed smaller budget is never returned."""
    vox, tries = int(patch_voxels), []
    for _ in range(max_tries):
        patch, net = plan_at(vox)
        s = float(timer(patch, net))
        tries.append({"patch_voxels": vox, "patch_size": list(patch), "seconds": round(s, 3)})
        if s <= step_seconds or vox <= MIN_PATCH_VOXELS:
            break
        vox = max(MIN_PATCH_VOXELS, int(vox * min(0.9, max(0.25, 0.95 * step_seconds / s))))
        while vox > MIN_PATCH_VOXELS and list(plan_at(vox)[0]) == list(patch):  # rounded to the same patch
            vox = max(MIN_PATCH_VOXELS, int(vox * 0.9))
    return int(tries[-1]["patch_voxels"]), tries


def make_plan(fp: dict[str, Any], target: str = "cpu", *, backbone: str = "nnunet-plain",
              overrides: dict[str, Any] | None = None, precision: str | None = None,
              channels: tuple[int, int] = (2, 2),
              timer: Callable[[list[int], dict[str, Any]], float] | None = None, **rule: Any) -> dict[str, Any]:
    """The plan of a fingerprint ``fp`` for a compute ``target`` (:data:`TARGETS`; ``rule`` overrides its
    numbers, e.g. ``patch_voxels=48**3``, ``step_seconds=None``: untimed). ``overrides``: a given network's own
    constructor overrides (a pretrained one's, possibly ``{}``): then only the patch is planned, fitting that
    network; None: an nnU-Net backbone's network is planned too; ``precision``: force ``bf16`` / ``fp32``. With a
    step-time budget (the rule's ``step_seconds``; module docstring, item 5) the patch is timed with
    ``channels`` = (in, out) channels of the run's network by ``timer(patch, network)`` (default
    :func:`measure_step`).

    Returns ``{"target", "rule": {...}, "patch_size": [X, Y, Z], "batch_size", "backbone", "model_overrides",
    "precision", "lr_schedule": "poly", "lr", "fg_prob", "fg_balance", "overlap", "aux_organs"}`` (``aux_organs``: the rule's,
    and only when every fingerprinted case has an organ map), and when timed ``"timing"``
    (:func:`timed_patch_voxels`'s measurements) and ``"threads"``; the rule's ``patch_voxels`` is then the timed
    budget, so ``make_plan(fp, target, patch_voxels=V, step_seconds=None)`` plans the same without timing."""
    from petctfm.models.backbones import patch_divisor

    if target not in TARGETS:
        from petctfm.core.config import ConfigError

        raise ConfigError("plan.target", target, f"must be one of {', '.join(TARGETS)}")
    unknown = sorted(set(rule) - set(TARGETS[target]))
    r = {**TARGETS[target], **rule}
    step_seconds = r["step_seconds"]
    if unknown or (step_seconds is not None and not step_seconds > 0):
        from petctfm.core.config import ConfigError

        if unknown:
            raise ConfigError("plan.rule", unknown, f"unknown; the rule's numbers are {', '.join(TARGETS[target])}")
        raise ConfigError("plan.step_seconds", step_seconds, "must be > 0 seconds (None: untimed)")
    planned_net = backbone.startswith("nnunet-") and overrides is None
    if precision is None:
        from petctfm.core.device import cpu_has_bf16

        precision = "bf16" if target == "gpu" or cpu_has_bf16() else "fp32"

    def plan_at(voxels: int) -> tuple[list[int], dict[str, Any]]:
        if planned_net:
            patch = plan_patch(fp["median_shape"], voxels, r["max_stages"])
            return patch, plan_network(patch, r["base_features"], r["max_features"], r["max_stages"])
        net = dict(overrides or {})
        div = stride_divisor(net["strides"]) if "strides" in net else [patch_divisor(backbone)] * 3
        return plan_patch(fp["median_shape"], voxels, r["max_stages"], divisor=div), net

    timing: dict[str, Any] = {}
    if step_seconds is not None:
        if timer is None:
            def timer(patch: list[int], net: dict[str, Any]) -> float:
                return measure_step(backbone, net, patch, in_channels=channels[0], out_channels=channels[1],
                                    batch_size=int(r["batch_size"]), precision=precision)
        import torch

        r["patch_voxels"], tries = timed_patch_voxels(plan_at, r["patch_voxels"], float(step_seconds), timer)
        timing = {"timing": tries, "threads": torch.get_num_threads()}
    patch, net = plan_at(r["patch_voxels"])
    return {"target": target, "rule": r, "patch_size": patch, "batch_size": int(r["batch_size"]),
            "backbone": backbone, "model_overrides": net, "planned_network": planned_net,
            "precision": precision, "lr_schedule": "poly", "lr": float(r["lr"]), "fg_prob": float(r["fg_prob"]),
            "fg_balance": str(r["fg_balance"]), "overlap": float(r["overlap"]),
            "aux_organs": bool(r.get("aux_organs")) and float(fp.get("cases_with_organs", 0.0)) == 1.0, **timing}


__all__ = ["STEP_SECONDS", "OVERLAP_CPU", "MIN_SPACING_CPU", "TARGETS", "train_spacing", "MIN_EDGE", "MIN_PATCH_VOXELS", "fingerprint", "pools_per_axis", "plan_patch", "plan_network",
           "stride_divisor", "measure_step", "timed_patch_voxels", "make_plan"]
