"""The trunk skeleton of a synthetic patient: spine, ribs, sternum, shoulder girdle, pelvis and femora.

Bones are painted as a cortical shell around (red or fatty) marrow with :meth:`Canvas.bone`. The spine is a
step of its own because the thoracic organs, vessels and ribs are placed relative to its vertebral bodies;
the other trunk bones are painted after the organs so they overwrite them. Arm bones are painted with the
arms (``body.paint_neck_head_limbs``), the skull with the head (``organs.paint_head``).
"""

from __future__ import annotations

import numpy as np

from petctfm.synth.body import Body, Cavity
from petctfm.synth.canvas import Canvas, rot_matrix
from petctfm.synth.tissues import T


def paint_spine(cv: Canvas, b: Body) -> np.ndarray:
    """Paint 24 vertebrae C1..L5 (bodies, discs, canal, arch, spinous and transverse processes).

    They lie between f = 0.095 and 0.445 of the height, relative heights cervical 0.7, thoracic 1.0, lumbar
    1.25. Returns the vertebral-body centres (mm), (24, 3) float64 in order C1..L5, which later steps use as
    landmarks (esophagus, aorta, kidneys, ribs).
    """
    H, Z, sc = b.H, b.z, b.sc
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
    return np.array(vb_centers)


def paint_trunk_bones(cv: Canvas, b: Body, cavity: Cavity, vb: np.ndarray) -> None:
    """Paint 12 rib pairs with costal cartilage, sternum, clavicles, scapulae, sacrum, iliac wings,
    acetabula, pubic and ischial rami, and the femora (head, neck, shaft with fatty marrow).

    ``cavity``: the body-cavity cross-sections (ribs wrap around them); ``vb``: (24, 3) vertebral-body
    centres (mm) from :func:`paint_spine` (rib levels T1..T12, sacrum).
    """
    H, Z, sc = b.H, b.z, b.sc
    zs = cv.axes[2]
    cav_a, cav_b, cav_yc = cavity.a, cavity.b, cavity.yc
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
