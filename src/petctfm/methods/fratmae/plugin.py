"""FratMAE as a petctfm method: its registry record (:class:`petctfm.core.registry.Method`), declared in
petctfm's ``pyproject.toml`` under the entry-point group ``petctfm.methods``.

Two checkpoint kinds: the pretraining model (``fratmae``, an encoder to reuse) and its lesion segmenter
(``fratmae_segmentation``, a UNETR on the twin ViT). Fine-tuning, from a FratMAE run or from scratch with the
``fratmae-unetr`` backbone, is :func:`petctfm.methods.fratmae.finetune.finetune_fratmae` on whole-body
stacks of both modalities. Every import is deferred, so loading the registry imports no network code.
"""

from __future__ import annotations

from typing import Any

from petctfm.core.errors import UsageError
from petctfm.core.registry import Method, ModelKind, Option

NAME = "fratmae"
BACKBONE = "fratmae-unetr"  # the segmenter's backbone name (``finetune --init scratch --backbone fratmae-unetr``)


def _build_pretrain(cfg: dict[str, Any]):
    from petctfm.methods.fratmae.fratmae import build_model

    return build_model(cfg)


def _build_segmenter(cfg: dict[str, Any]):
    from petctfm.methods.fratmae.segment import build_model

    return build_model(cfg)


def _pretrain(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from petctfm.methods.fratmae.api import pretrain_fratmae

    return pretrain_fratmae(*args, **kwargs)


def _finetune(dataset, out, init=None, preset=None, fraction=None, *, kshot=None, backbone=None, **config: Any):
    """:func:`petctfm.methods.fratmae.finetune.finetune_fratmae` (whole-body stacks, both modalities: the
    patch-based options ``mode``, ``patch`` and ``overlap`` do not apply)."""
    from petctfm.methods.fratmae.finetune import finetune_fratmae

    for name in ("mode", "patch", "overlap"):
        if config.pop(name, None) is not None:
            raise UsageError(f"{name}: does not apply to FratMAE fine-tuning (whole-body stacks, both modalities)",
                             arg=name)
    if backbone not in (None, BACKBONE):
        raise UsageError(f"backbone={backbone!r}: FratMAE fine-tuning builds {BACKBONE}", arg="backbone")
    return finetune_fratmae(dataset, out, None if init == "scratch" else init, preset, fraction, kshot=kshot,
                            **config)


def _case_features(enc, image, device):
    from petctfm.methods.fratmae.encoder import stack_features

    return stack_features(enc, image, device)


def _twin_vit_adapter(net):
    from petctfm.methods.fratmae.encoder import TwinViTEncoder

    return TwinViTEncoder(net)


def _stack_record(cfg: dict[str, Any]) -> dict[str, Any]:
    from petctfm.methods.fratmae.encoder import stack_record

    return stack_record(cfg)


def _config():
    from petctfm.methods.fratmae.config import CONFIG

    return CONFIG


def _presets():
    from petctfm.methods.fratmae.presets import PRESETS

    return PRESETS


METHOD = Method(
    name=NAME,
    summary="FratMAE: twin PET / CT ViTs, cross-modal masking, ContextAlign (docs/fratmae.md)",
    config=_config,
    presets=_presets,
    kinds=(ModelKind("fratmae", _build_pretrain, "pretrained"),
           ModelKind("fratmae_segmentation", _build_segmenter, "segmenter")),
    pretrain=_pretrain,
    options=(
        Option("--patch", "patch", int, help="ViT patch side in voxels", metavar="N"),
        Option("--mask-ratio", "mask_ratio", float, help="fraction of tokens masked", metavar="R"),
        Option("--variant", "variant", str, ("mae", "mae+ca", "fratmae-noca", "fratmae"),
               help="the paper's Table 3 rows (default fratmae)"),
        Option("--stack", "stack", str, ("coronal", "axial"), help="whole-body coronal stacks (default) | axial"),
        Option("--k", "k", int, help="keep every K-th slice along the stack axis (default 2)", metavar="K"),
        Option("--norm-pix", "norm_pix", bool, help="normalize each target patch (MAE's norm_pix_loss)"),
        Option("--context-weight", "context_weight", float, help="lambda of the InfoNCE term (default 1)",
               metavar="L"),
        Option("--recipe", "recipe", str, ("paper",),
               help="every hyperparameter the paper gives (ViT-B, 30 epochs, batch 24, lr 1e-4, Eq. 1 masking, "
                    "the paper's prompt; docs/fratmae.md); preset gpu unless --preset"),
        Option("--epochs", "epochs", float, help="schedule in epochs (one epoch = the split's number of cases); "
               "sets --max-steps", metavar="E"),
        Option("--mask-mode", "mask_mode", str, ("drop", "zero"),
               help="drop: MAE's (visible tokens only, default) | zero: the paper's Eq. 1 (masked patches zeroed)"),
        Option("--tokenizer", "tokenizer", str, ("field", "prompt"),
               help="metadata text: prompt (the paper's '<tracer> 18F FDG ...', default) | field (older runs)"),
    ),
    finetune=_finetune,
    backbones=lambda name: name == BACKBONE,
    encoders={"TwinViT": _twin_vit_adapter},
    encoder_record=_stack_record,
    case_features=_case_features,
    order=10,
    examples="""
# FratMAE (twin ViTs, cross-modal masking, ContextAlign) on whole-body coronal stacks; its Table 3 ablations
petctfm pretrain --method fratmae --data dataset/ --out runs/frat --preset gpu
petctfm pretrain --method fratmae --variant fratmae-noca --data dataset/ --out runs/frat_noca --preset gpu
petctfm pretrain --method fratmae --stack axial --data dataset/ --out runs/frat_axial --preset gpu
# the paper's recipe: ViT-B twins, 30 epochs at a global batch of 24, lr 1e-4 cosine, Eq. 1 masking
petctfm pretrain --method fratmae --recipe paper --data dataset/ --out runs/frat_paper
""",
)
