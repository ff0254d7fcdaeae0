"""Lesion-segmentation fine-tuning of a UNet-shaped backbone as a petctfm method: its registry record
(:class:`petctfm.core.registry.Method`), declared in petctfm's ``pyproject.toml`` under the entry-point group
``petctfm.methods``.

One checkpoint kind (``finetune_segmentation``: a whole-volume lesion segmenter). It fine-tunes its own runs
(resume) and builds every backbone of :mod:`petctfm.models.backbones` from scratch; pretraining methods whose
encoders are UNet-shaped (the early-fusion MAE) point their ``finetune`` here.
"""

from __future__ import annotations

from typing import Any

from petctfm.core.registry import Method, ModelKind


def _build(cfg: dict[str, Any]):
    from petctfm.methods.segmentation.model import build_model

    return build_model(cfg)


def _finetune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from petctfm.methods.segmentation.api import finetune

    return finetune(*args, **kwargs)


def _is_backbone(name: str) -> bool:
    from petctfm.models.backbones import BACKBONES

    return name in BACKBONES


def _config():
    from petctfm.methods.segmentation.config import CONFIG

    return CONFIG


def _presets():
    from petctfm.methods.segmentation.presets import PRESETS

    return PRESETS


METHOD = Method(
    name="segmentation",
    summary="lesion segmentation fine-tuning of a UNet-shaped backbone, from a pretrained encoder or scratch",
    config=_config,
    presets=_presets,
    kinds=(ModelKind("finetune_segmentation", _build, "segmenter"),),
    finetune=_finetune,
    backbones=_is_backbone,
    order=20,
)
