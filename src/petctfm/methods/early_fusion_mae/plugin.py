"""The early-fusion MAE as a petctfm method: its registry record (:class:`petctfm.core.registry.Method`),
declared in petctfm's ``pyproject.toml`` under the entry-point group ``petctfm.methods``.

One checkpoint kind (``early_fusion_mae``: the MAE around a UNet-shaped backbone, an encoder to reuse); its
runs are fine-tuned for lesion segmentation by the UNet fine-tuning of :mod:`petctfm.methods.segmentation`.
Every import is deferred, so loading the registry imports no network code.
"""

from __future__ import annotations

from typing import Any

from petctfm.core.registry import Method, ModelKind, Option


def _build(cfg: dict[str, Any]):
    from petctfm.methods.early_fusion_mae.mae import build_model

    return build_model(cfg)


def _pretrain(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from petctfm.methods.early_fusion_mae.api import pretrain

    return pretrain(*args, **kwargs)


def _finetune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from petctfm.methods.segmentation.api import finetune

    return finetune(*args, **kwargs)


def _config():
    from petctfm.methods.early_fusion_mae.config import CONFIG

    return CONFIG


def _presets():
    from petctfm.methods.early_fusion_mae.presets import PRESETS

    return PRESETS


METHOD = Method(
    name="early-fusion-mae",
    summary="early-fusion masked autoencoder: PET + CT as channels of a hierarchical UNet (docs/pretrain.md)",
    config=_config,
    presets=_presets,
    kinds=(ModelKind("early_fusion_mae", _build, "pretrained"),),
    pretrain=_pretrain,
    options=(
        Option("--mode", "mode", str, ("joint", "pet", "ct"), help="input channels: joint [PET, CT] | pet | ct"),
        Option("--backbone", "backbone", str, help="swinunetr-{small,base,large,tiny} | unet-resenc[-tiny] | nnunet-{plain,resenc}[-tiny] (docs/backbones.md)",
               metavar="NAME"),
        Option("--patch", "patch", int, help="cubic patch side in voxels", metavar="N"),
        Option("--mask-ratio", "mask_ratio", float, help="fraction of blocks masked (default 0.6)", metavar="R"),
        Option("--mask-block", "mask_block", int, help="mask block side in voxels (default 16)", metavar="B"),
        Option("--mask-token", "mask_token", str, ("zero", "learnable"), help="zero-mean imputation | learnable token"),
        Option("--w-masked", "w_masked", float, help="loss weight of masked voxels (default 1.0)", metavar="W"),
        Option("--w-visible", "w_visible", float, help="loss weight of visible voxels (default 0.1)", metavar="W"),
        Option("--loss", "loss", str, ("l2", "l1"), help="reconstruction error (default l2)"),
    ),
    finetune=_finetune,
    order=0,
    examples="""
# seconds on a CPU: tiny network, 32^3 patches (what tests and the demo use)
petctfm pretrain --data dataset/ --out runs/mae_tiny --preset tiny

# the real configuration on one GPU: SwinUNETR-v2 base, 96^3, bf16, torch.compile
petctfm pretrain --data dataset/ --out runs/mae_base --preset gpu

# ablations: learnable mask token, masked-only loss, PET-only pretraining, another mask ratio
petctfm pretrain --data dataset/ --out runs/mae_token --preset gpu --mask-token learnable
petctfm pretrain --data dataset/ --out runs/mae_w0 --preset gpu --w-visible 0
petctfm pretrain --data dataset/ --out runs/mae_pet --preset gpu --mode pet
petctfm pretrain --data dataset/ --out runs/mae_75 --preset cpu --set mask.ratio=0.75
""",
)
