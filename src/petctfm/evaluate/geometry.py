"""Voxel grids in patient coordinates, and the check that a prediction lies on its ground truth's grid.

A :class:`Grid` is a shape plus the 4x4 matrix mapping a voxel index ``[x, y, z]`` (ITK order, the order of
:func:`petctfm.io.images.array_xyz`) to **LPS** millimetres, the DICOM/ITK patient frame: x grows to the
patient's Left, y to Posterior, z to Superior. SimpleITK images are in LPS already; a nibabel-style RAS
affine (as stored in the harmonized dataset's ``meta.json``) is converted by negating its first two rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctfm.core.errors import InputError

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (X, Y, Z) and ``index_to_lps`` (4, 4), index [x, y, z] -> LPS mm."""

    shape: tuple[int, int, int]
    index_to_lps: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel size in mm along x, y, z (column norms of the linear part)."""
        return np.linalg.norm(self.index_to_lps[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """(3,) LPS position of voxel [0, 0, 0] in mm."""
        return self.index_to_lps[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) direction cosines, columns are the x, y, z index axes in LPS."""
        return self.index_to_lps[:3, :3] / self.spacing

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in ml (= cm^3), from the header spacing: sx * sy * sz / 1000."""
        return float(np.prod(self.spacing) / 1000.0)

    def to_lps(self, index_xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) or (3,) voxel indices (may be fractional) to LPS mm."""
        idx = np.asarray(index_xyz, dtype=np.float64)
        return idx @ self.index_to_lps[:3, :3].T + self.index_to_lps[:3, 3]


def grid_of(obj, shape: tuple[int, ...] | None = None) -> Grid:
    """Build a :class:`Grid` from a SimpleITK image, a ``Grid``, or a 4x4 RAS affine (nibabel convention).

    ``shape`` is required for an affine (the affine does not carry it) and checked against the others.
    """
    if isinstance(obj, Grid):
        grid = obj
    elif hasattr(obj, "GetSpacing") and hasattr(obj, "GetDirection"):
        spacing = np.asarray(obj.GetSpacing(), dtype=np.float64)
        direction = np.asarray(obj.GetDirection(), dtype=np.float64).reshape(3, 3)
        m = np.eye(4)
        m[:3, :3] = direction * spacing
        m[:3, 3] = obj.GetOrigin()
        grid = Grid(tuple(int(s) for s in obj.GetSize()), m)
    else:
        affine = np.asarray(obj, dtype=np.float64)
        if affine.shape != (4, 4):
            raise InputError(f"expected a SimpleITK image or a 4x4 affine, got an array of shape {affine.shape}")
        if shape is None:
            raise InputError("a 4x4 affine needs the array shape to define a grid")
        grid = Grid(tuple(int(s) for s in shape), _RAS_TO_LPS @ affine)
    if shape is not None and tuple(int(s) for s in shape) != grid.shape:
        raise InputError(f"array shape {tuple(shape)} does not match the image grid {grid.shape}")
    return grid


def grid_mismatch(a: Grid, b: Grid, spacing_rtol: float = 1e-4, origin_atol_mm: float = 1e-2,
                  direction_atol: float = 1e-4) -> str | None:
    """Describe how grid ``b`` differs from grid ``a`` (None when they match within tolerance).

    Tolerances absorb float32 header round-off (NIfTI stores float32) and nothing more: a prediction half a
    voxel off is a different grid and must be resampled by whoever made it.
    """
    if a.shape != b.shape:
        return f"shape {b.shape} != {a.shape}"
    if not np.allclose(a.spacing, b.spacing, rtol=spacing_rtol, atol=0):
        return f"spacing {_fmt(b.spacing)} != {_fmt(a.spacing)} mm"
    if not np.allclose(a.origin, b.origin, rtol=0, atol=origin_atol_mm):
        return f"origin {_fmt(b.origin)} != {_fmt(a.origin)} mm (LPS)"
    if not np.allclose(a.direction, b.direction, rtol=0, atol=direction_atol):
        return f"direction {_fmt(b.direction.ravel())} != {_fmt(a.direction.ravel())}"
    return None


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in np.ravel(v)) + ")"
