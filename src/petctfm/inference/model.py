"""Load a trained model for inference from a run folder or a checkpoint file (safetensors only).

A fine-tuning run folder keeps its best checkpoint by validation Dice in ``RUN/best/model.safetensors``
(written by :func:`petctfm.train.checkpoint.keep_best` for fine-tuning and prompt-train runs); :func:`load_run_model` takes it when there is one, else the
latest checkpoint (:func:`petctfm.train.checkpoint.resolve_weights`). Models are rebuilt through
:func:`petctfm.train.checkpoint.load_model` from the method registry, by the config's ``method`` string, so no
method package is imported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from petctfm.core.errors import InputError
from petctfm.train.checkpoint import BEST_DIR  # RUN/best/: the best checkpoint (train.checkpoint.keep_best)


def run_weights(run_or_ckpt: str | os.PathLike) -> Path:
    """The weights file a run stands for: ``RUN/best/model.safetensors`` when the run kept one, else the latest
    checkpoint (:func:`petctfm.train.checkpoint.resolve_weights`; a file or step folder is itself)."""
    from petctfm.train.checkpoint import MODEL_FILE, resolve_weights

    best = Path(run_or_ckpt) / BEST_DIR / MODEL_FILE
    return best if best.is_file() else resolve_weights(run_or_ckpt)


def load_run_model(run_or_ckpt: str | os.PathLike, method: str | tuple[str, ...] | None = None,
                   what: str | None = None) -> tuple[nn.Module, dict[str, Any], Path]:
    """(model in eval mode on CPU, config, weights file) of a run folder (best, else latest checkpoint), a
    step folder or a ``.safetensors`` file. ``method``: the config's ``method`` must be this one (or one of
    these), else a one-line :class:`InputError` naming the file (and ``what`` the model should have been)."""
    from petctfm.train.checkpoint import load_model, read_checkpoint_config

    cfg, path = read_checkpoint_config(run_weights(run_or_ckpt))  # metadata only: check before building
    allowed = (method,) if isinstance(method, str) else method
    if allowed is not None and cfg.get("method") not in allowed:
        raise InputError(f"{path}: not a {what or ' or '.join(map(repr, allowed))} model "
                         f"(method {cfg.get('method')!r})")
    model, cfg = load_model(path)
    return model, cfg, path


def output_classes(cfg: dict[str, Any]) -> dict[str, int]:
    """The classes a segmentation config's network outputs, in channel order: ``{name: value written in a
    predicted label map}``, background first (value 0). A lesion model (no ``task`` section, or task
    ``lesions``): ``{"background": 0, "lesion": 1}``; an organ model (task ``organs``): background, then
    ``task.classes`` in order (their values in the training label map, e.g. ORGAN_LABELS)."""
    task = cfg.get("task") or {}
    if task.get("name", "lesions") == "organs":
        return {"background": 0, **{str(k): int(v) for k, v in (task.get("classes") or {}).items()}}
    return {"background": 0, "lesion": 1}


def is_organ_model(cfg: dict[str, Any]) -> bool:
    """Whether a segmentation config is a multi-class organ model (task ``organs``)."""
    return (cfg.get("task") or {}).get("name", "lesions") == "organs"


def load_segmenter(run_or_ckpt: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], Path]:
    """:func:`load_run_model` of a whole-volume lesion segmenter: any checkpoint kind whose role is
    ``segmenter`` in the method registry (:func:`petctfm.core.registry.kinds_with_role`)."""
    from petctfm.core.registry import kinds_with_role

    return load_run_model(run_or_ckpt, kinds_with_role("segmenter"), what="fine-tuned segmentation")


__all__ = ["BEST_DIR", "load_run_model", "load_segmenter", "run_weights", "output_classes", "is_organ_model"]
