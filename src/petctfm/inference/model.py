"""Load a trained model for inference from a run folder or a checkpoint file (safetensors only).

A fine-tuning run folder keeps its best checkpoint by validation Dice in ``RUN/best/model.safetensors``
(written by :mod:`petctfm.methods.segmentation`); :func:`load_run_model` takes it when there is one, else the
latest checkpoint (:func:`petctfm.train.checkpoint.resolve_weights`). Models are rebuilt through
:func:`petctfm.train.checkpoint.load_model`'s registry of builders, by the config's ``method`` string, so no
method package is imported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from petctfm.core.errors import InputError

BEST_DIR = "best"  # RUN/best/model.safetensors: the best checkpoint by validation Dice
SEGMENTATION_METHOD = "finetune_segmentation"  # config "method" (builder registry key) of fine-tuned segmenters


def load_run_model(run_or_ckpt: str | os.PathLike, method: str | None = None) -> tuple[nn.Module, dict[str, Any], Path]:
    """(model in eval mode on CPU, config, weights file) of a run folder (best, else latest checkpoint), a
    step folder or a ``.safetensors`` file. ``method``: the config's ``method`` must be this one, else a
    one-line :class:`InputError` naming the file."""
    from petctfm.train.checkpoint import MODEL_FILE, load_model, resolve_weights

    src = Path(run_or_ckpt)
    best = src / BEST_DIR / MODEL_FILE
    path = best if best.is_file() else resolve_weights(src)
    model, cfg = load_model(path)
    if method is not None and cfg.get("method") != method:
        what = "fine-tuned segmentation" if method == SEGMENTATION_METHOD else repr(method)
        raise InputError(f"{path}: not a {what} model (method {cfg.get('method')!r})")
    return model, cfg, path


def load_segmenter(run_or_ckpt: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], Path]:
    """:func:`load_run_model` of a fine-tuned segmentation model (method ``finetune_segmentation``)."""
    return load_run_model(run_or_ckpt, SEGMENTATION_METHOD)


__all__ = ["BEST_DIR", "SEGMENTATION_METHOD", "load_run_model", "load_segmenter"]
