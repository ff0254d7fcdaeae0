"""Fixtures for ``petctfm predict``: a tiny fine-tuned segmentation model and tiny synthetic studies."""

from __future__ import annotations

import json

import pytest
from quick_train import train_and_save

from petctfm.data import format as fmt
from toy_data import write_toy_dataset
from petctfm.io.atomic import atomic_write_json

MODEL_SPACING = [8.0, 8.0, 8.0]  # coarse harmonized grid: tiny synthetic studies become ~50x30x150 voxels


def make_tiny_model(run, data_root, steps: int = 5):
    """A tiny residual-UNet segmenter fine-tuned ``steps`` steps from scratch through FinetuneTask on a toy
    dataset whose dataset.json records an 8 mm harmonize spacing; saved as ``run/model.safetensors``."""
    from petctfm.core.config import deep_merge
    from petctfm.methods.segmentation.presets import get_preset
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG, FinetuneTask

    root = write_toy_dataset(data_root, n_cases=2, shape=(24, 24, 24))
    info = json.loads((root / fmt.DATASET_JSON).read_text())
    info.update(spacing=MODEL_SPACING, ct_window=[-1000.0, 1000.0])
    atomic_write_json(root / fmt.DATASET_JSON, info)
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(patch_size=[16, 16, 16], augment=False, batch_size=2)
    task = FinetuneTask(cfg, root)
    return train_and_save(task, run, steps)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Run folder of a tiny fine-tuned segmentation model (5 steps; predictions need not be good)."""
    return make_tiny_model(tmp_path_factory.mktemp("ft_run"), tmp_path_factory.mktemp("ft_data"))


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory):
    """Two tiny synthetic studies (``petctfm synth --size tiny``) in autoPET, nnU-Net and DICOM layouts."""
    from petctfm.synth.writers import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n_cases=2, seed=0, size="tiny", progress=False)
    return out
