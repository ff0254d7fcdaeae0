"""Backbone registry: hierarchical UNet-shaped 3D networks built from MONAI, and the patch sizes they accept.

Every backbone maps ``(B, in_channels, X, Y, Z) -> (B, out_channels, X, Y, Z)`` (same spatial size), so the
same network is the masked-autoencoder (``out_channels == in_channels``: predicts the voxel intensities)
and, after pretraining, a segmentation network. Nothing is re-written here: the networks are
``monai.networks.nets.SwinUNETR(use_v2=True)`` and ``monai.networks.nets.DynUNet(res_block=True)``.

Names (parameter counts measured with ``in_channels=out_channels=2``, see ``docs/pretrain.md``):

==========================  ===================================================================  ========
name                        network                                                              params
==========================  ===================================================================  ========
``swinunetr-small``         SwinUNETR-v2, feature_size 24, depths (2,2,2,2), heads (3,6,12,24)    18.3 M
``swinunetr-base``          SwinUNETR-v2, feature_size 48                                          72.8 M
``swinunetr-large``         SwinUNETR-v2, feature_size 96                                         290.4 M
``unet-resenc``             DynUNet, residual blocks, nnU-Net kernels/strides, 32..320 filters     16.7 M
``swinunetr-tiny``          SwinUNETR-v2, feature_size 12, depths (1,1,1,1), for tests             4.4 M
``unet-resenc-tiny``        DynUNet, residual, filters 8..64, 4 stages, for tests                   0.35 M
==========================  ===================================================================  ========

SwinUNETR needs patch sides that are multiples of 32 and >= 64 (its 1/32 bottleneck goes through an
instance norm, which needs more than one voxel); the residual UNet needs multiples of 2^(stages-1).

The encoder of a backbone (features per scale, weights, stages) is reached through
:mod:`petctfm.models.encoders`, one adapter per backbone family.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from petctfm.core.errors import InputError

#: Patch side each backbone needs to be divisible by (SwinUNETR: patch 2 x 4 merges = 32).
DIVISOR = {"swinunetr": 32, "unet-resenc": 16, "unet-resenc-tiny": 8}


def _swinunetr(feature_size: int, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24)) -> Callable[..., nn.Module]:
    def build(in_channels: int, out_channels: int, **overrides: Any) -> nn.Module:
        from monai.networks.nets import SwinUNETR

        kw: dict[str, Any] = dict(feature_size=feature_size, depths=depths, num_heads=num_heads, use_v2=True)
        kw.update(overrides)
        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=3, **kw)

    return build


def _resenc(filters, strides) -> Callable[..., nn.Module]:
    """nnU-Net-style residual-encoder UNet from MONAI's DynUNet.

    nnU-Net's 3d_fullres plan for isotropic patches: 3^3 kernels everywhere, stride 1 then 2 per stage,
    filters doubling from 32 and capped at 320, instance norm + leaky ReLU (DynUNet's defaults). With
    ``res_block=True`` each stage is a MONAI ``UnetResBlock`` (two convs + residual), close to nnU-Net's
    ResEnc with one block per stage (ResEnc-M stacks 1-6 blocks per stage).
    """

    def build(in_channels: int, out_channels: int, **overrides: Any) -> nn.Module:
        from monai.networks.nets import DynUNet

        kw: dict[str, Any] = dict(
            kernel_size=[3] * len(strides), strides=list(strides), upsample_kernel_size=list(strides[1:]),
            filters=list(filters), res_block=True,
        )
        kw.update(overrides)
        return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)

    return build


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "swinunetr-small": _swinunetr(24),
    "swinunetr-base": _swinunetr(48),
    "swinunetr-large": _swinunetr(96),
    "swinunetr-tiny": _swinunetr(12, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)),
    "unet-resenc": _resenc((32, 64, 128, 256, 320), (1, 2, 2, 2, 2)),
    "unet-resenc-tiny": _resenc((8, 16, 32, 64), (1, 2, 2, 2)),
}


def build_backbone(name: str, in_channels: int, out_channels: int, **overrides: Any) -> nn.Module:
    """Build backbone ``name`` (see :data:`BACKBONES`); ``overrides`` go to the MONAI constructor."""
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, out_channels, **overrides)


def patch_divisor(name: str) -> int:
    """Patch sides must be a multiple of this for backbone ``name``."""
    if name.startswith("swinunetr"):
        return DIVISOR["swinunetr"]
    return DIVISOR.get(name, 16)


def check_patch_size(name: str, patch_size: Sequence[int]) -> None:
    """One-line InputError unless every side of ``patch_size`` (X, Y, Z) fits backbone ``name``: a multiple of
    :func:`patch_divisor`, and >= 64 for SwinUNETR (its 1/32 bottleneck must hold more than one voxel)."""
    div = patch_divisor(name)
    if any(int(p) % div for p in patch_size):
        raise InputError(f"patch size {list(patch_size)} must be a multiple of {div} for backbone {name}")
    if name.startswith("swinunetr") and min(patch_size) < 64:
        raise InputError(f"patch size {list(patch_size)}: SwinUNETR backbones need sides >= 64 (1/32 bottleneck "
                         "must hold more than one voxel)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["BACKBONES", "build_backbone", "patch_divisor", "check_patch_size", "count_parameters"]
