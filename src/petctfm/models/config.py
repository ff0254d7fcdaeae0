"""The config section every UNet-shaped method shares: which backbone (:mod:`petctfm.models.backbones`) with which
constructor overrides, and the check that a patch fits it, as typed config (``core.config.TypedConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from petctfm.core.config import ConfigError, TypedConfig
from petctfm.core.errors import InputError


@dataclass
class ModelSection(TypedConfig):
    """``model``: the backbone name and its constructor overrides (MONAI / dynamic-network-architectures
    arguments, free-form)."""

    backbone: str = "swinunetr-base"
    overrides: dict[str, Any] = field(default_factory=dict)


def check_backbone_patch(backbone: str, patch_size: Sequence[int], key: str = "data.patch_size",
                         overrides: dict[str, Any] | None = None) -> None:
    """:func:`petctfm.models.backbones.check_patch_size` as a ConfigError (a config value, exit 2)."""
    from petctfm.models.backbones import check_patch_size

    try:
        check_patch_size(backbone, patch_size, overrides)
    except InputError as exc:
        raise ConfigError(key, list(patch_size), str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)) \
            from None


__all__ = ["ModelSection", "check_backbone_patch"]
