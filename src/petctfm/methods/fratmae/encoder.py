"""FratMAE's encoder as the generic downstream code reads it: the adapter of its ``TwinViT`` (registered
through the method record, :mod:`petctfm.methods.fratmae.plugin`), the stack geometry a pretraining run
records, and how staging reads one whole case (the central whole-body stack, not tiles).

Shapes: raw case (2, X, Y, Z) [SUV, HU]; stack (C, D, H, W) on the pretraining grid; token maps
(1, C_s, d, h, w) at stride ``patch``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from petctfm.core.device import autocast_for

#: The data keys of a FratMAE config that fix its whole-body stack geometry.
STACK_KEYS = ("grid", "stack", "depth", "k")


class TwinViTEncoder:
    """FratMAE's ``TwinViT`` (twin PET / CT ViTs, or one joint ViT): the patch tokens after every quarter of the
    depth, PET and CT concatenated along channels, as maps on the token grid (all at stride ``patch``, not
    2^s: a ViT has one scale). Stages: the patch embeddings, then block i of every encoder, then the norms."""

    prefixes = ("encoders.",)

    def __init__(self, net: nn.Module):
        self.net = net

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(x)

    def channels(self) -> list[int]:
        return self.net.feature_channels()

    def stages(self) -> list[list[nn.Module]]:
        encs = list(self.net.encoders.values())
        first: list[nn.Module] = [e.patch_embed for e in encs]
        first += [_ParamHolder(e.cls_token) for e in encs if e.cls_token is not None]
        blocks = [[e.blocks[i] for e in encs] for i in range(len(encs[0].blocks))]
        return [first, *blocks[:-1], blocks[-1] + [e.norm for e in encs]]


class _ParamHolder(nn.Module):
    """A bare parameter (a ViT's CLS token) as a module, so stages list modules only."""

    def __init__(self, p: nn.Parameter):
        super().__init__()
        self.p = p


def stack_record(cfg: dict[str, Any]) -> dict[str, Any]:
    """The whole-body stack geometry a FratMAE run was pretrained on (``{"stack": {grid, stack, depth, k}}``),
    what the probe and staging record beside patch size and spacing; ``{}`` for a config without one."""
    data = cfg.get("data") or {}
    if "grid" in data and "stack" in data:
        return {"stack": {k: data[k] for k in STACK_KEYS}}
    return {}


@torch.no_grad()
def stack_features(enc: Any, image: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """A FratMAE encoder's maps of a raw (2, X, Y, Z) case: normalized with the encoder's statistics
    (``enc.normalize``), resized to its pretraining grid, the central stack
    (:func:`petctfm.methods.fratmae.stacks.central_stack`); ``enc`` is a
    :class:`petctfm.methods.probe.FrozenEncoder` whose ``geometry`` is :func:`stack_record`'s."""
    from petctfm.methods.fratmae.stacks import StackConfig, central_stack
    from petctfm.models.encoders import encoder_features

    raw = torch.from_numpy(np.array(image, np.float32))[None].to(device)
    x = central_stack(enc.normalize(raw)[0], StackConfig.from_dict(enc.geometry["stack"]))[None]
    # bf16 on CUDA only: on the CPU (torch 2.13, oneDNN) the bf16 patch-embedding Conv3d of an axial tiny stack
    # (1, 1, 32, 32, 8) returned NaN on some calls (not on others, same input); fp32 there is exact and cheap
    with autocast_for(device) if device.type == "cuda" else contextlib.nullcontext():
        return encoder_features(enc.backbone, x)


__all__ = ["STACK_KEYS", "TwinViTEncoder", "stack_record", "stack_features"]
