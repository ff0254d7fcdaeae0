"""Resampling onto the harmonized grid: axis-aligned RAS grids and the separable NumPy resampler.

* Grids: :func:`ras_bounds` (the RAS field of view of an image), :func:`ras_grid` (an empty RAS-ordered
  reference image whose voxel faces lie on the lattice ``k * spacing``), :func:`affine_of` (its 4x4 voxel ->
  RAS mm matrix).
* :func:`resample_xyz`: an image sampled on a reference grid as an ``[x, y, z]`` array. Axis-aligned grids
  (the common case) use three separable 1D passes; oblique ones ``sitk.Resample`` (:func:`resample_sitk`).
* The plan of those passes, shared with the torch twin :mod:`petctfm.harmonize.resample_torch` so both
  sample the same source voxels with the same weights: :func:`axis_maps` (per target axis, the source axis
  and continuous source indices), :func:`separable_plan` (source crop, pass order, final transpose) and
  :func:`taps` (neighbour indices and weights of one pass).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from petctfm.io.images import array_xyz

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # ITK (LPS) direction of a RAS-ordered grid


def ras_bounds(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) RAS mm of the outer voxel faces of ``img`` (its field of view)."""
    size = np.asarray(img.GetSize())
    corners = []
    for cx in (-0.5, size[0] - 0.5):
        for cy in (-0.5, size[1] - 0.5):
            for cz in (-0.5, size[2] - 0.5):
                corners.append(img.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz))))
    ras = np.asarray(corners) @ LPS_TO_RAS
    return ras.min(axis=0), ras.max(axis=0)


def ras_grid(lo: np.ndarray, hi: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty RAS-ordered reference image whose voxels tile the box ``[lo, hi]`` (RAS mm)."""
    sp = np.asarray(spacing, dtype=float)
    lo = np.floor(lo / sp + 1e-6) * sp  # voxel faces on the lattice k * spacing: the same patient gets the
    hi = np.ceil(hi / sp - 1e-6) * sp  # same voxel grid whatever the source layout or crop
    size = np.maximum(1, np.round((hi - lo) / sp)).astype(int)
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in sp])
    ref.SetDirection(RAS_DIRECTION)
    ref.SetOrigin([float(v) for v in (lo + sp / 2) @ LPS_TO_RAS])
    return ref


def affine_of(ref: sitk.Image) -> np.ndarray:
    """4x4 voxel -> RAS mm matrix of a grid made by :func:`ras_grid`."""
    aff = np.eye(4)
    aff[:3, :3] = np.diag(ref.GetSpacing())
    aff[:3, 3] = np.asarray(ref.GetOrigin()) @ LPS_TO_RAS
    return aff


def resample_sitk(img: sitk.Image, ref: sitk.Image, linear: bool, default: float, out_type=None) -> sitk.Image:
    """``sitk.Resample`` of ``img`` onto the grid of ``ref`` (identity transform; linear or nearest
    neighbour), ``default`` outside ``img``; pixel type ``out_type`` (default: that of ``img``)."""
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
                         float(default), out_type if out_type is not None else img.GetPixelID())


def axis_maps(src: sitk.Image, ref: sitk.Image) -> list[tuple[int, np.ndarray, float]] | None:
    """For each ``ref`` axis: (matching ``src`` axis, continuous ``src`` index of every ``ref`` voxel along it,
    sign of that src axis in LPS world).

    None unless both grids are axis-aligned (direction = signed permutation), the common case; then
    resampling is separable and done as three cheap 1D passes instead of a per-voxel 3D transform.
    """
    ds = np.asarray(src.GetDirection()).reshape(3, 3)
    dr = np.asarray(ref.GetDirection()).reshape(3, 3)
    for d in (ds, dr):
        if not np.allclose(np.abs(d), np.round(np.abs(d)), atol=1e-6):
            return None
    o_s, s_s = np.asarray(src.GetOrigin()), np.asarray(src.GetSpacing())
    o_r, s_r, n_r = np.asarray(ref.GetOrigin()), np.asarray(ref.GetSpacing()), ref.GetSize()
    maps = []
    for a in range(3):
        w = int(np.argmax(np.abs(dr[:, a])))  # world axis of ref axis a
        k = int(np.argmax(np.abs(ds[w, :])))  # src axis along that world axis
        world = o_r[w] + np.arange(n_r[a]) * s_r[a] * dr[w, a]
        ci = np.round((world - o_s[w]) / (s_s[k] * ds[w, k]), 6)  # rounding makes half-voxel ties exact
        maps.append((k, ci, float(np.sign(ds[w, k]))))
    if sorted(m[0] for m in maps) != [0, 1, 2]:
        return None
    return maps


def taps(ci: np.ndarray, n: int, linear: bool, sign: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Source indices and weights of one 1D pass over an axis of length ``n`` at continuous indices ``ci``.

    Linear: ``(i0, i1, f)``, the two neighbours (clipped to the axis) and the float32 weight of ``i1``;
    nearest: ``(i, None, None)`` with ties as described in :func:`_pass`. Shared by the NumPy passes and
    :mod:`petctfm.harmonize.resample_torch`, so both sample exactly the same source voxels.
    """
    if linear:
        i0 = np.floor(ci).astype(np.int64)
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), (ci - i0).astype(np.float32)
    nearest = np.floor(ci + 0.5) if sign > 0 else np.ceil(ci - 0.5)
    return np.clip(nearest.astype(np.int64), 0, n - 1), None, None


def _pass(arr: np.ndarray, axis: int, ci: np.ndarray, valid: np.ndarray, linear: bool, default: float,
          sign: float = 1.0) -> np.ndarray:
    """Sample ``arr`` at continuous indices ``ci`` along ``axis``; ``valid`` marks samples inside the source.

    Nearest-neighbour ties (a target voxel exactly between two source voxels) go to the source voxel with
    the larger LPS world coordinate whatever the storage direction, so LPS- and RAS-stored copies of an
    image give identical labels.
    """
    shape = [1, 1, 1]
    shape[axis] = len(ci)
    i0, i1, f = taps(ci, arr.shape[axis], linear, sign)
    if linear:
        f = f.reshape(shape)
        a0 = np.take(arr, i0, axis=axis).astype(np.float32, copy=False)
        a1 = np.take(arr, i1, axis=axis).astype(np.float32, copy=False)
        out = a0 * (1 - f) + a1 * f
    else:
        out = np.take(arr, i0, axis=axis)
    if not valid.all():
        out = np.where(valid.reshape(shape), out, np.asarray(default, dtype=out.dtype))
    return out


def resample_xyz(img: sitk.Image, ref: sitk.Image, linear: bool, default: float, dtype=np.float32) -> np.ndarray:
    """``img`` sampled on the grid of ``ref`` as an ``[x, y, z]`` array (linear or nearest neighbour).

    Axis-aligned grids use separable 1D passes on the source array cropped to the needed index range
    (same values as SimpleITK's resampler up to float rounding, except ties, several times faster on
    one core); oblique ones use ``sitk.Resample``.
    """
    maps = axis_maps(img, ref)
    if maps is None:
        out_type = sitk.sitkFloat32 if dtype == np.float32 else sitk.sitkUInt8
        return array_xyz(resample_sitk(img, ref, linear, default, out_type)).astype(dtype, copy=False)
    arr = sitk.GetArrayViewFromImage(img)  # [z, y, x], C-contiguous; ITK axis k is array axis 2 - k
    planned = separable_plan(maps, arr.shape)
    if planned is None:
        return np.full(ref.GetSize(), default, dtype=dtype)
    crop, passes, perm = planned
    arr = arr[crop]
    for ax, ci, valid, sign in passes:
        arr = _pass(arr, ax, ci, valid, linear, default, sign)
    return np.ascontiguousarray(arr.transpose(perm)).astype(dtype, copy=False)


def separable_plan(maps: list[tuple[int, np.ndarray, float]], shape: tuple[int, ...]):
    """The separable resampling of a ``[z, y, x]`` source array of ``shape`` along ``maps`` (:func:`axis_maps`).

    Returns ``(crop, passes, perm)``: the source crop (a tuple of slices: only the index range the target
    needs), the 1D passes ``(array axis, ci relative to the crop, valid, sign)`` in the order that shrinks the
    volume first, and the transpose that turns the result into ``[x, y, z]`` of the target; None when the
    target does not intersect the source at all (every voxel is the default).
    """
    crop, plan = [slice(None)] * 3, []
    for k, ci, sign in maps:
        ax, n = 2 - k, shape[2 - k]
        valid = (ci >= -0.5) & (ci <= n - 0.5)
        if not valid.any():
            return None
        lo = max(0, int(np.floor(ci[valid].min())))
        hi = min(n, int(np.floor(ci[valid].max())) + 2)
        crop[ax] = slice(lo, hi)
        plan.append((ax, ci - lo, valid, sign, len(ci) / (hi - lo)))
    passes = [p[:4] for p in sorted(plan, key=lambda p: p[4])]  # shrink the volume first
    return tuple(crop), passes, [2 - k for k, _, _ in maps]
