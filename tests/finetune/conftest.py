"""Shared fixtures for the downstream-task tests."""

from __future__ import annotations

import pytest
from quick_train import train_and_save


def _tiny_mae_run(run, data, mode: str = "joint", steps: int = 1):
    """A tiny MAE trained ``steps`` steps through the method's own task API, saved like a run."""
    from petctfm.pretrain.early_fusion_mae import DEFAULT_CONFIG, EarlyFusionMAETask
    from petctfm.pretrain.presets import deep_merge, get_preset

    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(mode=mode, augment=False)
    task = EarlyFusionMAETask(cfg, data)
    return train_and_save(task, run, steps)


@pytest.fixture(scope="session")
def tiny_mae_run():
    """``tiny_mae_run(run_dir, dataset, mode="joint", steps=1) -> run_dir``."""
    return _tiny_mae_run
