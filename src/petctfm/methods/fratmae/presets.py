"""FratMAE presets as data: ``{"task": <partial FratMAE config>, "train": <TrainConfig fields>}``.

- ``tiny``: seconds on a CPU (tests): 32 x 32 x 48 grid, coronal stacks of 8 slices (k = 2), 8^3 patches ->
  4 x 1 x 6 = 24 tokens per modality, ViT 48 wide / 2 blocks, decoder 48 x 1, text encoder 24 x 1.
- ``cpu``: a small real run: 96 x 96 x 128 grid, 16 slices, 16^3 patches -> 6 x 1 x 8 = 48 tokens, ViT-Ti-like
  (192 / 6 blocks / 3 heads), decoder 128 x 2.
- ``gpu``: the paper: 160 x 160 x 192 grid, 32 coronal slices kept of 64 (k = 2), 16^3 patches -> 10 x 2 x 12 =
  240 tokens per modality, ViT-B (768 / 12 / 12) twins, decoders 512 x 8 (16 heads), text encoder 256 x 4,
  batch 24, AdamW lr 1e-4 with cosine decay, bf16.
"""

from __future__ import annotations

import copy
from typing import Any

from petctfm.core.config import ConfigError, pick_preset

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "task": {
            "model": {"patch": 8, "dim": 48, "depth": 2, "heads": 3, "decoder_dim": 48, "decoder_depth": 1,
                      "decoder_heads": 3},
            "context_align": {"dim": 24, "depth": 1, "heads": 2, "proj_dim": 24},
            "data": {"grid": [32, 32, 48], "depth": 8, "k": 2, "batch_size": 4},
        },
        "train": {"lr": 2e-3, "warmup_steps": 2, "max_steps": 30, "checkpoint_every": 10, "figure_every": 10,
                  "log_every": 5, "num_workers": 0, "weight_decay": 0.05},
    },
    "cpu": {
        "task": {
            "model": {"patch": 16, "dim": 192, "depth": 6, "heads": 3, "decoder_dim": 128, "decoder_depth": 2,
                      "decoder_heads": 4},
            "context_align": {"dim": 128, "depth": 2, "heads": 4, "proj_dim": 128},
            "data": {"grid": [96, 96, 128], "depth": 16, "k": 2, "batch_size": 4},
        },
        "train": {"lr": 3e-4, "warmup_steps": 50, "max_steps": 2000, "checkpoint_every": 200,
                  "figure_every": 200, "num_workers": 2},
    },
    "gpu": {
        "task": {
            "model": {"patch": 16, "dim": 768, "depth": 12, "heads": 12, "decoder_dim": 512, "decoder_depth": 8,
                      "decoder_heads": 16},
            "data": {"grid": [160, 160, 192], "depth": 32, "k": 2, "batch_size": 24, "cache_cases": 8},
        },
        "train": {"lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 500, "max_steps": 20000,
                  "checkpoint_every": 1000, "figure_every": 1000, "fused_optimizer": True, "num_workers": 12},
    },
}


#: ``--recipe paper``: every pretraining hyperparameter Oh et al. 2025 give (Sec. 2.4, Stage 1), laid over a
#: preset (default ``gpu``); docs/fratmae.md, "The paper's recipe", has the table paper | default | why.
#: ``global_batch`` is the total over all GPUs (the paper's 24 = 8 x 3): each rank gets ``24 / world size``.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "task": {
            "model": {"arch": "fratmae", "patch": 16, "dim": 768, "depth": 12, "heads": 12},  # ViT-B twins
            "mask": {"ratio": 0.5, "mode": "zero"},  # 50 % of S's tokens; Eq. 1: X_S * M_S
            # the CLIP text encoder's shape (ViT-B/16 CLIP: 512 wide, 12 blocks, 8 heads, 512-d embedding),
            # trained from scratch on the paper's prompt "<tracer> 18F FDG <diagnosis> melanoma <age> 61 <sex> M"
            "context_align": {"enabled": True, "tokenizer": "prompt", "dim": 512, "depth": 12, "heads": 8,
                              "proj_dim": 512},
            "data": {"grid": [160, 160, 192], "stack": "coronal", "depth": 32, "k": 2},  # 32 H x 160 W x 192 D
            "epochs": 30,
            "recipe": "paper",
        },
        "train": {"optimizer": "adamw", "lr": 1e-4, "lr_schedule": "cosine", "min_lr_ratio": 0.0},
        "global_batch": 24,
        "warmup_epochs": 1,  # the paper gives none; one epoch (54 steps of 1,292 cases at 24)
    },
}


def get_recipe(name: str) -> dict[str, Any]:
    """A copy of recipe ``name`` (:data:`RECIPES`); one-line error for an unknown name."""
    if name not in RECIPES:
        raise ConfigError("recipe", name, f"must be one of {', '.join(RECIPES)}", arg="recipe")
    return copy.deepcopy(RECIPES[name])


def get_preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name``; one-line error for an unknown name."""
    return pick_preset(PRESETS, name)


__all__ = ["PRESETS", "RECIPES", "get_preset", "get_recipe"]
