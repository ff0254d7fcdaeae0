"""The soft organs of a synthetic patient: thorax, abdomen, pelvis and head, painted into the body cavity.

Each function is one step of :func:`petctfm.synth.anatomy.build_anatomy`, called in a fixed order (later
shapes overwrite earlier ones, and the random draws must come in the same order for a seed to reproduce a
patient). Organs are ellipsoids and tubes sized by height (``Body.sc`` = H / 1750 mm) and BMI, mostly
restricted by ``where=`` to the tissues they may displace (cavity fat, muscle, soft tissue).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from petctfm.synth.body import PW, Body, Cavity, Patient, head_ellipsoid
from petctfm.synth.canvas import Canvas, cv_sp, rot_matrix, smooth_noise, uniform
from petctfm.synth.tissues import T

ABDOMINAL = (T.FAT, T.MUSCLE, T.SOFT, T.VESSEL)  # tissues an abdominal organ may paint over


def dome(x, y, zd: float, side: int, H: float):
    """Height z (mm) of the diaphragm dome of one side (``side`` +1 left, -1 right) at points (x, y) mm.

    Highest (``zd``) in the middle of each hemithorax, lower laterally and posteriorly; broadcasts like x, y.
    """
    cx = side * 0.045 * H
    return zd - 70.0 * (((x - cx) / (0.07 * H)) ** 2 + ((y - 10) / (0.06 * H)) ** 2) - 25.0 * (y > 0) * (y / (0.06 * H))


def paint_lungs_and_airways(cv: Canvas, b: Body, cavity: Cavity, vb: np.ndarray,
                            rng: np.random.Generator) -> tuple[float, float, float]:
    """Draw the diaphragm domes and paint both lungs (round apices, domed bases), trachea, main bronchi
    and esophagus.

    ``vb``: (24, 3) vertebral-body centres (mm). Returns ``(z_dome_right, z_dome_left, z_carina)`` in mm.
    """
    H, Z, sc = b.H, b.z, b.sc
    xs, ys, zs = cv.axes
    cav_a, cav_b, cav_yc, pw = cavity.a, cavity.b, cavity.yc, PW
    u = partial(uniform, rng)
    z_dome_r = Z(0.29) + u(-15, 15)
    z_dome_l = z_dome_r - u(8, 25)

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
            lung = inside & lobe & (xl > med) & (z > dome(x, y, zd, side, H))
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
    return z_dome_r, z_dome_l, z_car


def paint_heart_and_vessels(cv: Canvas, b: Body, p: Patient, cavity: Cavity, vb: np.ndarray,
                            rng: np.random.Generator) -> tuple[float, float, float]:
    """Paint the tilted heart (myocardial shell around the blood pool), the aorta (root, arch, descending,
    abdominal) with the iliac arteries, carotids, jugulars and the IVC.

    The aorta widens with age. Returns the heart centre (mm).
    """
    H, Z, sc = b.H, b.z, b.sc
    zs = cv.axes[2]
    cav_b = cavity.b
    u = partial(uniform, rng)
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
    return hc


def paint_abdominal_organs(cv: Canvas, b: Body, cavity: Cavity, vb: np.ndarray, z_dome_r: float, z_dome_l: float,
                           rng: np.random.Generator) -> None:
    """Paint the liver (right and left lobes under the right dome), gallbladder, stomach with gas cap,
    spleen (under the left dome), kidneys with collecting systems and ureters, and the psoas muscles.

    ``cavity``: body-cavity cross-sections (the spleen hugs its left wall); ``vb``: (24, 3) vertebral-body
    centres (mm); ``z_dome_*``: dome heights (mm) from
    :func:`paint_lungs_and_airways`.
    """
    H, Z, sc = b.H, b.z, b.sc
    zs = cv.axes[2]
    cav_a = cavity.a
    u = partial(uniform, rng)
    abd = ABDOMINAL
    y_l = float(vb[-3, 1])  # lumbar body centre (L3)
    # liver: right lobe + left lobe, below the right dome
    ls = sc * b.wf ** 0.4 * u(0.9, 1.12)
    lc = (-0.035 * H, -0.006 * H, z_dome_r - 70 * ls)
    sl, r = cv.ellipsoid(lc, np.array([80, 72, 72]) * ls, rot_matrix(rz=np.deg2rad(15)))
    if sl is not None:
        x, y, z = cv.coords(sl)
        below = z < dome(x, y, z_dome_r, -1, H) - 4
        cv.paint(sl, (r <= 1) & below, T.LIVER, where=abd)
    sl, r = cv.ellipsoid((0.012 * H, -0.035 * H, z_dome_r - 45 * ls), np.array([70, 38, 38]) * ls)
    if sl is not None:
        x, y, z = cv.coords(sl)
        cv.paint(sl, (r <= 1) & (z < dome(x, y, z_dome_r, -1, H) - 4), T.LIVER, where=abd)
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
        cv.paint(sl, (r <= 1) & (z < dome(x, y, z_dome_l, 1, H) - 4), T.SPLEEN, where=abd + (T.STOMACH,))
    # kidneys with collecting system, ureters
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
        sl, r = cv.tube(ur, 3.0 * sc)
        cv.paint(sl, r <= 1, T.URETER, where=(T.FAT, T.SOFT, T.MUSCLE))
    # psoas
    for s in (-1, 1):
        sl, r = cv.tube([(s * 28, y_l + 5, Z(0.35)), (s * 48, y_l, Z(0.43)), (s * 0.042 * H, -0.005 * H, Z(0.49))],
                        [9 * sc, 24 * sc, 18 * sc])
        cv.paint(sl, r <= 1, T.MUSCLE, where=(T.FAT, T.SOFT))


def paint_bowel_and_pelvis(cv: Canvas, b: Body, p: Patient, cavity: Cavity, rng: np.random.Generator) -> None:
    """Paint the colon frame with gas, small-bowel loops with gas pockets (zero crossings of smooth random
    fields), the bladder with random filling, and the prostate (men) or uterus (women under 60).
    """
    H, Z, sc = b.H, b.z, b.sc
    zs = cv.axes[2]
    cav_a, cav_b = cavity.a, cavity.b
    u = partial(uniform, rng)
    abd = ABDOMINAL
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


def paint_head(cv: Canvas, b: Body) -> None:
    """Paint the skull (cortex, diploë, skull base) with the brain and ventricles, eyes, lacrimal glands,
    maxillary sinuses, parotid and submandibular glands, mandible, thyroid lobes and the nasal cavity.

    Runs after the trunk bones, inside the head outline of ``body.paint_neck_head_limbs``.
    """
    H, Z, sc = b.H, b.z, b.sc
    head_c, head_r = head_ellipsoid(b)
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
