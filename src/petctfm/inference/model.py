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
#: every method whose checkpoints are whole-volume lesion segmenters (``forward(x) -> (B, 2, ...)`` logits)
SEGMENTATION_METHODS = (SEGMENTATION_METHOD, "fratmae_segmentation")


def load_run_model(run_or_ckpt: str | os.PathLike, method: str | tuple[str, ...] | None = None
                   ) -> tuple[nn.Module, dict[str, Any], Path]:
    """(model in eval mode on CPU, config, weights file) of a run folder (best, else latest checkpoint), a
    step folder or a ``.safetensors`` file. ``method``: the config's ``method`` must be this one (or one of
    these), else a one-line :class:`InputError` naming the file."""
    from petctfm.train.checkpoint import MODEL_FILE, load_model, resolve_weights

    src = Path(run_or_ckpt)
    best = src / BEST_DIR / MODEL_FILE
    path = best if best.is_file() else resolve_weights(src)
    model, cfg = load_model(path)
    allowed = (method,) if isinstance(method, str) else method
    if allowed is not None and cfg.get("method") not in allowed:
        what = "fine-tuned segmentation" if allowed == SEGMENTATION_METHODS else " or ".join(map(repr, allowed))
        raise InputError(f"{path}: not a {what} model (method {cfg.get('method')!r})")
    return model, cfg, path


def load_segmenter(run_or_ckpt: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], Path]:
    """:func:`load_run_model` of a fine-tuned segmentation model (:data:`SEGMENTATION_METHODS`)."""
    return load_run_model(run_or_ckpt, SEGMENTATION_METHODS)


__all__ = ["BEST_DIR", "SEGMENTATION_METHOD", "SEGMENTATION_METHODS", "load_run_model", "load_segmenter"]
