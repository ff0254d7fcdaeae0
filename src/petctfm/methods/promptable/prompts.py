"""Prompt encoding and click simulation, shared by training (``task.py``) and use (``session.py``).

**Prompt channels** (:func:`encode_prompts`): four (P, px, py, pz) float32 channels appended to the image:
0 positive clicks, 1 negative clicks (each click a ball of radius ``click_radius`` voxels set to 1), 2 the 3D
box (1 inside), 3 the previous mask (0/1). No prompt = all zeros.

**Click simulation** (the SegAnyPET / nnInteractive protocol):

- :func:`interior_point`: the voxel of a region farthest from its boundary (maximum of the Euclidean distance
  transform; the crop border counts as boundary); ties -> the first in C order (deterministic).
- :func:`corrective_click`: the largest connected error region (18-connectivity) among false negatives
  (``target & ~pred``) and false positives (``pred & ~target``); a positive click at the interior point of a
  false-negative region, a negative click at that of a false-positive region; None when there is no error.
- :func:`jittered_box`: the target's bounding box with each face moved by up to ``jitter`` of its side.

**Class prompts** (:func:`default_classes`, :func:`class_key`, :func:`class_index`): an optional target class
steers the ``cached`` and ``sam`` designs (``model.class_prompts``). The class table is the model's
``model.classes``: the training targets only ("lesion", "all_lesions" and every organ of
:data:`~petctfm.core.labels.ORGAN_LABELS` that is not held out); index 0 is "no class", class ``k`` of the table
is index ``k + 1``. A held-out organ has no class (it was never trained); asking for a class outside the table
is a one-line InputError.

Shapes: masks (X, Y, Z) bool; points (3,) int voxel indices of the same array.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS, organ_key

N_PROMPT_CHANNELS = 4
POS, NEG, BOX, PREV = range(N_PROMPT_CHANNELS)


def interior_point(region: np.ndarray) -> np.ndarray | None:
    """(3,) index of the voxel of ``region`` (bool, X, Y, Z) farthest from its boundary, or None if empty."""
    from scipy.ndimage import distance_transform_edt

    region = np.asarray(region, dtype=bool)
    bb = bounding_box(region)
    if bb is None:
        return None
    # within the bounding box (+1 voxel of background): the same distances and the same C-order tie-break as
    # the whole array, at the cost of the box (a whole-body organ mask stays cheap)
    sub = region[tuple(slice(int(a), int(b) + 1) for a, b in zip(*bb))]
    dist = distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1, 1:-1]
    return np.array(np.unravel_index(int(np.argmax(dist)), sub.shape)) + bb[0]


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(bool mask of the largest 18-connected component, its voxel count); (empty, 0) when ``mask`` is empty."""
    import cc3d

    if not mask.any():
        return np.zeros(mask.shape, bool), 0
    labels = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=18)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    k = int(np.argmax(counts))
    return labels == k, int(counts[k])


def largest_error(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """(region (X, Y, Z) bool, positive): the largest 18-connected error region of ``pred`` vs ``target`` (the
    larger of the largest false-negative and the largest false-positive component; a tie goes to the false
    negative, ``positive = True``), or None when they agree. The rule of :func:`corrective_click` and of the
    simulated brush (``experiments/interactive/clicks.py``)."""
    target, pred = np.asarray(target, bool), np.asarray(pred, bool)
    fn, n_fn = _largest_component(target & ~pred)
    fp, n_fp = _largest_component(pred & ~target)
    if n_fn == 0 and n_fp == 0:
        return None
    positive = n_fn >= n_fp
    return (fn if positive else fp), positive


def corrective_click(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """(point (3,), positive) on the largest error region of ``pred`` vs ``target`` (both bool, X, Y, Z), or None
    when they agree. A false-negative region gives a positive click, a false-positive region a negative one."""
    err = largest_error(target, pred)
    if err is None:
        return None
    point = interior_point(err[0])
    assert point is not None
    return point, err[1]


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo (3,), hi (3,)) inclusive voxel bounds of ``mask``, or None when empty."""
    idx = np.argwhere(mask)
    if not len(idx):
        return None
    return idx.min(axis=0), idx.max(axis=0)


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray] | None:
    """The bounding box of ``mask`` with each face moved by a uniform fraction in [-jitter, jitter] of the side
    (at least one voxel of play), clipped to the array; None when ``mask`` is empty."""
    bb = bounding_box(mask)
    if bb is None:
        return None
    lo, hi = bb
    side = hi - lo + 1
    play = np.maximum(np.rint(side * jitter), 1)
    lo = lo + np.rint(rng.uniform(-1, 1, 3) * play)
    hi = hi + np.rint(rng.uniform(-1, 1, 3) * play)
    shape = np.array(mask.shape)
    lo = np.clip(lo, 0, shape - 1).astype(int)
    hi = np.clip(np.maximum(hi, lo), 0, shape - 1).astype(int)
    return lo, hi


def ball(shape: Sequence[int], centre: Sequence[float], radius: float) -> np.ndarray:
    """(X, Y, Z) bool: voxels within ``radius`` (voxels) of ``centre`` (continuous index; may lie outside)."""
    axes = [np.arange(n) - float(c) for n, c in zip(shape, centre)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij", sparse=True)
    return gx**2 + gy**2 + gz**2 <= radius**2 + 1e-6


def encode_prompts(shape: Sequence[int], points: Sequence[tuple[Sequence[float], bool]] = (),
                   box: tuple[Sequence[float], Sequence[float]] | None = None, prev: np.ndarray | None = None,
                   click_radius: float = 2.0) -> np.ndarray:
    """The (4, X, Y, Z) float32 prompt channels of one object in an array of ``shape``.

    ``points``: ``(index (3,), positive)`` in this array's (continuous) voxel indices; ``box``: (lo, hi)
    inclusive continuous indices; ``prev``: (X, Y, Z) previous mask (> 0.5 = inside).
    """
    out = np.zeros((N_PROMPT_CHANNELS, *shape), np.float32)
    for p, positive in points:
        out[POS if positive else NEG][ball(shape, p, click_radius)] = 1.0
    if box is not None:
        lo = np.maximum(np.floor(np.asarray(box[0], float) + 0.5), 0).astype(int)
        hi = np.minimum(np.floor(np.asarray(box[1], float) + 0.5), np.array(shape) - 1).astype(int)
        if np.all(hi >= lo):
            out[BOX][lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 1.0
    if prev is not None:
        out[PREV] = (np.asarray(prev) > 0.5).astype(np.float32)
    return out


LESION_CLASSES = ("lesion", "all_lesions")  # the training kinds that are not organs
NO_CLASS = 0


def default_classes(held_out: Sequence[str]) -> list[str]:
    """The class table of a model trained with ``held_out`` organs: the lesion kinds, then every organ of
    ORGAN_LABELS (label order) that is not held out."""
    held = set(held_out)
    return [*LESION_CLASSES, *(n for n in ORGAN_LABELS if n != "background" and n not in held)]


def class_key(name: str) -> str | None:
    """The class table spelling of a class name: an organ via :func:`~petctfm.core.labels.organ_key`
    ("Kidney left" -> "kidney_left"), "lesion", "all_lesions" ("all lesions"); None for anything else."""
    words = "_".join(str(name).strip().lower().replace("-", " ").replace("_", " ").split())
    if words in LESION_CLASSES:
        return words
    return organ_key(name)


def class_index(classes: Sequence[str], name: str | None) -> int:
    """The class index of ``name`` in a model's table ``classes`` (0 = no class for None); one-line InputError
    for a class the model has no embedding of (a held-out organ, an unknown name, a model without classes)."""
    if name is None:
        return NO_CLASS
    key = class_key(name)
    if not classes:
        raise InputError(f"class {name!r}: this model was trained without class prompts (model.class_prompts); "
                         "prompt without a class")
    if key is None or key not in classes:
        raise InputError(f"unknown class {str(name)[:40]!r} for this model (its classes: {', '.join(classes)}; a "
                         "held-out organ has no class: prompt it without one)")
    return list(classes).index(key) + 1


__all__ = ["LESION_CLASSES", "NO_CLASS", "default_classes", "class_key", "class_index", "N_PROMPT_CHANNELS", "POS", "NEG", "BOX", "PREV", "interior_point", "largest_error", "corrective_click", "bounding_box",
           "jittered_box", "ball", "encode_prompts"]
