"""Promptable segmentation (SegAnyPET-style) as a petctfm method: its registry record
(:class:`petctfm.core.registry.Method`), declared in petctfm's ``pyproject.toml`` under the entry-point group
``petctfm.methods``.

One checkpoint kind (``promptable``: a click / box segmenter). It is trained by its own command
(``petctfm prompt-train``), read by ``petctfm segment`` and ``petctfm serve``; it is neither a pretraining
method nor fine-tuned for automatic segmentation.
"""

from __future__ import annotations

from typing import Any

from petctfm.core.registry import Method, ModelKind


def _build(cfg: dict[str, Any]):
    from petctfm.methods.promptable.model import build_model

    return build_model(cfg)


def _config():
    from petctfm.methods.promptable.config import CONFIG

    return CONFIG


def _presets():
    from petctfm.methods.promptable.presets import PRESETS

    return PRESETS


METHOD = Method(
    name="promptable",
    summary="promptable 3D segmentation of organs and lesions from clicks, boxes and masks (docs/promptable.md)",
    config=_config,
    presets=_presets,
    kinds=(ModelKind("promptable", _build, "interactive"),),
    order=30,
)
