"""Shared fixtures for the downstream-task tests."""

from __future__ import annotations

import pytest
import torch

from petctfm.train.checkpoint import save_weights


def _tiny_mae_run(run, data, mode: str = "joint", steps: int = 1):
    """A tiny MAE trained ``steps`` steps through the method's own task API, saved like a run."""
    from petctfm.pretrain.early_fusion_mae import DEFAULT_CONFIG, EarlyFusionMAETask
    from petctfm.pretrain.presets import deep_merge, get_preset

    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(mode=mode, augment=False)
    task = EarlyFusionMAETask(cfg, data)
    torch.manual_seed(0)
    model = task.build_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = task.batches(0, 1, 0)
    for _ in range(steps):
        loss = task.training_step(model, next(batches))
        loss = loss[0] if isinstance(loss, tuple) else loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_weights(model, run / "model.safetensors", task.config, step=steps)
    return run


@pytest.fixture(scope="session")
def tiny_mae_run():
    """``tiny_mae_run(run_dir, dataset, mode="joint", steps=1) -> run_dir``."""
    return _tiny_mae_run
