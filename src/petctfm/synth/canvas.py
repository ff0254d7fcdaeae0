"""Shape primitives on the synthetic truth grid: a label canvas, ellipsoids, tubes, bones, smooth noise.

The anatomy painters (``synth/body.py``, ``skeleton.py``, ``organs.py``) evaluate each shape only inside its
bounding box on an axis-aligned grid with ascending physical coordinates (mm, LPS) and paint tissue ids
(:class:`petctfm.synth.tissues.T`) into a uint8 (nx, ny, nz) label volume, later shapes overwriting earlier
ones unless ``where``/``keep`` say otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from petctfm.synth.tissues import T


def rot_matrix(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation (radians) about x, then y, then z."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rxm = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rym = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rzm = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rzm @ rym @ rxm


class Canvas:
    """A label volume on an axis-aligned grid, with bounding-box-limited shape evaluation."""

    def __init__(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.axes = tuple(np.asarray(a, dtype=np.float32) for a in axes)
        self.shape = tuple(len(a) for a in self.axes)
        self.labels = np.zeros(self.shape, dtype=np.uint8)

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        sl = []
        for k in range(3):
            a = self.axes[k]
            i0 = int(np.searchsorted(a, lo[k], "left"))
            i1 = int(np.searchsorted(a, hi[k], "right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)  # type: ignore[return-value]

    def coords(self, sl):
        x = self.axes[0][sl[0]][:, None, None]
        y = self.axes[1][sl[1]][None, :, None]
        z = self.axes[2][sl[2]][None, None, :]
        return x, y, z

    def paint(self, sl, mask: np.ndarray, tissue: int, where: tuple[int, ...] | None = None,
              keep: tuple[int, ...] | None = None) -> None:
        """Set ``tissue`` inside ``mask`` (a box-shaped bool array at ``sl``); ``where``: only over these
        tissues; ``keep``: never over these."""
        if sl is None:
            return
        sub = self.labels[sl]
        if where is not None:
            mask = mask & np.isin(sub, where)
        if keep is not None:
            mask = mask & ~np.isin(sub, keep)
        sub[mask] = tissue

    def ellipsoid(self, center, radii, R: np.ndarray | None = None):
        """(box, normalized radius r) of an ellipsoid; r <= 1 inside. ``R`` rotates body axes to world."""
        c = np.asarray(center, dtype=np.float32)
        rad = np.asarray(radii, dtype=np.float32)
        half = rad if R is None else np.full(3, rad.max(), dtype=np.float32)
        sl = self.box(c - half, c + half)
        if sl is None:
            return None, np.float32(np.inf)
        x, y, z = self.coords(sl)
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        if R is None:
            r2 = (dx / rad[0]) ** 2 + (dy / rad[1]) ** 2 + (dz / rad[2]) ** 2
        else:
            Rt = np.asarray(R, dtype=np.float32).T  # world -> body
            u = Rt[0, 0] * dx + Rt[0, 1] * dy + Rt[0, 2] * dz
            v = Rt[1, 0] * dx + Rt[1, 1] * dy + Rt[1, 2] * dz
            w = Rt[2, 0] * dx + Rt[2, 1] * dy + Rt[2, 2] * dz
            r2 = (u / rad[0]) ** 2 + (v / rad[1]) ** 2 + (w / rad[2]) ** 2
        return sl, np.sqrt(r2)

    def tube(self, points, radii):
        """(box, distance / local radius) to a polyline with per-point radii; <= 1 inside."""
        p = np.asarray(points, dtype=np.float32)
        r = np.broadcast_to(np.asarray(radii, dtype=np.float32), (len(p),))
        rmax = float(r.max())
        sl = self.box(p.min(0) - rmax, p.max(0) + rmax)
        if sl is None:
            return None, np.float32(np.inf)
        x, y, z = self.coords(sl)
        best = np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), np.inf, dtype=np.float32)
        for i in range(len(p) - 1):
            a, b = p[i], p[i + 1]
            v = b - a
            vv = float(v @ v) or 1e-6
            t = np.clip(((x - a[0]) * v[0] + (y - a[1]) * v[1] + (z - a[2]) * v[2]) / vv, 0.0, 1.0)
            d = np.sqrt((x - a[0] - t * v[0]) ** 2 + (y - a[1] - t * v[1]) ** 2 + (z - a[2] - t * v[2]) ** 2)
            np.minimum(best, d / (r[i] + t * (r[i + 1] - r[i])), out=best)
        return sl, best

    def bone(self, sl, rn: np.ndarray, cortex_frac: float, marrow: int = T.MARROW,
             keep: tuple[int, ...] | None = None) -> None:
        """Paint a bone: cortical shell where ``1 - cortex_frac < rn <= 1``, ``marrow`` inside."""
        if sl is None:
            return
        self.paint(sl, rn <= 1.0, T.CORTICAL, keep=keep)
        self.paint(sl, rn <= 1.0 - cortex_frac, marrow, keep=keep)


def smooth_noise(shape: tuple[int, ...], corr_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance smooth Gaussian random field (float32) with correlation length ~``corr_vox`` voxels.

    Generated on a grid ``k`` times coarser and upsampled linearly (fast for long correlation lengths).
    """
    k = max(1, int(np.ceil(corr_vox / 1.5)))
    small = tuple(-(-s // k) + 2 for s in shape)
    w = rng.standard_normal(small, dtype=np.float32)
    w = ndimage.gaussian_filter(w, sigma=max(corr_vox / k, 0.5), mode="wrap")
    up = ndimage.zoom(w, k, order=1) if k > 1 else w
    up = up[tuple(slice(0, s) for s in shape)]
    sd = float(up.std()) or 1.0
    return ((up - up.mean()) / sd).astype(np.float32)


def cv_sp(cv: Canvas) -> float:
    """Mean in-plane spacing of a canvas (mm)."""
    return float(0.5 * ((cv.axes[0][1] - cv.axes[0][0]) + (cv.axes[1][1] - cv.axes[1][0])))


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One ``rng.uniform(lo, hi)`` draw as a Python float (the painters' size and position jitter)."""
    return float(rng.uniform(lo, hi))
