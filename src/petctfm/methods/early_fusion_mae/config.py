"""The early-fusion MAE's config as typed dataclasses (:data:`CONFIG`); its dict form (``to_dict()``) is what
``config.yaml`` and checkpoints hold, key for key as before the dataclasses (old runs load unchanged).

Defaults are the method's (``mask.ratio`` 0.6, 16^3 blocks, zero-mean imputation, ``w_visible`` 0.1, L2);
presets (``presets.py``) are partial dicts merged over them. Allowed values sit next to each field; the
cross-field checks (mask block within the patch, loss weights not both 0, patch sides the backbone accepts)
are in ``validate``. Every error is a one-line :class:`~petctfm.core.config.ConfigError` (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petctfm.core.config import ConfigError, TypedConfig, setting
from petctfm.data.loader import MODES, PatchConfig
from petctfm.models.config import ModelSection, check_backbone_patch

METHOD = "early_fusion_mae"


@dataclass
class MaskSection(TypedConfig):
    ratio: float = setting(0.6, ge=0, lt=1)  # fraction of blocks masked
    block: int = setting(16, ge=1)  # block side in voxels (<= every patch side)
    token: str = setting("zero", choices=("zero", "learnable"))


@dataclass
class LossSection(TypedConfig):
    w_masked: float = setting(1.0, ge=0)
    w_visible: float = setting(0.1, ge=0)
    kind: str = setting("l2", choices=("l2", "l1"))

    def validate(self, prefix: str = "") -> None:
        if self.w_masked + self.w_visible == 0:
            raise ConfigError(f"{prefix}w_visible", self.w_visible, f"must be > 0 when {prefix}w_masked is 0")


@dataclass
class EarlyFusionMAEConfig(TypedConfig):
    method: str = METHOD
    seed: int = setting(0, ge=0)
    dataset: str | None = None  # the harmonized dataset (training only; not needed to rebuild the model)
    model: ModelSection = field(default_factory=ModelSection)
    mask: MaskSection = field(default_factory=MaskSection)
    loss: LossSection = field(default_factory=LossSection)
    data: PatchConfig = field(default_factory=PatchConfig)
    preprocessing: dict[str, Any] | None = None  # filled from dataset.json: channels + normalization statistics

    def validate(self, prefix: str = "") -> None:
        if self.method != METHOD:
            raise ConfigError("method", self.method, f"must be {METHOD!r} for an early-fusion MAE config")
        if any(self.mask.block > p for p in self.data.patch_size):
            raise ConfigError("mask.block", self.mask.block,
                              f"must be <= every side of data.patch_size {list(self.data.patch_size)}")
        check_backbone_patch(self.model.backbone, self.data.patch_size)

    @property
    def in_channels(self) -> int:
        return len(MODES[self.data.mode])

    def train_bytes(self, batch_size: int | None = None) -> int:
        """Rough memory of one training step (:meth:`PatchConfig.train_bytes`)."""
        return self.data.train_bytes(self.model.backbone, batch_size)


#: The top-level config dataclass of the method (what a method registry points at).
CONFIG = EarlyFusionMAEConfig

__all__ = ["METHOD", "ModelSection", "MaskSection", "LossSection", "EarlyFusionMAEConfig", "CONFIG",
           "check_backbone_patch"]
