"""Promptable segmentation's config as typed dataclasses (:data:`CONFIG`); ``to_dict()`` is the dict saved with
a run and in checkpoints, key for key as before (old runs load unchanged). ``targets.kind_probs`` stays a
free-form mapping (checked in ``validate``). Every wrong value is a one-line
:class:`~petctfm.core.config.ConfigError` (exit 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petctfm.core.config import ConfigError, TypedConfig, setting
from petctfm.core.errors import UsageError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data.filters import SYNTAX, parse_filter
from petctfm.data.loader import MODES, PatchConfig
from petctfm.models.config import check_backbone_patch
from petctfm.methods.promptable.model import DESIGNS, HEAD_STRIDES, METHOD, SAM_DEFAULTS
from petctfm.methods.promptable.prompts import LESION_CLASSES, class_key
from petctfm.methods.promptable.sam import LOSS_DEFAULTS, LOSSES, STRIDES

KINDS = ("lesion", "organ", "all_lesions")
HEAD_LEVELS = (3, len(HEAD_STRIDES))  # model.head_filters: one width per decoder level


@dataclass
class SamSection(TypedConfig):
    """The ``sam`` design's decoder (:class:`~petctfm.methods.promptable.sam.SamDecoder`): token width ``dim``,
    two-way transformer ``depth`` / ``heads`` / ``mlp_dim``, image tokens every ``stride`` voxels; and its
    training loss per mask (:func:`~petctfm.methods.promptable.sam.mask_loss`): ``loss`` (MONAI ``DiceCELoss``
    or ``DiceFocalLoss``) = ``dice_weight`` x Dice + ``voxel_weight`` x CE / focal. The loss keys only act in
    training: a run saved before them (no ``loss`` key) loads and predicts unchanged and, resumed, trains on
    with the default (``dice_focal`` 1 : 1); SAM's 20 : 1 focal : Dice is ``loss: dice_focal, voxel_weight: 20``."""

    dim: int = setting(SAM_DEFAULTS["dim"], ge=8)
    depth: int = setting(SAM_DEFAULTS["depth"], ge=1)
    heads: int = setting(SAM_DEFAULTS["heads"], ge=1)
    mlp_dim: int = setting(SAM_DEFAULTS["mlp_dim"], ge=1)
    stride: int = setting(SAM_DEFAULTS["stride"], choices=STRIDES)
    loss: str = setting(LOSS_DEFAULTS["loss"], choices=LOSSES)
    dice_weight: float = setting(LOSS_DEFAULTS["dice_weight"], ge=0)
    voxel_weight: float = setting(LOSS_DEFAULTS["voxel_weight"], ge=0)  # the CE (dice_ce) or focal (dice_focal) term

    def validate(self, prefix: str = "") -> None:
        if self.dim % (2 * self.heads):
            raise ConfigError(prefix + "dim", self.dim, f"must be divisible by 2 x heads ({2 * self.heads})")
        if self.dice_weight + self.voxel_weight <= 0:
            raise ConfigError(prefix + "voxel_weight", self.voxel_weight, "must be > 0 when dice_weight is 0")


@dataclass
class PromptModelSection(TypedConfig):
    backbone: str = "unet-resenc-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # MONAI constructor arguments (free-form)
    design: str = setting("cached", choices=DESIGNS)
    embed_channels: int = setting(16, ge=1)
    head_filters: list[int] = setting([16, 32, 32], ge=1)
    head_refine: bool = True
    sam: SamSection = field(default_factory=SamSection)
    #: a target class (lesion, an organ) steers the decoder (design cached or sam); the class table
    #: ``classes`` is filled at training start (the training targets only, held-out organs excluded)
    class_prompts: bool = False
    classes: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "") -> None:
        if not HEAD_LEVELS[0] <= len(self.head_filters) <= HEAD_LEVELS[1]:
            raise ConfigError(prefix + "head_filters", self.head_filters,
                              f"must hold {HEAD_LEVELS[0]} to {HEAD_LEVELS[1]} widths")
        if self.class_prompts and self.design == "channels":
            raise ConfigError(prefix + "class_prompts", True, "needs model.design cached or sam (not channels)")
        bad = [c for c in self.classes if class_key(c) != c]
        if bad or len(set(self.classes)) != len(self.classes):
            raise ConfigError(prefix + "classes", self.classes, f"must be distinct names among "
                              f"{', '.join(LESION_CLASSES)} and the organs of ORGAN_LABELS (bad: {bad or 'repeats'})")


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
    #: with model.class_prompts: the probability that a training target is given "no class" (class-free
    #: prompting keeps working)
    class_dropout: float = setting(0.5, ge=0, le=1)
    #: ``manifest.csv`` filters (``COLUMN=V[,V]`` / ``COLUMN!=V[,V]``, AND-ed; :mod:`petctfm.data.filters`): only
    #: the cases of the train (and val) split that pass them are sampled (``prompt-train --train-filter``; the
    #: out-of-distribution protocol of docs/promptable.md). Empty: every case of the split.
    train_filter: list[str] = field(default_factory=list)

    def validate(self, prefix: str = "") -> None:
        for f in self.train_filter:
            try:
                parse_filter(f)
            except UsageError:
                raise ConfigError(prefix + "train_filter", self.train_filter, SYNTAX) from None
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
        if self.model.design == "sam" and any(int(p) % self.model.sam.stride for p in self.data.patch_size):
            raise ConfigError("data.patch_size", self.data.patch_size,
                              f"must be divisible by model.sam.stride ({self.model.sam.stride}) for design sam")
        held = set(self.targets.held_out) & set(self.model.classes)
        if held:
            raise ConfigError("model.classes", self.model.classes, f"held-out organs get no class embedding "
                              f"(remove {', '.join(sorted(held))})")

    def train_bytes(self, batch_size: int | None = None) -> int:
        """Rough memory of one training step (:meth:`PatchConfig.train_bytes`; clicks simulated without grad)."""
        return self.data.train_bytes(self.model.backbone, batch_size)


#: The top-level config dataclass of the method (what a method registry points at).
CONFIG = PromptConfig

__all__ = ["METHOD", "DESIGNS", "KINDS", "SamSection", "PromptModelSection", "PromptInitSection", "TargetsSection",
           "ClicksSection", "PromptPatchConfig", "PromptConfig", "CONFIG"]
