"""Backbone registry: hierarchical UNet-shaped 3D networks from MONAI and from nnU-Net v2's own network library,
and the patch sizes they accept.

Every backbone maps ``(B, in_channels, X, Y, Z) -> (B, out_channels, X, Y, Z)`` (same spatial size), so the
same network is the masked-autoencoder (``out_channels == in_channels``: predicts the voxel intensities)
and, after pretraining, a segmentation network. Nothing is re-written here: the networks are
``monai.networks.nets.SwinUNETR(use_v2=True)``, ``monai.networks.nets.DynUNet(res_block=True)`` and
``dynamic_network_architectures``' ``PlainConvUNet`` / ``ResidualEncoderUNet`` (the package nnU-Net v2 builds
its networks from, pinned 0.4.4), configured as nnU-Net v2's planner configures ``3d_fullres``.

Names (parameter counts measured with ``in_channels=out_channels=2``, see ``docs/backbones.md``):

==========================  ===================================================================  ========
name                        network                                                              params
==========================  ===================================================================  ========
``swinunetr-small``         SwinUNETR-v2, feature_size 24, depths (2,2,2,2), heads (3,6,12,24)    18.3 M
``swinunetr-base``          SwinUNETR-v2, feature_size 48                                          72.8 M
``swinunetr-large``         SwinUNETR-v2, feature_size 96                                         290.4 M
``unet-resenc``             MONAI DynUNet stand-in: residual blocks, nnU-Net kernels/strides,      16.7 M
                            32..320 filters, 5 stages, one residual block per stage
``nnunet-plain``            nnU-Net v2's own ``PlainConvUNet`` ("nnUNet-v2-3d"), 5 stages,        16.5 M
                            32..320 features, 2 convs per stage (encoder and decoder)
``nnunet-resenc``           nnU-Net v2's own ``ResidualEncoderUNet`` (ResEnc-M blocks 1,3,4,6,6),  62.8 M
                            5 stages, 32..320 features, 1 conv per decoder stage
``swinunetr-tiny``          SwinUNETR-v2, feature_size 12, depths (1,1,1,1), for tests             4.4 M
``unet-resenc-tiny``        DynUNet, residual, filters 8..64, 4 stages, for tests                   0.35 M
``nnunet-plain-tiny``       ``PlainConvUNet``, 4 stages, 8..64 features, for tests and the CPU      0.35 M
``nnunet-resenc-tiny``      ``ResidualEncoderUNet``, 4 stages, 8..64 features, blocks 1,3,4,6        1.62 M
==========================  ===================================================================  ========

Which name is which: ``unet-resenc`` / ``unet-resenc-tiny`` are the MONAI ``DynUNet`` *stand-in* for nnU-Net's
residual UNet that petctfm used before it depended on nnU-Net's library (kept unchanged, so older runs load);
``nnunet-plain`` / ``nnunet-resenc`` are nnU-Net v2's *own* networks (class names ``PlainConvUNet`` and
``ResidualEncoderUNet``; state-dict keys as in nnU-Net's checkpoints minus two aliases, see
:func:`_drop_aliases`).

nnU-Net configuration (``dynamic_network_architectures.building_blocks`` via nnU-Net v2's planner, 3d_fullres,
isotropic patch): 3^3 kernels everywhere; stride 1 for the first stage, 2 for every other; features
``min(32 * 2^s, 320)``; ``InstanceNorm3d(eps=1e-5, affine=True)``, ``LeakyReLU(inplace=True)``, conv bias on,
no dropout; weights initialized as nnU-Net does (He, negative slope 1e-2; the residual one also zeroes each
block's last norm). Stages: as many as keep the bottleneck >= 4 voxels for the default 64^3 CPU patch (5:
64 -> 4). ``deep_supervision`` is off by default; with ``model.overrides.deep_supervision: true`` the network
returns, **in training mode only**, a list of outputs (full resolution first, then 1/2, 1/4, ...), and in eval
mode the full-resolution tensor (as MONAI's DynUNet). Only a task with a deep-supervision loss may turn it on;
a task that uses the output as one tensor (the MAE, the promptable embedding, today's segmentation loss) stops
with a one-line error (:class:`DeepSupervisionOutputs`).
``model.overrides`` may also set any other constructor argument (``n_stages`` re-plans features, strides and
blocks for that depth; the patch divisor then becomes 2^(n_stages-1), or the product of per-stage ``strides``
when they are given: :func:`axis_divisors`).

SwinUNETR needs patch sides that are multiples of 32 and >= 64 (its 1/32 bottleneck goes through an
instance norm, which needs more than one voxel); the UNets need multiples of 2^(stages-1).

The encoder of a backbone (features per scale, weights, stages) is reached through
:mod:`petctfm.models.encoders`, one adapter per backbone family.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from petctfm.core.errors import InputError

#: Patch side each backbone needs to be divisible by (SwinUNETR: patch 2 x 4 merges = 32).
DIVISOR = {"swinunetr": 32, "unet-resenc": 16, "unet-resenc-tiny": 8}  # nnunet-*: added below (2^(n_stages-1))


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


#: nnU-Net ResEnc-M encoder blocks per stage (nnU-Net v2 ``nnUNetPlannerResEncM``), for as many stages as needed.
RESENC_M_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6)


class DeepSupervisionOutputs(list):
    """The list a deep-supervised nnU-Net network returns in training mode (full resolution first, then 1/2,
    1/4, ...). Using it as one tensor fails with one line saying why, instead of a deep type error."""

    MESSAGE = ("this backbone was built with model.overrides.deep_supervision=true: in training mode it returns a "
               "list of outputs (full resolution first), but this task uses one tensor; drop deep_supervision or use "
               "a task with a deep-supervision loss")

    def _refuse(self, *args: Any, **kwargs: Any):
        raise TypeError(self.MESSAGE)

    def __getattr__(self, name: str):  # tensor attributes (.float(), .dtype, .shape, ...); hasattr() stays False
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(self.MESSAGE)

    __sub__ = __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __pow__ = __neg__ = _refuse
    __array__ = __float__ = _refuse


def _drop_aliases(net: nn.Module) -> None:
    """Register each of the network's modules once. nnU-Net's networks register two aliases: the decoder keeps
    the encoder as ``decoder.encoder``, and each ``ConvDropoutNormReLU`` keeps its conv/norm/nonlin both by name and
    in ``all_modules`` (the Sequential its forward runs). Registered, they repeat the encoder 4x and every conv 2x
    in ``state_dict()`` (a checkpoint of ``nnunet-resenc`` would be ~4x its parameters). They stay attributes,
    unregistered, so forward and nnU-Net's helpers work unchanged; ``state_dict()`` keys are nnU-Net's minus the
    ``decoder.encoder.*`` and ``*.all_modules.*`` aliases."""
    dec = net.decoder
    if "encoder" in dec._modules:
        dec.__dict__["encoder"] = dec._modules.pop("encoder")
    for m in list(net.modules()):
        if "all_modules" in m._modules and "conv" in m._modules:
            m.__dict__["all_modules"] = m._modules.pop("all_modules")


def _nnunet_classes() -> tuple[type, type]:
    """nnU-Net's two networks, with aliases unregistered (:func:`_drop_aliases`) and one tensor returned outside
    training (:class:`DeepSupervisionOutputs`). Subclasses, so the encoder adapter (looked up along the MRO under
    nnU-Net's class names) covers them and nnU-Net's own instances alike."""
    global _NNUNET_CLASSES
    if _NNUNET_CLASSES is None:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

        def subclass(base: type) -> type:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                base.__init__(self, *args, **kwargs)
                _drop_aliases(self)

            def forward(self, x):
                out = base.forward(self, x)
                if isinstance(out, (list, tuple)):
                    return DeepSupervisionOutputs(out) if self.training else out[0]
                return out

            return type(f"NNUNet{base.__name__}", (base,), {"__init__": __init__, "forward": forward,
                                                            "__module__": __name__, "__doc__": base.__doc__})

        _NNUNET_CLASSES = (subclass(PlainConvUNet), subclass(ResidualEncoderUNet))
    return _NNUNET_CLASSES


_NNUNET_CLASSES: tuple[type, type] | None = None
_NNUNET_NAMES = ("NNUNetPlainConvUNet", "NNUNetResidualEncoderUNet")


def __getattr__(name: str) -> type:
    """The two subclasses by name (built on first use, so importing this module does not import nnU-Net's
    package; pickle finds them here too)."""
    if name in _NNUNET_NAMES:
        return dict(zip(_NNUNET_NAMES, _nnunet_classes()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def nnunet_plan(n_stages: int, base: int = 32, cap: int = 320) -> dict[str, Any]:
    """nnU-Net v2's 3d_fullres per-stage lists for an isotropic patch and ``n_stages`` resolution stages."""
    return {
        "n_stages": n_stages,
        "features_per_stage": [min(base * 2 ** s, cap) for s in range(n_stages)],
        "kernel_sizes": [[3, 3, 3]] * n_stages,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
    }


def _nnunet(residual: bool, n_stages: int, base: int = 32, cap: int = 320) -> Callable[..., nn.Module]:
    """nnU-Net v2's ``PlainConvUNet`` (``residual=False``) or ``ResidualEncoderUNet`` (ResEnc-M blocks), configured
    as nnU-Net's planner configures 3d_fullres (module docstring); ``overrides`` go to the constructor."""

    def build(in_channels: int, out_channels: int, **overrides: Any) -> nn.Module:
        n = int(overrides.pop("n_stages", n_stages))
        kw: dict[str, Any] = dict(
            nnunet_plan(n, base, cap), conv_op=nn.Conv3d, conv_bias=True,
            norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
            dropout_op=None, dropout_op_kwargs=None,
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False,
        )
        if residual:
            kw.update(n_blocks_per_stage=list(RESENC_M_BLOCKS[:n]), n_conv_per_stage_decoder=[1] * (n - 1))
        else:
            kw.update(n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
        kw.update(overrides)
        plain, resenc = _nnunet_classes()
        net = (resenc if residual else plain)(input_channels=in_channels, num_classes=out_channels, **kw)
        net.apply(net.initialize)  # nnU-Net's own initialization (get_network_from_plans does the same)
        return net

    return build


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "swinunetr-small": _swinunetr(24),
    "swinunetr-base": _swinunetr(48),
    "swinunetr-large": _swinunetr(96),
    "swinunetr-tiny": _swinunetr(12, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)),
    "unet-resenc": _resenc((32, 64, 128, 256, 320), (1, 2, 2, 2, 2)),
    "unet-resenc-tiny": _resenc((8, 16, 32, 64), (1, 2, 2, 2)),
    "nnunet-plain": _nnunet(False, 5),
    "nnunet-resenc": _nnunet(True, 5),
    "nnunet-plain-tiny": _nnunet(False, 4, base=8, cap=64),
    "nnunet-resenc-tiny": _nnunet(True, 4, base=8, cap=64),
}
DIVISOR.update({"nnunet-plain": 16, "nnunet-resenc": 16, "nnunet-plain-tiny": 8, "nnunet-resenc-tiny": 8})


def build_backbone(name: str, in_channels: int, out_channels: int, **overrides: Any) -> nn.Module:
    """Build backbone ``name`` (see :data:`BACKBONES`); ``overrides`` go to the network's constructor (MONAI's or
    ``dynamic_network_architectures``')."""
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, out_channels, **overrides)


def patch_divisor(name: str) -> int:
    """Patch sides must be a multiple of this for backbone ``name`` (its default configuration)."""
    if name.startswith("swinunetr"):
        return DIVISOR["swinunetr"]
    return DIVISOR.get(name, 16)


def axis_divisors(name: str, overrides: dict[str, Any] | None = None) -> list[int]:
    """Per-axis patch divisors (X, Y, Z) of backbone ``name`` built with ``overrides``: the product of the
    per-stage ``strides`` when given (nnU-Net networks planned for an anisotropic patch), ``2^(n_stages-1)``
    when only ``n_stages`` is given, else :func:`patch_divisor`."""
    ov = overrides or {}
    if name.startswith("nnunet-") and ov.get("strides"):
        out = [1, 1, 1]
        for st in ov["strides"]:
            st = list(st) if isinstance(st, (list, tuple)) else [st] * 3
            out = [o * int(s) for o, s in zip(out, st)]
        return out
    if name.startswith("nnunet-") and ov.get("n_stages"):
        return [2 ** (int(ov["n_stages"]) - 1)] * 3
    return [patch_divisor(name)] * 3


def check_patch_size(name: str, patch_size: Sequence[int], overrides: dict[str, Any] | None = None) -> None:
    """One-line InputError unless every side of ``patch_size`` (X, Y, Z) fits backbone ``name`` (built with
    ``overrides``): a multiple of its :func:`axis_divisors`, and >= 64 for SwinUNETR (its 1/32 bottleneck must
    hold more than one voxel)."""
    divs = axis_divisors(name, overrides)
    if any(int(p) % d for p, d in zip(patch_size, divs)):
        div = divs[0] if len(set(divs)) == 1 else divs
        raise InputError(f"patch size {list(patch_size)} must be a multiple of {div} for backbone {name}")
    if name.startswith("swinunetr") and min(patch_size) < 64:
        raise InputError(f"patch size {list(patch_size)}: SwinUNETR backbones need sides >= 64 (1/32 bottleneck "
                         "must hold more than one voxel)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["BACKBONES", "RESENC_M_BLOCKS", "DeepSupervisionOutputs", "nnunet_plan", "build_backbone", "patch_divisor", "axis_divisors", "check_patch_size", "count_parameters"]
