"""Lesions: placement of a lesion plan, irregular shapes, uptake, CT correlate, and the stage.

What to place (count, volumes, sites, uptake per diagnosis) is drawn beforehand by
:func:`petctfm.synth.burden.draw_plan`. A lesion is an irregular blob (a sphere whose radius is modulated by
a few random low-frequency lobes, so lobulated rather than spherical) or a confluent mass of several such
blobs, placed at a lymph-node station (or next to a ureter, bowel or brown fat) or inside an organ (lung,
liver, bone, spleen, prostate, subcutaneous fat; with ``--organ-metastases`` also brain, kidney, myocardium,
bladder; with ``--extranodal-sites`` also adrenal, pleural and peritoneal nodules), scaled to its planned
volume and clipped to the tissues it may occupy. Its uptake is heterogeneous (smooth texture, brighter centre,
optional necrotic core, optional low contrast) and its CT appearance depends on where it sits (soft tissue in
fat or lung, hypodense in liver/spleen, lytic or sclerotic in bone).

Stage rule (the label of the staging task, derived only from where the lesions are):
- lymphoma (Ann Arbor): ``early`` when every lesion is nodal and all are on one side of the diaphragm;
  ``advanced`` when nodes are on both sides or any extranodal organ (spleen, lung, liver, bone) is involved.
- solid tumours (melanoma, lung cancer, prostate cancer): ``early`` when every lesion lies in one
  primary region (one lung; one skin region; the prostate); ``advanced`` as soon as nodes, bone, liver or a
  second region are involved.
- negatives: ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """One lesion (physical units, LPS mm).

    A lesion is one connected mass: a single lobulated blob, or (``parts``) a confluent cluster of merged
    nodes, each part a lobulated blob of its own at ``center + offset``.
    """

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
    suv_mean: float = 0.0  # > 0: scale uptake to this mean (rim, outside a necrotic core); 0: peak = suv_max
    heterogeneity: float = 0.12  # relative amplitude of the smooth uptake texture
    parts: list = field(default_factory=list)  # extra blobs [(offset (3,), diameter_mm, lobes (k, 4)), ...]
    near: str | None = None  # "ureter" | "bowel" | "brown_fat" when placed next to that hot physiology
    planned_volume_ml: float = 0.0  # volume the plan asked for (before shrinking to fit)

    def blobs(self) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """(centre, diameter, lobes) of every blob of the lesion, the main one first."""
        return [(self.center, self.diameter_mm, self.lobes)] + [
            (self.center + np.asarray(o, float), float(d), lb) for o, d, lb in self.parts]


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
# Placement


#: The tissues an organ lesion is placed in and stays inside (a bone lesion is placed in marrow and may cover
#: all of bone; a skin lesion, any other region, lies in subcutaneous fat). The last five are the organ sites
#: of ``petctfm synth --organ-metastases`` (:data:`petctfm.synth.burden.ORGAN_METASTASES`): brain parenchyma,
#: renal parenchyma (not the urine of the collecting system), myocardium, and the bladder.
ORGAN_LESION_TISSUES: dict[str, tuple[int, ...]] = {
    "lung_left": (T.LUNG_L,), "lung_right": (T.LUNG_R,), "liver": (T.LIVER,), "spleen": (T.SPLEEN,),
    "bone": (T.MARROW,), "prostate": (T.PROSTATE,), "brain": (T.BRAIN,), "kidney_left": (T.KIDNEY_L,),
    "kidney_right": (T.KIDNEY_R,), "heart": (T.MYOCARDIUM,), "bladder": (T.BLADDER,),
}
#: The share of an organ lesion's probe points that must lie in its organ (``_try_organ``): lower for the
#: small prostate and the thin myocardium, whose lesions would otherwise rarely find a place.
_MIN_INSIDE = {"prostate": 0.4, "heart": 0.3}


def _organ_tissues(region: str) -> tuple[int, ...]:
    return ORGAN_LESION_TISSUES.get(region, (T.FAT_SC,))


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


HOT_TISSUES = {"ureter": (T.URETER,), "bowel": (T.BOWEL, T.COLON), "brown_fat": (T.BROWN_FAT,)}
# where a lesion may be rendered (its occupancy is clipped to these tissues): nodes avoid bone, parenchymal
# organs and vessels; organ lesions stay inside their organ; skin lesions inside the body
NODE_EXCLUDE = NODE_BAD + (T.AIR, T.TABLE, T.GAS)
SKIN_EXCLUDE = (T.AIR, T.TABLE) + BONE


#: The tissues a lesion of ``--extranodal-sites`` may cover, as ``(tissues, inclusive)``: an adrenal or peritoneal
#: nodule what a node may (it lies in fat and is clipped away from organs, vessels and bone); a pleural deposit
#: its lung and the soft tissue of the chest wall or mediastinum next to it (a pleural-based mass).
EXTRANODAL_TISSUES: dict[str, tuple[tuple[int, ...], bool]] = {
    "adrenal_left": (NODE_EXCLUDE, False), "adrenal_right": (NODE_EXCLUDE, False), "peritoneum": (NODE_EXCLUDE, False),
    "pleura_left": ((T.LUNG_L, T.MUSCLE, T.FAT, T.SOFT), True),
    "pleura_right": ((T.LUNG_R, T.MUSCLE, T.FAT, T.SOFT), True),
}
#: What lies against the pleura: the chest wall (muscle, fat, ribs) and the mediastinal fat.
CHEST_WALL = (T.MUSCLE, T.FAT, T.FAT_SC, T.CORTICAL, T.MARROW)
#: Where peritoneal deposits sit against: bowel, colon, stomach and the liver's surface.
PERITONEAL_SURFACES = (T.BOWEL, T.COLON, T.STOMACH, T.LIVER)


def allowed_tissues(les: "Lesion") -> tuple[tuple[int, ...], bool]:
    """(tissues, inclusive): the lesion may cover these tissues (inclusive) or all but these (exclusive)."""
    if les.kind == "node":
        return NODE_EXCLUDE, False
    if les.region in EXTRANODAL_TISSUES:
        return EXTRANODAL_TISSUES[les.region]
    if les.region.startswith("skin"):
        return SKIN_EXCLUDE, False
    if les.region == "bone":
        return BONE, True
    if les.region in ORGAN_LESION_TISSUES:
        return ORGAN_LESION_TISSUES[les.region], True
    return (T.AIR, T.TABLE), False


def _diameter(volume_ml: float) -> float:
    return float((6.0 * volume_ml * 1000.0 / np.pi) ** (1.0 / 3.0))


def _lobes(rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(2, 6))
    dirs = rng.standard_normal((k, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    amps = rng.uniform(0.1, 0.35, (k, 1))
    return np.hstack([dirs, amps])


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / (np.linalg.norm(v) or 1.0)


def _node_ok(anat: Anatomy, c: np.ndarray, r: float, main: bool = True) -> bool:
    """A node (blob) of radius ``r`` at ``c`` fits: its centre (main blob) and most of its sphere avoid bone,
    vessels, heart, airway, parenchymal organs and air. Big masses wrap around such structures (the
    rendering clips them to the allowed tissues), so they may touch more of them."""
    probe = _probe(anat, c, 0.7 * r)
    tol = 0.12 if r <= 15 else 0.35
    if main and (probe[13] in NODE_BAD or probe[13] == T.AIR):
        return False
    return float(np.isin(probe, NODE_BAD + (T.AIR,)).mean()) <= tol


def _fits_as_node(anat: Anatomy, blobs: list[tuple[np.ndarray, float]]) -> bool:
    """Every blob ``(centre (3,) mm, diameter mm)`` of a nodal-like lesion fits (:func:`_node_ok`; the first is
    the main one)."""
    return all(_node_ok(anat, bc, bd / 2, main=j == 0) for j, (bc, bd) in enumerate(blobs))


def _inside(pts: np.ndarray, center: np.ndarray, d: float, lobes: np.ndarray) -> np.ndarray:
    """Points inside one lobulated blob (the surface that :func:`render_lesions` anti-aliases)."""
    v = pts - center
    dist = np.linalg.norm(v, axis=1) + 1e-6
    rdir = np.ones(len(pts))
    for dx, dy, dz, amp in lobes:
        cosang = (v[:, 0] * dx + v[:, 1] * dy + v[:, 2] * dz) / dist
        rdir = rdir + amp * np.clip(cosang, 0, 1) ** 3 - amp * 0.25
    return dist < d / 2 * np.clip(rdir, 0.55, None)


def shape_volume_ml(shape: list[tuple[np.ndarray, float, np.ndarray]], n: int = 24) -> float:
    """Volume (ml) of the union of the blobs of ``shape``, counted on an ``n``^3 grid of its bounding box."""
    lo = np.min([o - d / 2 * (1 + lb[:, 3].sum()) for o, d, lb in shape], axis=0)
    hi = np.max([o + d / 2 * (1 + lb[:, 3].sum()) for o, d, lb in shape], axis=0)
    g = [lo[k] + (np.arange(n) + 0.5) * (hi[k] - lo[k]) / n for k in range(3)]
    pts = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 3)
    inside = np.zeros(len(pts), bool)
    for o, d, lb in shape:
        inside |= _inside(pts, o, d, lb)
    return float(inside.mean() * np.prod(hi - lo) / 1000.0)


def lesion_shape(volume_ml: float, n_parts: int, min_diameter_mm: float,
                 rng: np.random.Generator) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Blobs ``(offset mm, diameter mm, lobes)`` of one lesion of ``volume_ml``, the main blob at offset 0.

    ``n_parts > 1``: a confluent mass; each further node overlaps a random earlier one (centre distance
    0.5-0.8x the sum of the radii; chains run mostly along z). The whole shape is then scaled so that the
    union of the lobulated blobs has ``volume_ml`` (before the ``min_diameter_mm`` clip).
    """
    pv = volume_ml * (rng.dirichlet(np.full(n_parts, 2.0)) if n_parts > 1 else np.ones(1))
    shape = [(np.zeros(3), _diameter(pv[0]), _lobes(rng))]
    for v in pv[1:]:
        d = _diameter(v)
        po, pd, _ = shape[int(rng.integers(len(shape)))]
        u = _unit(rng) * np.array([1.0, 0.8, 1.4])
        u /= np.linalg.norm(u)
        shape.append((po + u * rng.uniform(0.5, 0.8) * (pd / 2 + d / 2), d, _lobes(rng)))
    s = (volume_ml / max(shape_volume_ml(shape), 1e-9)) ** (1.0 / 3.0)
    return [(o * s, max(d * s, min_diameter_mm), lb) for o, d, lb in shape]


def place_lesions(anat: Anatomy, diagnosis: str, plan, rng: np.random.Generator, min_gap_mm: float,
                  bounds: tuple[np.ndarray, np.ndarray] | None = None, max_lesions: int = 40,
                  min_diameter_mm: float = 4.0, tries: int = 25, shrink_rounds: int = 4,
                  existing: list[Lesion] | tuple = ()) -> list[Lesion]:
    """Place the lesions of ``plan`` (a :class:`petctfm.synth.burden.LesionPlan`) in ``anat``.

    Largest lesions first. A lesion that does not fit after ``tries`` positions is halved in volume and tried
    again (``shrink_rounds`` times), then dropped. ``bounds`` (lo, hi mm): lesions lie entirely inside this
    box (the PET field of view). ``min_diameter_mm``: lower clip of every blob's diameter (the generator uses
    one PET voxel at ``tiny``). Lesions never overlap: blob centres of different lesions are at least
    ``r1 + r2 + min_gap_mm`` apart; the blobs of one confluent mass overlap on purpose. ``existing``: lesions
    already there (a follow-up's, ``synth.followup``), kept clear of in the same way and not returned.
    """
    scene = _Scene(anat, bounds, min_gap_mm)
    scene.placed.extend(existing)
    order = sorted(range(len(plan.lesions)), key=lambda i: -plan.lesions[i].volume_ml)
    for i in order:
        pl = plan.lesions[i]
        if len(scene.placed) - len(existing) >= max_lesions:
            break
        found = _fit_lesion(scene, pl, rng, min_diameter_mm, tries, shrink_rounds)
        if found is not None:
            scene.placed.append(_make_lesion(pl, diagnosis, *found, rng))
    return scene.placed[len(existing):]


class _Scene:
    """What placement sees: the anatomy, the lesions placed so far, the box lesions must stay in (``bounds``,
    lo/hi mm, or None) and the gap between lesions; candidate voxels per tissue set are cached."""

    def __init__(self, anat: Anatomy, bounds: tuple[np.ndarray, np.ndarray] | None, min_gap_mm: float):
        self.anat, self.bounds, self.min_gap_mm = anat, bounds, min_gap_mm
        self.placed: list[Lesion] = []
        self.h = float(np.mean(anat.spacing))  # mean truth-grid spacing (mm)
        self._cache: dict[tuple, np.ndarray] = {}

    def candidates(self, tissues: tuple[int, ...]) -> np.ndarray:
        """Voxel indices (n, 3) of the truth grid whose label is one of ``tissues``."""
        if tissues not in self._cache:
            self._cache[tissues] = np.argwhere(np.isin(self.anat.labels, tissues))
        return self._cache[tissues]

    def extranodal(self, region: str) -> np.ndarray:
        """:func:`extranodal_candidates` of ``region`` (cached)."""
        key = ("extranodal", region)
        if key not in self._cache:
            self._cache[key] = extranodal_candidates(self.anat, region)
        return self._cache[key]

    def fits(self, blobs: list[tuple[np.ndarray, float]]) -> bool:
        """Every blob ``(centre (3,) mm, diameter mm)`` lies inside ``bounds`` and at least ``min_gap_mm`` away
        from every blob of every lesion placed so far."""
        bounds = self.bounds
        for c, d in blobs:
            r = d / 2
            if bounds is not None and (np.any(c - r < bounds[0]) or np.any(c + r > bounds[1])):
                return False
            for q in self.placed:
                for qc, qd, _ in q.blobs():
                    if np.linalg.norm(c - qc) < r + qd / 2 + self.min_gap_mm:
                        return False
        return True


@dataclass
class _Spot:
    """Where one lesion goes: ``kind`` (node | organ), its region, whether above the diaphragm, the hot
    physiology it sits next to (or None), and the blobs ``[(centre (3,) mm, diameter mm), ...]`` to check."""

    kind: str
    region: str
    above: bool
    near: str | None
    blobs: list[tuple[np.ndarray, float]]


_NO_PLACE = "no candidate position"  # a try's answer: no position can exist at this size; stop trying


def _fit_lesion(scene: _Scene, pl, rng: np.random.Generator, min_diameter_mm: float, tries: int,
                shrink_rounds: int) -> tuple[list[tuple[np.ndarray, float, np.ndarray]], _Spot] | None:
    """Shape and spot of planned lesion ``pl``: a shape of its volume (:func:`lesion_shape`) tried at up to
    ``tries`` positions, halved in volume (not below 0.1 ml) for up to ``shrink_rounds`` more rounds; None
    when it never fits."""
    vol = pl.volume_ml
    for _round in range(shrink_rounds + 1):
        shape = lesion_shape(vol, pl.n_parts if vol >= 2.0 else 1, min_diameter_mm, rng)
        spot = _find_spot(scene, pl, shape, rng, tries)
        if spot is not None:
            return shape, spot
        if vol <= 0.1:
            break
        vol = max(vol / 2.0, 0.1)
    return None


def _find_spot(scene: _Scene, pl, shape: list[tuple[np.ndarray, float, np.ndarray]], rng: np.random.Generator,
               tries: int) -> _Spot | None:
    """The first of up to ``tries`` random positions where ``shape`` (blobs ``(offset (3,) mm, diameter mm,
    lobes (k, 4))``, the main one first) fits its tissue and keeps clear of the placed lesions; None if none."""
    r0 = shape[0][1] / 2
    for attempt in range(tries):
        if pl.kind == "node":
            spot = _try_node(scene, pl, shape, r0, rng)
        elif pl.region in EXTRANODAL_TISSUES:
            spot = _try_extranodal(scene, pl, shape, r0, rng)
        else:
            spot = _try_organ(scene, pl, r0, shape[0][1], rng, attempt, tries)
        if spot is _NO_PLACE:
            return None
        if spot is None or not scene.fits(spot.blobs):
            continue
        return spot
    return None


def _try_node(scene: _Scene, pl, shape: list[tuple[np.ndarray, float, np.ndarray]], r0: float,
              rng: np.random.Generator) -> _Spot | str | None:
    """One random position of a nodal lesion: next to its hot physiology (``pl.near``: a voxel of it plus a
    random offset just over the main radius ``r0``) when the anatomy has that tissue, else at its lymph-node
    station with the station's jitter. Returns the spot, None (this position is bad: try another) or
    :data:`_NO_PLACE` (no station and no hot tissue)."""
    anat = scene.anat
    near = pl.near
    hot = scene.candidates(HOT_TISSUES[near]) if near else np.zeros((0, 3))
    if near and len(hot):
        p = anat.point_of(hot[rng.integers(len(hot))])
        c = p + _unit(rng) * (r0 + 0.5 * scene.h + rng.uniform(0.0, 4.0))
        region = _near_region(pl.region, near, c, anat)
        if anat.labels[tuple(anat.index_of(c))] in HOT_TISSUES[near]:
            return None
    elif pl.region in anat.stations:
        near = None
        c0, jit, _ = anat.stations[pl.region]
        c = np.asarray(c0, float) + rng.uniform(-1, 1, 3) * np.asarray(jit)
        region = pl.region
    else:
        return _NO_PLACE
    blobs = [(c + off, d) for off, d, _ in shape]
    if not _fits_as_node(anat, blobs):
        return None
    above = bool(c[2] > anat.z_diaphragm) if near else bool(anat.stations[region][2]) \
        if region in anat.stations else bool(c[2] > anat.z_diaphragm)
    return _Spot("node", region, above, near, blobs)


def _near_region(region: str, near: str, c: np.ndarray, anat: Anatomy) -> str:
    """The nodal region of a node at ``c`` (mm) next to hot physiology ``near``: supraclavicular by brown fat,
    para-aortic or iliac by a ureter (above / below the iliac crest), mesenteric by bowel; else ``region``."""
    if near == "brown_fat":
        return f"supraclavicular_{'left' if c[0] > 0 else 'right'}"
    if near == "ureter":
        return "paraaortic" if c[2] > anat.landmarks.get("iliac_crest", -np.inf) else \
            f"iliac_{'left' if c[0] > 0 else 'right'}"
    if near == "bowel":
        return "mesenteric"
    return region


def _try_organ(scene: _Scene, pl, r0: float, d0: float, rng: np.random.Generator, attempt: int,
               tries: int) -> _Spot | str | None:
    """One random position of an organ lesion (main blob of radius ``r0``, diameter ``d0``): a random voxel
    of its organ, jittered within the voxel; it must sit mostly inside the organ (skin: in subcutaneous fat,
    preferring the planned skin region for the first half of the tries). Returns the spot, None (try
    another) or :data:`_NO_PLACE` (the organ is absent)."""
    anat = scene.anat
    tissues = _organ_tissues(pl.region)
    cands = scene.candidates(tissues)
    if len(cands) == 0:
        return _NO_PLACE
    c = anat.point_of(cands[rng.integers(len(cands))]) + rng.uniform(-0.5, 0.5, 3) * np.asarray(anat.spacing)
    probe = _probe(anat, c, 0.8 * r0 if pl.region != "bone" else 0.5 * r0)
    if pl.region.startswith("skin"):
        if not (np.isin(probe, (T.FAT_SC, T.MUSCLE, T.AIR)).mean() > 0.9 and probe[13] == T.FAT_SC):
            return None
        reg = _skin_region(c, anat)
        if reg != pl.region and attempt < tries // 2:
            return None  # prefer the planned skin region
    else:
        frac_in = np.isin(probe, tissues + (BONE if pl.region == "bone" else ())).mean()
        if frac_in < _MIN_INSIDE.get(pl.region, 0.6):
            return None
        reg = pl.region
    return _Spot("organ", reg, bool(c[2] > anat.z_diaphragm), None, [(c, d0)])


def extranodal_candidates(anat: Anatomy, region: str) -> np.ndarray:
    """Truth-grid voxel indices (n, 3) where a lesion of extranodal ``region`` may be centred:

    - ``adrenal_<side>``: fat or soft tissue within ~15 mm of the upper third of that side's kidney, above its
      upper third's lowest point and no more lateral than the kidney's centre (the adrenal gland caps the upper
      pole, medially; the phantoms draw no adrenal of their own);
    - ``pleura_<side>``: that lung's voxels within two voxels of the chest wall or the mediastinal fat;
    - ``peritoneum``: visceral fat within two voxels of bowel, colon, stomach or the liver, below the diaphragm.
    """
    from scipy import ndimage

    lab = anat.labels
    if region.startswith("pleura_"):
        lung = T.LUNG_L if region.endswith("left") else T.LUNG_R
        return np.argwhere((lab == lung) & ndimage.binary_dilation(np.isin(lab, CHEST_WALL), iterations=2))
    z = np.asarray(anat.axes[2], float)
    if region.startswith("adrenal_"):
        kidney = lab == (T.KIDNEY_L if region.endswith("left") else T.KIDNEY_R)
        zs = z[np.nonzero(kidney.any(axis=(0, 1)))[0]]
        if not len(zs):
            return np.zeros((0, 3), int)
        z_cut = zs.max() - (zs.max() - zs.min()) / 3.0
        upper = kidney & (z >= z_cut)[None, None, :]
        reach = max(1, int(round(15.0 / float(np.mean(anat.spacing)))))
        near = ndimage.binary_dilation(upper, iterations=reach) & (z >= z_cut)[None, None, :]
        x = np.asarray(anat.axes[0], float)
        kx = float(x[np.nonzero(kidney.any(axis=(1, 2)))[0]].mean())  # left kidney at +x, right at -x
        medial = (np.abs(x) <= abs(kx)) & (np.sign(x) == np.sign(kx))
        return np.argwhere(near & medial[:, None, None] & np.isin(lab, (T.FAT, T.SOFT)))
    below = (z < anat.z_diaphragm)[None, None, :]
    near = ndimage.binary_dilation(np.isin(lab, PERITONEAL_SURFACES), iterations=2)
    return np.argwhere((lab == T.FAT) & near & below)


def _try_extranodal(scene: _Scene, pl, shape: list[tuple[np.ndarray, float, np.ndarray]], r0: float,
                    rng: np.random.Generator) -> _Spot | str | None:
    """One random position of an extranodal lesion (:data:`EXTRANODAL_TISSUES`): a random voxel of
    :func:`extranodal_candidates`, jittered within the voxel. An adrenal or peritoneal nodule must fit as a node
    does (every blob, :func:`_node_ok`); a pleural deposit needs a third of its probe in its lung and most of the
    rest in the soft tissue it may cover. Returns the spot, None (try another) or :data:`_NO_PLACE`."""
    anat = scene.anat
    cands = scene.extranodal(pl.region)
    if len(cands) == 0:
        return _NO_PLACE
    c = anat.point_of(cands[rng.integers(len(cands))]) + rng.uniform(-0.5, 0.5, 3) * np.asarray(anat.spacing)
    blobs = [(c + off, d) for off, d, _ in shape]
    if pl.region.startswith("pleura_"):
        tissues, _ = EXTRANODAL_TISSUES[pl.region]
        probe = _probe(anat, c, 0.8 * r0)
        if (probe == tissues[0]).mean() < 0.33 or np.isin(probe, tissues).mean() < 0.7:
            return None
    elif not _fits_as_node(anat, blobs):
        return None
    return _Spot("organ", pl.region, bool(c[2] > anat.z_diaphragm), None, blobs)


def _make_lesion(pl, diagnosis: str, shape: list[tuple[np.ndarray, float, np.ndarray]], spot: _Spot,
                 rng: np.random.Generator) -> Lesion:
    """The :class:`Lesion` of planned lesion ``pl`` at ``spot`` with ``shape``; its CT appearance follows its
    region (bone: sclerotic or lytic, drawn; sclerotic is likelier in prostate cancer)."""
    reg = spot.region
    c, d0 = spot.blobs[0]
    ct = {"liver": "hypodense", "spleen": "hypodense", "prostate": "isodense", "kidney_left": "hypodense",
          "kidney_right": "hypodense", "brain": "isodense", "heart": "isodense"}.get(reg, "soft")
    if reg == "bone":
        ct = "sclerotic" if rng.random() < (0.8 if diagnosis == "prostate_cancer" else 0.3) else "lytic"
    parts = [(off, float(d), lb) for off, d, lb in shape[1:]]
    return Lesion(reg, spot.kind, np.asarray(c, np.float64), float(d0), float(pl.suv_mean * 1.5),
                  bool(pl.necrotic), bool(pl.low_contrast), ct, bool(spot.above), shape[0][2],
                  suv_mean=float(pl.suv_mean), heterogeneity=float(pl.heterogeneity), parts=parts,
                  near=spot.near, planned_volume_ml=float(pl.volume_ml))


# ----------------------------------------------------------------------------------------------------------
# Rasterization

SUV_PEAK_MAX = 45.0


def render_lesions(anat: Anatomy, lesions: list[Lesion], hu: np.ndarray, suv: np.ndarray,
                   rng: np.random.Generator, owner: np.ndarray | None = None) -> np.ndarray:
    """Blend lesions into ``hu`` and ``suv`` (truth grid, in place); returns the lesion occupancy.

    Occupancy is an anti-aliased fraction in [0, 1] (float32, truth grid), so lesions smaller than a truth
    voxel still show up; it is clipped to the tissues the lesion may occupy (:func:`allowed_tissues`: a node
    never covers bone or a parenchymal organ, a liver lesion stays in the liver, nothing leaves the body).
    Uptake: a brighter centre, a smooth texture of amplitude ``heterogeneity``, an optional necrotic core
    (SUV 5-15 % of the peak, 25 HU lower). With ``suv_mean > 0`` the uptake outside the core is scaled to
    that mean, else the peak is ``suv_max``; low-contrast lesions peak at 1.5-2.5x the local background (at
    least 2). Every lesion peaks at least 1.3x the 75th percentile of its neighbourhood outside urine-filled
    organs, and at most ``SUV_PEAK_MAX``. Updates ``suv_max``, ``suv_mean`` and ``volume_ml`` to what was
    rendered. ``owner`` (uint8, truth grid), when given, gets lesion number ``k + 1`` where lesion ``k`` has
    the largest occupancy.
    """
    occ = np.zeros(anat.labels.shape, dtype=np.float32)
    best = np.zeros(anat.labels.shape, dtype=np.float32) if owner is not None else None
    h = float(np.mean(anat.spacing))
    for k_les, les in enumerate(lesions):
        blobs = les.blobs()
        sl = _lesion_box(anat.axes, blobs, h)
        f, rn = _blob_fields(anat.axes, sl, blobs, h)
        tissues, inclusive = allowed_tissues(les)
        ok = np.isin(anat.labels[sl], tissues)
        f = f * (ok if inclusive else ~ok)
        if not f.any():
            les.volume_ml = 0.0
            continue
        bg_suv = float(np.median(suv[sl][f > 0.5])) if (f > 0.5).any() else float(suv[sl].mean())
        tex = smooth_noise(f.shape, max(1.0, 4.0 / h), rng)
        profile, core = _uptake_profile(les, rn, tex, rng)
        w = np.minimum(f, 1.0 - occ[sl])  # what is still free of earlier lesions
        les_suv = _scaled_uptake(les, profile, f, w, core, bg_suv, rng)
        les_suv = _conspicuous(les, les_suv, f, sl, anat, suv)
        les_hu = _lesion_hu(les, hu, sl, f, tex, core, rng)
        suv[sl] = suv[sl] * (1 - w) + les_suv * w
        hu[sl] = hu[sl] * (1 - w) + les_hu * w
        occ[sl] += w
        if owner is not None:
            mine = w > best[sl]
            owner[sl][mine] = k_les + 1
            best[sl] = np.where(mine, w, best[sl])
        wsum = float(w.sum())
        les.volume_ml = wsum * float(np.prod(anat.spacing)) / 1000.0
        if wsum > 0:
            les.suv_mean = float((les_suv * w).sum() / wsum)
    return occ


def _lesion_box(axes, blobs: list[tuple[np.ndarray, float, np.ndarray]], h: float) -> tuple[slice, slice, slice]:
    """Truth-grid slices (x, y, z) of the box around every blob (its largest lobed radius plus ``h`` mm);
    ``axes``: the truth grid's x, y, z coordinates (mm). Never empty."""
    lo = np.min([c - (d / 2 * (1 + lb[:, 3].sum()) + h) for c, d, lb in blobs], axis=0)
    hi = np.max([c + (d / 2 * (1 + lb[:, 3].sum()) + h) for c, d, lb in blobs], axis=0)
    sl = []
    for k in range(3):
        a = axes[k]
        i0 = int(np.searchsorted(a, lo[k], "left"))
        i1 = int(np.searchsorted(a, hi[k], "right"))
        sl.append(slice(max(i0, 0), min(max(i1, i0 + 1), len(a))))
    return tuple(sl)


def _blob_fields(axes, sl: tuple[slice, ...], blobs: list[tuple[np.ndarray, float, np.ndarray]],
                 h: float) -> tuple[np.ndarray, np.ndarray]:
    """Over the box ``sl``: the anti-aliased occupancy ``f`` (union of the lobulated blobs, 0..1, one voxel
    ``h`` of ramp) and the normalized radius ``rn`` (0 at a blob centre, 1 at its surface, min over blobs);
    both float32 of the box's shape (x, y, z)."""
    f = None
    rn = None
    for c, d, lobes in blobs:
        r = d / 2
        x = axes[0][sl[0]][:, None, None] - c[0]
        y = axes[1][sl[1]][None, :, None] - c[1]
        z = axes[2][sl[2]][None, None, :] - c[2]
        dist = np.sqrt(x ** 2 + y ** 2 + z ** 2) + 1e-6
        rdir = np.full(dist.shape, 1.0, dtype=np.float32)
        for dx, dy, dz, amp in lobes:
            cosang = (x * dx + y * dy + z * dz) / dist
            rdir = rdir + amp * np.clip(cosang, 0, 1) ** 3 - amp * 0.25
        R = r * np.clip(rdir, 0.55, None)
        fb = np.clip((R - dist) / h + 0.5, 0.0, 1.0).astype(np.float32)
        rb = (dist / R).astype(np.float32)  # 0 centre .. 1 edge
        f = fb if f is None else np.maximum(f, fb)
        rn = rb if rn is None else np.minimum(rn, rb)
    return f, rn


def _uptake_profile(les: Lesion, rn: np.ndarray, tex: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Relative uptake over the box (same shape as ``rn``): brighter centre plus texture ``tex`` scaled by
    ``heterogeneity``, at least 0.3; a necrotic lesion gets a core (bool mask, radius 0.35-0.6, drawn) at
    5-15 % (drawn). Returns ``(profile, core or None)``."""
    profile = np.clip(1.0 - 0.3 * rn ** 2 + les.heterogeneity * tex, 0.3, None)
    core = None
    if les.necrotic:
        core = rn < rng.uniform(0.35, 0.6)
        profile = np.where(core, rng.uniform(0.05, 0.15), profile)
    return profile, core


def _scaled_uptake(les: Lesion, profile: np.ndarray, f: np.ndarray, w: np.ndarray, core: np.ndarray | None,
                   bg_suv: float, rng: np.random.Generator) -> np.ndarray:
    """SUV over the box from ``profile``: low contrast -> peak 1.5-2.5x the background ``bg_suv`` (drawn, at
    least 2; sets ``suv_max``); ``suv_mean > 0`` -> mean ``suv_mean`` over the rim (weights ``w`` outside the
    core); else peak ``suv_max``."""
    if les.low_contrast:
        les.suv_max = float(max(2.0, bg_suv * rng.uniform(1.5, 2.5)))
        return les.suv_max * profile / float(profile[f > 0].max())
    if les.suv_mean > 0:
        rim = w if core is None else w * ~core
        if rim.sum() <= 0:
            rim = w
        return les.suv_mean * profile / max(float((profile * rim).sum() / max(rim.sum(), 1e-9)), 1e-6)
    return les.suv_max * profile / float(profile[f > 0].max())


def _conspicuous(les: Lesion, les_suv: np.ndarray, f: np.ndarray, sl: tuple[slice, ...], anat: Anatomy,
                 suv: np.ndarray) -> np.ndarray:
    """``les_suv`` rescaled so the lesion stays conspicuous against its neighbourhood (1 cm around the box,
    urine-filled organs excluded): peak at least 1.3x its 75th percentile, and within 2..SUV_PEAK_MAX; sets
    ``suv_max`` to that peak."""
    peak = float(les_suv[f > 0].max())
    target = peak
    nb = tuple(slice(max(0, q.start - int(10 / sp)), q.stop + int(10 / sp)) for q, sp in zip(sl, anat.spacing))
    near = suv[nb][~np.isin(anat.labels[nb], URINE)]
    if near.size:
        target = max(target, 1.3 * float(np.percentile(near, 75)))
    target = float(np.clip(target, 2.0, SUV_PEAK_MAX))
    les.suv_max = target
    return les_suv * np.float32(target / peak)


def _lesion_hu(les: Lesion, hu: np.ndarray, sl: tuple[slice, ...], f: np.ndarray, tex: np.ndarray,
               core: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """HU over the box by CT pattern: soft 40, lytic 60, sclerotic 700-1100 (drawn), isodense the local
    median, hypodense 15-40 below it (drawn); plus 6 HU of texture, a necrotic core 25 HU lower."""
    # the sclerotic value is drawn for every lesion (whatever its pattern): the generator's RNG stream
    base_hu = {"soft": 40.0, "isodense": float(np.median(hu[sl][f > 0.5])) if (f > 0.5).any() else 40.0,
               "lytic": 60.0, "sclerotic": float(rng.uniform(700, 1100))}.get(les.ct)
    if les.ct == "hypodense":
        base_hu = float(np.median(hu[sl][f > 0.5])) - rng.uniform(15, 40) if (f > 0.5).any() else 20.0
    les_hu = base_hu + 6.0 * tex
    if core is not None:
        les_hu = np.where(core, base_hu - 25.0, les_hu)
    return les_hu
