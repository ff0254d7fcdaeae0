"""Pretraining presets: ``tiny`` (tests/CI/demo, seconds on a CPU), ``cpu``, ``gpu`` (the real configuration).

A preset is data: ``{"task": <partial early-fusion MAE config>, "train": <TrainConfig fields>}``. The task
part is deep-merged over :data:`petctfm.methods.early_fusion_mae.mae.DEFAULT_CONFIG`; the train part sets
fields of the trainer's ``TrainConfig`` (fields the trainer does not have are ignored with a warning).
Every field can be overridden by a named option or a dotted override
(:func:`petctfm.methods.early_fusion_mae.api.pretrain`, ``petctfm pretrain --set key=value``).
"""

from __future__ import annotations

from typing import Any

from petctfm.core.config import pick_preset

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on one CPU core: residual UNet with 8..64 filters on 32^3 patches, 8^3 mask blocks.
    # (SwinUNETR needs >= 64^3 patches to train: its 1/32 bottleneck must hold > 1 voxel for instance norm.)
    "tiny": {
        "task": {
            "model": {"backbone": "unet-resenc-tiny"},
            "mask": {"block": 8},
            "data": {"patch_size": [32, 32, 32], "batch_size": 2, "affine_prob": 0.0},
        },
        "train": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 30, "checkpoint_every": 10, "figure_every": 10,
                  "log_every": 5, "num_workers": 0},
    },
    # A small but real run on a workstation CPU.
    "cpu": {
        "task": {
            "model": {"backbone": "unet-resenc"},
            "mask": {"block": 16},
            "data": {"patch_size": [64, 64, 64], "batch_size": 2},
        },
        "train": {"lr": 1e-3, "warmup_steps": 50, "max_steps": 2000, "checkpoint_every": 200,
                  "figure_every": 200, "num_workers": 2},
    },
    # The real configuration (one or many GPUs): SwinUNETR-v2 base on 96^3, bf16 autocast.
    # Batch 8 per GPU + torch.compile + fused AdamW, no channels_last: the best measured samples/s for feature
    # size 48 on an H100 (benchmarks/bench_pretrain.py; numbers in docs/pretrain.md). Precision "auto" = bf16
    # autocast on CUDA.
    "gpu": {
        "task": {
            "model": {"backbone": "swinunetr-base"},
            "mask": {"block": 16},
            "data": {"patch_size": [96, 96, 96], "batch_size": 8},
        },
        "train": {"lr": 2e-4, "weight_decay": 0.05, "warmup_steps": 1000, "max_steps": 100000,
                  "checkpoint_every": 1000, "figure_every": 1000, "compile": True, "fused_optimizer": True,
                  "channels_last": False, "num_workers": 12},
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name`` (``{"task": ..., "train": ...}``); one-line error for an unknown name."""
    return pick_preset(PRESETS, name)


__all__ = ["PRESETS", "get_preset"]
