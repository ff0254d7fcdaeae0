"""Body and organ geometry of a synthetic patient, rasterized as a tissue label map.

Everything is defined in physical patient coordinates (mm) in ITK's LPS world: +x is the patient's Left,
+y Posterior, +z Superior. The vertex (top of the head) is at z = 0 and the body extends to negative z
(head first, supine on the table, which lies posterior, +y). Landmarks are placed at fractions ``f`` of
the body height below the vertex (``z = -f * H``); widths scale with sex, height and body-mass index.

The map is painted on an axis-aligned "truth" grid (identity direction, ascending coordinates); each shape is
evaluated only inside its bounding box. Later layers overwrite earlier ones: body (subcutaneous fat) ->
muscle wall -> cavities -> organs -> bones.  Tissue ids (:class:`T`) are internal; physiology maps them to
HU and SUV, ``ORGAN_OF_TISSUE`` maps them to the public organ labels of ``case.ORGAN_LABELS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from petctfm.core.labels import ORGAN_LABELS


class T:
    """Internal tissue ids of the truth label map (uint8)."""

    AIR = 0
    FAT = 1  # visceral / mediastinal fat
    FAT_SC = 2  # subcutaneous fat
    MUSCLE = 3
    SOFT = 4  # generic soft tissue (thyroid, uterus, esophagus, spinal cord, nodes)
    LUNG_L = 5
    LUNG_R = 6
    AIRWAY = 7  # internal air: trachea, bronchi, sinuses, nasal cavity
    LIVER = 8
    SPLEEN = 9
    KIDNEY_L = 10
    KIDNEY_R = 11
    PELVIS_L = 12  # renal collecting system (urine)
    PELVIS_R = 13
    MYOCARDIUM = 14
    BLOOD = 15  # cardiac chambers
    AORTA = 16
    VESSEL = 17  # other large vessels (IVC, iliac, carotid, jugular)
    BLADDER = 18
    BRAIN = 19
    CSF = 20
    CORTICAL = 21
    MARROW = 22  # red (trabecular) marrow
    MARROW_FAT = 23  # yellow marrow of long-bone shafts
    SALIVARY = 24
    LACRIMAL = 25
    BOWEL = 26  # small bowel wall + contents
    COLON = 27
    GAS = 28  # bowel / stomach gas
    STOMACH = 29
    URETER = 30
    EYE = 31
    PROSTATE = 32
    TABLE = 33
    BROWN_FAT = 34
    INJECTION = 35
    DISC = 36
    CARTILAGE = 37
    BILE = 38
    N = 39


TISSUE_NAMES: dict[int, str] = {v: k.lower() for k, v in vars(T).items() if k.isupper() and k != "N"}

ORGAN_OF_TISSUE: dict[int, int] = {
    T.LIVER: ORGAN_LABELS["liver"],
    T.SPLEEN: ORGAN_LABELS["spleen"],
    T.KIDNEY_L: ORGAN_LABELS["kidney_left"],
    T.PELVIS_L: ORGAN_LABELS["kidney_left"],
    T.KIDNEY_R: ORGAN_LABELS["kidney_right"],
    T.PELVIS_R: ORGAN_LABELS["kidney_right"],
    T.MYOCARDIUM: ORGAN_LABELS["heart"],
    T.BLOOD: ORGAN_LABELS["heart"],
    T.LUNG_L: ORGAN_LABELS["lung_left"],
    T.LUNG_R: ORGAN_LABELS["lung_right"],
    T.BLADDER: ORGAN_LABELS["bladder"],
    T.BRAIN: ORGAN_LABELS["brain"],
    T.CSF: ORGAN_LABELS["brain"],
    T.AORTA: ORGAN_LABELS["aorta"],
    T.CORTICAL: ORGAN_LABELS["bone"],
    T.MARROW: ORGAN_LABELS["bone"],
    T.MARROW_FAT: ORGAN_LABELS["bone"],
    T.SALIVARY: ORGAN_LABELS["salivary_glands"],
}


def organ_lut() -> np.ndarray:
    """Lookup table tissue id -> organ label (uint8, length ``T.N``)."""
    lut = np.zeros(T.N, dtype=np.uint8)
    for t, o in ORGAN_OF_TISSUE.items():
        lut[t] = o
    return lut


@dataclass(frozen=True)
class Patient:
    """Demographics that shape the body."""

    sex: str  # "M" | "F"
    age: int
    height_cm: float
    weight_kg: float
    arms: str  # "down" | "up"

    @property
    def bmi(self) -> float:
        return self.weight_kg / (self.height_cm / 100.0) ** 2


@dataclass
class Anatomy:
    """The rasterized patient.

    Attributes:
        labels: tissue ids ``T`` on the truth grid, uint8, shape (nx, ny, nz), indexed [x, y, z].
        vessel: lung-vessel partial-volume fraction in [0, 1] (float32, same shape; 0 outside the lungs).
        axes: ascending physical coordinates (mm) of the truth grid along x, y, z.
        z_diaphragm: z (mm) of the right dome; lymph-node stations above it are "above the diaphragm".
        stations: lymph-node station name -> (center mm, jitter mm (x, y, z), above_diaphragm).
        landmarks: named z levels (mm) used by lesion placement and the docs.
    """

    labels: np.ndarray
    vessel: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    z_diaphragm: float
    stations: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], bool]]
    landmarks: dict[str, float] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(a[1] - a[0]) for a in self.axes)  # type: ignore[return-value]

    def index_of(self, p: np.ndarray) -> np.ndarray:
        """Nearest truth-grid index (clipped) of physical points ``p`` (..., 3)."""
        p = np.asarray(p, dtype=np.float64)
        out = []
        for k, ax in enumerate(self.axes):
            i = np.rint((p[..., k] - ax[0]) / (ax[1] - ax[0])).astype(np.int64)
            out.append(np.clip(i, 0, len(ax) - 1))
        return np.stack(out, axis=-1)

    def point_of(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        return np.stack([self.axes[k][idx[..., k]] for k in range(3)], axis=-1).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------
# Shape primitives on the truth grid


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


# ----------------------------------------------------------------------------------------------------------
# Body dimensions


@dataclass(frozen=True)
class Body:
    """Derived dimensions (mm) of one patient."""

    H: float  # height, mm
    wf: float  # width factor (BMI)
    df: float  # abdominal depth factor (BMI)
    fat: float  # subcutaneous fat thickness at the abdomen, mm
    wall: float  # muscle wall thickness, mm
    sex: str
    arms: str

    def z(self, f: float) -> float:
        return -f * self.H

    # torso profile keypoints: f, half-width a/H, half-depth b/H
    _F = np.array([0.165, 0.19, 0.22, 0.28, 0.33, 0.39, 0.44, 0.49, 0.535])
    _A = np.array([0.062, 0.106, 0.101, 0.097, 0.092, 0.088, 0.093, 0.097, 0.092])
    _B = np.array([0.040, 0.057, 0.063, 0.065, 0.063, 0.060, 0.061, 0.061, 0.056])

    def torso_ab(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-width a(z) and half-depth b(z) of the torso (NaN outside the torso)."""
        f = -np.asarray(z, dtype=np.float64) / self.H
        sexa = np.interp(f, self._F, [1, 1, 0.95, 0.94, 0.96, 1.0, 1.05, 1.08, 1.06] if self.sex == "F"
                         else [1.0] * 9)
        a = np.interp(f, self._F, self._A) * self.H * self.wf * sexa
        dfz = np.interp(f, [0.2, 0.3, 0.36, 0.5], [self.wf, self.wf, self.df, self.df * 0.95])
        b = np.interp(f, self._F, self._B) * self.H * dfz
        outside = (f < self._F[0]) | (f > self._F[-1])
        a = np.where(outside, np.nan, a)
        b = np.where(outside, np.nan, b)
        return a, b

    def fat_at(self, z: np.ndarray) -> np.ndarray:
        f = -np.asarray(z, dtype=np.float64) / self.H
        return self.fat * np.interp(f, [0.15, 0.25, 0.35, 0.45, 0.55], [0.5, 0.7, 1.0, 1.0, 0.9])


def body_of(p: Patient) -> Body:
    bmi = p.bmi
    wf = (bmi / 23.0) ** 0.45
    df = (bmi / 23.0) ** (0.8 if p.sex == "M" else 0.65)
    fat = float(np.clip(4.0 + 1.6 * (bmi - 18.0), 3.0, 50.0) * (1.3 if p.sex == "F" else 1.0))
    wall = 16.0 if p.sex == "M" else 12.0
    return Body(H=p.height_cm * 10.0, wf=wf, df=df, fat=fat, wall=wall, sex=p.sex, arms=p.arms)


def body_extent(p: Patient) -> tuple[np.ndarray, np.ndarray]:
    """Physical bounding box (lo, hi) in mm of the body, the arms and the table."""
    b = body_of(p)
    zs = np.linspace(b.z(0.17), b.z(0.53), 50)
    a, d = b.torso_ab(zs)
    half_w = float(np.nanmax(a)) + (2 * 0.052 * b.H * b.wf ** 0.6 + 20 if p.arms == "down" else 0.0) + 10
    half_w = max(half_w, 0.14 * b.H)
    depth = float(np.nanmax(d))
    lo = np.array([-half_w, -depth - 40.0, b.z(0.72)])
    hi = np.array([half_w, depth + 45.0, b.z(-0.2) if p.arms == "up" else 10.0])
    return lo, hi


# ----------------------------------------------------------------------------------------------------------
# The painter


def build_anatomy(axes: tuple[np.ndarray, np.ndarray, np.ndarray], p: Patient,
                  rng: np.random.Generator) -> Anatomy:
    """Rasterize patient ``p`` on the truth grid ``axes`` (ascending mm coordinates along x, y, z).

    Returns an :class:`Anatomy`; the random draws (organ sizes, bladder filling, bowel gas, ...) come from
    ``rng`` so a given generator state reproduces the same patient.
    """
    cv = Canvas(axes)
    b = body_of(p)
    H = b.H
    Z = b.z
    xs, ys, zs = cv.axes
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    sc = H / 1750.0  # organ size scale

    # --- torso (superellipse cross-sections), neck, head, thighs --------------------------------------
    a_z, b_z = b.torso_ab(zs)
    t_z = b.fat_at(zs)
    in_torso = ~np.isnan(a_z)
    a_z = np.nan_to_num(a_z, nan=1.0).astype(np.float32)
    b_z = np.nan_to_num(b_z, nan=1.0).astype(np.float32)
    t_z = t_z.astype(np.float32)
    pw = 2.4
    X = np.abs(xs)[:, None, None]
    Y = ys[None, :, None]

    def superellipse(a, bb, yc=0.0):
        return (X / a[None, None, :]) ** pw + (np.abs(Y - yc) / bb[None, None, :]) ** pw <= 1.0

    tz = in_torso[None, None, :]
    outer = superellipse(a_z, b_z) & tz
    cv.labels[outer] = T.FAT_SC
    # muscle wall: thinner around the thorax (intercostal/pectoral) than around the abdomen
    wall_z = (b.wall * np.interp(-zs / H, [0.17, 0.30, 0.36], [0.55, 0.55, 1.0])).astype(np.float32)
    inner_a, inner_b = np.maximum(a_z - t_z, 5), np.maximum(b_z - t_z, 5)
    cv.labels[superellipse(inner_a, inner_b) & tz] = T.MUSCLE
    # body cavity: thinner anteriorly, thick paraspinal muscles posteriorly
    cav_a = np.maximum(inner_a - wall_z, 5)
    cav_b = np.maximum(inner_b - wall_z - 12.0, 5)
    cav_yc = -12.0
    f_z = -zs / H
    cavity_z = (f_z > 0.175) & (f_z < 0.505)
    cavity = superellipse(cav_a, cav_b, cav_yc) & cavity_z[None, None, :]
    cv.labels[cavity] = T.FAT
    del outer, cavity

    # neck
    nr = 0.036 * H * b.wf ** 0.5
    sl, r = cv.tube([(0, 0, Z(0.10)), (0, 0, Z(0.185))], nr)
    cv.paint(sl, r <= 1, T.FAT_SC, where=(T.AIR,))
    cv.paint(sl, r <= 1 - b.fat * 0.4 / nr, T.MUSCLE, where=(T.AIR, T.FAT_SC))
    # head
    head_c = (0.0, -0.004 * H, Z(0.066))
    head_r = np.array([0.044 * H, 0.056 * H, 0.066 * H])
    sl, r = cv.ellipsoid(head_c, head_r)
    cv.paint(sl, r <= 1, T.MUSCLE)
    cv.paint(sl, (r <= 1) & (r > 1 - 4.0 / head_r[0]), T.FAT_SC)
    # breasts
    if p.sex == "F":
        br = 45.0 * sc * b.wf ** 1.5
        for s in (-1, 1):
            zc = Z(0.245)
            a0, b0 = b.torso_ab(np.array([zc]))
            sl, r = cv.ellipsoid((s * 0.045 * H, -b0[0] + 0.3 * br, zc), (br, br * 0.8, br))
            cv.paint(sl, r <= 1, T.FAT_SC, where=(T.AIR,))
            sl2, r2 = cv.ellipsoid((s * 0.045 * H, -b0[0] + 0.3 * br, zc), (br * 0.5, br * 0.35, br * 0.5))
            cv.paint(sl2, r2 <= 1, T.SOFT, where=(T.FAT_SC,))
    # thighs
    for s in (-1, 1):
        pts = [(s * 0.05 * H * b.wf ** 0.5, 0.005 * H, Z(0.47)), (s * 0.052 * H * b.wf ** 0.5, 0.005 * H, Z(0.74))]
        rad = [0.046 * H * b.wf, 0.037 * H * b.wf]
        sl, r = cv.tube(pts, rad)
        cv.paint(sl, r <= 1, T.FAT_SC, where=(T.AIR,))
        cv.paint(sl, r <= 1 - b.fat * 0.9 / rad[1], T.MUSCLE, where=(T.AIR, T.FAT_SC))
    # arms
    arm_r = 0.026 * H * b.wf ** 0.8
    fore_r = 0.019 * H * b.wf ** 0.6
    arm_paths = []
    for s in (-1, 1):
        if p.arms == "down":
            zz = np.array([Z(0.19), Z(0.35), Z(0.50), Z(0.56)])
            a_sh, _ = b.torso_ab(np.clip(zz, Z(0.535), Z(0.166)))
            x_off = np.nanmax(a_sh[:2]) + arm_r + 6.0
            pts = [(s * (x_off - 8), 0.01 * H, zz[0]), (s * x_off, 0.01 * H, zz[1]),
                   (s * (x_off - 4), -0.005 * H, zz[2]), (s * (x_off - 6), -0.005 * H, zz[3])]
        else:
            hx = head_r[0] + arm_r + 8.0
            pts = [(s * (0.10 * H), 0.01 * H, Z(0.19)), (s * hx, 0.0, Z(0.05)),
                   (s * (hx - 10), -0.01 * H, Z(-0.10)), (s * (hx - 20), -0.01 * H, Z(-0.16))]
        arm_paths.append(pts)
        sl, r = cv.tube(pts, [arm_r, arm_r * 0.8, fore_r, fore_r * 0.8])
        cv.paint(sl, r <= 1, T.FAT_SC, where=(T.AIR,))
        cv.paint(sl, r <= 0.8, T.MUSCLE, where=(T.AIR, T.FAT_SC))
        # humerus + forearm bones
        sl, r = cv.tube(pts[:2], [9.0 * sc, 8.0 * sc])
        cv.bone(sl, r, 0.45, marrow=T.MARROW_FAT)
        sl, r = cv.tube(pts[1:], [7.0 * sc, 6.0 * sc, 5.0 * sc])
        cv.bone(sl, r, 0.5, marrow=T.MARROW_FAT)

    # --- spine ------------------------------------------------------------------------------------------
    # 24 vertebrae C1..L5 between f = 0.095 and 0.445, relative heights C 0.7, T 1.0, L 1.25
    w = np.array([0.7] * 7 + [1.0] * 12 + [1.25] * 5)
    edges = 0.095 + (0.445 - 0.095) * np.concatenate([[0], np.cumsum(w)]) / w.sum()
    vb_centers = []

    def spine_y(zc: float) -> float:
        f = -zc / H
        if f < 0.17:
            return 0.010 * H
        a0, b0 = b.torso_ab(np.array([zc]))
        return float(b0[0] - b.fat_at(np.array([zc]))[0] * 0.8 - (52.0 if f < 0.345 else 62.0) * sc)

    for i in range(24):
        ztop, zbot = Z(edges[i]), Z(edges[i + 1])
        zc = 0.5 * (ztop + zbot)
        kind = 0 if i < 7 else (1 if i < 19 else 2)
        rx = (10.0, 15.0 + 0.4 * (i - 7), 22.0)[kind] * sc
        ry = (8.0, 12.0 + 0.3 * (i - 7), 16.0)[kind] * sc
        yb = spine_y(zc)
        vb_centers.append((0.0, yb, zc))
        hh = 0.5 * (ztop - zbot)
        sl, r = cv.ellipsoid((0.0, yb, zc), (rx, ry, hh * 0.8))
        # cylinder-like body: use max of in-plane ellipse and z extent
        if sl is not None:
            x, y, z = cv.coords(sl)
            rin = np.sqrt((x / rx) ** 2 + ((y - yb) / ry) ** 2)
            rz = np.abs(z - zc) / (hh * 0.82)
            rn = np.maximum(rin, rz)
            cv.bone(sl, rn, 1.8 / ry)
            disc = (rin <= 1.0) & (rz > 1.0) & (np.abs(z - zc) <= hh)
            cv.paint(sl, disc, T.DISC)
        # canal + arch + spinous and transverse processes
        rc = (7.0, 7.5, 9.0)[kind] * sc
        yc = yb + ry + rc + 1.0
        sl, r = cv.tube([(0, yc, zc + hh * 0.7), (0, yc, zc - hh * 0.7)], rc + 4.5 * sc)
        if sl is not None:
            x, y, z = cv.coords(sl)
            dd = np.sqrt(x ** 2 + (y - yc) ** 2)
            arch = (r <= 1) & (dd > rc) & (y > yc - rc * 0.3)
            cv.paint(sl, arch, T.CORTICAL)
            cv.paint(sl, (r <= 1) & (dd <= rc), T.SOFT)
        sp_len = (18.0, 32.0, 28.0)[kind] * sc
        sl, r = cv.tube([(0, yc + rc, zc), (0, yc + rc + sp_len, zc - 0.3 * sp_len)], 4.0 * sc)
        cv.bone(sl, r, 0.5)
        tp = (22.0, 28.0, 36.0)[kind] * sc
        sl, r = cv.tube([(-tp, yc - 2, zc), (tp, yc - 2, zc)], 4.0 * sc)
        cv.bone(sl, r, 0.5, keep=(T.SOFT,))
    vb = np.array(vb_centers)
    y_l = float(vb[-3, 1])  # lumbar body centre (L3)

    # --- thorax: lungs, airways, heart, great vessels ----------------------------------------------------
    z_dome_r = Z(0.29) + u(-15, 15)
    z_dome_l = z_dome_r - u(8, 25)

    def dome(x, y, zd, side):
        # diaphragm dome surface: highest in the middle of each hemithorax, lower laterally/posteriorly
        cx = side * 0.045 * H
        return zd - 70.0 * (((x - cx) / (0.07 * H)) ** 2 + ((y - 10) / (0.06 * H)) ** 2) - 25.0 * (y > 0) * (y / (0.06 * H))

    z_apex = Z(0.165)
    sl = cv.box((xs[0], ys[0], Z(0.36)), (xs[-1], ys[-1], z_apex))
    if sl is not None:
        x, y, z = cv.coords(sl)
        a_s, b_s = cav_a[sl[2]][None, None, :], cav_b[sl[2]][None, None, :]
        inside = ((np.abs(x) / a_s) ** pw + (np.abs(y - cav_yc) / b_s) ** pw) <= 1.0
        taper = np.clip((z_apex - z) / 45.0, 0.05, 1.0) ** 0.5  # round apices
        cx_l = 0.45 * a_s
        med = (10.0 + 20.0 * np.clip((Z(0.20) - z) / 60.0, 0, 1)) * sc
        for side, tissue in ((1, T.LUNG_L), (-1, T.LUNG_R)):
            xl = side * x
            lobe = ((np.abs(xl - cx_l) / (0.58 * a_s * taper)) ** 2 + (np.abs(y - cav_yc) / (b_s * np.maximum(taper, 0.6))) ** 2) <= 1.0
            zd = z_dome_l if side == 1 else z_dome_r
            lung = inside & lobe & (xl > med) & (z > dome(x, y, zd, side))
            lung &= np.isin(cv.labels[sl], (T.FAT, T.MUSCLE))
            cv.labels[sl][lung] = tissue
    # trachea and main bronchi
    tr_y = -0.006 * H
    sl, r = cv.tube([(0, tr_y - 8, Z(0.125)), (0, tr_y, Z(0.19)), (0, 0.0, Z(0.215))], 9.0 * sc)
    cv.paint(sl, r <= 1, T.SOFT)
    cv.paint(sl, r <= 0.75, T.AIRWAY)
    z_car = Z(0.215)
    for s in (-1, 1):
        sl, r = cv.tube([(0, 0, z_car), (s * 0.028 * H, 5, z_car - 25), (s * 0.045 * H, 10, z_car - 45)], [7 * sc, 6 * sc, 3 * sc])
        cv.paint(sl, r <= 1, T.SOFT)
        cv.paint(sl, r <= 0.7, T.AIRWAY)
    # esophagus
    sl, r = cv.tube([(4, tr_y + 14, Z(0.13)), (8, vb[12, 1] - 25, Z(0.26)), (25, 0.0, Z(0.305))], 7.0 * sc)
    cv.paint(sl, r <= 1, T.SOFT)
    # heart: tilted ellipsoid, myocardial shell around the blood pool
    hs = sc * b.wf ** 0.3 * u(0.92, 1.1)
    hc = (0.014 * H, -0.2 * float(np.interp(Z(0.265), zs, cav_b)) - 10, Z(0.265) + u(-10, 10))
    Rh = rot_matrix(ry=np.deg2rad(-25), rz=np.deg2rad(-40))
    hr = np.array([62.0, 45.0, 47.0]) * hs
    sl, r = cv.ellipsoid(hc, hr, Rh)
    myo = u(9.0, 13.0) / hr[1]
    cv.paint(sl, r <= 1, T.MYOCARDIUM, keep=(T.CORTICAL, T.MARROW))
    cv.paint(sl, r <= 1 - myo, T.BLOOD, keep=(T.CORTICAL, T.MARROW))
    # aorta (ascending, arch, descending, abdominal) and iliac arteries
    yd = lambda i: float(vb[i, 1]) - 22.0 * sc  # noqa: E731  (just anterior to vertebral body i)
    age_f = 1.0 + 0.004 * max(p.age - 40, 0)
    ao = [(hc[0] - 28, hc[1] - 5, hc[2] + 35), (-12, -0.012 * H, Z(0.205)), (5, 0.0, Z(0.195)),
          (20, vb[9, 1] - 10, Z(0.21)), (22, yd(11), Z(0.26)), (15, yd(16), Z(0.33)), (8, yd(19), Z(0.38)),
          (4, yd(21), Z(0.415))]
    sl, r = cv.tube(ao, [15 * sc * age_f, 15 * sc * age_f, 13 * sc * age_f, 12 * sc * age_f, 12 * sc * age_f,
                         11 * sc * age_f, 10 * sc * age_f, 9 * sc * age_f])
    cv.paint(sl, r <= 1, T.AORTA, keep=(T.CORTICAL, T.MARROW, T.DISC, T.AIRWAY))
    for s in (-1, 1):
        sl, r = cv.tube([(4, yd(21), Z(0.415)), (s * 0.03 * H, yd(23), Z(0.45)), (s * 0.045 * H, -0.01 * H, Z(0.49)),
                         (s * 0.05 * H, -0.015 * H, Z(0.55))], 6.5 * sc)
        cv.paint(sl, r <= 1, T.VESSEL, where=(T.FAT, T.MUSCLE, T.FAT_SC, T.SOFT))
        # carotid + jugular
        sl, r = cv.tube([(s * 22, -0.006 * H, Z(0.10)), (s * 20, -0.004 * H, Z(0.19))], 4.0 * sc)
        cv.paint(sl, r <= 1, T.VESSEL, where=(T.MUSCLE, T.FAT_SC, T.FAT))
        sl, r = cv.tube([(s * 30, -0.003 * H, Z(0.10)), (s * 28, 0.0, Z(0.19))], 6.0 * sc)
        cv.paint(sl, r <= 1, T.VESSEL, where=(T.MUSCLE, T.FAT_SC, T.FAT))
    # IVC
    sl, r = cv.tube([(-0.013 * H, yd(22) - 5, Z(0.43)), (-0.014 * H, yd(18) - 10, Z(0.35)),
                     (-0.012 * H, hc[1] + 20, Z(0.30))], 11.0 * sc)
    cv.paint(sl, r <= 1, T.VESSEL, where=(T.FAT, T.MUSCLE, T.SOFT))

    # --- abdomen -----------------------------------------------------------------------------------------
    abd = (T.FAT, T.MUSCLE, T.SOFT, T.VESSEL)
    # liver: right lobe + left lobe, below the right dome
    ls = sc * b.wf ** 0.4 * u(0.9, 1.12)
    lc = (-0.035 * H, -0.006 * H, z_dome_r - 70 * ls)
    sl, r = cv.ellipsoid(lc, np.array([80, 72, 72]) * ls, rot_matrix(rz=np.deg2rad(15)))
    if sl is not None:
        x, y, z = cv.coords(sl)
        below = z < dome(x, y, z_dome_r, -1) - 4
        cv.paint(sl, (r <= 1) & below, T.LIVER, where=abd)
    sl, r = cv.ellipsoid((0.012 * H, -0.035 * H, z_dome_r - 45 * ls), np.array([70, 38, 38]) * ls)
    if sl is not None:
        x, y, z = cv.coords(sl)
        cv.paint(sl, (r <= 1) & (z < dome(x, y, z_dome_r, -1) - 4), T.LIVER, where=abd)
    # gallbladder
    sl, r = cv.ellipsoid((-0.028 * H, -0.04 * H, lc[2] - 45 * ls), (14, 14, 30))
    cv.paint(sl, r <= 1, T.BILE, where=(T.LIVER,) + abd)
    # stomach (gas cap on top)
    stc = (0.033 * H, -0.02 * H, z_dome_l - 65 * sc)
    sr = np.array([45, 35, 55]) * sc * u(0.8, 1.2)
    sl, r = cv.ellipsoid(stc, sr, rot_matrix(ry=np.deg2rad(20)))
    if sl is not None:
        x, y, z = cv.coords(sl)
        cv.paint(sl, r <= 1, T.STOMACH, where=abd)
        cv.paint(sl, (r <= 0.85) & (z > stc[2] + sr[2] * u(0.2, 0.6)), T.GAS, where=(T.STOMACH,))
    # spleen
    spl = sc * u(0.85, 1.2)
    a_sp = float(np.interp(z_dome_l - 40, zs, cav_a))
    sl, r = cv.ellipsoid((0.70 * a_sp, 0.02 * H, z_dome_l - 45 * spl), np.array([24, 48, 52]) * spl, rot_matrix(rz=np.deg2rad(-50)))
    if sl is not None:
        x, y, z = cv.coords(sl)
        cv.paint(sl, (r <= 1) & (z < dome(x, y, z_dome_l, 1) - 4), T.SPLEEN, where=abd + (T.STOMACH,))
    # kidneys with collecting system, ureters
    kid_paths = []
    for s, tk, tp, zf in ((1, T.KIDNEY_L, T.PELVIS_L, 0.372), (-1, T.KIDNEY_R, T.PELVIS_R, 0.385)):
        ks = sc * u(0.9, 1.1)
        kc = (s * 0.036 * H * b.wf ** 0.3, y_l - 5, Z(zf))
        R = rot_matrix(ry=np.deg2rad(-s * 12), rz=np.deg2rad(s * 30))
        sl, r = cv.ellipsoid(kc, np.array([28, 24, 55]) * ks, R)
        cv.paint(sl, r <= 1, tk, where=abd + (T.LIVER, T.SPLEEN))
        pc = (kc[0] - s * 12 * ks, kc[1] - 6, kc[2])
        sl, r = cv.ellipsoid(pc, np.array([11, 8, 20]) * ks, R)
        cv.paint(sl, r <= 1, tp, where=(tk,))
        ur = [pc, (s * 0.025 * H, y_l - 20, Z(0.42)), (s * 0.03 * H, y_l - 10, Z(0.46)), (s * 20, -0.02 * H, Z(0.485))]
        kid_paths.append(ur)
        sl, r = cv.tube(ur, 3.0 * sc)
        cv.paint(sl, r <= 1, T.URETER, where=(T.FAT, T.SOFT, T.MUSCLE))
    # psoas
    for s in (-1, 1):
        sl, r = cv.tube([(s * 28, y_l + 5, Z(0.35)), (s * 48, y_l, Z(0.43)), (s * 0.042 * H, -0.005 * H, Z(0.49))],
                        [9 * sc, 24 * sc, 18 * sc])
        cv.paint(sl, r <= 1, T.MUSCLE, where=(T.FAT, T.SOFT))
    # colon frame
    col = [(-0.045 * H, -0.01 * H, Z(0.455)), (-0.05 * H, 0.0, Z(0.375)), (-0.02 * H, -0.04 * H, Z(0.395)),
           (0.02 * H, -0.04 * H, Z(0.40)), (0.052 * H, 0.004 * H, Z(0.35)), (0.052 * H, 0.0, Z(0.44)),
           (0.02 * H, -0.02 * H, Z(0.47)), (0.0, 0.012 * H, Z(0.48)), (0.0, 0.012 * H, Z(0.52))]
    sl, r = cv.tube(col, 21 * sc)
    if sl is not None:
        cv.paint(sl, r <= 1, T.COLON, where=(T.FAT, T.SOFT))
        n = smooth_noise(r.shape, 8.0 / cv_sp(cv), rng)
        cv.paint(sl, (r <= 0.8) & (n > 0.9), T.GAS, where=(T.COLON,))
    # small bowel: loops from two smooth random fields (tube-like zero crossings)
    cb = float(np.interp(Z(0.42), zs, cav_b))
    sl, r = cv.ellipsoid((0.0, -0.25 * cb, Z(0.425)), (0.7 * float(np.interp(Z(0.42), zs, cav_a)), 0.6 * cb, 0.05 * H))
    if sl is not None:
        sp = cv_sp(cv)
        n1 = smooth_noise(r.shape, 9.0 / sp, rng)
        n2 = smooth_noise(r.shape, 14.0 / sp, rng)
        cv.paint(sl, (r <= 1) & (np.abs(n1) < 0.55), T.BOWEL, where=(T.FAT,))
        cv.paint(sl, (r <= 1) & (np.abs(n1) < 0.25) & (n2 > 1.1), T.GAS, where=(T.BOWEL,))
    # bladder, prostate / uterus
    fill = u(0.6, 1.4)
    bc = (0.0, -0.30 * float(np.interp(Z(0.485), zs, cav_b)), Z(0.49) + 15 * fill)
    sl, r = cv.ellipsoid(bc, np.array([42, 34, 32]) * sc * fill)
    cv.paint(sl, r <= 1, T.BLADDER, where=abd + (T.BOWEL, T.COLON, T.GAS, T.URETER))
    if p.sex == "M":
        sl, r = cv.ellipsoid((0.0, bc[1] + 12, Z(0.51)), np.array([20, 15, 17]) * sc * (1 + 0.005 * max(p.age - 50, 0)))
        cv.paint(sl, r <= 1, T.PROSTATE, where=abd + (T.FAT_SC,))
    elif p.age < 60:
        sl, r = cv.ellipsoid((0.0, bc[1] + 40, Z(0.475)), np.array([28, 20, 38]) * sc)
        cv.paint(sl, r <= 1, T.SOFT, where=(T.FAT, T.BOWEL, T.GAS))

    # --- bones of the trunk ------------------------------------------------------------------------------
    # ribs: arcs around the thoracic cavity, sloping down anteriorly
    rib_levels = vb[7:19]  # T1..T12
    for k, c in enumerate(rib_levels):
        zk = float(c[2])
        drop = (35.0 + 5.0 * min(k, 6)) * sc
        phi_end = np.pi * (0.88 if k < 7 else (0.72 if k < 10 else 0.5))
        ak = float(np.interp(zk, zs, cav_a)) + 5.0
        bk = float(np.interp(zk, zs, cav_b)) + 5.0
        sl = cv.box((-ak - 12, cav_yc - bk - 12, zk - drop - 12), (ak + 12, cav_yc + bk + 12, zk + 12))
        if sl is None:
            continue
        x, y, z = cv.coords(sl)
        phi = np.arctan2(np.abs(x) / ak, (y - cav_yc) / bk)  # 0 posterior .. pi anterior
        rho = np.sqrt((x / ak) ** 2 + ((y - cav_yc) / bk) ** 2)
        zr = zk - drop * (1 - np.cos(phi)) / 2
        rr = np.sqrt(((rho - 1.0) * 0.5 * (ak + bk) / (4.5 * sc)) ** 2 + ((z - zr) / (7.0 * sc)) ** 2)
        bone_arc = (phi > 0.12) & (phi < phi_end)
        cv.bone(sl, np.where(bone_arc, rr, 9.0), 0.4, keep=(T.MARROW, T.CORTICAL))
        if k < 10:
            cart = (phi >= phi_end) & (phi < np.pi * 0.95)
            cv.paint(sl, cart & (rr <= 1), T.CARTILAGE, where=(T.MUSCLE, T.FAT, T.FAT_SC))
    # sternum
    for z0, z1, hw in ((Z(0.19), Z(0.215), 24.0), (Z(0.215), Z(0.295), 15.0)):
        zc_ = 0.5 * (z0 + z1)
        a0, b0 = b.torso_ab(np.array([zc_]))
        ys_ = -b0[0] + b.fat_at(np.array([zc_]))[0] * 0.7 + 8
        sl = cv.box((-hw * sc, ys_ - 6, z1), (hw * sc, ys_ + 6, z0))
        if sl is not None:
            x, y, z = cv.coords(sl)
            rn = np.maximum(np.maximum(np.abs(x) / (hw * sc), np.abs(y - ys_) / 6.0), np.abs(z - zc_) / (0.5 * (z0 - z1)))
            cv.bone(sl, rn, 0.35)
    # clavicles and scapulae
    for s in (-1, 1):
        a0, b0 = b.torso_ab(np.array([Z(0.19)]))
        sl, r = cv.tube([(s * 18, -b0[0] + 15, Z(0.185)), (s * 0.06 * H, -b0[0] + 10, Z(0.18)), (s * 0.095 * H, 0.0, Z(0.178))], 7 * sc)
        cv.bone(sl, r, 0.4)
        sl, r = cv.ellipsoid((s * 0.062 * H, 0.75 * float(b0[0]), Z(0.23)), np.array([45, 6, 70]) * sc, rot_matrix(rz=np.deg2rad(s * 28)))
        cv.bone(sl, r, 0.6, keep=(T.LUNG_L, T.LUNG_R))
    # pelvis: sacrum, iliac wings, acetabula, pubic and ischial rami; femora
    sl, r = cv.ellipsoid((0.0, float(vb[-1, 1]) + 12, Z(0.47)), np.array([44, 16, 42]) * sc, rot_matrix(rx=np.deg2rad(-30)))
    cv.bone(sl, r, 0.25)
    for s in (-1, 1):
        sl, r = cv.ellipsoid((s * 0.055 * H, 0.012 * H, Z(0.445)), np.array([0.042 * H, 9.0 * sc, 0.038 * H]),
                             rot_matrix(rx=np.deg2rad(-10), rz=np.deg2rad(-s * 40)))
        cv.bone(sl, r, 0.35)
        ac = (s * 0.05 * H, 0.002 * H, Z(0.49))
        sl, r = cv.ellipsoid(ac, np.array([24, 30, 30]) * sc)
        cv.bone(sl, r, 0.2)
        sl, r = cv.tube([ac, (s * 12, -0.032 * H, Z(0.505))], 9 * sc)
        cv.bone(sl, r, 0.4)
        sl, r = cv.tube([ac, (s * 0.042 * H, 0.012 * H, Z(0.525)), (s * 20, -0.02 * H, Z(0.52))], 10 * sc)
        cv.bone(sl, r, 0.4)
        fh = (s * 0.052 * H, 0.002 * H, Z(0.495))
        sl, r = cv.ellipsoid(fh, np.array([24, 24, 24]) * sc)
        cv.bone(sl, r, 0.15)
        gt = (s * 0.075 * H, 0.004 * H, Z(0.51))
        sl, r = cv.tube([fh, gt], 15 * sc)
        cv.bone(sl, r, 0.25)
        sl, r = cv.tube([gt, (s * 0.062 * H * b.wf ** 0.3, 0.0, Z(0.62)), (s * 0.056 * H * b.wf ** 0.3, -0.003 * H, Z(0.75))],
                        [16 * sc, 13 * sc, 13 * sc])
        cv.bone(sl, r, 0.45, marrow=T.MARROW_FAT)

    # --- head ----------------------------------------------------------------------------------------------
    skull_r = head_r - 5.0
    sl, r = cv.ellipsoid(head_c, skull_r)
    if sl is not None:
        x, y, z = cv.coords(sl)
        t_sk = 7.0 * sc
        base = head_c[2] - 0.2 * head_r[2] + 0.35 * (y - head_c[1])  # skull base, lower posteriorly
        cranium = (r <= 1) & (z > base)
        cv.paint(sl, cranium & (r > 1 - t_sk / skull_r[0]), T.CORTICAL)
        cv.paint(sl, cranium & (r > 1 - 0.7 * t_sk / skull_r[0]) & (r <= 1 - 0.3 * t_sk / skull_r[0]), T.MARROW)
        cv.paint(sl, cranium & (r <= 1 - t_sk / skull_r[0]), T.BRAIN)
        cv.paint(sl, (r <= 1 - t_sk / skull_r[0]) & (np.abs(z - base) <= 2.0 * sc), T.CORTICAL)
    for s in (-1, 1):
        sl, r = cv.ellipsoid((s * 10 * sc, head_c[1] + 5, head_c[2] + 0.25 * head_r[2]), np.array([6, 26, 10]) * sc)
        cv.paint(sl, r <= 1, T.CSF, where=(T.BRAIN,))
        ey = head_c[1] - head_r[1] + 22
        sl, r = cv.ellipsoid((s * 32 * sc, ey, Z(0.058)), np.array([12, 12, 12]) * sc)
        cv.paint(sl, r <= 1, T.EYE, keep=(T.BRAIN,))
        sl, r = cv.ellipsoid((s * 42 * sc, ey + 2, Z(0.052)), np.array([7, 4, 4]) * sc)
        cv.paint(sl, r <= 1, T.LACRIMAL, keep=(T.BRAIN, T.EYE))
        sl, r = cv.ellipsoid((s * 28 * sc, ey + 25, Z(0.085)), np.array([14, 17, 17]) * sc)
        cv.paint(sl, r <= 1, T.AIRWAY, keep=(T.BRAIN, T.EYE))
        sl, r = cv.ellipsoid((s * 0.034 * H * b.wf ** 0.3, head_c[1] + 18, Z(0.1)), np.array([11, 20, 24]) * sc)
        cv.paint(sl, r <= 1, T.SALIVARY, keep=(T.BRAIN, T.CORTICAL, T.MARROW, T.AIRWAY))
        sl, r = cv.ellipsoid((s * 30 * sc, head_c[1] - 40, Z(0.123)), np.array([12, 12, 10]) * sc)
        cv.paint(sl, r <= 1, T.SALIVARY, where=(T.MUSCLE, T.FAT_SC, T.FAT))
        sl, r = cv.tube([(s * 46 * sc, head_c[1] + 15, Z(0.085)), (s * 46 * sc, head_c[1] + 10, Z(0.115)),
                         (s * 22 * sc, head_c[1] - 55, Z(0.125)), (0, head_c[1] - 75, Z(0.123))], 7 * sc)
        cv.bone(sl, r, 0.45, keep=(T.AIRWAY,))
        # thyroid lobes
        sl, r = cv.ellipsoid((s * 16 * sc, -0.013 * H, Z(0.16)), np.array([8, 9, 20]) * sc)
        cv.paint(sl, r <= 1, T.SOFT, where=(T.MUSCLE,))
    sl, r = cv.ellipsoid((0.0, head_c[1] - head_r[1] + 35, Z(0.08)), np.array([8, 28, 22]) * sc)
    cv.paint(sl, r <= 1, T.AIRWAY, keep=(T.BRAIN,))

    # --- table (carbon fibre, below the patient) ------------------------------------------------------
    a0, b0 = b.torso_ab(np.array([Z(0.3)]))
    y_tab = float(np.nanmax(b.torso_ab(np.linspace(Z(0.2), Z(0.5), 20))[1])) + 4.0
    sl = cv.box((-230, y_tab, zs[0]), (230, y_tab + 30, zs[-1]))
    if sl is not None:
        x, y, z = cv.coords(sl)
        curve = y_tab + 15 * (x / 230.0) ** 2
        shell = (np.abs(y - curve) <= 3.0) | (np.abs(y - curve - 22.0) <= 2.0)
        cv.paint(sl, np.broadcast_to(shell, np.broadcast_shapes(x.shape, y.shape, z.shape)), T.TABLE, where=(T.AIR,))

    # --- lung vessels: intersections of two zero sets of smooth fields (branching tube-like pattern) ---
    vessel = np.zeros(cv.shape, dtype=np.float32)
    lung = (cv.labels == T.LUNG_L) | (cv.labels == T.LUNG_R)
    if lung.any():
        idx = np.argwhere(lung)
        lo, hi = idx.min(0), idx.max(0) + 1
        sub = tuple(slice(int(a), int(b_)) for a, b_ in zip(lo, hi))
        sp = cv_sp(cv)
        n1 = smooth_noise(lung[sub].shape, 10.0 / sp, rng)
        n2 = smooth_noise(lung[sub].shape, 10.0 / sp, rng)
        x, y, z = cv.coords(sub)
        hil = np.exp(-((np.abs(x) - 0.03 * H) ** 2 + y ** 2 + (z - Z(0.235)) ** 2) / (2 * (0.04 * H) ** 2))
        width = 0.12 + 0.35 * hil  # thicker vessels near the hila
        v = np.clip(1.0 - np.sqrt(n1 ** 2 + n2 ** 2) / width, 0.0, 1.0)
        vessel[sub] = np.where(lung[sub], v, 0.0)

    # --- lymph-node stations ---------------------------------------------------------------------------
    def ab(zz: float) -> tuple[float, float]:
        return float(np.interp(zz, zs, cav_a)), float(np.interp(zz, zs, cav_b))

    a_ax, b_ax = ab(Z(0.215))
    a_ing, _ = b.torso_ab(np.array([Z(0.505)]))
    _, b_ing = b.torso_ab(np.array([Z(0.505)]))
    st: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], bool]] = {}
    for s, side in ((1, "left"), (-1, "right")):
        st[f"neck_{side}"] = ((s * 0.026 * H, -0.002 * H, Z(0.145)), (8.0, 12.0, 22.0), True)
        st[f"supraclavicular_{side}"] = ((s * 0.042 * H, 0.004 * H, Z(0.178)), (12.0, 10.0, 8.0), True)
        st[f"axilla_{side}"] = ((s * (a_ax + b.wall * 0.6 + 8), 0.0, Z(0.215)), (8.0, 18.0, 20.0), True)
        st[f"hilum_{side}"] = ((s * 0.032 * H, 2.0, Z(0.235)), (6.0, 8.0, 12.0), True)
        st[f"iliac_{side}"] = ((s * 0.042 * H, -0.004 * H, Z(0.465)), (10.0, 10.0, 15.0), False)
        st[f"inguinal_{side}"] = ((s * 0.055 * H, -float(b_ing[0]) + b.fat * 0.9 + 12, Z(0.51)), (14.0, 6.0, 14.0), False)
    st["mediastinum"] = ((-8.0, -0.2 * b_ax - 10.0, Z(0.215)), (10.0, 10.0, 22.0), True)
    st["paraaortic"] = ((22.0, y_l - 28.0, Z(0.39)), (10.0, 8.0, 35.0), False)
    st["mesenteric"] = ((5.0, -0.25 * cb, Z(0.41)), (35.0, 20.0, 25.0), False)

    # normal (non-diseased) lymph nodes: small soft-tissue ovals in the fat of each station, low uptake;
    # on CT they look like small lesions, on PET they do not
    for c0, jit, _ in st.values():
        for _ in range(int(rng.integers(1, 4))):
            c = np.asarray(c0) + rng.uniform(-1.5, 1.5, 3) * np.asarray(jit)
            rr = float(rng.uniform(2.5, 5.0)) * sc
            sl, r = cv.ellipsoid(c, (rr, rr * 0.8, rr * 1.5))
            cv.paint(sl, r <= 1, T.SOFT, where=(T.FAT, T.FAT_SC))

    landmarks = {"height_mm": H, "vertex": 0.0, "z_dome_right": z_dome_r, "z_dome_left": z_dome_l, "carina": z_car,
                 "iliac_crest": Z(0.42), "femoral_heads": Z(0.495), "heart_center": hc[2]}
    return Anatomy(labels=cv.labels, vessel=vessel, axes=cv.axes, z_diaphragm=z_dome_r, stations=st,
                   landmarks=landmarks)


def cv_sp(cv: Canvas) -> float:
    """Mean in-plane spacing of a canvas (mm)."""
    return float(0.5 * ((cv.axes[0][1] - cv.axes[0][0]) + (cv.axes[1][1] - cv.axes[1][0])))


def add_benign_hotspots(anat: Anatomy, p: Patient, rng: np.random.Generator, brown_fat: bool,
                        injection: bool) -> list[str]:
    """Paint optional non-disease hot spots (brown fat, injection-site extravasation) into ``anat.labels``.

    Returns the names of what was added (recorded in the metadata).
    """
    cv = Canvas(anat.axes)
    cv.labels = anat.labels
    H = p.height_cm * 10.0
    added = []
    if brown_fat:
        for s in (-1, 1):
            for c, r in (((s * 0.05 * H, 0.004 * H, -0.175 * H), (32, 26, 24)),
                         ((s * 0.035 * H, 0.03 * H, -0.24 * H), (12, 14, 45))):
                sl, rn = cv.ellipsoid(c, r)
                cv.paint(sl, rn <= 1, T.BROWN_FAT, where=(T.FAT, T.FAT_SC))
        added.append("brown_fat")
    if injection:
        side = 1 if rng.random() < 0.5 else -1
        arm = np.argwhere(cv.labels == T.MUSCLE)  # pick the arm voxel closest to the elbow level
        if len(arm):
            pts = anat.point_of(arm)
            z_el = -0.35 * H if p.arms == "down" else 0.0
            far = np.abs(pts[:, 0]) > 0.11 * H if p.arms == "down" else np.abs(pts[:, 0]) > 0.07 * H
            cand = pts[far & (np.sign(pts[:, 0]) == side) & (np.abs(pts[:, 2] - z_el) < 40)]
            if len(cand):
                c = cand[rng.integers(len(cand))]
                rad = float(rng.uniform(6, 14))
                sl, rn = cv.ellipsoid(c, (rad, rad, rad * 1.5))
                cv.paint(sl, rn <= 1, T.INJECTION, where=(T.MUSCLE, T.FAT_SC))
                added.append("injection_site")
    return added
