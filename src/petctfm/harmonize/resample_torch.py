"""Separable resampling of axis-aligned grids in PyTorch, on any device: the GPU twin of ``resample_xyz``.

The method is :func:`petctfm.harmonize.resample.resample_xyz`'s, with the same helpers, so both sample the
same source voxels with the same weights:

1. :func:`~petctfm.harmonize.resample.axis_maps`: for each target axis, the matching source axis and the
   continuous source index of every target voxel (None for oblique grids -> the NumPy/SimpleITK path);
2. :func:`~petctfm.harmonize.resample.separable_plan`: the source crop the target needs, the order of the
   three 1D passes (the one that shrinks the volume most first), the final transpose to ``[x, y, z]``;
3. :func:`~petctfm.harmonize.resample.taps`: per pass, the neighbour indices and float32 weights (linear)
   or the nearest index (ties to the larger LPS coordinate).

Only the gathers and blends run in torch: ``index_select`` along the axis, then ``a0 * (1 - f) + a1 * f`` in
float32 (the same operations in the same order as NumPy: equal up to float32 rounding, tested to 1e-5;
nearest neighbour is an exact gather), samples outside the source set to ``default`` (in the source dtype
for nearest, as NumPy does). On a GPU the whole source array goes up in its stored dtype (an int16 CT is half
the bytes of float32; cropping on the device avoids a host-side copy of a strided crop), the passes run
there and the ``[x, y, z]`` result comes back as a NumPy array, so the function is a drop-in for
``resample_xyz`` (:func:`torch_resampler` for ``harmonize_images(resampler=...)``).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from petctfm.harmonize.resample import axis_maps, resample_xyz, separable_plan, taps

# dtypes torch cannot gather on every device -> a lossless wider one (nearest) / float32 (linear: NumPy
# casts to float32 right after the gather, so casting before it gives the same values)
_WIDER = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64, np.dtype(np.uint64): np.int64}


def _as_tensor(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """``arr`` on ``device`` without a host copy where possible (read-only SimpleITK views included)."""
    with warnings.catch_warnings():  # SimpleITK's array view is read-only; it is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr).to(device)


def resample_zyx(arr: np.ndarray | torch.Tensor, maps: list[tuple[int, np.ndarray, float]], size: tuple[int, ...],
                 linear: bool, default: float, dtype=np.float32, device: str | torch.device = "cpu") -> torch.Tensor:
    """Resample a source array ``arr`` ``[z, y, x]`` (SimpleITK's order) along ``maps`` (:func:`~petctfm.harmonize.resample.axis_maps`).

    Returns the target ``[x, y, z]`` (``size`` = the target's ITK size) as a tensor of ``dtype`` on
    ``device``. Linear: float32 blends; nearest: the source values (then cast to ``dtype``).
    """
    device = torch.device(device)
    tdtype = torch.from_numpy(np.zeros(0, np.dtype(dtype))).dtype
    planned = separable_plan(maps, tuple(arr.shape))
    if planned is None:
        return torch.full(tuple(int(s) for s in size), default, dtype=tdtype, device=device)
    crop, passes, perm = planned
    if torch.is_tensor(arr):
        t = arr.to(device)[crop]
        near_fill = torch.tensor(default).to(t.dtype)
    else:
        near_fill = torch.from_numpy(np.asarray(default, dtype=arr.dtype).reshape(1))[0]  # NumPy's cast
        if arr.dtype in _WIDER:
            arr = arr.astype(np.float32 if linear else _WIDER[arr.dtype])
        t = _as_tensor(arr, device)[crop]
    for ax, ci, valid, sign in passes:
        shape = [1, 1, 1]
        shape[ax] = len(ci)
        i0, i1, f = taps(ci, t.shape[ax], linear, sign)
        idx0 = torch.from_numpy(i0).to(device)
        if linear:
            w = torch.from_numpy(f).to(device).view(shape)
            a0 = t.index_select(ax, idx0).to(torch.float32)
            a1 = t.index_select(ax, torch.from_numpy(i1).to(device)).to(torch.float32)
            out = a0 * (1 - w) + a1 * w
            fill = torch.tensor(np.float32(default), device=device)
        else:
            out = t.index_select(ax, idx0)
            fill = near_fill.to(device=device, dtype=out.dtype)
        if not valid.all():
            out = torch.where(torch.from_numpy(valid).to(device).view(shape), out, fill)
        t = out
    return t.permute(perm).contiguous().to(tdtype)


def resample_xyz_torch(img: sitk.Image, ref: sitk.Image, linear: bool, default: float, dtype=np.float32,
                       device: str | torch.device = "cpu",
                       array: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Drop-in for :func:`~petctfm.harmonize.resample.resample_xyz` that runs the passes on ``device``.

    ``img`` sampled on the grid of ``ref`` as a NumPy ``[x, y, z]`` array of ``dtype``. ``array``: the
    voxels of ``img`` as ``[x, y, z]`` (NumPy or a tensor, any device) when ``img`` only carries the
    geometry (e.g. a probability on an empty reference grid). Oblique grids fall back to ``resample_xyz``.
    """
    maps = axis_maps(img, ref)
    if maps is None:
        if array is not None:
            vals = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
            geom = img
            img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(vals, (2, 1, 0))))
            img.CopyInformation(geom)
        return resample_xyz(img, ref, linear, default, dtype)
    if array is None:
        src = sitk.GetArrayViewFromImage(img)  # [z, y, x]
    else:
        if tuple(array.shape) != tuple(img.GetSize()):
            raise ValueError(f"array shape {tuple(array.shape)} is not the grid's size {tuple(img.GetSize())}")
        src = array.permute(2, 1, 0) if torch.is_tensor(array) else np.transpose(array, (2, 1, 0))
    out = resample_zyx(src, maps, ref.GetSize(), linear, default, dtype, device)
    return out.cpu().numpy()


def torch_resampler(device: str | torch.device) -> Callable[..., np.ndarray]:
    """``resample_xyz_torch`` bound to ``device``: the ``resampler`` argument of ``harmonize_images``."""
    return functools.partial(resample_xyz_torch, device=torch.device(device))


__all__ = ["resample_zyx", "resample_xyz_torch", "torch_resampler"]
