"""Per-lesion statistics: one row per connected component of a lesion mask (used by ``petctfm predict``).

Definitions (all volumes from the image header's spacing, so anisotropic voxels are counted correctly):

- **lesion**: a connected component of ``mask > 0`` under 18-connectivity (faces + edges, as the autoPET
  challenge evaluation uses) unless ``connectivity`` says 6 or 26. Labels are numbered 1..N by decreasing
  volume (ties keep cc3d's scan order), the same numbering :func:`label_lesions` returns.
- **volume_ml**: voxel count x voxel volume (ml = cm^3).
- **suv_max / suv_mean**: maximum and mean SUV over the lesion's voxels.
- **suv_peak**: PERCIST's SUVpeak: the mean SUV in a 1 ml sphere (radius 6.2035 mm) placed where that mean
  is largest, over sphere centres at the lesion's voxel centres. The sphere holds every voxel whose centre
  lies within the radius (lesion or not), built in mm so anisotropic spacing is honoured; near the image
  border the mean is over the voxels inside the image. Computed by FFT convolution of a crop around the
  lesion with the spherical kernel.
- **tlg**: total lesion glycolysis = suv_mean x volume_ml (g/ml x ml; "SUV x ml" as usually reported).
- **centroid_*_mm**: the geometric (unweighted) centre of the lesion's voxel centres in **LPS** patient
  coordinates (DICOM / ITK frame: +x Left, +y Posterior, +z Superior), mm.
- **bbox_*0 / bbox_*1**: inclusive voxel-index bounding box ``[x0..x1, y0..y1, z0..z1]`` in array order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from petctfm.evaluate.geometry import grid_of

SPHERE_1ML_RADIUS_MM = (3.0 * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # 6.2035 mm: 4/3 pi r^3 = 1000 mm^3

LESION_COLUMNS = [
    "label", "n_voxels", "volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "bbox_x0", "bbox_y0", "bbox_z0", "bbox_x1", "bbox_y1", "bbox_z1",
]


def check_connectivity(connectivity: int) -> int:
    if connectivity not in (6, 18, 26):
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return connectivity


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Lesion voxels and their labels, numbered 1..N by decreasing volume.

    Returns ``(flat, labels, n)``: ``flat`` (V,) C-order flat indices of the mask's voxels, ``labels`` (V,)
    their lesion labels. Working on the V foreground voxels only (not the whole volume) keeps a
    whole-body 400x400x300 mask at about 0.3 s, most of it cc3d.
    """
    import cc3d

    check_connectivity(connectivity)
    fg_mask = np.ascontiguousarray(np.asarray(mask) > 0)
    raw, n = cc3d.connected_components(fg_mask, connectivity=connectivity, return_N=True)
    flat = np.flatnonzero(fg_mask)
    raw_fg = np.ascontiguousarray(raw).reshape(-1)[flat]
    counts = np.bincount(raw_fg, minlength=n + 1)[1:]
    order = np.argsort(-counts, kind="stable")  # ties keep cc3d's (scan) order
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[order + 1] = np.arange(1, n + 1, dtype=np.uint32)
    return flat, lut[raw_fg], int(n)


def label_lesions(mask: np.ndarray, connectivity: int = 18) -> tuple[np.ndarray, int]:
    """Connected components of ``mask > 0`` (X, Y, Z), relabelled 1..N by decreasing volume.

    Returns ``(labels, n)``: ``labels`` (X, Y, Z) uint32, 0 = background; the numbering of
    :func:`lesion_table`'s ``label`` column.
    """
    flat, labels, n = _components(mask, connectivity)
    out = np.zeros(np.shape(mask), dtype=np.uint32)
    out.reshape(-1)[flat] = labels
    return out, n


def sphere_kernel(spacing: np.ndarray | tuple[float, float, float],
                  radius_mm: float = SPHERE_1ML_RADIUS_MM) -> np.ndarray:
    """Boolean (2hx+1, 2hy+1, 2hz+1) kernel: voxels whose centre is within ``radius_mm`` of the centre."""
    spacing = np.asarray(spacing, dtype=np.float64)
    half = np.floor(radius_mm / spacing + 1e-9).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    return gx**2 + gy**2 + gz**2 <= radius_mm**2 * (1 + 1e-9)


def kernel_at(shape: Sequence[int], centre: Sequence[int], kernel: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """An odd-sized ``kernel`` (kx, ky, kz) centred on voxel ``centre`` of an array of ``shape`` (X, Y, Z), clipped
    to the array: ``(box, part)``, the slices of the array it covers and the part of the kernel that lies there
    (``array[box] |= part`` paints it)."""
    lo = np.asarray(centre, int) - np.array(kernel.shape) // 2
    box = tuple(slice(max(int(a), 0), min(int(a) + int(n), int(s))) for a, n, s in zip(lo, kernel.shape, shape))
    return box, kernel[tuple(slice(b.start - int(a), b.stop - int(a)) for b, a in zip(box, lo))]


def suv_peak(suv: np.ndarray, lesion: np.ndarray, spacing, radius_mm: float = SPHERE_1ML_RADIUS_MM) -> float:
    """SUVpeak of one lesion: max over centres in ``lesion`` (bool, X, Y, Z) of the sphere-mean of ``suv``."""
    idx = np.nonzero(lesion)
    if len(idx[0]) == 0:
        return float("nan")
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    return _peak_in_box(suv, box, np.asarray(lesion[box], dtype=bool), sphere_kernel(spacing, radius_mm))


def _peak_in_box(suv: np.ndarray, box: tuple[slice, ...], inside: np.ndarray, kernel: np.ndarray) -> float:
    """SUVpeak for the lesion ``inside`` (bool, shape of ``box``) within bounding box ``box`` of ``suv``.

    Only a crop (the box grown by the kernel's half size, clipped to the image) is convolved, so the cost
    is independent of the image size.
    """
    from scipy.signal import fftconvolve

    half = np.array(kernel.shape) // 2
    lo = np.maximum(np.array([s.start for s in box]) - half, 0)
    hi = np.minimum(np.array([s.stop for s in box]) + half, suv.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    values = np.asarray(suv[crop], dtype=np.float64)
    k = kernel.astype(np.float64)
    sums = fftconvolve(values, k, mode="same")
    counts = np.rint(fftconvolve(np.ones_like(values), k, mode="same"))  # sphere voxels inside the image
    centres = np.zeros(values.shape, dtype=bool)
    centres[tuple(slice(s.start - a, s.stop - a) for s, a in zip(box, lo))] = inside
    return float(np.max(sums[centres] / counts[centres]))


def lesion_table(mask: np.ndarray, suv: np.ndarray | None, geometry: Any, connectivity: int = 18) -> list[dict]:
    """One dict per lesion (keys :data:`LESION_COLUMNS`), largest lesion first.

    Args:
        mask: (X, Y, Z) lesion mask, nonzero = lesion, indexed like :func:`petctfm.io.images.array_xyz`.
        suv: (X, Y, Z) SUV on the same grid, or None (SUV columns are then NaN).
        geometry: the grid: a SimpleITK image on that grid, a :class:`Grid`, or a 4x4 voxel->RAS affine
            (nibabel convention; converted to LPS for the centroids).
        connectivity: 6, 18 (default, autoPET) or 26.
    """
    mask = np.asarray(mask)
    grid = grid_of(geometry, mask.shape)
    if suv is not None and tuple(np.shape(suv)) != mask.shape:
        raise ValueError(f"SUV shape {np.shape(suv)} != mask shape {mask.shape}")
    flat, labels, n = _components(mask, connectivity)
    vox_ml = grid.voxel_volume_ml
    kernel = sphere_kernel(grid.spacing)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(1, n + 2))
    rows: list[dict] = []
    for lab in range(1, n + 1):
        ijk = np.stack(np.unravel_index(flat[order[bounds[lab - 1]:bounds[lab]]], mask.shape), axis=1)  # (V, 3)
        lo, hi = ijk.min(axis=0), ijk.max(axis=0)
        n_vox = len(ijk)
        volume = n_vox * vox_ml
        if suv is not None:
            vals = np.asarray(suv[tuple(ijk.T)], dtype=np.float64)
            s_max, s_mean = float(vals.max()), float(vals.mean())
            inside = np.zeros(tuple(hi - lo + 1), dtype=bool)
            inside[tuple((ijk - lo).T)] = True
            box = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
            s_peak = _peak_in_box(suv, box, inside, kernel)
        else:
            s_max = s_mean = s_peak = float("nan")
        centroid = grid.to_lps(ijk.mean(axis=0))
        rows.append({
            "label": lab, "n_voxels": n_vox, "volume_ml": volume,
            "suv_max": s_max, "suv_mean": s_mean, "suv_peak": s_peak, "tlg": s_mean * volume,
            "centroid_x_mm": float(centroid[0]), "centroid_y_mm": float(centroid[1]),
            "centroid_z_mm": float(centroid[2]),
            "bbox_x0": int(lo[0]), "bbox_y0": int(lo[1]), "bbox_z0": int(lo[2]),
            "bbox_x1": int(hi[0]), "bbox_y1": int(hi[1]), "bbox_z1": int(hi[2]),
        })
    return rows


def summary(table: list[dict]) -> dict:
    """Patient-level totals of a :func:`lesion_table`: TMTV (ml), total TLG, lesion count, SUVmax, SUVpeak.

    ``suv_max`` / ``suv_peak`` (and ``total_tlg`` without SUV) are None when undefined (JSON has no NaN).
    """
    def _max(key: str):
        vals = [r[key] for r in table if r[key] == r[key]]  # drop NaN
        return float(max(vals)) if vals else None

    tlg = sum(r["tlg"] for r in table) if table else 0.0
    return {
        "lesion_count": len(table),
        "tmtv_ml": float(sum(r["volume_ml"] for r in table)),
        "total_tlg": float(tlg) if tlg == tlg else None,
        "suv_max": _max("suv_max"),
        "suv_peak": _max("suv_peak"),
    }


__all__ = ["LESION_COLUMNS", "SPHERE_1ML_RADIUS_MM", "label_lesions", "lesion_table", "sphere_kernel", "kernel_at",
           "suv_peak", "summary"]
