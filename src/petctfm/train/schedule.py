"""Optimizer and learning-rate schedule of the generic trainer: AdamW with decoupled weight decay on
>= 2-D weights (or a task's own param groups with ``lr_scale``), and a linear warm-up + cosine (or nnU-Net's poly) LR factor.

Used by :func:`petctfm.train.trainer.train`; a method that needs per-group LRs (e.g. layer-wise decay)
supplies ``TrainTask.param_groups`` and these functions apply ``cfg.lr * lr_scale`` to each group.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from petctfm.core.errors import PetctfmError
from petctfm.train.config import TrainConfig


class WarmupCosine:
    """LR factor: linear warm-up ``(step + 1) / warmup`` for ``step < warmup``, then cosine from 1 to
    ``min_ratio`` over ``horizon - warmup`` steps, then ``min_ratio``.

    ``step`` is the number of optimizer steps already taken (``LambdaLR``'s ``last_epoch``), so the first
    step uses ``1 / warmup`` of the LR, never 0. A callable object rather than a lambda: ``LambdaLR`` saves
    its attributes in ``state_dict``, so a resumed run keeps the original horizon.
    """

    def __init__(self, warmup: int, horizon: int, min_ratio: float):
        self.warmup = int(warmup)
        self.horizon = int(horizon)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.horizon - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * self.decay(progress)

    def decay(self, progress: float) -> float:
        """The decay from 1 (``progress`` 0, end of warm-up) to 0 (``progress`` 1, the horizon)."""
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupPoly(WarmupCosine):
    """LR factor of nnU-Net: linear warm-up as :class:`WarmupCosine`, then ``(1 - progress) ** exponent``
    (exponent 0.9) from 1 down to ``min_ratio`` at ``horizon``, then ``min_ratio``."""

    def __init__(self, warmup: int, horizon: int, min_ratio: float, exponent: float = 0.9):
        super().__init__(warmup, horizon, min_ratio)
        self.exponent = float(exponent)

    def decay(self, progress: float) -> float:
        return (1.0 - progress) ** self.exponent


#: ``TrainConfig.lr_schedule`` -> the LR factor class (warm-up, then cosine or nnU-Net's poly decay).
SCHEDULES = {"cosine": WarmupCosine, "poly": WarmupPoly}


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                    groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    """AdamW (``cfg.optimizer="adamw"``) or SGD with Nesterov momentum ``cfg.beta1`` (``"sgd"``, nnU-Net's
    optimizer: lr 1e-2, momentum 0.99, weight decay 3e-5); weight decay on >= 2-D weights only (biases and norm
    scales are not decayed).

    ``groups``: the task's own param groups (:meth:`TrainTask.param_groups`), each ``{"params": [...],
    "weight_decay": float, "lr_scale": float}``; group LR = ``cfg.lr * lr_scale`` and the warm-up/cosine
    schedule multiplies every group alike, so the ratios between groups hold for the whole run. Every
    trainable parameter must be in exactly one group (checked: a forgotten parameter would silently not train).
    """
    if groups is None:
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                  {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    else:
        seen: dict[int, int] = {}
        for g in groups:
            for p in g["params"]:
                seen[id(p)] = seen.get(id(p), 0) + 1
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        if any(n > 1 for n in seen.values()) or set(seen) != trainable:
            raise PetctfmError("task param_groups must hold every trainable parameter exactly once "
                               f"({len(trainable)} trainable, {len(seen)} in groups)")
    groups = [{**g, "params": list(g["params"]), "lr": cfg.lr * float(g.get("lr_scale", 1.0)),
               "lr_scale": float(g.get("lr_scale", 1.0))} for g in groups]
    kw: dict[str, Any] = {"fused": True} if (cfg.fused_optimizer and device.type == "cuda") else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr, momentum=cfg.beta1, nesterov=True,
                               **kw)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **kw)


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The LR of the un-scaled groups (``lr_scale`` 1; the largest LR when every group is scaled)."""
    plain = [g["lr"] for g in optimizer.param_groups if g.get("lr_scale", 1.0) == 1.0]
    return float(plain[0] if plain else max(g["lr"] for g in optimizer.param_groups))
