"""A trained model's input: raw [SUV, HU] volumes normalized with the statistics saved in its config.

The statistics are the training data's (``dataset.json["normalization"]``, copied into every model config as
``preprocessing.normalization``); the arithmetic is :func:`petctfm.data.format.apply_normalization`, the one
implementation shared with training patches and the probe's frozen encoders, so all three give the same
numbers.

Shapes: raw input (2, X, Y, Z) [SUV, HU]; output (C, X, Y, Z) float32 of the model's channels (``data.mode``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from petctfm.core.errors import InputError
from petctfm.data.format import apply_normalization, norm_table
from petctfm.data.loader import MODES


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
    x = apply_normalization(np.asarray(raw, dtype=np.float32)[chans], table)
    bg = apply_normalization(table[:, :1], table).reshape(-1)
    return np.ascontiguousarray(x), bg


__all__ = ["normalized_input"]
