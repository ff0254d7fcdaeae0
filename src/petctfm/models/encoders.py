"""Encoder access for every backbone family: one :class:`Encoder` adapter per family, looked up once.

A pretrained backbone is reused downstream through its encoder only (segmentation fine-tuning, linear probe,
staging head). What a method needs from an encoder is the same whatever the network:

- ``prefixes``: the state-dict prefixes of the encoder's parameters (to save / load only the encoder);
- ``features(x)``: the multi-scale feature maps of an input, finest first;
- ``channels()``: the channels of each of those feature maps;
- ``stages()``: the encoder as a list of stages, finest first (layer-wise LR decay, freezing).

:func:`get_encoder` unwraps the model (``torch.compile``, DDP, and method wrappers with a ``.backbone``
attribute such as the MAE and the segmenter), then finds the adapter registered for the network's class
(or one of its base classes) in :data:`ENCODERS`, then among the adapters that methods bring with their
networks (:attr:`petctfm.core.registry.Method.encoders`, e.g. a method's own ViT). A new generic backbone
family adds one adapter class here; a method's own network declares its adapter in its method record; no
caller branches on the network type.

Families (scale s has stride 2^s; F = SwinUNETR ``feature_size``):

- SwinUNETR: ``[encoder1(x), encoder2(h0), encoder3(h1), encoder4(h2), h3, encoder10(h4)]`` with ``h`` the
  Swin-ViT hidden states (exactly what SwinUNETR's own decoder consumes): strides 1..32, channels
  F, F, 2F, 4F, 8F, 16F.
- DynUNet: the input block, every down-sampling stage and the bottleneck: strides 1, 2, 4, ..., channels
  the network's ``filters``.
- nnU-Net's ``PlainConvUNet`` / ``ResidualEncoderUNet`` (``dynamic_network_architectures``; backbones
  ``nnunet-plain`` / ``nnunet-resenc``): the encoder's skips, one per stage (the stem runs inside stage 0 for
  the residual one): strides 1, 2, 4, ..., channels ``features_per_stage``.

:func:`encoder_state_dict` / :func:`load_encoder` save and restore only the encoder's weights.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from petctfm.core.device import unwrap_model
from petctfm.core.errors import InputError


class Encoder(Protocol):
    """The encoder of one backbone network (an adapter around it; it holds no weights of its own)."""

    net: nn.Module  # the bare backbone network
    prefixes: tuple[str, ...]  # state-dict prefixes (keys of ``net.state_dict()``) of the encoder's parameters

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, X, Y, Z) -> feature maps finest first; scale s is (B, channels()[s], X/2^s, Y/2^s, Z/2^s)
        (stride 2^s for both families here)."""
        ...

    def channels(self) -> list[int]:
        """Channels of each feature map of :meth:`features`, finest first."""
        ...

    def stages(self) -> list[list[nn.Module]]:
        """The encoder as stages, finest (input) first, each a list of modules; together they hold every
        parameter under :attr:`prefixes`."""
        ...


class SwinUNETREncoder:
    """MONAI ``SwinUNETR``: the Swin-ViT and the skip encoders ``encoder1-4, encoder10``.

    Stages: (patch embedding, ``encoder1``), then per Swin stage k = 1..4 (``layers{k}``, its v2 residual conv
    block ``layers{k}c`` when present, the skip encoder of that scale).
    """

    prefixes = ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")

    def __init__(self, net: nn.Module):
        self.net = net

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.net
        h = m.swinViT(x, m.normalize)
        return [m.encoder1(x), m.encoder2(h[0]), m.encoder3(h[1]), m.encoder4(h[2]), h[3], m.encoder10(h[4])]

    def channels(self) -> list[int]:
        f = int(self.net.swinViT.embed_dim)
        return [f, f, 2 * f, 4 * f, 8 * f, 16 * f]

    def stages(self) -> list[list[nn.Module]]:
        m, v = self.net, self.net.swinViT
        stages = [[v.patch_embed, m.encoder1]]
        skips = [m.encoder2, m.encoder3, m.encoder4, m.encoder10]
        for k in range(1, 5):
            mods = [getattr(v, f"layers{k}")]
            if hasattr(v, f"layers{k}c"):
                mods.append(getattr(v, f"layers{k}c"))
            stages.append(mods + [skips[k - 1]])
        return stages


class DynUNetEncoder:
    """MONAI ``DynUNet`` (the residual UNet): input block, each down-sampling stage, bottleneck; one stage each."""

    prefixes = ("input_block.", "downsamples.", "bottleneck.")

    def __init__(self, net: nn.Module):
        self.net = net

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.net
        feats = [m.input_block(x)]
        for down in m.downsamples:
            feats.append(down(feats[-1]))
        feats.append(m.bottleneck(feats[-1]))
        return feats

    def channels(self) -> list[int]:
        return [int(f) for f in self.net.filters]

    def stages(self) -> list[list[nn.Module]]:
        m = self.net
        return [[m.input_block], *[[d] for d in m.downsamples], [m.bottleneck]]


class NNUNetEncoder:
    """nnU-Net v2's ``PlainConvUNet`` and ``ResidualEncoderUNet``: ``net.encoder`` returns one skip per stage
    (stage 0 has stride 1, so scale s has stride 2^s). Stages: ``encoder.stages[s]``, the residual network's
    ``encoder.stem`` together with stage 0."""

    prefixes = ("encoder.",)

    def __init__(self, net: nn.Module):
        self.net = net

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net.encoder(x))

    def channels(self) -> list[int]:
        return [int(c) for c in self.net.encoder.output_channels]

    def stages(self) -> list[list[nn.Module]]:
        enc = self.net.encoder
        stages = [[s] for s in enc.stages]
        if getattr(enc, "stem", None) is not None:
            stages[0].insert(0, enc.stem)
        return stages


#: Adapter per network class name (looked up along the class's MRO, so subclasses are covered). Keyed by
#: name so that importing this module does not import MONAI.
ENCODERS: dict[str, Callable[[nn.Module], Encoder]] = {
    "SwinUNETR": SwinUNETREncoder,
    "DynUNet": DynUNetEncoder,
    "PlainConvUNet": NNUNetEncoder,
    "ResidualEncoderUNet": NNUNetEncoder,
}


def register_encoder(class_name: str, adapter: Callable[[nn.Module], Encoder]) -> None:
    """Make :func:`get_encoder` use ``adapter(net)`` for networks of class ``class_name`` (or subclasses)."""
    ENCODERS[class_name] = adapter


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone network inside ``torch.compile`` / DDP and method wrappers with a ``backbone`` attribute."""
    model = unwrap_model(model)
    while isinstance(getattr(model, "backbone", None), nn.Module):
        model = unwrap_model(model.backbone)
    return model


def get_encoder(model: nn.Module) -> Encoder:
    """The :class:`Encoder` of ``model`` (a backbone, or anything :func:`backbone_of` unwraps to one)."""
    net = backbone_of(model)
    for cls in type(net).__mro__:
        if cls.__name__ in ENCODERS:
            return ENCODERS[cls.__name__](net)
    from petctfm.core.registry import encoder_adapters  # the networks that methods bring (Method.encoders)

    brought = encoder_adapters()
    for cls in type(net).__mro__:
        if cls.__name__ in brought:
            return brought[cls.__name__](net)
    raise TypeError(f"not a petctfm backbone: {type(net).__name__}")


def encoder_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Multi-scale encoder features of ``x`` (B, C, X, Y, Z), finest first (see the module docstring)."""
    return get_encoder(model).features(x)


#: The output layer of each family (a 1x1x1 convolution), as a dotted path from the network (integer parts
#: index a module list, ``-1`` the last); its input is the network's last decoder features, full resolution
#: (SwinUNETR ``out``: F channels; DynUNet ``output_block``: ``filters[0]``; nnU-Net's networks
#: ``decoder.seg_layers[-1]``: ``features_per_stage[0]``).
OUTPUT_LAYERS: dict[str, str] = {"SwinUNETR": "out", "DynUNet": "output_block",
                                 "PlainConvUNet": "decoder.seg_layers.-1", "ResidualEncoderUNet": "decoder.seg_layers.-1"}


def _output_attr(net: nn.Module) -> str | None:
    return next((OUTPUT_LAYERS[c.__name__] for c in type(net).__mro__ if c.__name__ in OUTPUT_LAYERS), None)


def _resolve(net: nn.Module, path: str) -> nn.Module:
    """``net`` followed along a dotted path; a part that is an integer indexes (``decoder.seg_layers.-1``)."""
    m = net
    for part in path.split("."):
        m = m[int(part)] if part.lstrip("-").isdigit() else getattr(m, part)
    return m


def has_output_layer(model: nn.Module) -> bool:
    """Whether ``model``'s backbone is UNet-shaped with a known output layer (so :func:`decoder_features` works);
    an encoder-only backbone (a ViT) has none."""
    return _output_attr(backbone_of(model)) is not None


def output_layer(model: nn.Module) -> nn.Module:
    """The output layer of ``model``'s backbone (:data:`OUTPUT_LAYERS`, looked up along the class's MRO)."""
    net = backbone_of(model)
    attr = _output_attr(net)
    if attr is None:
        raise TypeError(f"no output layer known for {type(net).__name__} (add it to OUTPUT_LAYERS)")
    return _resolve(net, attr)


def decoder_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last decoder features of ``x`` (B, C, X, Y, Z): the input of the backbone's output layer,
    (B, F_dec, X, Y, Z), captured by a forward pre-hook during one full forward pass (deep-supervision heads
    of lower resolutions are other layers, so the network may be in either mode)."""
    seen: list[torch.Tensor] = []
    handle = output_layer(model).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        backbone_of(model)(x)
    finally:
        handle.remove()
    return seen[-1]


def encoder_stages(model: nn.Module) -> list[list[nn.Module]]:
    """The encoder as a list of stages, finest (input) first, each a list of modules."""
    return get_encoder(model).stages()


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights (keys as in the backbone's own ``state_dict``)."""
    enc = get_encoder(model)
    return {k: v for k, v in enc.net.state_dict().items() if k.startswith(enc.prefixes)}


def load_encoder(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load encoder weights into ``model`` (strict on the encoder: every encoder key, matching shapes).

    ``state`` may be an :func:`encoder_state_dict` or a full backbone / MAE state dict (``backbone.``
    prefixes are stripped; decoder keys are ignored). The decoder keeps its current weights.
    """
    enc = get_encoder(model)
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    given = {k: v for k, v in state.items() if k.startswith(enc.prefixes)}
    own = {k: v for k, v in enc.net.state_dict().items() if k.startswith(enc.prefixes)}
    missing = sorted(set(own) - set(given))
    if missing:
        raise InputError(f"encoder weights incomplete: {len(missing)} missing keys (first: {missing[0]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(given[k].shape)]
    if bad:
        raise InputError(
            f"encoder weights do not fit this backbone: {bad[0]} has shape {tuple(given[bad[0]].shape)}, "
            f"expected {tuple(own[bad[0]].shape)} (different backbone or number of input channels?)"
        )
    enc.net.load_state_dict(given, strict=False)
    return model


__all__ = [
    "Encoder", "SwinUNETREncoder", "DynUNetEncoder", "NNUNetEncoder", "ENCODERS", "register_encoder", "backbone_of",
    "get_encoder", "encoder_features", "encoder_stages", "encoder_state_dict", "load_encoder", "OUTPUT_LAYERS",
    "output_layer", "has_output_layer", "decoder_features",
]
