"""The lesion-segmentation network of fine-tuning: a pretrained backbone with a 2-class output, its encoder
freezing and its layer-wise learning-rate decay.

1. **Architecture**: the backbone of the pretrained run (its config ``model.backbone``, e.g. SwinUNETR-v2 or
   the residual UNet), rebuilt with ``out_channels = 2`` (background, lesion) and the same input channels
   (``joint`` [PET, CT] = 2, ``pet`` / ``ct`` = 1). Wrapped in :class:`LesionSegmenter` (``.backbone``), the
   same attribute the MAE uses, so the encoder helpers (:mod:`petctfm.models.encoders`) work on both.
2. **Freezing** (:func:`freeze_encoder`): every parameter of the encoder stages gets ``requires_grad = False``.
3. **Layer-wise LR decay** (:func:`layer_decay_groups`): deeper encoder stages keep more of the LR,
   decoder and head the full LR.

Shapes: input (B, C, X, Y, Z) float32 normalized; logits (B, 2, X, Y, Z).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from petctfm.data.loader import MODES
from petctfm.models.backbones import build_backbone
from petctfm.models.encoders import encoder_stages

METHOD = "finetune_segmentation"
N_CLASSES = 2  # background, lesion


def in_channels(cfg: dict[str, Any]) -> int:
    """Input channels of a config's mode: ``joint`` 2, ``pet`` / ``ct`` 1."""
    return len(MODES[cfg["data"]["mode"]])


class LesionSegmenter(nn.Module):
    """``forward(x (B, C, X, Y, Z)) -> logits (B, 2, X, Y, Z)``; the network is ``self.backbone``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def n_classes(cfg: dict[str, Any]) -> int:
    """Output channels of a config: 2 for lesions (background, lesion), plus one per auxiliary organ
    (``task.aux_classes``: trained, never written); 1 + the number of organs for task ``organs``
    (``task.classes``; :func:`petctfm.inference.model.output_classes`)."""
    from petctfm.inference.model import output_classes

    return len(output_classes(cfg)) + len((cfg.get("task") or {}).get("aux_classes") or {})


def build_model(cfg: dict[str, Any]) -> LesionSegmenter:
    """The (untrained) segmentation model a config describes; what ``load_model`` calls for a checkpoint.
    Logits (B, :func:`n_classes`, X, Y, Z)."""
    backbone = build_backbone(cfg["model"]["backbone"], in_channels(cfg), n_classes(cfg),
                              **cfg["model"].get("overrides", {}))
    return LesionSegmenter(backbone)



def freeze_encoder(model: nn.Module) -> int:
    """Set ``requires_grad = False`` on every encoder parameter; returns how many tensors were frozen."""
    n = 0
    for stage in encoder_stages(model):
        for mod in stage:
            for p in mod.parameters():
                p.requires_grad_(False)
                n += 1
    return n


def layer_decay_groups(model: nn.Module, lr: float, decay: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """AdamW param groups with layer-wise LR decay.

    With S encoder stages (finest first, index s = 0 .. S-1), stage s gets ``lr * decay ** (S - s)``: the
    bottleneck ``lr * decay``, the input stage ``lr * decay ** S``; decoder and head get ``lr``. Trainable
    parameters only; weight decay only on >= 2-D tensors (as the trainer). Each group has ``lr_scale``.
    """
    stages = encoder_stages(model)
    scale: dict[int, float] = {}
    for s, mods in enumerate(stages):
        for mod in mods:
            for p in mod.parameters():
                scale[id(p)] = decay ** (len(stages) - s)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((scale.get(id(p), 1.0), p.dim() >= 2), []).append(p)
    return [{"params": ps, "lr": lr * sc, "lr_scale": sc, "weight_decay": weight_decay if wd else 0.0}
            for (sc, wd), ps in sorted(groups.items(), key=lambda kv: kv[0])]


__all__ = ["METHOD", "N_CLASSES", "n_classes", "in_channels", "LesionSegmenter", "build_model", "freeze_encoder",
           "layer_decay_groups"]
