"""Fine-tuning presets: ``tiny`` (tests/CI/demo, seconds on a CPU), ``cpu``, ``gpu`` (the real configuration).

A preset is data: ``{"task": <partial fine-tuning config>, "train": <TrainConfig fields>}``. The task part is
deep-merged over :data:`petctfm.methods.segmentation.task.DEFAULT_CONFIG`; the backbone given here is used
only from scratch (``init=None`` / ``--init scratch``) without a backbone (a pretrained run always brings its own
backbone and mode).
``figure_every`` is the validation interval (sliding-window inference on the val split, best checkpoint).
"""

from __future__ import annotations

from typing import Any

from petctfm.core.config import pick_preset

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on one CPU core, matching the pretraining tiny preset (residual UNet 8..64 filters, 32^3).
    "tiny": {
        "task": {
            "model": {"backbone": "unet-resenc-tiny"},
            "data": {"patch_size": [32, 32, 32], "batch_size": 2, "affine_prob": 0.0},
        },
        "train": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 30, "checkpoint_every": 10, "figure_every": 10,
                  "log_every": 5, "num_workers": 0},
    },
    # A small but real run on a workstation CPU.
    "cpu": {
        "task": {
            "model": {"backbone": "unet-resenc"},
            "data": {"patch_size": [64, 64, 64], "batch_size": 2},
        },
        "train": {"lr": 1e-3, "warmup_steps": 50, "max_steps": 2000, "checkpoint_every": 200,
                  "figure_every": 200, "num_workers": 2},
    },
    # One or many GPUs: SwinUNETR-v2 base on 96^3 (as pretrained), bf16 autocast (precision auto), compile.
    # Fine-tuning LR 1e-4 (half the pretraining LR: the encoder starts from useful weights), batch 4 per GPU.
    "gpu": {
        "task": {
            "model": {"backbone": "swinunetr-base"},
            "data": {"patch_size": [96, 96, 96], "batch_size": 4},
        },
        "train": {"lr": 1e-4, "weight_decay": 0.01, "warmup_steps": 200, "max_steps": 20000,
                  "checkpoint_every": 1000, "figure_every": 1000, "compile": True, "fused_optimizer": True,
                  "num_workers": 8},
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name`` (``{"task": ..., "train": ...}``); one-line error for an unknown name."""
    return pick_preset(PRESETS, name)


__all__ = ["PRESETS", "get_preset"]
