"""Lesions: disease pattern per diagnosis, placement, irregular shapes, uptake, CT correlate, and the stage.

A lesion is an irregular blob (a sphere whose radius is modulated by a few random low-frequency lobes, so
lobulated rather than spherical), placed at a lymph-node station or inside an organ (lung, liver, bone,
spleen, prostate, subcutaneous fat). Its uptake is heterogeneous (smooth texture, brighter centre, optional
necrotic core, optional low contrast) and its CT appearance depends on where it sits (soft tissue in fat
or lung, hypodense in liver/spleen, lytic or sclerotic in bone).

Stage rule (the label of the staging task, derived only from where the lesions are):
- lymphoma (Ann Arbor): ``early`` when every lesion is nodal and all are on one side of the diaphragm;
  ``advanced`` when nodes are on both sides or any extranodal organ (spleen, lung, liver, bone) is involved.
- solid tumours (melanoma, lung cancer, prostate cancer): ``early`` when every lesion lies in one
  primary region (one lung; one skin region; the prostate); ``advanced`` as soon as nodes, bone, liver or a
  second region are involved.
- negatives: ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctfm.synth.anatomy import Anatomy
from petctfm.synth.canvas import smooth_noise
from petctfm.synth.tissues import T

BONE = (T.CORTICAL, T.MARROW, T.MARROW_FAT)
NODE_OK = (T.FAT, T.FAT_SC, T.MUSCLE, T.SOFT, T.BOWEL, T.LUNG_L, T.LUNG_R, T.VESSEL, T.COLON, T.BROWN_FAT)
NODE_BAD = (T.AORTA, T.AIRWAY, T.MYOCARDIUM, T.BLOOD, T.BLADDER, T.KIDNEY_L, T.KIDNEY_R, T.PELVIS_L,
            T.PELVIS_R, T.BRAIN, T.LIVER, T.SPLEEN) + BONE
URINE = (T.BLADDER, T.KIDNEY_L, T.KIDNEY_R, T.PELVIS_L, T.PELVIS_R, T.URETER)
PRIMARY_REGIONS = {
    "lung_cancer": ("lung_left", "lung_right"),
    "melanoma": ("skin_head_neck", "skin_trunk", "skin_arm_left", "skin_arm_right", "skin_leg_left",
                 "skin_leg_right"),
    "prostate_cancer": ("prostate",),
}


@dataclass
class Lesion:
    """One lesion (physical units, LPS mm)."""

    region: str  # e.g. "axilla_left", "liver", "bone", "lung_right", "skin_trunk", "prostate"
    kind: str  # "node" | "organ"
    center: np.ndarray
    diameter_mm: float
    suv_max: float
    necrotic: bool
    low_contrast: bool
    ct: str  # "soft" | "hypodense" | "lytic" | "sclerotic" | "isodense"
    above_diaphragm: bool
    lobes: np.ndarray  # (k, 4): unit direction (3) + amplitude (1)
    volume_ml: float = 0.0  # rendered volume on the truth grid (set by render_lesions)


def stage_of(diagnosis: str, lesions: list[Lesion]) -> str:
    """``early`` | ``advanced`` | ``none`` from lesion regions (rule in the module docstring)."""
    if diagnosis == "negative" or not lesions:
        return "none"
    if diagnosis == "lymphoma":
        if any(les.kind != "node" for les in lesions):
            return "advanced"
        return "early" if len({les.above_diaphragm for les in lesions}) == 1 else "advanced"
    regions = {les.region for les in lesions}
    if len(regions) == 1 and next(iter(regions)) in PRIMARY_REGIONS.get(diagnosis, ()):
        return "early"
    return "advanced"


# ----------------------------------------------------------------------------------------------------------
# Disease patterns: a list of (region, count, diameter range mm, SUVmax range)


def plan_pattern(diagnosis: str, advanced: bool, rng: np.random.Generator) -> list[tuple[str, int, tuple, tuple]]:
    side = lambda: "left" if rng.random() < 0.5 else "right"  # noqa: E731
    ri = lambda a, b: int(rng.integers(a, b + 1))  # noqa: E731
    out: list[tuple[str, int, tuple, tuple]] = []
    if diagnosis == "lymphoma":
        upper = ["neck_left", "neck_right", "supraclavicular_left", "supraclavicular_right", "axilla_left",
                 "axilla_right", "mediastinum", "hilum_left", "hilum_right"]
        lower = ["paraaortic", "mesenteric", "iliac_left", "iliac_right", "inguinal_left", "inguinal_right"]
        size, suv = (10, 45), (4, 25)
        if not advanced:
            pool = upper if rng.random() < 0.65 else lower
            for st in rng.choice(pool, size=ri(1, 2), replace=False):
                out.append((str(st), ri(1, 3), size, suv))
        else:
            for st in rng.choice(upper, size=ri(1, 4), replace=False):
                out.append((str(st), ri(1, 3), size, suv))
            for st in rng.choice(lower, size=ri(1, 3), replace=False):
                out.append((str(st), ri(1, 3), size, suv))
            if rng.random() < 0.4:
                out.append(("spleen", ri(1, 3), (8, 30), (4, 18)))
            if rng.random() < 0.2:
                out.append(("bone", ri(1, 3), (10, 30), (4, 15)))
            if rng.random() < 0.15:
                out.append(("mediastinum", 1, (50, 80), (6, 25)))  # bulky
    elif diagnosis == "melanoma":
        skin = "skin_" + str(rng.choice(["trunk", "trunk", "head_neck", f"leg_{side()}", f"arm_{side()}"]))
        out.append((skin, ri(1, 2), (5, 25), (2, 10)))
        if advanced:
            s = side()
            out.append((str(rng.choice([f"axilla_{s}", f"inguinal_{s}", f"neck_{s}"])), ri(1, 3), (8, 35), (4, 20)))
            for reg, p, n, size, suv in (("lung", 0.5, (1, 5), (5, 20), (2, 12)), ("liver", 0.35, (1, 4), (8, 40), (4, 18)),
                                         ("bone", 0.3, (1, 3), (8, 25), (3, 15)), ("skin_trunk", 0.3, (1, 3), (5, 20), (3, 12))):
                if rng.random() < p:
                    reg = f"lung_{side()}" if reg == "lung" else reg
                    out.append((reg, ri(*n), size, suv))
    elif diagnosis == "lung_cancer":
        s = side()
        out.append((f"lung_{s}", 1, (12, 70) if advanced else (8, 40), (3, 20)))
        if rng.random() < 0.2:
            out.append((f"lung_{s}", 1, (5, 12), (2, 6)))  # satellite nodule
        if advanced:
            out.append((str(rng.choice([f"hilum_{s}", "mediastinum"])), ri(1, 3), (8, 30), (3, 15)))
            for reg, p, n, size, suv in (("mediastinum", 0.4, (1, 2), (10, 30), (3, 15)),
                                         (f"supraclavicular_{s}", 0.2, (1, 1), (8, 20), (3, 12)),
                                         ("liver", 0.3, (1, 4), (10, 40), (4, 15)), ("bone", 0.35, (1, 4), (10, 30), (3, 15)),
                                         (f"lung_{'left' if s == 'right' else 'right'}", 0.25, (1, 3), (5, 15), (2, 8))):
                if rng.random() < p:
                    out.append((reg, ri(*n), size, suv))
    elif diagnosis == "prostate_cancer":
        if not advanced or rng.random() < 0.6:
            out.append(("prostate", ri(1, 2), (6, 18), (4, 20)))
        if advanced:
            s = side()
            out.append((f"iliac_{s}", ri(1, 3), (5, 18), (4, 30)))
            for reg, p, n, size, suv in (("iliac_left" if s == "right" else "iliac_right", 0.4, (1, 2), (5, 15), (4, 25)),
                                         ("paraaortic", 0.4, (1, 3), (5, 15), (4, 25)),
                                         ("bone", 0.55, (1, 8), (6, 25), (4, 30))):
                if rng.random() < p:
                    out.append((reg, ri(*n), size, suv))
    return out


# ----------------------------------------------------------------------------------------------------------
# Placement


def _organ_tissues(region: str) -> tuple[int, ...]:
    if region.startswith("lung_"):
        return (T.LUNG_L,) if region.endswith("left") else (T.LUNG_R,)
    return {"liver": (T.LIVER,), "spleen": (T.SPLEEN,), "bone": (T.MARROW,), "prostate": (T.PROSTATE,)}.get(
        region, (T.FAT_SC,))


def _skin_region(p: np.ndarray, anat: Anatomy) -> str:
    H = float(anat.landmarks.get("height_mm", 1750.0))
    f = -p[2] / H
    side = "left" if p[0] > 0 else "right"
    if f < 0.17:
        return "skin_head_neck"
    if abs(p[0]) > 0.11 * H and f < 0.56:
        return f"skin_arm_{side}"
    if f > 0.52:
        return f"skin_leg_{side}"
    return "skin_trunk"


def _probe(anat: Anatomy, c: np.ndarray, r: float) -> np.ndarray:
    """Tissue ids at 27 points of a sphere of radius ``r`` around ``c`` (centre + 26 directions)."""
    g = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64)
    n = np.linalg.norm(g, axis=1, keepdims=True)
    g = np.where(n > 0, g / np.maximum(n, 1e-9), 0.0)
    pts = c[None, :] + g * r
    idx = anat.index_of(pts)
    return anat.labels[idx[:, 0], idx[:, 1], idx[:, 2]]


def place_lesions(anat: Anatomy, diagnosis: str, pattern, rng: np.random.Generator,
                  min_gap_mm: float, bounds: tuple[np.ndarray, np.ndarray] | None = None,
                  max_lesions: int = 20, min_diameter_mm: float = 4.0) -> list[Lesion]:
    """Place lesions of ``pattern`` in ``anat``; a lesion that does not fit after 40 tries is dropped.

    ``bounds`` (lo, hi mm): lesions must lie entirely inside this box (the PET field of view).
    ``min_diameter_mm``: lower clip of the drawn diameters (the generator uses one PET voxel at ``tiny``).

    Lesions never overlap: centres are at least ``r1 + r2 + min_gap_mm`` apart.
    """
    placed: list[Lesion] = []
    cache: dict[tuple[int, ...], np.ndarray] = {}
    for region, count, size, suv in pattern:
        for _ in range(count):
            if len(placed) >= max_lesions:
                return placed
            d = max(float(np.exp(rng.uniform(np.log(size[0]), np.log(size[1])))), min_diameter_mm)
            r = d / 2
            for _try in range(40):
                if region in anat.stations:
                    c0, jit, above = anat.stations[region]
                    c = np.asarray(c0) + rng.uniform(-1, 1, 3) * np.asarray(jit)
                    probe = _probe(anat, c, 0.8 * r)
                    if np.isin(probe, NODE_BAD).mean() > 0.1 or probe[13] in NODE_BAD:
                        continue
                    kind, reg = "node", region
                else:
                    tissues = _organ_tissues(region)
                    if tissues not in cache:
                        cache[tissues] = np.argwhere(np.isin(anat.labels, tissues))
                    cand = cache[tissues]
                    if len(cand) == 0:
                        break
                    c = anat.point_of(cand[rng.integers(len(cand))]) + rng.uniform(-0.5, 0.5, 3) * np.asarray(anat.spacing)
                    probe = _probe(anat, c, 0.8 * r if region != "bone" else 0.5 * r)
                    frac_in = np.isin(probe, tissues + (BONE if region == "bone" else ())).mean()
                    if region.startswith("skin"):
                        ok = np.isin(probe, (T.FAT_SC, T.MUSCLE, T.AIR)).mean() > 0.9 and probe[13] == T.FAT_SC
                    else:
                        ok = frac_in >= (0.6 if region != "prostate" else 0.4)
                    if not ok:
                        continue
                    kind = "organ"
                    reg = _skin_region(c, anat) if region.startswith("skin") else region
                    above = bool(c[2] > anat.z_diaphragm)
                if bounds is not None and (np.any(c - r < bounds[0]) or np.any(c + r > bounds[1])):
                    continue
                if any(np.linalg.norm(c - q.center) < r + q.diameter_mm / 2 + min_gap_mm for q in placed):
                    continue
                necrotic = d > 28 and rng.random() < 0.5
                low = rng.random() < 0.15
                ct = {"liver": "hypodense", "spleen": "hypodense", "prostate": "isodense"}.get(reg, "soft")
                if reg == "bone":
                    ct = "sclerotic" if rng.random() < (0.8 if diagnosis == "prostate_cancer" else 0.3) else "lytic"
                k = int(rng.integers(2, 6))
                dirs = rng.standard_normal((k, 3))
                dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
                amps = rng.uniform(0.1, 0.35, (k, 1))
                placed.append(Lesion(reg, kind, c.astype(np.float64), d, float(rng.uniform(*suv)), bool(necrotic),
                                     bool(low), ct, bool(above), np.hstack([dirs, amps])))
                break
    return placed


# ----------------------------------------------------------------------------------------------------------
# Rasterization


def render_lesions(anat: Anatomy, lesions: list[Lesion], hu: np.ndarray, suv: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Blend lesions into ``hu`` and ``suv`` (truth grid, in place); returns the lesion occupancy.

    Occupancy is an anti-aliased fraction in [0, 1] (float32, truth grid), so lesions smaller than a truth
    voxel still show up. Each lesion's SUV peaks at its ``suv_max`` (low-contrast lesions: 1.5–2.5x the local
    background, at least 2; every lesion at least 1.3x the 75th percentile of its neighbourhood outside
    urine-filled organs, at most 30); necrotic cores have low uptake and lower HU. Updates ``suv_max`` to
    the value actually used.
    """
    occ = np.zeros(anat.labels.shape, dtype=np.float32)
    axes = anat.axes
    h = float(np.mean(anat.spacing))
    for les in lesions:
        r = les.diameter_mm / 2
        rmax = r * (1 + les.lobes[:, 3].sum()) + h
        sl = []
        for k in range(3):
            a = axes[k]
            i0 = int(np.searchsorted(a, les.center[k] - rmax, "left"))
            i1 = int(np.searchsorted(a, les.center[k] + rmax, "right"))
            sl.append(slice(max(i0, 0), min(max(i1, i0 + 1), len(a))))
        sl = tuple(sl)
        x = axes[0][sl[0]][:, None, None] - les.center[0]
        y = axes[1][sl[1]][None, :, None] - les.center[1]
        z = axes[2][sl[2]][None, None, :] - les.center[2]
        dist = np.sqrt(x ** 2 + y ** 2 + z ** 2) + 1e-6
        rdir = np.full(dist.shape, 1.0, dtype=np.float32)
        for dx, dy, dz, amp in les.lobes:
            cosang = (x * dx + y * dy + z * dz) / dist
            rdir = rdir + amp * np.clip(cosang, 0, 1) ** 3 - amp * 0.25
        R = r * np.clip(rdir, 0.55, None)
        f = np.clip((R - dist) / h + 0.5, 0.0, 1.0).astype(np.float32)
        if not f.any():
            continue
        rn = dist / R  # 0 centre .. 1 edge
        bg_suv = float(np.median(suv[sl][f > 0.5])) if (f > 0.5).any() else float(suv[sl].mean())
        if les.low_contrast:
            les.suv_max = float(max(2.0, bg_suv * rng.uniform(1.5, 2.5)))
        # stay conspicuous against the neighbourhood (1 cm around the box, urine-filled organs excluded):
        # at least 1.3x its 75th percentile, and within the 2-30 SUVmax range of the spec
        nb = tuple(slice(max(0, q.start - int(10 / sp)), q.stop + int(10 / sp)) for q, sp in zip(sl, anat.spacing))
        near = suv[nb][~np.isin(anat.labels[nb], URINE)]
        if near.size:
            les.suv_max = float(np.clip(max(les.suv_max, 1.3 * np.percentile(near, 75)), 2.0, 30.0))
        tex = smooth_noise(f.shape, max(1.0, 4.0 / h), rng)
        profile = np.clip(1.0 - 0.3 * rn ** 2 + 0.12 * tex, 0.3, None)
        if les.necrotic:
            core = rn < rng.uniform(0.35, 0.6)
            profile = np.where(core, rng.uniform(0.05, 0.15), profile)
        les_suv = les.suv_max * profile / float(profile[f > 0].max())
        base_hu = {"soft": 40.0, "isodense": float(np.median(hu[sl][f > 0.5])) if (f > 0.5).any() else 40.0,
                   "lytic": 60.0, "sclerotic": float(rng.uniform(700, 1100))}.get(les.ct)
        if les.ct == "hypodense":
            base_hu = float(np.median(hu[sl][f > 0.5])) - rng.uniform(15, 40) if (f > 0.5).any() else 20.0
        les_hu = base_hu + 6.0 * tex
        if les.necrotic:
            les_hu = np.where(core, base_hu - 25.0, les_hu)
        free = 1.0 - occ[sl]
        w = np.minimum(f, free)
        suv[sl] = suv[sl] * (1 - w) + les_suv * w
        hu[sl] = hu[sl] * (1 - w) + les_hu * w
        occ[sl] += w
        les.volume_ml = float(w.sum()) * float(np.prod(anat.spacing)) / 1000.0
    return occ
