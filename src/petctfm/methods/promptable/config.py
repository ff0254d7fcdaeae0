"""Promptable segmentation's config as typed dataclasses (:data:`CONFIG`); ``to_dict()`` is the dict saved with
a run and in checkpoints, key for key as before (old runs load unchanged). ``targets.kind_probs`` stays a
free-form mapping (checked in ``validate``). Every wrong value is a one-line
:class:`~petctfm.core.config.ConfigError` (exit 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petctfm.core.config import ConfigError, TypedConfig, setting
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data.loader import MODES, PatchConfig
from petctfm.models.config import check_backbone_patch
from petctfm.methods.promptable.model import DESIGNS, HEAD_STRIDES, METHOD

KINDS = ("lesion", "organ", "all_lesions")
HEAD_LEVELS = (3, len(HEAD_STRIDES))  # model.head_filters: one width per decoder level


@dataclass
class PromptModelSection(TypedConfig):
    backbone: str = "unet-resenc-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # MONAI constructor arguments (free-form)
    design: str = setting("cached", choices=DESIGNS)
    embed_channels: int = setting(16, ge=1)
    head_filters: list[int] = setting([16, 32, 32], ge=1)
    head_refine: bool = True

    def validate(self, prefix: str = "") -> None:
        if not HEAD_LEVELS[0] <= len(self.head_filters) <= HEAD_LEVELS[1]:
            raise ConfigError(prefix + "head_filters", self.head_filters,
                              f"must hold {HEAD_LEVELS[0]} to {HEAD_LEVELS[1]} widths")


@dataclass
class PromptInitSection(TypedConfig):
    source: str = "scratch"
    method: str | None = None
    mode: str | None = None  # the pretrained run's data.mode


@dataclass
class TargetsSection(TypedConfig):
    held_out: list[str] = setting(["spleen", "kidney_left", "kidney_right"],
                                  choices=tuple(n for n in ORGAN_LABELS if n != "background"))
    kind_probs: dict[str, Any] = field(default_factory=lambda: {"lesion": 0.45, "organ": 0.4, "all_lesions": 0.15})

    def validate(self, prefix: str = "") -> None:
        p = self.kind_probs
        ok = not set(p) - set(KINDS)
        try:
            ok = ok and all(float(v) >= 0 for v in p.values()) and sum(float(v) for v in p.values()) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(prefix + "kind_probs", p, f"must map {', '.join(KINDS)} to weights >= 0 (not all 0)")


@dataclass
class ClicksSection(TypedConfig):
    max_iter: int = setting(3, ge=0)
    mask_only_prob: float = setting(0.2, ge=0, le=1)
    box_prob: float = setting(0.3, ge=0, le=1)
    box_jitter: float = setting(0.1, ge=0)
    click_radius: float = setting(2.0, ge=0)
    crop_jitter: float = setting(0.25, ge=0)


@dataclass
class PromptPatchConfig(PatchConfig):
    """The patch stream of promptable training: PET only and no augmentation by default."""

    mode: str = setting("pet", choices=tuple(MODES))
    augment: bool = False


@dataclass
class PromptConfig(TypedConfig):
    method: str = METHOD
    seed: int = setting(0, ge=0)
    dataset: str | None = None
    model: PromptModelSection = field(default_factory=PromptModelSection)
    init: PromptInitSection = field(default_factory=PromptInitSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    clicks: ClicksSection = field(default_factory=ClicksSection)
    data: PromptPatchConfig = field(default_factory=PromptPatchConfig)
    preprocessing: dict[str, Any] | None = None

    def validate(self, prefix: str = "") -> None:
        if self.method != METHOD:
            raise ConfigError("method", self.method, f"must be {METHOD!r} for a promptable config")
        check_backbone_patch(self.model.backbone, self.data.patch_size)

    def train_bytes(self, batch_size: int | None = None) -> int:
        """Rough memory of one training step (:meth:`PatchConfig.train_bytes`; clicks simulated without grad)."""
        return self.data.train_bytes(self.model.backbone, batch_size)


#: The top-level config dataclass of the method (what a method registry points at).
CONFIG = PromptConfig

__all__ = ["METHOD", "DESIGNS", "KINDS", "PromptModelSection", "PromptInitSection", "TargetsSection",
           "ClicksSection", "PromptPatchConfig", "PromptConfig", "CONFIG"]
