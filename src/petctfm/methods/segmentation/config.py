"""Lesion-segmentation fine-tuning's config as typed dataclasses (:data:`CONFIG`); ``to_dict()`` is the dict
saved with a run and in checkpoints, key for key as before (old runs load unchanged). Sections shared with
FratMAE fine-tuning (``init``, ``subset``, ``optim``, ``loss``) are defined here once.
Every wrong value is a one-line :class:`~petctfm.core.config.ConfigError` (exit 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petctfm.core.config import ConfigError, TypedConfig, setting
from petctfm.data.loader import PatchConfig
from petctfm.inference.postprocess import suppression
from petctfm.models.config import ModelSection, check_backbone_patch

METHOD = "finetune_segmentation"
#: What a run segments: ``lesions`` (background / lesion from ``label.npy``) or ``organs`` (background + one class
#: per entry of ``task.classes`` from ``organs.npy``; docs/organs.md).
TASKS = ("lesions", "organs")


@dataclass
class InitSection(TypedConfig):
    source: str = "scratch"  # "scratch" or the pretrained checkpoint's path
    method: str | None = None  # the pretrained run's method
    step: Any = None  # the pretrained checkpoint's step as its metadata gives it (FratMAE: a string), or None


@dataclass
class SubsetSection(TypedConfig):
    name: str = "train"  # train | fraction<pct> | kshot<k>
    cases: list[str] = field(default_factory=list)  # filled from splits.json: the exact training cases


@dataclass
class OptimSection(TypedConfig):
    freeze_encoder: bool = False
    layer_decay: float = setting(1.0, gt=0, le=1)  # encoder stage s of S: lr * decay ** (S - s)


@dataclass
class SegLossSection(TypedConfig):
    lambda_dice: float = setting(1.0, ge=0)
    lambda_ce: float = setting(1.0, ge=0)


@dataclass
class TaskSection(TypedConfig):
    """``name``: lesions | organs. ``classes`` (organs only): organ name -> its value in the label map
    (``organs.npy``); output channel ``i + 1`` is the ``i``-th entry, channel 0 background. Predictions are
    written back in these values.

    ``aux_classes`` (lesions only; empty: off): organs of ``organs.npy`` (name -> value) trained as auxiliary
    output classes beside the lesion (channel 0 background, 1 lesion, ``i + 2`` the ``i``-th organ; a lesion
    voxel is a lesion whatever organ it lies in). The network learns the anatomy around the lesions it must tell
    from physiological uptake (nnU-Net's autoPET III entry trained with organ labels as extra classes the same
    way); predictions stay lesion masks (channel 1), and the loss keeps the lesion's share of the Dice term
    (:class:`~petctfm.methods.segmentation.task.AuxOrganLoss`)."""

    name: str = setting("lesions", choices=TASKS)
    classes: dict[str, int] = field(default_factory=dict)
    aux_classes: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def _check_table(table: dict[str, int], key: str) -> None:
        values = list(table.values())
        for k, v in table.items():
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 255:
                raise ConfigError(f"{key}.{k}", v, "must be an integer label value in 1..255")
        if len(set(values)) != len(values):
            raise ConfigError(key, table, "two organs share one label value")

    def validate(self, prefix: str = "") -> None:
        if self.name == "lesions" and self.classes:
            raise ConfigError(prefix + "classes", self.classes, "must be empty for task lesions")
        if self.name == "organs":
            if not self.classes:
                raise ConfigError(prefix + "classes", self.classes, "needs at least one organ for task organs")
            if self.aux_classes:
                raise ConfigError(prefix + "aux_classes", self.aux_classes, "must be empty for task organs")
            self._check_table(self.classes, prefix + "classes")
        if self.aux_classes:
            self._check_table(self.aux_classes, prefix + "aux_classes")


@dataclass
class ValSection(TypedConfig):
    split: str = "val"
    overlap: float = setting(0.5, ge=0, lt=1)  # sliding-window overlap
    sw_batch_size: int = setting(2, ge=1)


@dataclass
class PostprocessSection(TypedConfig):
    """What is done to a lesion mask after thresholding (:mod:`petctfm.inference.postprocess`; lesions only).

    ``min_lesion_ml``: 18-connected components smaller than this volume (ml) are removed from every prediction
    (0: none). ``choose_min_lesion_ml``: candidate volumes (empty: no choice); each validation then scores every
    candidate on the same predictions, and the best checkpoint keeps the candidate with the highest mean val
    Dice (ties: the smallest) as its ``min_lesion_ml``, so the predictions of the run apply it (nnU-Net's
    post-processing determined on validation, as a minimum lesion volume).

    ``suppress_organs``: auxiliary organ classes of the run (``task.aux_classes``) in which lesion components are
    physiological uptake: a component with at least ``suppress_fraction`` of its voxels in those organs, as the
    same network predicts them, is removed (:func:`petctfm.inference.postprocess.suppress_in_organs`; empty: off)."""

    min_lesion_ml: float = setting(0.0, ge=0)
    choose_min_lesion_ml: list[float] = field(default_factory=list)
    suppress_organs: list[str] = field(default_factory=list)
    suppress_fraction: float = setting(0.5, gt=0, le=1)

    def validate(self, prefix: str = "") -> None:
        if any(not isinstance(n, str) or not n for n in self.suppress_organs):
            raise ConfigError(prefix + "suppress_organs", self.suppress_organs, "must be a list of organ names")
        for v in self.choose_min_lesion_ml:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(prefix + "choose_min_lesion_ml", self.choose_min_lesion_ml,
                                  "must be a list of volumes in ml, each >= 0")


@dataclass
class FinetuneConfig(TypedConfig):
    method: str = METHOD
    seed: int = setting(0, ge=0)
    dataset: str | None = None  # harmonized dataset (training only; not needed to rebuild the model)
    model: ModelSection = field(default_factory=ModelSection)
    init: InitSection = field(default_factory=InitSection)
    subset: SubsetSection = field(default_factory=SubsetSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: SegLossSection = field(default_factory=SegLossSection)
    val: ValSection = field(default_factory=ValSection)
    data: PatchConfig = field(default_factory=PatchConfig)
    preprocessing: dict[str, Any] | None = None  # channels, normalization, harmonize spacing/ct_window
    plan: dict[str, Any] | None = None  # the recipe's plan and the fingerprint it came from (plan.py), or None
    task: TaskSection = field(default_factory=TaskSection)  # lesions (default; old runs) | organs + classes
    postprocess: PostprocessSection = field(default_factory=PostprocessSection)  # lesion masks (old runs: none)

    def validate(self, prefix: str = "") -> None:
        if self.method != METHOD:
            raise ConfigError("method", self.method, f"must be {METHOD!r} for a fine-tuning config")
        check_backbone_patch(self.model.backbone, self.data.patch_size, overrides=self.model.overrides)
        post = self.postprocess
        if self.task.name == "organs" and (post.min_lesion_ml or post.choose_min_lesion_ml or post.suppress_organs):
            raise ConfigError("postprocess", post.to_dict(), "applies to lesion masks, not task organs")
        try:  # the names must be auxiliary organ classes: the check of the prediction paths' own reader
            suppression({"task": {"aux_classes": self.task.aux_classes}, "postprocess": post.to_dict()})
        except ValueError as exc:
            raise ConfigError("postprocess.suppress_organs", post.suppress_organs, str(exc)) from None

    def train_bytes(self, batch_size: int | None = None) -> int:
        """Rough memory of one training step (:meth:`PatchConfig.train_bytes`)."""
        return self.data.train_bytes(self.model.backbone, batch_size)


#: The top-level config dataclass of the method (what a method registry points at).
CONFIG = FinetuneConfig

__all__ = ["METHOD", "TASKS", "TaskSection", "InitSection", "SubsetSection", "OptimSection", "SegLossSection", "ValSection",
           "PostprocessSection", "FinetuneConfig", "CONFIG"]
