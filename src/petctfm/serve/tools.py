"""The viewer's manual tools, on arrays of the input PET grid: brush / eraser spheres, the isocontour grown from a
click, the threshold limited to a box, what a negative click may do to an object, and the plausibility flags.

All arrays are (X, Y, Z) in the input PET's voxel order (ITK / nibabel [x, y, z] indices); ``spacing`` is the
PET's (3,) voxel size in mm. The functions are pure (no session, no I/O); :class:`petctfm.serve.state.CaseState`
turns their masks into undoable, audited actions on a :class:`PromptSession` object.

- **brush / eraser** (:func:`brush_mask`): the voxels whose centres lie within ``radius_mm`` of a stroke's points
  (:func:`petctfm.evaluate.lesions.sphere_kernel`, the SUVpeak sphere's kernel); ``axis`` given: only the slice
  through each point perpendicular to that voxel axis (a 2D disc in the plane the reader paints in).
- **isocontour** (:func:`isocontour`): inside a local box around the click, the connected component (26-connected,
  ``cc3d``) of ``SUV >= threshold`` that holds the seed; ``threshold`` = ``fraction`` (default 0.41) x the SUVmax
  found within ``peak_mm`` of the click, or a fixed SUV. The seed is the click, or the peak voxel when the click
  itself is below the threshold.
- **box threshold** (:func:`box_threshold`): every voxel of the box with ``SUV >= threshold``.
- **negative click** (:func:`negative_click`): the object's new mask is never larger than its old one (a negative
  click only removes voxels), and the clicked voxel always leaves it: for an object without positive prompts (a
  false positive of the automatic model, or a brushed / grown object) its connected component under the click
  is removed; for a clicked object, the 3x3x3 voxels around the click.
- **flags** (:func:`implausible`): an object over ``max_ml`` (default 200 ml), or with more than half of its voxels
  inside one organ of the case's organ map (physiological uptake).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from petctfm.core.errors import InputError

ISO_FRACTION = 0.41  # PET-IndiC / EANM: 41 % of SUVmax
ISO_BOX_MM = 40.0  # half side of the local box the isocontour grows in
PEAK_MM = 10.0  # the SUVmax of the isocontour is searched within this distance of the click
BRUSH_MAX_MM = 50.0
MAX_ML = 200.0  # objects over this volume are flagged
ORGAN_FRACTION = 0.5  # an object with more than this share of its voxels in one organ is flagged


def _box_around(shape: Any, centre: Any, half: Any) -> tuple[slice, slice, slice]:
    """Slices of the box ``centre ± half`` voxels (each (3,) int), clipped to ``shape``."""
    c, h = np.asarray(centre, int), np.asarray(half, int)
    return tuple(slice(max(int(a - b), 0), min(int(a + b) + 1, int(n))) for a, b, n in zip(c, h, shape))


def brush_mask(shape: Any, spacing: Any, points: Any, radius_mm: float, axis: int | None = None) -> np.ndarray:
    """(X, Y, Z) bool: voxels within ``radius_mm`` of any of ``points`` ((N, 3) voxel indices); with ``axis``
    (0, 1 or 2) only those in the slice of each point perpendicular to that voxel axis."""
    from petctfm.evaluate.lesions import kernel_at, sphere_kernel

    if not 0 < float(radius_mm) <= BRUSH_MAX_MM:
        raise InputError(f"brush radius must be in (0, {BRUSH_MAX_MM:g}] mm, got {radius_mm}")
    if axis is not None and axis not in (0, 1, 2):
        raise InputError(f"brush axis must be 0, 1 or 2, got {axis!r}")
    shape = tuple(int(s) for s in shape)
    kernel = sphere_kernel(spacing, float(radius_mm))
    half = np.array(kernel.shape) // 2
    if axis is not None:  # the disc: the kernel's middle slice along the axis
        keep = np.zeros_like(kernel)
        sl = [slice(None)] * 3
        sl[axis] = slice(int(half[axis]), int(half[axis]) + 1)
        keep[tuple(sl)] = kernel[tuple(sl)]
        kernel = keep
    out = np.zeros(shape, bool)
    for p in np.asarray(points, int).reshape(-1, 3):
        box, part = kernel_at(shape, p, kernel)
        out[box] |= part
    return out


def isocontour(suv: np.ndarray, spacing: Any, seed: Any, fraction: float | None = ISO_FRACTION,
               threshold: float | None = None, box_mm: float = ISO_BOX_MM,
               peak_mm: float = PEAK_MM) -> tuple[np.ndarray, dict[str, Any]]:
    """The isocontour region grown from ``seed`` ([x, y, z] voxel) in ``suv`` (X, Y, Z).

    Returns ``(mask, info)``: ``mask`` (X, Y, Z) bool, the 26-connected component of ``suv >= thr`` holding the
    seed inside the box ``seed ± box_mm``; ``info``: ``threshold`` (SUV), ``peak`` (the SUVmax near the click;
    None with a fixed ``threshold``), ``touches_box`` (the region reaches a face of the box that is not the image
    border: it was cut, the uptake goes on beyond the box).
    """
    import cc3d

    from petctfm.evaluate.lesions import kernel_at, sphere_kernel

    seed = np.asarray(seed, int)
    sp = np.asarray(spacing, float)
    if not 0 < float(box_mm) <= 500:
        raise InputError(f"box_mm must be in (0, 500], got {box_mm}")
    box = _box_around(suv.shape, seed, np.ceil(float(box_mm) / sp))
    local = suv[box]
    s_local = seed - np.array([b.start for b in box])
    peak = None
    if threshold is None:
        if fraction is None or not 0 < float(fraction) < 1:
            raise InputError(f"fraction must be in (0, 1), got {fraction}")
        near, part = kernel_at(local.shape, s_local, sphere_kernel(sp, float(peak_mm)))
        vals = np.where(part, local[near], -np.inf)
        arg = np.unravel_index(int(np.argmax(vals)), vals.shape)
        peak = float(vals[arg])
        thr = float(fraction) * peak
        peak_at = np.array([b.start for b in near]) + np.array(arg)
    else:
        thr = float(threshold)
        peak_at = s_local
    if not np.isfinite(thr) or thr <= 0:
        raise InputError(f"isocontour threshold must be a positive SUV, got {thr:.3g}")
    start = s_local if local[tuple(s_local)] >= thr else peak_at
    if local[tuple(start)] < thr:
        raise InputError(f"the click is below the threshold (SUV {local[tuple(s_local)]:.2f} < {thr:.2f})")
    labels = cc3d.connected_components(np.ascontiguousarray(local >= thr, np.uint8), connectivity=26)
    region = labels == labels[tuple(start)]
    touches = False
    for ax in range(3):
        lo_face, hi_face = np.take(region, 0, axis=ax).any(), np.take(region, -1, axis=ax).any()
        touches |= bool(lo_face and box[ax].start > 0) or bool(hi_face and box[ax].stop < suv.shape[ax])
    out = np.zeros(suv.shape, bool)
    out[box] = region
    return out, {"threshold": thr, "peak": peak, "touches_box": touches}


def box_threshold(suv: np.ndarray, lo: Any, hi: Any, threshold: float) -> np.ndarray:
    """(X, Y, Z) bool: the voxels of the box ``lo..hi`` (voxel indices, both inclusive) with ``suv >= threshold``."""
    if not np.isfinite(float(threshold)) or float(threshold) <= 0:
        raise InputError(f"threshold must be a positive SUV, got {threshold}")
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(np.minimum(lo, hi), np.maximum(lo, hi)))
    out = np.zeros(suv.shape, bool)
    out[box] = suv[box] >= float(threshold)
    return out


def negative_click(before: np.ndarray, after: np.ndarray, voxel: Any, prompted: bool) -> np.ndarray:
    """An object's mask after a negative click at ``voxel``: ``before`` (X, Y, Z) bool, its mask before the click;
    ``after``, what the model made of it; ``prompted``: the object has a positive click or a box. See the module
    docstring: never larger than ``before``, and the clicked voxel leaves it."""
    import cc3d

    new = before & after
    v = tuple(int(c) for c in voxel)
    if not new[v]:
        return new
    if not prompted:  # a false positive of the automatic model (or a manual object): its piece under the click goes
        labels = cc3d.connected_components(np.ascontiguousarray(new, np.uint8), connectivity=26)
        return new & (labels != labels[v])
    new[tuple(slice(max(c - 1, 0), c + 2) for c in v)] = False
    return new


def implausible(n_voxels: int, volume_ml: float, organ_counts: dict[str, int] | None,
                max_ml: float = MAX_ML) -> list[str]:
    """Why an object is implausible for one lesion (empty: nothing to ask): over ``max_ml``, or more than
    ``ORGAN_FRACTION`` of its ``n_voxels`` in one organ (``organ_counts``: organ name -> voxels inside it)."""
    out = []
    if volume_ml > max_ml:
        out.append(f"{volume_ml:.0f} ml, over {max_ml:g} ml")
    for name, n in sorted((organ_counts or {}).items(), key=lambda kv: -kv[1]):
        if n_voxels and n / n_voxels > ORGAN_FRACTION:
            out.append(f"{100 * n / n_voxels:.0f} % inside the {name.replace('_', ' ')}")
            break
    return out


def organs_on_grid(organs: Any, pet: Any) -> np.ndarray | None:
    """The case's organ label map (SimpleITK, ``ORGAN_LABELS`` values, own grid) on the PET grid (nearest
    neighbour), (X, Y, Z) uint8; None without one."""
    if organs is None:
        return None
    import SimpleITK as sitk

    from petctfm.io.images import array_xyz

    on = sitk.Resample(organs, pet, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return array_xyz(on).astype(np.uint8)


def changed_box(before: np.ndarray, after: np.ndarray) -> dict[str, list[int]] | None:
    """The bounding box of the voxels where two label maps (X, Y, Z) differ: ``{"lo": [x, y, z], "hi": [x, y, z]}``
    (``hi`` exclusive), or None when they are equal."""
    diff = before != after
    axes = [np.flatnonzero(diff.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if axes[0].size == 0:
        return None
    return {"lo": [int(a[0]) for a in axes], "hi": [int(a[-1]) + 1 for a in axes]}


__all__ = ["ISO_FRACTION", "MAX_ML", "box_threshold", "brush_mask", "changed_box", "implausible", "isocontour",
           "negative_click", "organs_on_grid"]
