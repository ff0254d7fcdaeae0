"""Test helper: train a TrainTask a few steps with plain AdamW (no trainer, no files but the weights) and save
it like a run, for fixtures that need a real petctfm checkpoint in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from petctfm.train.checkpoint import save_weights


def train_and_save(task, run: Path, steps: int, lr: float = 3e-3) -> Path:
    """``steps`` optimizer steps on ``task.batches(0, 1, 0)`` from seed 0; writes ``run/model.safetensors``
    with the task's config; returns ``run``."""
    torch.manual_seed(0)
    model = task.build_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = task.batches(0, 1, 0)
    for _ in range(steps):
        loss = task.training_step(model, next(batches))
        loss = loss[0] if isinstance(loss, tuple) else loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_weights(model, Path(run) / "model.safetensors", task.config, step=steps)
    return run
