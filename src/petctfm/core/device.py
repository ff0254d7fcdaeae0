"""Device choice, inference autocast and model unwrapping: one owner for every layer.

- :func:`resolve_device`: ``auto``/None -> CUDA when available, else CPU.
- :func:`autocast_for`: bf16 autocast on CUDA, nothing (fp32) on CPU.
- :func:`unwrap_model`: the bare module under ``torch.compile``, DDP and ``AveragedModel``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from petctfm.core.errors import InputError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:1`` (or a device) as given;
    asking for CUDA on a machine without it is a one-line InputError."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return dev


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, nothing (fp32) on CPU: how petctfm runs inference and frozen encoders."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under ``torch.compile`` (``_orig_mod``) and DDP / AveragedModel / any wrapper whose
    ``module`` attribute is the wrapped network."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


__all__ = ["resolve_device", "autocast_for", "unwrap_model"]
