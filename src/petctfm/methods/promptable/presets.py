"""Promptable-segmentation presets as data: ``{"task": <partial config>, "train": <TrainConfig fields>}``,
deep-merged over :data:`petctfm.methods.promptable.task.DEFAULT_CONFIG`. The backbone here is used from scratch
only (a pretrained run brings its own)."""

from __future__ import annotations

from typing import Any

from petctfm.core.config import pick_preset

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "task": {"model": {"backbone": "unet-resenc-tiny"}, "data": {"patch_size": [32, 32, 32], "batch_size": 2},
                 "clicks": {"max_iter": 2}},
        "train": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 40, "checkpoint_every": 20, "figure_every": 20,
                  "log_every": 5, "num_workers": 0},
    },
    "cpu": {
        "task": {"model": {"backbone": "unet-resenc"}, "data": {"patch_size": [64, 64, 64], "batch_size": 2}},
        "train": {"lr": 1e-3, "warmup_steps": 50, "max_steps": 2000, "checkpoint_every": 200, "figure_every": 200,
                  "num_workers": 2},
    },
    "gpu": {
        "task": {"model": {"backbone": "swinunetr-base"}, "data": {"patch_size": [128, 128, 128], "batch_size": 2},
                 "clicks": {"max_iter": 5}},
        "train": {"lr": 1e-4, "weight_decay": 0.01, "warmup_steps": 200, "max_steps": 20000,
                  "checkpoint_every": 1000, "figure_every": 1000, "num_workers": 8},
    },
}


def get_preset(name: str) -> dict[str, Any]:
    return pick_preset(PRESETS, name)


__all__ = ["PRESETS", "get_preset"]
