"""The outer shape of a synthetic patient: demographics, body dimensions, and the painted body outline.

Coordinates are physical LPS mm (+x Left, +y Posterior, +z Superior) with the vertex at z = 0 and the body
extending to negative z; landmarks sit at fractions ``f`` of the height below the vertex (``z = -f * H``).
:func:`paint_trunk_outline` and :func:`paint_neck_head_limbs` are the first two steps of
:func:`petctfm.synth.anatomy.build_anatomy`; :func:`paint_table` adds the scanner table near the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctfm.synth.canvas import Canvas
from petctfm.synth.tissues import T

PW = 2.4  # superellipse exponent of the torso and body-cavity cross-sections


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

    @property
    def sc(self) -> float:
        """Organ size scale: height / 1750 mm (sizes in the painters are for a 175 cm patient)."""
        return self.H / 1750.0


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


@dataclass(frozen=True)
class Cavity:
    """Superellipse cross-section of the body cavity (visceral / mediastinal fat) per truth-grid z slice.

    Attributes:
        a: half-width (mm) per z slice, (nz,) float32 (1.0 outside the torso).
        b: half-depth (mm) per z slice, (nz,) float32.
        yc: y of the cross-section centre (mm); the cavity sits anterior to the paraspinal muscles.
        z: the truth grid's z coordinates (mm), (nz,) float32, ascending.
    """

    a: np.ndarray
    b: np.ndarray
    yc: float
    z: np.ndarray

    def half_axes(self, zz: float) -> tuple[float, float]:
        """Half-width and half-depth (mm) at height ``zz`` (mm), linearly interpolated between slices."""
        return float(np.interp(zz, self.z, self.a)), float(np.interp(zz, self.z, self.b))


def paint_trunk_outline(cv: Canvas, b: Body) -> Cavity:
    """Paint the torso as nested superellipse cross-sections: subcutaneous fat, muscle wall, body cavity.

    Works slice by slice over the whole (nx, ny, nz) canvas; the torso spans f = 0.165 .. 0.535 of the height,
    the cavity f = 0.175 .. 0.505. Returns the cavity cross-sections, which the organ and rib painters fill.
    """
    H = b.H
    xs, ys, zs = cv.axes
    a_z, b_z = b.torso_ab(zs)
    t_z = b.fat_at(zs)
    in_torso = ~np.isnan(a_z)
    a_z = np.nan_to_num(a_z, nan=1.0).astype(np.float32)
    b_z = np.nan_to_num(b_z, nan=1.0).astype(np.float32)
    t_z = t_z.astype(np.float32)
    pw = PW
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
    return Cavity(a=cav_a, b=cav_b, yc=cav_yc, z=zs)


def head_ellipsoid(b: Body) -> tuple[tuple[float, float, float], np.ndarray]:
    """Centre (mm) and radii (3,) float64 mm of the head ellipsoid (scalp outline; the skull sits 5 mm inside)."""
    H, Z = b.H, b.z
    head_c = (0.0, -0.004 * H, Z(0.066))
    head_r = np.array([0.044 * H, 0.056 * H, 0.066 * H])
    return head_c, head_r


def paint_neck_head_limbs(cv: Canvas, b: Body, p: Patient) -> None:
    """Paint the neck, head outline (muscle + scalp fat), breasts (women), thighs and arms with their bones.

    Arms follow ``p.arms``: along the torso (``down``) or raised beside the head (``up``). Humerus and forearm
    bones have fatty marrow. Shapes are tubes and ellipsoids sized by height (mm) and width factor.
    """
    H, Z, sc = b.H, b.z, b.sc
    # neck
    nr = 0.036 * H * b.wf ** 0.5
    sl, r = cv.tube([(0, 0, Z(0.10)), (0, 0, Z(0.185))], nr)
    cv.paint(sl, r <= 1, T.FAT_SC, where=(T.AIR,))
    cv.paint(sl, r <= 1 - b.fat * 0.4 / nr, T.MUSCLE, where=(T.AIR, T.FAT_SC))
    # head
    head_c, head_r = head_ellipsoid(b)
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
        sl, r = cv.tube(pts, [arm_r, arm_r * 0.8, fore_r, fore_r * 0.8])
        cv.paint(sl, r <= 1, T.FAT_SC, where=(T.AIR,))
        cv.paint(sl, r <= 0.8, T.MUSCLE, where=(T.AIR, T.FAT_SC))
        # humerus + forearm bones
        sl, r = cv.tube(pts[:2], [9.0 * sc, 8.0 * sc])
        cv.bone(sl, r, 0.45, marrow=T.MARROW_FAT)
        sl, r = cv.tube(pts[1:], [7.0 * sc, 6.0 * sc, 5.0 * sc])
        cv.bone(sl, r, 0.5, marrow=T.MARROW_FAT)


def paint_table(cv: Canvas, b: Body) -> None:
    """Paint the carbon-fibre scanner table (two curved shells, 3 and 2 mm thick) posterior to the patient.

    Only over air; spans x = -230 .. 230 mm and the whole z range of the canvas.
    """
    Z = b.z
    zs = cv.axes[2]
    a0, b0 = b.torso_ab(np.array([Z(0.3)]))
    y_tab = float(np.nanmax(b.torso_ab(np.linspace(Z(0.2), Z(0.5), 20))[1])) + 4.0
    sl = cv.box((-230, y_tab, zs[0]), (230, y_tab + 30, zs[-1]))
    if sl is not None:
        x, y, z = cv.coords(sl)
        curve = y_tab + 15 * (x / 230.0) ** 2
        shell = (np.abs(y - curve) <= 3.0) | (np.abs(y - curve - 22.0) <= 2.0)
        cv.paint(sl, np.broadcast_to(shell, np.broadcast_shapes(x.shape, y.shape, z.shape)), T.TABLE, where=(T.AIR,))
