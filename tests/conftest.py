"""Test-session settings shared by every test folder.

CI runs ``pytest -n 2`` on a 2-core machine: two worker processes, each with torch's default of one
intra-op thread per core, oversubscribe the CPU and make small 3D convolutions many times slower (measured:
a tiny backward pass 6.2 s with 2 threads vs 0.3 s with 1 on the loaded 2-core VM). One thread per worker.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` (a minute or two each) run first, in their collected order: with ``-n 2`` a long
    test collected last would run alone at the end while the other worker idles (longest first, as a scheduler
    would); the order of every other test is kept."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# ---- a tiny pretrained MAE run, shared by tests/methods and tests/experiments ----
import pytest  # noqa: E402
from quick_train import train_and_save  # noqa: E402


def _tiny_mae_run(run, data, mode: str = "joint", steps: int = 1):
    """A tiny MAE trained ``steps`` steps through the method's own task API, saved like a run."""
    from petctfm.methods.early_fusion_mae.mae import DEFAULT_CONFIG, EarlyFusionMAETask
    from petctfm.core.config import deep_merge
    from petctfm.methods.early_fusion_mae.presets import get_preset

    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(mode=mode, augment=False)
    task = EarlyFusionMAETask(cfg, data)
    return train_and_save(task, run, steps)


@pytest.fixture(scope="session")
def tiny_mae_run():
    """``tiny_mae_run(run_dir, dataset, mode="joint", steps=1) -> run_dir``."""
    return _tiny_mae_run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Run folder of a tiny fine-tuned segmentation model (5 steps; predictions need not be good)."""
    from quick_train import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("ft_run"), tmp_path_factory.mktemp("ft_data"))
