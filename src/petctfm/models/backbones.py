"""Backbone registry: hierarchical UNet-shaped 3D networks built from MONAI, with a reusable encoder.

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

Encoder reuse (the downstream issue: segmentation decoder, linear probe, staging head):

- :func:`encoder_features` returns the multi-scale encoder features, finest first.
  SwinUNETR: ``[encoder1(x), encoder2(h0), encoder3(h1), encoder4(h2), h3, encoder10(h4)]`` with ``h`` the
  Swin-ViT hidden states, i.e. strides 1, 2, 4, 8, 16, 32 and channels F, F, 2F, 4F, 8F, 16F (F =
  feature_size): exactly what SwinUNETR's own decoder consumes. DynUNet: the input block, every
  down-sampling stage and the bottleneck (strides 1, 2, 4, ...).
- :func:`encoder_state_dict` / :func:`load_encoder` save and restore only the encoder's weights.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- encoder


def _unwrap(model: nn.Module) -> nn.Module:
    """The backbone inside DDP / torch.compile / a method wrapper with a ``backbone`` attribute."""
    for _ in range(4):
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "backbone") and isinstance(model.backbone, nn.Module):
            model = model.backbone
        else:
            break
    return model


def encoder_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the encoder part of a backbone."""
    from monai.networks.nets import DynUNet, SwinUNETR

    model = _unwrap(model)
    if isinstance(model, SwinUNETR):
        return ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")
    if isinstance(model, DynUNet):
        return ("input_block.", "downsamples.", "bottleneck.")
    raise TypeError(f"not a petctfm backbone: {type(model).__name__}")


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights (keys as in the backbone's own ``state_dict``)."""
    prefixes = encoder_prefixes(model)
    return {k: v for k, v in _unwrap(model).state_dict().items() if k.startswith(prefixes)}


def load_encoder(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load encoder weights into ``model`` (strict on the encoder: every encoder key, matching shapes).

    ``state`` may be an :func:`encoder_state_dict` or a full backbone / MAE state dict (``backbone.``
    prefixes are stripped; decoder keys are ignored). The decoder keeps its current weights.
    """
    backbone = _unwrap(model)
    prefixes = encoder_prefixes(backbone)
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    enc = {k: v for k, v in state.items() if k.startswith(prefixes)}
    own = {k: v for k, v in backbone.state_dict().items() if k.startswith(prefixes)}
    missing = sorted(set(own) - set(enc))
    if missing:
        raise InputError(f"encoder weights incomplete: {len(missing)} missing keys (first: {missing[0]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(enc[k].shape)]
    if bad:
        raise InputError(
            f"encoder weights do not fit this backbone: {bad[0]} has shape {tuple(enc[bad[0]].shape)}, "
            f"expected {tuple(own[bad[0]].shape)} (different backbone or number of input channels?)"
        )
    backbone.load_state_dict(enc, strict=False)
    return model


def encoder_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Multi-scale encoder features of ``x`` (B, C, X, Y, Z), finest first (see module docstring)."""
    from monai.networks.nets import DynUNet, SwinUNETR

    m = _unwrap(model)
    if isinstance(m, SwinUNETR):
        h = m.swinViT(x, m.normalize)
        return [m.encoder1(x), m.encoder2(h[0]), m.encoder3(h[1]), m.encoder4(h[2]), h[3], m.encoder10(h[4])]
    if isinstance(m, DynUNet):
        feats = [m.input_block(x)]
        for down in m.downsamples:
            feats.append(down(feats[-1]))
        feats.append(m.bottleneck(feats[-1]))
        return feats
    raise TypeError(f"not a petctfm backbone: {type(m).__name__}")


__all__ = [
    "BACKBONES", "build_backbone", "patch_divisor", "count_parameters", "encoder_prefixes",
    "encoder_state_dict", "load_encoder", "encoder_features",
]
