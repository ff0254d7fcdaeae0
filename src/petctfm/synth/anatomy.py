"""Body and organ geometry of a synthetic patient, rasterized as a tissue label map.

Everything is defined in physical patient coordinates (mm) in ITK's LPS world: +x is the patient's Left,
+y Posterior, +z Superior. The vertex (top of the head) is at z = 0 and the body extends to negative z
(head first, supine on the table, which lies posterior, +y). Landmarks are placed at fractions ``f`` of
the body height below the vertex (``z = -f * H``); widths scale with sex, height and body-mass index.

The map is painted on an axis-aligned "truth" grid (identity direction, ascending coordinates); each shape is
evaluated only inside its bounding box (``synth/canvas.py``). Later layers overwrite earlier ones, so
:func:`build_anatomy` runs its steps in a fixed order, reading top to bottom: body outline and limbs
(``synth/body.py``) -> spine (``synth/skeleton.py``) -> thoracic, abdominal and pelvic organs
(``synth/organs.py``) -> trunk bones -> head -> table -> lung vessels -> lymph-node stations (this file).
Tissue ids (``synth/tissues.T``) are internal; physiology maps them to HU and SUV, ``ORGAN_OF_TISSUE`` maps
them to the public organ labels of ``core.labels.ORGAN_LABELS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from petctfm.synth.body import Body, Cavity, Patient, body_of, paint_neck_head_limbs, paint_table, paint_trunk_outline
from petctfm.synth.canvas import Canvas, cv_sp, smooth_noise
from petctfm.synth.organs import (paint_abdominal_organs, paint_bowel_and_pelvis, paint_head, paint_heart_and_vessels,
                                  paint_lungs_and_airways)
from petctfm.synth.skeleton import paint_spine, paint_trunk_bones
from petctfm.synth.tissues import T

# lymph-node station: (centre mm, jitter mm (x, y, z), above the diaphragm)
Station = tuple[tuple[float, float, float], tuple[float, float, float], bool]


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


def build_anatomy(axes: tuple[np.ndarray, np.ndarray, np.ndarray], p: Patient,
                  rng: np.random.Generator) -> Anatomy:
    """Rasterize patient ``p`` on the truth grid ``axes`` (ascending mm coordinates along x, y, z).

    Returns an :class:`Anatomy` (labels (nx, ny, nz) uint8, vessel fraction float32); the random draws
    (organ sizes, bladder filling, bowel gas, ...) come from ``rng`` in a fixed order, so a given generator
    state reproduces the same patient.
    """
    cv = Canvas(axes)
    b = body_of(p)
    cavity = paint_trunk_outline(cv, b)
    paint_neck_head_limbs(cv, b, p)
    vb = paint_spine(cv, b)
    z_dome_r, z_dome_l, z_car = paint_lungs_and_airways(cv, b, cavity, vb, rng)
    hc = paint_heart_and_vessels(cv, b, p, cavity, vb, rng)
    paint_abdominal_organs(cv, b, cavity, vb, z_dome_r, z_dome_l, rng)
    paint_bowel_and_pelvis(cv, b, p, cavity, rng)
    paint_trunk_bones(cv, b, cavity, vb)
    paint_head(cv, b)
    paint_table(cv, b)
    vessel = lung_vessels(cv, b, rng)
    st = lymph_node_stations(b, cavity, vb)
    paint_normal_nodes(cv, b, st, rng)
    H, Z = b.H, b.z
    landmarks = {"height_mm": H, "vertex": 0.0, "z_dome_right": z_dome_r, "z_dome_left": z_dome_l, "carina": z_car,
                 "iliac_crest": Z(0.42), "femoral_heads": Z(0.495), "heart_center": hc[2]}
    return Anatomy(labels=cv.labels, vessel=vessel, axes=cv.axes, z_diaphragm=z_dome_r, stations=st,
                   landmarks=landmarks)


def lung_vessels(cv: Canvas, b: Body, rng: np.random.Generator) -> np.ndarray:
    """Lung-vessel partial-volume fraction, (nx, ny, nz) float32 in [0, 1], 0 outside the lungs.

    Intersections of the zero sets of two smooth random fields (a branching tube-like pattern), thicker near
    the hila. Reads the painted lungs; paints nothing.
    """
    H, Z = b.H, b.z
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
    return vessel


def lymph_node_stations(b: Body, cavity: Cavity, vb: np.ndarray) -> dict[str, Station]:
    """The lymph-node stations (neck, supraclavicular, axilla, hilum, iliac, inguinal per side; mediastinum,
    para-aortic, mesenteric): name -> (centre mm, jitter mm (x, y, z), above the diaphragm).

    ``vb``: (24, 3) vertebral-body centres (mm). Deterministic (no random draws).
    """
    H, Z = b.H, b.z
    y_l = float(vb[-3, 1])  # lumbar body centre (L3)
    cb = cavity.half_axes(Z(0.42))[1]
    a_ax, b_ax = cavity.half_axes(Z(0.215))
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
    return st


def paint_normal_nodes(cv: Canvas, b: Body, st: dict[str, Station], rng: np.random.Generator) -> None:
    """Paint 1-3 normal (non-diseased) lymph nodes per station: soft-tissue ovals of 2.5-5 mm radius in fat.

    On CT they look like small lesions; on PET they have low uptake.
    """
    sc = b.sc
    for c0, jit, _ in st.values():
        for _ in range(int(rng.integers(1, 4))):
            c = np.asarray(c0) + rng.uniform(-1.5, 1.5, 3) * np.asarray(jit)
            rr = float(rng.uniform(2.5, 5.0)) * sc
            sl, r = cv.ellipsoid(c, (rr, rr * 0.8, rr * 1.5))
            cv.paint(sl, r <= 1, T.SOFT, where=(T.FAT, T.FAT_SC))


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
