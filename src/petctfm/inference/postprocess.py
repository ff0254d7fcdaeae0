"""What is done to a lesion mask after the probability threshold: small connected components removed.

A segmentation model's false positives on PET are often scattered specks of a few voxels (physiological uptake,
noise) that cost Dice and count as false-positive lesions. nnU-Net determines its post-processing on validation
data ("keep the largest component" when it helps). For lesions, where a patient may have many, the analogue is
a **minimum lesion volume**: components smaller than ``min_ml`` are removed. A fine-tuning run can choose it on
its validation split (``postprocess.choose_min_lesion_ml``, :func:`choose_min_ml`), and the chosen value travels
in the best checkpoint's config (``postprocess.min_lesion_ml``), so every prediction path applies it
(:func:`lesion_mask`). Components are 18-connected, as ``petctfm evaluate`` counts lesions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

#: Connectivity of a lesion component (18: faces and edges), the one the evaluation counts lesions with.
CONNECTIVITY = 18


def min_voxels(spacing: Sequence[float], min_ml: float) -> int:
    """The smallest component (voxels) of at least ``min_ml`` ml at ``spacing`` (mm); at least 1."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    return max(1, int(math.ceil(float(min_ml) / voxel_ml - 1e-9)))


def remove_small_components(mask: np.ndarray, spacing: Sequence[float], min_ml: float) -> np.ndarray:
    """uint8 (X, Y, Z) ``mask`` without its 18-connected components smaller than ``min_ml`` ml (``spacing`` in mm,
    one per axis of ``mask``); ``min_ml`` 0: the mask unchanged (as uint8)."""
    mask = np.asarray(mask).astype(np.uint8, copy=False)
    if min_ml <= 0 or not mask.any():
        return mask
    import cc3d

    return cc3d.dust(mask, threshold=min_voxels(spacing, min_ml), connectivity=CONNECTIVITY,
                     in_place=False).astype(np.uint8, copy=False)


def min_lesion_ml(cfg: Mapping[str, Any]) -> float:
    """A segmentation config's minimum lesion volume (``postprocess.min_lesion_ml``; absent, as in runs made
    before it existed: 0, nothing removed)."""
    return float((cfg.get("postprocess") or {}).get("min_lesion_ml") or 0.0)


def lesion_mask(prob: np.ndarray, spacing: Sequence[float], min_ml: float = 0.0,
                threshold: float = 0.5) -> np.ndarray:
    """The lesion mask (X, Y, Z) uint8 of a lesion probability map (X, Y, Z): ``prob > threshold``, then
    components below ``min_ml`` ml removed (:func:`remove_small_components`)."""
    return remove_small_components(np.asarray(prob) > threshold, spacing, min_ml)


def choose_min_ml(scores: Mapping[float, float]) -> float:
    """The candidate with the highest score (mean validation Dice) in ``{min_ml: score}``; ties (and NaN scores,
    e.g. no case with a lesion) go to the smallest candidate, the least post-processing."""
    if not scores:
        raise ValueError("no candidate to choose from")
    finite = {float(k): float(v) for k, v in scores.items() if math.isfinite(float(v))}
    if not finite:
        return min(float(k) for k in scores)
    best = max(finite.values())
    return min(k for k, v in finite.items() if v >= best - 1e-12)


__all__ = ["CONNECTIVITY", "min_voxels", "remove_small_components", "min_lesion_ml", "lesion_mask",
           "choose_min_ml"]
