"""The promptable network: a petctfm backbone whose input is the image plus the four prompt channels.

1. **Architecture** (nnInteractive-style, docs/promptable.md): the backbone named by ``model.backbone``
   (residual UNet / SwinUNETR-v2, :mod:`petctfm.models.backbones`) with ``in_channels`` = image channels
   (``pet`` 1, ``joint`` [PET, CT] 2) + :data:`~petctfm.methods.promptable.prompts.N_PROMPT_CHANNELS` and one
   output channel (the target's logit). Wrapped in :class:`PromptSegmenter` (``.backbone``) so the encoder
   helpers (:mod:`petctfm.models.encoders`) reach it.
2. **Initialization from a pretrained run** (:func:`load_pretrained_encoder`): only the encoder is transferred
   (:func:`petctfm.models.encoders.load_encoder`). Tensors whose input-channel dimension differs (the first
   convolutions) are *inflated*: each image channel of this model takes the pretrained weights of the same
   modality (PET from a joint [PET, CT] MAE), prompt channels start at zero, so at step 0 the network
   computes exactly the pretrained encoder's features of the image.

Shapes: input (B, C_img + 4, X, Y, Z) float32; logits (B, 1, X, Y, Z).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from petctfm.core.errors import InputError
from petctfm.data.loader import MODES
from petctfm.methods.promptable.prompts import N_PROMPT_CHANNELS
from petctfm.models.backbones import build_backbone
from petctfm.models.encoders import get_encoder, load_encoder
from petctfm.train.checkpoint import register_model_builder

METHOD = "promptable"


def image_channels(cfg: dict[str, Any]) -> tuple[int, ...]:
    """Indices into [PET, CT] of the image channels of a config's ``data.mode`` (``pet``: (0,))."""
    return MODES[cfg["data"]["mode"]]


class PromptSegmenter(nn.Module):
    """``forward(image (B, C, X, Y, Z), prompts (B, 4, X, Y, Z)) -> logits (B, 1, X, Y, Z)``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return self.backbone(torch.cat([image, prompts], dim=1))


def build_model(cfg: dict[str, Any]) -> PromptSegmenter:
    """The (untrained) promptable model a config describes; what ``load_model`` calls for a checkpoint."""
    n_in = len(image_channels(cfg)) + N_PROMPT_CHANNELS
    return PromptSegmenter(build_backbone(cfg["model"]["backbone"], n_in, 1, **cfg["model"].get("overrides", {})))


register_model_builder(METHOD, build_model)


def load_pretrained_encoder(model: PromptSegmenter, state: dict[str, torch.Tensor], pretrained_mode: str,
                            mode: str) -> list[str]:
    """Load a pretrained encoder (``state``: a backbone / MAE state dict of a run trained in ``pretrained_mode``)
    into ``model`` (built for ``mode``), inflating input convolutions; returns the inflated keys.

    A pretrained run without one of this model's modalities (a CT-only MAE for a PET model) is an InputError.
    """
    src, dst = MODES[pretrained_mode], MODES[mode]
    missing = [c for c in dst if c not in src]
    if missing:
        raise InputError(f"pretrained run (mode {pretrained_mode!r}) has no weights for the input channels of mode "
                         f"{mode!r}")
    enc = get_encoder(model)
    own = enc.net.state_dict()
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    inflated = []
    for k, v in list(state.items()):
        if k in own and v.dim() >= 2 and v.shape[1] == len(src) and own[k].shape[1] != v.shape[1] \
                and own[k].shape[0] == v.shape[0] and own[k].shape[2:] == v.shape[2:]:
            w = torch.zeros_like(own[k])
            for j, c in enumerate(dst):
                w[:, j] = v[:, src.index(c)]
            state[k] = w
            inflated.append(k)
    load_encoder(model, state)
    return inflated


__all__ = ["METHOD", "image_channels", "PromptSegmenter", "build_model", "load_pretrained_encoder"]
