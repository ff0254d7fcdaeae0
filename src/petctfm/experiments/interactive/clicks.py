"""Click protocols fixed from the ground truth, and the 41 %-of-SUVmax isocontour baseline (docs/promptable.md).

- :func:`component_points`: the interior point (maximum of the distance transform) of each 18-connected
  component of a mask, largest component first, at most ``n``.
- :func:`autopet_clicks` (the autoPET IV interactive protocol, fixed in advance): lesion clicks at the interior
  points of up to 10 lesion components; background clicks at the interior points of up to 10 components of
  high uptake outside the lesions (PET above its 99.75th percentile over the non-lesion voxels).
- :func:`isocontour`: what standard software does from one lesion click: inside a box around the click, the
  18-connected region of voxels with SUV >= 41 % of the box's SUVmax that contains the click (or, when the
  click itself is below the threshold, the box's hottest voxel; with ``fallback=False`` nothing).

- :func:`brush_stroke` / :func:`iso_brush` (the annotation-effort baseline): the isocontour from one click,
  then simulated brush strokes with the corrective clicks' error-region rule: each stroke is centred on the
  interior point of the largest error region (:func:`~petctfm.methods.promptable.prompts.largest_error`) and
  fixes the voxels of that region within ``radius_mm`` of the centre (adds a missed region, erases a false
  positive; voxels outside the region are never touched: an edge-perfect brush).

Shapes: (X, Y, Z) arrays of one case; points (3,) int voxel indices.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from petctfm.evaluate.lesions import kernel_at, sphere_kernel
from petctfm.methods.promptable.prompts import interior_point, largest_error

ISO_FRACTION = 0.41
BACKGROUND_PERCENTILE = 99.75
#: the simulated brush's radius (mm): 2 voxels at the 4 mm grid of the measured phantoms (a 33-voxel sphere)
BRUSH_MM = 8.0


def component_points(mask: np.ndarray, n: int, connectivity: int = 18) -> list[np.ndarray]:
    """Interior points of the ``n`` largest connected components of ``mask`` (largest first; ties by label)."""
    import cc3d
    from scipy.ndimage import find_objects

    mask = np.asarray(mask, bool)
    if n <= 0 or not mask.any():
        return []
    labels = cc3d.connected_components(np.ascontiguousarray(mask, np.uint8), connectivity=connectivity)
    counts = np.bincount(labels.ravel())[1:]
    order = np.argsort(-counts, kind="stable")[:n]
    boxes = find_objects(labels)
    out = []
    for k in order:
        box = boxes[k]
        p = interior_point(labels[box] == k + 1)
        out.append(p + np.array([s.start for s in box]))
    return out


def autopet_clicks(suv: np.ndarray, lesion: np.ndarray, n: int = 10, percentile: float = BACKGROUND_PERCENTILE,
                   connectivity: int = 18) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(lesion clicks, background clicks), each at most ``n``, fixed from the ground truth (autoPET IV)."""
    lesion = np.asarray(lesion, bool)
    fg = component_points(lesion, n, connectivity)
    outside = ~lesion
    if not outside.any():
        return fg, []
    thr = float(np.percentile(np.asarray(suv)[outside], percentile))
    return fg, component_points((np.asarray(suv) > thr) & outside, n, connectivity)


def isocontour(suv: np.ndarray, point: Sequence[float], half_box: Sequence[int], fraction: float = ISO_FRACTION,
               connectivity: int = 18, fallback: bool = True) -> np.ndarray:
    """(X, Y, Z) bool: the ``fraction`` x SUVmax isocontour grown from ``point`` inside the box of
    ``2 * half_box + 1`` voxels centred on it (clipped to the image); SUVmax is the box's maximum. A click below
    the threshold grows from the box's hottest voxel (``fallback``, what the baseline does) or gives an empty
    mask (``fallback=False``: the dense prompt of the isocontour-informed first click)."""
    import cc3d

    suv = np.asarray(suv)
    p = np.rint(np.asarray(point, float)).astype(int)
    h = np.asarray(half_box, int)
    lo, hi = np.maximum(p - h, 0), np.minimum(p + h + 1, suv.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = suv[box]
    out = np.zeros(suv.shape, bool)
    vmax = float(sub.max()) if sub.size else 0.0
    if vmax <= 0:
        return out
    region = sub >= fraction * vmax
    labels = cc3d.connected_components(np.ascontiguousarray(region, np.uint8), connectivity=connectivity)
    local = tuple(p - lo)
    if not fallback and not region[local]:
        return out
    seed = local if region[local] else np.unravel_index(int(np.argmax(sub)), sub.shape)
    out[box] = labels == labels[tuple(seed)]
    return out


def brush_stroke(target: np.ndarray, pred: np.ndarray, radius_mm: float = BRUSH_MM,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, float] | None:
    """One simulated brush stroke on ``pred`` (bool, X, Y, Z; not changed): (the corrected mask, seconds of the
    tool's compute), or None when ``pred`` equals ``target``. The simulated user picks the largest error region
    and its interior point (the corrective clicks' rule, not timed); the stroke (timed) adds the region's voxels
    within ``radius_mm`` of that point to a false negative, or erases them from a false positive."""
    err = largest_error(target, pred)
    if err is None:
        return None
    region, positive = err
    centre = interior_point(region)
    t0 = time.perf_counter()
    box, ball = kernel_at(pred.shape, centre, sphere_kernel(spacing, radius_mm))
    out = np.array(pred, bool, copy=True)
    fix = region[box] & ball
    out[box] = out[box] | fix if positive else out[box] & ~fix
    return out, time.perf_counter() - t0


def iso_brush(suv: np.ndarray, target: np.ndarray, point: Sequence[float], half_box: Sequence[int],
              n: int, score: Callable[[np.ndarray], dict], radius_mm: float = BRUSH_MM,
              spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> list[dict]:
    """The isocontour-plus-brush baseline on one target: interaction 1 is the 41 % isocontour grown from
    ``point`` (:func:`isocontour`), interactions 2..``n`` one :func:`brush_stroke` each (none left once the mask
    equals the target: the mask is kept). Per interaction ``{"clicks": k, "seconds": cumulative compute
    (isocontour + strokes), **score(mask)}``."""
    t0 = time.perf_counter()
    pred = isocontour(suv, point, half_box)
    seconds = time.perf_counter() - t0
    out = [{"clicks": 1, "seconds": seconds, **score(pred)}]
    for k in range(2, n + 1):
        stroke = brush_stroke(target, pred, radius_mm, spacing)
        if stroke is not None:
            pred, dt = stroke
            seconds += dt
        out.append({"clicks": k, "seconds": seconds, **score(pred)})
    return out


__all__ = ["ISO_FRACTION", "BACKGROUND_PERCENTILE", "BRUSH_MM", "component_points", "autopet_clicks", "isocontour",
           "brush_stroke", "iso_brush"]
