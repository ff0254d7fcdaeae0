"""Test helper: train a TrainTask a few steps with plain AdamW (no trainer, no files but the weights) and save
it like a run, for fixtures that need a real petctfm checkpoint in seconds; :func:`make_tiny_model`, the tiny
lesion segmenter behind the ``tiny_model`` fixture (tests/conftest.py)."""

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


MODEL_SPACING = [8.0, 8.0, 8.0]  # coarse harmonized grid: tiny synthetic studies become ~50x30x150 voxels


def make_tiny_model(run, data_root, steps: int = 5, aux: dict | None = None) -> Path:
    """A tiny residual-UNet segmenter fine-tuned ``steps`` steps from scratch through FinetuneTask on a toy
    dataset whose dataset.json records an 8 mm harmonize spacing; saved as ``run/model.safetensors``.
    ``aux``: auxiliary organ classes (``task.aux_classes``, name -> organs.npy value; the toy cases get organ
    maps)."""
    import json

    from petctfm.core.config import deep_merge
    from petctfm.data import format as fmt
    from petctfm.io.atomic import atomic_write_json
    from petctfm.methods.segmentation.presets import get_preset
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG, FinetuneTask
    from toy_data import write_toy_dataset

    root = write_toy_dataset(data_root, n_cases=2, shape=(24, 24, 24), organs=bool(aux))
    info = json.loads((root / fmt.DATASET_JSON).read_text())
    info.update(spacing=MODEL_SPACING, ct_window=[-1000.0, 1000.0])
    atomic_write_json(root / fmt.DATASET_JSON, info)
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"].update(patch_size=[16, 16, 16], augment=False, batch_size=2)
    if aux:
        cfg["task"] = {**(cfg.get("task") or {}), "aux_classes": dict(aux)}
    task = FinetuneTask(cfg, root)
    return train_and_save(task, run, steps)
