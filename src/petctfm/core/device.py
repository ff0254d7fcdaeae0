"""Device choice, inference autocast and model unwrapping: one owner for every layer.

- :func:`resolve_device`: ``auto``/None -> CUDA when available, else CPU.
- :func:`cpu_has_bf16`: whether this CPU computes bf16 natively (AMX / AVX512-BF16).
- :func:`autocast_for`: bf16 autocast on CUDA and on a CPU with native bf16, else nothing (fp32).
- :func:`unwrap_model`: the bare module under ``torch.compile``, DDP and ``AveragedModel``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

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


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AMX or AVX512-BF16), where bf16 autocast pays off (2.4x faster
    3D-UNet steps on AMX, docs/segmentation-recipe.md); ``PETCTFM_CPU_BF16=0`` says no, ``=1`` yes."""
    forced = os.environ.get("PETCTFM_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            return True
        info = Path("/proc/cpuinfo")
        return info.is_file() and "avx512_bf16" in info.read_text()
    except Exception:  # noqa: BLE001 - a probe: no answer means no
        return False


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA and on a CPU with native bf16 (:func:`cpu_has_bf16`), else nothing (fp32): how
    petctfm runs inference and frozen encoders."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
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


__all__ = ["resolve_device", "cpu_has_bf16", "autocast_for", "unwrap_model"]
