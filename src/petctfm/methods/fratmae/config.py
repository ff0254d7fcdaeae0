"""FratMAE's configs as typed dataclasses: pretraining (:data:`CONFIG`) and lesion-segmentation fine-tuning
(:data:`FINETUNE_CONFIG`). ``to_dict()`` is the dict saved with a run and in checkpoints, key for key as before
(old runs load unchanged). The stack stream's own checks (grid, depth, k, crop) stay with
:class:`~petctfm.methods.fratmae.stacks.StackConfig`; here they are said as one-line ConfigErrors (exit 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petctfm.core.config import ConfigError, TypedConfig, setting
from petctfm.core.errors import InputError, UsageError
from petctfm.methods.fratmae.segment import BACKBONE, METHOD as FINETUNE_METHOD, WHOLE_VOLUME, SegStackConfig
from petctfm.methods.fratmae.stacks import StackConfig
from petctfm.methods.segmentation.config import InitSection, OptimSection, SegLossSection, SubsetSection

METHOD = "fratmae"
ARCHS = ("fratmae", "mae")


def _stack_errors(check, prefix: str):
    """Run a StackConfig check; its InputError becomes a UsageError naming the ``data`` section."""
    try:
        return check()
    except InputError as exc:
        raise UsageError(f"{prefix}data: {exc}") from None


@dataclass
class StackSection(StackConfig, TypedConfig):
    """``data`` of FratMAE pretraining: :class:`StackConfig`'s fields, type-checked by key."""

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "data.") -> "StackSection":  # type: ignore[override]
        return TypedConfig.from_dict.__func__(cls, d, prefix)  # type: ignore[attr-defined]

    def validate(self, prefix: str = "") -> None:
        _stack_errors(lambda: StackConfig.from_dict(StackConfig.to_dict(self)), prefix[: -len("data.")])


@dataclass
class SegStackSection(SegStackConfig, TypedConfig):
    """``data`` of FratMAE fine-tuning (:class:`SegStackConfig`; ``patch_size`` follows ``crop``)."""

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "data.") -> "SegStackSection":  # type: ignore[override]
        return TypedConfig.from_dict.__func__(cls, d, prefix)  # type: ignore[attr-defined]

    def validate(self, prefix: str = "") -> None:
        checked = _stack_errors(lambda: SegStackConfig.from_dict(SegStackConfig.to_dict(self)),
                                prefix[: -len("data.")])
        self.patch_size = checked.patch_size
        if not 0.0 <= self.fg_prob <= 1.0:
            raise ConfigError(prefix + "fg_prob", self.fg_prob, "must be in [0, 1]")


def _check_width(key: str, width: int, heads: int, heads_key: str) -> None:
    if width < 6 or width % heads:
        raise ConfigError(key, width, f"must be >= 6 and a multiple of {heads_key} ({heads})")


@dataclass
class FratModelSection(TypedConfig):
    arch: str = setting("fratmae", choices=ARCHS)
    patch: int = setting(16, ge=1)
    dim: int = setting(768, ge=1)
    depth: int = setting(12, ge=1)
    heads: int = setting(12, ge=1)
    decoder_dim: int = setting(512, ge=1)
    decoder_depth: int = setting(8, ge=1)
    decoder_heads: int = setting(16, ge=1)

    def validate(self, prefix: str = "") -> None:
        _check_width(prefix + "dim", self.dim, self.heads, prefix + "heads")
        _check_width(prefix + "decoder_dim", self.decoder_dim, self.decoder_heads, prefix + "decoder_heads")


MASK_MODES = ("drop", "zero")


@dataclass
class FratMaskSection(TypedConfig):
    ratio: float = setting(0.5, gt=0, lt=1)
    # drop: MAE's (only the visible tokens enter S's encoder); zero: the paper's Eq. 1 (X_S * M_S: the masked
    # patches' voxels are zeroed and every token enters the encoder)
    mode: str = setting("drop", choices=MASK_MODES)


@dataclass
class FratLossSection(TypedConfig):
    norm_pix: bool = False


@dataclass
class ContextAlignSection(TypedConfig):
    enabled: bool = True
    weight: float = setting(1.0, ge=0)
    dim: int = setting(256, ge=1)
    depth: int = setting(4, ge=1)
    heads: int = setting(4, ge=1)
    proj_dim: int = setting(512, ge=1)
    tau_init: float = setting(0.07, gt=0)
    # field | prompt (the paper's "<tracer> 18F FDG <diagnosis> ..."); None: prompt for a new run, field for a
    # saved config that has a vocabulary but no tokenizer (a run written before the prompt tokenizer)
    tokenizer: str | None = setting(None, choices=(None, "field", "prompt"))
    vocab: list[str] | None = None  # None: the tokenizer's fixed default, written at start

    def validate(self, prefix: str = "") -> None:
        from petctfm.methods.fratmae.context import Vocabulary, default_vocabulary

        _check_width(prefix + "dim", self.dim, self.heads, prefix + "heads")
        if self.tokenizer is None:
            self.tokenizer = "prompt" if self.vocab is None else "field"
        if self.vocab is None:
            self.vocab = default_vocabulary(self.tokenizer)
        try:
            Vocabulary(self.vocab)
        except InputError as exc:
            raise UsageError(f"{prefix}vocab: {exc}") from None


def _check_tokens(stack_shape, patch: int) -> None:
    from petctfm.methods.fratmae.vit import token_grid

    try:
        token_grid(stack_shape, patch)
    except ValueError as exc:
        raise ConfigError("model.patch", patch, f"does not tile the stack {tuple(stack_shape)} ({exc})") from None


@dataclass
class FratMAEConfig(TypedConfig):
    method: str = METHOD
    seed: int = setting(0, ge=0)
    # the schedule in epochs (one epoch = as many samples as the split has cases), when the run was given one;
    # train.max_steps was derived from it (docs/fratmae.md, "Schedule in epochs")
    epochs: float | None = setting(None, gt=0)
    recipe: str | None = setting(None, choices=(None, "paper"))
    dataset: str | None = None
    model: FratModelSection = field(default_factory=FratModelSection)
    mask: FratMaskSection = field(default_factory=FratMaskSection)
    loss: FratLossSection = field(default_factory=FratLossSection)
    context_align: ContextAlignSection = field(default_factory=ContextAlignSection)
    data: StackSection = field(default_factory=StackSection)
    preprocessing: dict[str, Any] | None = None

    def validate(self, prefix: str = "") -> None:
        if self.method != METHOD:
            raise ConfigError("method", self.method, f"must be {METHOD!r} for a FratMAE config")
        _check_tokens(self.data.stack_shape(), self.model.patch)


@dataclass
class FratFinetuneModelSection(TypedConfig):
    backbone: str = BACKBONE
    arch: str = setting("fratmae", choices=ARCHS)
    patch: int = setting(16, choices=(4, 8, 16))  # the four taps feed at most three skip levels
    dim: int = setting(768, ge=1)
    depth: int = setting(12, ge=1)
    heads: int = setting(12, ge=1)
    feature_size: int = setting(16, ge=1)
    norm: str = "instance"


@dataclass
class FratValSection(TypedConfig):
    split: str = "val"
    overlap: float = setting(0.5, ge=0, lt=1)  # native crops only
    sw_batch_size: int = setting(1, ge=1)
    stack_batch: int = setting(4, ge=1)


@dataclass
class FratMAEFinetuneConfig(TypedConfig):
    method: str = FINETUNE_METHOD
    seed: int = setting(0, ge=0)
    epochs: float | None = setting(None, gt=0)  # one epoch = the training subset's number of cases
    recipe: str | None = setting(None, choices=(None, "paper"))
    dataset: str | None = None
    model: FratFinetuneModelSection = field(default_factory=FratFinetuneModelSection)
    init: InitSection = field(default_factory=InitSection)
    subset: SubsetSection = field(default_factory=SubsetSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: SegLossSection = field(default_factory=SegLossSection)
    val: FratValSection = field(default_factory=FratValSection)
    data: SegStackSection = field(default_factory=lambda: SegStackSection(patch_size=tuple(WHOLE_VOLUME)))
    preprocessing: dict[str, Any] | None = None

    def validate(self, prefix: str = "") -> None:
        if self.method != FINETUNE_METHOD:
            raise ConfigError("method", self.method, f"must be {FINETUNE_METHOD!r} for a FratMAE fine-tuning config")
        _check_tokens(self.data.stack_shape(), self.model.patch)


#: The top-level config dataclasses (what a method registry points at): pretraining and fine-tuning.
CONFIG = FratMAEConfig
FINETUNE_CONFIG = FratMAEFinetuneConfig

__all__ = ["METHOD", "ARCHS", "MASK_MODES", "StackSection", "SegStackSection", "FratModelSection", "FratMaskSection",
           "FratLossSection", "ContextAlignSection", "FratMAEConfig", "FratFinetuneModelSection", "FratValSection",
           "FratMAEFinetuneConfig", "CONFIG", "FINETUNE_CONFIG"]
