"""The schedule in epochs, for pretraining and fine-tuning (docs/fratmae.md, "Schedule in epochs").

The trainer counts optimizer steps and the samples each rank consumed; the stack streams draw a case uniformly
per sample (with replacement). An epoch is therefore defined as ``len(cases)`` samples (the pretraining split,
or the fine-tuning subset), and ``epochs`` become ``ceil(epochs * len(cases) / (batch_size * grad_accum *
world_size))`` optimizer steps.
"""

from __future__ import annotations

import math
import os

from petctfm.train.config import TrainConfig


def world_size() -> int:
    """Processes of this run (``WORLD_SIZE`` of torchrun; 1 without)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def epoch_steps(epochs: float, n_cases: int, train_cfg: TrainConfig, world: int | None = None) -> int:
    """Optimizer steps of ``epochs`` epochs of ``n_cases`` cases (module docstring); at least 1."""
    per_step = train_cfg.batch_size * train_cfg.grad_accum * (world or world_size())
    return max(1, math.ceil(epochs * n_cases / per_step))

__all__ = ["world_size", "epoch_steps"]
