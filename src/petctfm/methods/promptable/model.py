"""The promptable network: an image encoder whose embedding is cached, and a light prompt-conditioned decoder.

1. **Architecture** (``model.design``, docs/promptable.md):

   - ``"cached"`` (default): the backbone named by ``model.backbone`` (residual UNet / SwinUNETR-v2,
     :mod:`petctfm.models.backbones`) reads the **image only** and returns an embedding of
     ``model.embed_channels`` feature maps at patch resolution (:meth:`PromptSegmenter.embed`: once per crop,
     cached by the session). The mask decoder (:meth:`PromptSegmenter.decode`: every click) is a small residual
     UNet (MONAI ``DynUNet``, filters ``model.head_filters``, every stride 2) on the embedding concatenated with
     the four prompt channels: its first block reads them at full resolution with stride 2, its own encoder
     carries prompts and image features together to 1/4 and 1/8, and it predicts the logit at 1/2 resolution,
     upsampled (trilinear) to the patch, as SAM predicts a low-resolution mask. Working at 1/2 makes a click
     ~5-15x cheaper than a full-resolution decoder (measured, docs/promptable.md).
   - ``"channels"`` (nnInteractive-style, the first design; checkpoints without ``model.design``): the backbone
     reads image + prompt channels; :meth:`embed` is the identity, so every click runs the whole network.

   Both designs have the same interface (``embed`` / ``decode`` / ``forward``), used by training
   (``task.py``) and the session alike. The backbone is ``.backbone`` so the encoder helpers
   (:mod:`petctfm.models.encoders`) reach it.
2. **Initialization from a pretrained run** (:func:`load_pretrained_encoder`): only the encoder is transferred
   (:func:`petctfm.models.encoders.load_encoder`). Tensors whose input-channel dimension differs (the first
   convolutions) are *inflated*: each image channel of this model takes the pretrained weights of the same
   modality (PET from a joint [PET, CT] MAE), prompt channels (design ``channels``) start at zero, so at step 0
   the encoder computes exactly the pretrained encoder's features of the image.

Shapes: image (B, C_img, X, Y, Z) float32; prompts (B, 4, X, Y, Z); embedding (B, E, X, Y, Z) (``cached``: E =
``embed_channels``; ``channels``: the image itself); logits (B, 1, X, Y, Z).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from petctfm.core.errors import InputError
from petctfm.data.loader import MODES
from petctfm.methods.promptable.prompts import N_PROMPT_CHANNELS
from petctfm.models.backbones import build_backbone
from petctfm.models.encoders import get_encoder, load_encoder

METHOD = "promptable"
DESIGNS = ("cached", "channels")
HEAD_STRIDES = (2, 2, 2, 2)  # every decoder stage halves; 3 stages need patch sides divisible by 8


def image_channels(cfg: dict[str, Any]) -> tuple[int, ...]:
    """Indices into [PET, CT] of the image channels of a config's ``data.mode`` (``pet``: (0,))."""
    return MODES[cfg["data"]["mode"]]


def design_of(cfg: dict[str, Any]) -> str:
    """``model.design`` of a config; a config without one (saved before the cached design) is ``channels``."""
    d = cfg["model"].get("design", "channels")
    if d not in DESIGNS:
        raise InputError(f"model.design must be one of {', '.join(DESIGNS)}, got {d!r}")
    return d


class PromptSegmenter(nn.Module):
    """``forward(image, prompts) = decode(embed(image), prompts)``; ``head`` None = the ``channels`` design."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def design(self) -> str:
        return "channels" if self.head is None else "cached"

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C_img, X, Y, Z) -> the embedding a session caches per crop (the image itself for ``channels``)."""
        return image if self.head is None else self.backbone(image)

    def decode(self, embedding: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """(embedding, prompts (B, 4, X, Y, Z)) -> logits (B, 1, X, Y, Z)."""
        x = torch.cat([embedding, prompts.to(embedding.dtype)], dim=1)
        if self.head is None:
            return self.backbone(x)
        return self.head(x)

    def forward(self, image: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return self.decode(self.embed(image), prompts)


class PromptDecoder(nn.Module):
    """The ``cached`` design's mask decoder on ``x`` = [embedding, prompts] (B, E + 4, X, Y, Z): ``coarse`` (a
    small residual UNet at 1/2 resolution) upsampled (trilinear) to the patch; with ``refine`` (a 3x3x3 conv on
    [upsampled coarse features, x] at full resolution, ~25 M multiply-adds at 32^3) the logit sees the
    embedding's and the clicks' full-resolution detail, else the coarse output is the logit."""

    def __init__(self, coarse: nn.Module, refine: nn.Module | None = None):
        super().__init__()
        self.coarse, self.refine = coarse, refine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(self.coarse(x), size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
        return y if self.refine is None else self.refine(torch.cat([y, x], dim=1))


REFINE_CHANNELS = 8


def build_head(in_channels: int, filters: list[int], refine: bool = True) -> nn.Module:
    """The ``cached`` design's :class:`PromptDecoder`: MONAI DynUNet (every stage stride 2, 3 or 4 stages) with
    ``REFINE_CHANNELS`` outputs + a full-resolution 3x3x3 refinement (``refine``), else one output channel."""
    from monai.networks.nets import DynUNet

    n = len(filters)
    strides = list(HEAD_STRIDES[:n])
    coarse = DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=REFINE_CHANNELS if refine else 1,
                     kernel_size=[3] * n, strides=strides, upsample_kernel_size=strides[1:], filters=list(filters),
                     res_block=True)
    return PromptDecoder(coarse, nn.Conv3d(REFINE_CHANNELS + in_channels, 1, 3, padding=1) if refine else None)


def build_model(cfg: dict[str, Any]) -> PromptSegmenter:
    """The (untrained) promptable model a config describes; what ``load_model`` calls for a checkpoint."""
    m, n_img = cfg["model"], len(image_channels(cfg))
    over = m.get("overrides") or {}
    if design_of(cfg) == "channels":
        return PromptSegmenter(build_backbone(m["backbone"], n_img + N_PROMPT_CHANNELS, 1, **over))
    e = int(m.get("embed_channels", 16))
    filters = [int(f) for f in m.get("head_filters", [16, 32, 32])]
    if e < 1 or not 3 <= len(filters) <= len(HEAD_STRIDES) or min(filters) < 1:
        raise InputError(f"model.embed_channels must be >= 1 and model.head_filters 3..{len(HEAD_STRIDES)} "
                         f"positive widths, got {e} / {filters}")
    # configs saved before the refinement existed have no model.head_refine: their decoder had none
    head = build_head(e + N_PROMPT_CHANNELS, filters, refine=bool(m.get("head_refine", False)))
    return PromptSegmenter(build_backbone(m["backbone"], n_img, e, **over), head)



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


__all__ = ["METHOD", "DESIGNS", "HEAD_STRIDES", "image_channels", "design_of", "PromptSegmenter", "PromptDecoder",
           "REFINE_CHANNELS", "build_head",
           "build_model", "load_pretrained_encoder"]
