"""What is done to a lesion mask after the probability threshold: small connected components removed.

A segmentation model's false positives on PET are often scattered specks of a few voxels (physiological uptake,
noise) that cost Dice and count as false-positive lesions. nnU-Net determines its post-processing on validation
data ("keep the largest component" when it helps). For lesions, where a patient may have many, the analogue is
a **minimum lesion volume**: components smaller than ``min_ml`` are removed. A fine-tuning run can choose it on
its validation split (``postprocess.choose_min_lesion_ml``, :func:`choose_min_ml`), and the chosen value travels
in the best checkpoint's config (``postprocess.min_lesion_ml``), so every prediction path applies it
(:func:`lesion_mask`). Components are 18-connected, as ``petctfm evaluate`` counts lesions.

**Organ suppression** (``postprocess.suppress_organs``): physiological uptake and excretion (heart, brain, bladder,
kidneys with FDG) are the largest source of false positives, and autoPET entries remove them after the network
with an organ segmentation. A lesion network trained with auxiliary organ classes (``task.aux_classes``) predicts
those organs itself: :func:`suppress_in_organs` removes every lesion component of which at least
``postprocess.suppress_fraction`` of the voxels lie in the named organs, a voxel's organ being the argmax over
the background and organ channels (the lesion channel left out, :func:`aux_organ_map`). It works on the
probability map (the removed components' probability set to 0), so the threshold, the minimum volume and the
resampling to the PET grid that follow are unchanged. A lesion that lies mostly inside those organs (a brain
metastasis, renal lymphoma) is removed too; the setting is empty (off) unless the run's config names organs.

The organs can also come from a **separate organ model** (``petctfm predict --organs MODEL --suppress-organs
NAMES``): :func:`organ_map_suppression` names them in that model's label table and :func:`suppress_in_organ_map`
removes the components of a lesion mask by the organ map it predicts, with the same rule
(:func:`suppress_components`, the one place the fraction is applied). A separate organ model is trained on organ
labels alone, in which a hot node beside the heart is background, so it does not call lesion uptake "heart" the way
a lesion network's runner-up class can (docs/segmentation-recipe.md, rounds eight and nine).
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


def suppress_fraction(cfg: Mapping[str, Any]) -> float:
    """A lesion config's ``postprocess.suppress_fraction`` (absent: 0.5, the setting's default): the share of a
    component's voxels in the named organs at which organ suppression removes it."""
    return float((cfg.get("postprocess") or {}).get("suppress_fraction", 0.5))


def suppression(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """A lesion config's organ suppression, or None (off: ``postprocess.suppress_organs`` empty or absent, as in
    runs made before it existed): ``{"organs": [names], "channels": [output channel of each named organ],
    "aux_channels": number of auxiliary organ channels, "fraction": float}``. The names must be auxiliary
    classes of the run (``task.aux_classes``, channels 2.. in that order); one that is not raises ValueError."""
    post = cfg.get("postprocess") or {}
    names = [str(n) for n in (post.get("suppress_organs") or [])]
    if not names:
        return None
    aux = list(((cfg.get("task") or {}).get("aux_classes") or {}).keys())
    missing = [n for n in names if n not in aux]
    if missing:
        raise ValueError(f"postprocess.suppress_organs names {missing}, which the network does not predict "
                         f"(task.aux_classes: {aux or 'none'})")
    return {"organs": names, "channels": [2 + aux.index(n) for n in names], "aux_channels": len(aux),
            "fraction": suppress_fraction(cfg)}


def aux_organ_map(probs: np.ndarray) -> np.ndarray:
    """The organ each voxel would be if it were not a lesion: (X, Y, Z) int16 output channel of the argmax over
    the background (0) and the auxiliary organ channels (2..K-1) of class probabilities ``probs`` (K, X, Y, Z)
    of a lesion network with auxiliary organs (channel 1, the lesion, left out; 0 where background wins)."""
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] < 3:
        raise ValueError(f"class probabilities (K >= 3, X, Y, Z) expected, got shape {probs.shape}")
    organ = np.argmax(probs[2:], axis=0).astype(np.int16) + 2
    best = np.take_along_axis(probs[2:], (organ - 2)[None].astype(np.int64), axis=0)[0]
    return np.where(best > probs[0], organ, np.int16(0))


def suppress_components(mask: np.ndarray, inside: np.ndarray, fraction: float) -> np.ndarray:
    """``mask`` (X, Y, Z) as bool, without every 18-connected component of which at least ``fraction`` of the
    voxels lie in ``inside`` (X, Y, Z) bool."""
    import cc3d

    mask = np.asarray(mask) > 0
    inside = np.asarray(inside, bool)
    if inside.shape != mask.shape:
        raise ValueError(f"organ map of shape {inside.shape} for a lesion mask of shape {mask.shape}")
    comps = cc3d.connected_components(mask, connectivity=CONNECTIVITY)
    n = int(comps.max())
    if n == 0:
        return mask
    total = np.bincount(comps.ravel(), minlength=n + 1)
    hit = np.bincount(comps[inside].ravel(), minlength=n + 1)
    drop = np.zeros(n + 1, bool)
    drop[1:] = hit[1:] >= float(fraction) * total[1:]
    return mask & ~drop[comps]


def organ_map_suppression(names: Sequence[str], classes: Mapping[str, int], fraction: float = 0.5) -> dict[str, Any]:
    """The organ suppression by a separate organ model's map: ``{"organs": [names], "labels": [label value of each
    in the organ model's table ``classes`` (name -> value)], "fraction": float, "source": "organ_model"}``; a
    name the organ model does not predict raises ValueError."""
    names = [str(n) for n in names]
    missing = [n for n in names if n not in classes]
    if missing:
        raise ValueError(f"suppress_organs names {missing}, which the organ model does not predict "
                         f"(its classes: {', '.join(classes) or 'none'})")
    if not 0 < float(fraction) <= 1:
        raise ValueError(f"suppress_fraction must be in (0, 1], got {fraction}")
    return {"organs": names, "labels": [int(classes[n]) for n in names], "fraction": float(fraction),
            "source": "organ_model"}


def suppress_in_organ_map(mask: np.ndarray, organs: np.ndarray, sup: Mapping[str, Any]) -> np.ndarray:
    """uint8 lesion ``mask`` (X, Y, Z) without the components with at least ``sup["fraction"]`` of their voxels in
    the organs ``sup["labels"]`` of the organ label map ``organs`` (X, Y, Z, same grid; from a separate organ
    model). ``sup``: from :func:`organ_map_suppression`."""
    inside = np.isin(np.asarray(organs), np.asarray(sup["labels"]))
    return suppress_components(mask, inside, sup["fraction"]).astype(np.uint8)


def suppress_in_organs(probs: np.ndarray, sup: Mapping[str, Any], threshold: float = 0.5) -> np.ndarray:
    """The lesion probability (X, Y, Z) float32 of class probabilities ``probs`` (K, X, Y, Z), with every
    18-connected component of ``prob > threshold`` removed (probability 0) when at least ``sup["fraction"]``
    of its voxels lie in the organ channels ``sup["channels"]`` (:func:`aux_organ_map`). ``sup``: from
    :func:`suppression`."""
    probs = np.asarray(probs)
    if probs.shape[0] != 2 + int(sup["aux_channels"]):
        raise ValueError(f"the network outputs {probs.shape[0]} classes; the config's suppression expects "
                         f"{2 + int(sup['aux_channels'])} (background, lesion and {sup['aux_channels']} organs)")
    prob = np.array(probs[1], dtype=np.float32)
    mask = prob > threshold
    if not mask.any():
        return prob
    inside = np.isin(aux_organ_map(probs), np.asarray(sup["channels"], np.int16))
    prob[mask & ~suppress_components(mask, inside, sup["fraction"])] = 0.0
    return prob


__all__ = ["CONNECTIVITY", "min_voxels", "remove_small_components", "min_lesion_ml", "lesion_mask",
           "choose_min_ml", "suppress_fraction", "suppression", "aux_organ_map", "suppress_in_organs", "suppress_components",
           "organ_map_suppression", "suppress_in_organ_map"]
