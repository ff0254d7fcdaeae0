"""The one input normalization of a trained model: ``(clip(x, lo, hi) - mean) / std`` per channel.

The statistics are the training data's (``dataset.json["normalization"]``, copied into every model config as
``preprocessing.normalization``). :func:`normalize` is the single implementation, on NumPy arrays (fine-tuned
models: :func:`normalized_input`, used by validation, ``petctfm predict`` and ``predict_split``) and on torch
tensors (frozen encoders of the probe and staging, per batch on the device): the same operations in float32,
so both give the same numbers. It equals :func:`petctfm.data.format.normalize` (training patches).

Shapes: raw input (C_raw, ...) or (B, C_raw, ...) [SUV, HU]; ``table`` (C, 4) float32 rows
``[clip_lo, clip_hi, mean, std]``; output (C, ...) / (B, C, ...) float32 of the selected channels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.data.loader import MODES


def norm_table(normalization: dict[str, Any], channels: Sequence[int]) -> np.ndarray:
    """(C, 4) float32 rows ``[clip_lo, clip_hi, mean, std]`` of the raw channels ``channels`` (indices into
    :data:`petctfm.data.format.CHANNELS`) from a ``normalization`` dict (``{name: {clip, mean, std}}``)."""
    rows = []
    for i in channels:
        p = normalization[fmt.CHANNELS[i]]
        rows.append([float(p["clip"][0]), float(p["clip"][1]), float(p["mean"]), float(p["std"])])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def normalize(x: np.ndarray | torch.Tensor, table: np.ndarray | torch.Tensor,
              channel_axis: int = 0) -> np.ndarray | torch.Tensor:
    """``(clip(x, lo, hi) - mean) / std`` per channel, float32; NumPy in -> NumPy out, torch in -> torch out.

    ``x``: the channels of ``table``'s rows along ``channel_axis`` (0 for (C, ...), 1 for (B, C, ...)).
    """
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    if torch.is_tensor(x):
        x = x.float()
        t = torch.as_tensor(table, dtype=torch.float32, device=x.device)
        lo, hi, mean, std = (t[:, i].view(shape) for i in range(4))
        return (torch.minimum(torch.maximum(x, lo), hi) - mean) / std
    x = np.asarray(x, dtype=np.float32)
    t = np.asarray(table, dtype=np.float32)
    lo, hi, mean, std = (t[:, i].reshape(shape) for i in range(4))
    return (np.minimum(np.maximum(x, lo), hi) - mean) / std


def normalized_input(raw: np.ndarray, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Raw [SUV, HU] (2, X, Y, Z) -> (network input (C, X, Y, Z) float32, background (C,) normalized).

    Uses the model config's ``preprocessing.normalization`` and ``data.mode``; background = each channel's
    lower clip value (0 SUV, air) after normalization, used to pad volumes smaller than the patch.
    """
    pre = cfg.get("preprocessing") or {}
    if "normalization" not in pre:
        raise InputError("model config has no preprocessing.normalization (trained without a dataset?)")
    chans = list(MODES[cfg["data"]["mode"]])
    table = norm_table(pre["normalization"], chans)
    x = normalize(np.asarray(raw, dtype=np.float32)[chans], table)
    bg = normalize(table[:, :1], table).reshape(-1)
    return np.ascontiguousarray(x), bg


__all__ = ["norm_table", "normalize", "normalized_input"]
