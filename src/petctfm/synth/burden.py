"""Tumour burden: per-diagnosis distributions of lesion count, volume, site and uptake, drawn as a *plan*.

:func:`draw_plan` is a pure function of ``(diagnosis, advanced, rng, body_ml)``: it touches no anatomy and no
image, so it is cheap (well under a millisecond) and can be sampled thousands of times in a test. The
generator draws the plan first and then places and renders it (``lesions.place_lesions`` /
``lesions.render_lesions``); placement may shrink or drop a lesion that does not fit in this patient's
anatomy, so rendered volumes are at most the planned ones (both are in the metadata).

How a plan is drawn (numbers in :data:`BURDEN`, sources and caveats in ``docs/synthetic-data.md``):

1. Total planned tumour volume per patient: log-normal with a per-(diagnosis, stage intent) median and
   log-SD, clipped to ``[MIN_TOTAL_ML, min(MAX_TOTAL_ML, MAX_BODY_FRACTION * body_ml)]``.
2. Lesion count: 1 + a log-normal count, clipped to the configured maximum and so that every lesion can
   have at least ``MIN_LESION_ML``.
3. Sites: the first lesion at the diagnosis' primary site (lung, skin, prostate; for lymphoma a nodal
   station), the others drawn from per-diagnosis site weights (nodes, liver, lung, spleen, bone, skin, ...).
4. Volumes: the total is split by a Dirichlet (concentration < 1: one or a few dominant lesions and many
   small ones), then water-filled into ``[MIN_LESION_ML, SITE_MAX_ML[site]]`` (a bone lesion cannot be a
   litre). When the sites cannot hold the total, more lesions are added at the diagnosis' "sink" site
   (nodal masses, liver, bone).
5. Per lesion: nodal masses >= 25 ml are often confluent clusters of 3-8 merged nodes; lesions >= 5 ml may
   have a necrotic (cold) core; small nodes near the ureters, bowel or brown fat are placed next to that
   hot physiology; uptake SUVmean = patient-level log-normal x lesion-level log-normal scatter, with a
   texture (heterogeneity) amplitude per lesion; a few small lesions are low contrast.

Opt-in (``petctfm synth --organ-metastases``): :func:`draw_organ_metastases` adds, to an advanced case, lesions
inside the organs the default plans never use (brain, kidneys, heart, bladder; :data:`ORGAN_METASTASES`), from
a random stream of their own, so the rest of the plan is unchanged. ``petctfm synth --extranodal-sites``:
:func:`draw_extranodal_sites` adds adrenal, pleural and peritoneal lesions (:data:`EXTRANODAL_SITES`) the same
way, from another stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UPPER_STATIONS = ("neck_left", "neck_right", "supraclavicular_left", "supraclavicular_right", "axilla_left",
                  "axilla_right", "mediastinum", "hilum_left", "hilum_right")
LOWER_STATIONS = ("paraaortic", "mesenteric", "iliac_left", "iliac_right", "inguinal_left", "inguinal_right")
SKIN_REGIONS = ("skin_trunk", "skin_trunk", "skin_head_neck", "skin_leg_left", "skin_leg_right", "skin_arm_left",
                "skin_arm_right")

MIN_LESION_ML = 0.1  # ~5.8 mm sphere; at `tiny` placement still enlarges lesions to one PET voxel
MIN_TOTAL_ML = 0.2
MAX_TOTAL_ML = 4000.0
MAX_BODY_FRACTION = 0.05  # the whole burden is at most 5 % of the body volume (a huge mass must not fill the body)
MAX_PARTS = 8

# largest single lesion per site (ml); a confluent nodal mass may reach SITE_MAX_ML["node_mass"]
SITE_MAX_ML: dict[str, float] = {
    "node": 120.0, "node_mass": 900.0, "liver": 300.0, "lung": 250.0, "spleen": 60.0, "bone": 25.0,
    "skin": 30.0, "prostate": 15.0,
}


@dataclass(frozen=True)
class BurdenConfig:
    """Distributions of one (diagnosis, stage intent); see the module docstring for their use."""

    total_median_ml: float  # median of the per-patient total planned volume (log-normal)
    total_sigma: float  # its log-SD
    count_median: float  # median of (lesion count - 1), log-normal
    count_sigma: float
    count_max: int
    suv_median: float  # median lesion SUVmean (patient level, log-normal)
    suv_sigma: float  # patient-level log-SD; lesions scatter around it with log-SD 0.25
    sites: tuple[tuple[str, float], ...]  # (site key, weight) of the non-primary lesions
    sink: str  # site key that takes volume when the drawn sites cannot hold the total
    dirichlet: float = 0.6


# Site keys: node_upper / node_lower / node_any (a station), node_regional (the primary's basin), liver,
# spleen, bone, lung_same / lung_other / lung_any, skin_same / skin_any, prostate, node_pelvic.
BURDEN: dict[tuple[str, str], BurdenConfig] = {
    ("lymphoma", "early"): BurdenConfig(40.0, 1.1, 1.5, 0.8, 12, 8.0, 0.35,
                                        (("node_same_side", 1.0),), "node_same_side"),
    ("lymphoma", "advanced"): BurdenConfig(350.0, 1.0, 9.0, 0.7, 40, 8.0, 0.35,
                                           (("node_upper", 0.33), ("node_lower", 0.30), ("spleen", 0.12),
                                            ("bone", 0.10), ("liver", 0.07), ("lung_any", 0.08)), "node_any"),
    ("melanoma", "early"): BurdenConfig(3.0, 1.0, 0.5, 0.8, 4, 6.0, 0.4, (("skin_same", 1.0),), "skin_same"),
    ("melanoma", "advanced"): BurdenConfig(40.0, 1.4, 6.0, 0.8, 40, 6.0, 0.4,
                                           (("skin_any", 0.18), ("node_regional", 0.17), ("node_any", 0.12),
                                            ("lung_any", 0.18), ("liver", 0.14), ("bone", 0.09), ("spleen", 0.04),
                                            ("node_bowel", 0.08)), "liver"),
    ("lung_cancer", "early"): BurdenConfig(15.0, 1.0, 0.3, 0.6, 3, 6.5, 0.35, (("lung_same", 1.0),), "lung_same"),
    ("lung_cancer", "advanced"): BurdenConfig(100.0, 1.0, 5.0, 0.7, 30, 6.5, 0.35,
                                              (("node_thoracic", 0.32), ("lung_same", 0.10), ("lung_other", 0.10),
                                               ("liver", 0.12), ("bone", 0.22), ("spleen", 0.03),
                                               ("node_lower", 0.06), ("node_supraclavicular", 0.05)), "node_thoracic"),
    ("prostate_cancer", "early"): BurdenConfig(4.0, 0.8, 0.3, 0.6, 3, 7.0, 0.5, (("prostate", 1.0),), "prostate"),
    ("prostate_cancer", "advanced"): BurdenConfig(30.0, 1.4, 6.0, 0.8, 40, 7.0, 0.5,
                                                  (("bone", 0.45), ("node_pelvic", 0.30), ("node_retro", 0.12),
                                                   ("prostate", 0.05), ("lung_any", 0.03), ("liver", 0.02),
                                                   ("node_upper", 0.03)), "bone"),
}


@dataclass(frozen=True)
class PlannedLesion:
    """One lesion of a plan (no position yet)."""

    region: str  # station name or organ region ("liver", "bone", "spleen", "lung_left", "skin_trunk", ...)
    kind: str  # "node" | "organ"
    volume_ml: float  # planned volume (placement may shrink it to fit)
    suv_mean: float  # intended mean SUV over the lesion (truth, before PSF)
    heterogeneity: float  # relative amplitude of the smooth uptake texture
    necrotic: bool
    low_contrast: bool
    n_parts: int = 1  # > 1: a confluent mass of that many merged nodes
    near: str | None = None  # "ureter" | "bowel" | "brown_fat": placed next to that hot physiology

    @property
    def types(self) -> set[str]:
        """Descriptive tags (used by tests and the docs): site family plus node / mass features."""
        t = {self.kind}
        fam = self.region.split("_")[0] if self.kind == "organ" else "node"
        t.add(fam)
        if self.n_parts > 1:
            t.add("confluent")
        if self.kind == "node" and self.volume_ml >= 100.0:
            t.add("bulky")
        if self.necrotic:
            t.add("necrotic")
        if self.low_contrast:
            t.add("low_contrast")
        if self.near:
            t.add(f"near_{self.near}")
        return t


@dataclass(frozen=True)
class LesionPlan:
    diagnosis: str
    advanced: bool
    total_ml: float  # drawn total (before the per-site caps; equal to sum(volumes) unless capacity ran out)
    lesions: tuple[PlannedLesion, ...]

    @property
    def volumes_ml(self) -> list[float]:
        return [les.volume_ml for les in self.lesions]


def config_of(diagnosis: str, advanced: bool) -> BurdenConfig:
    return BURDEN[(diagnosis, "advanced" if advanced else "early")]


def total_quantile(cfg: BurdenConfig, q: float) -> float:
    """Quantile ``q`` of the configured (unclipped) total-volume distribution."""
    from statistics import NormalDist

    return float(cfg.total_median_ml * np.exp(cfg.total_sigma * NormalDist().inv_cdf(q)))


def _site_max(site_key: str) -> float:
    if site_key.startswith("node"):
        return SITE_MAX_ML["node_mass"]
    for fam in ("lung", "skin"):
        if site_key.startswith(fam):
            return SITE_MAX_ML[fam]
    return SITE_MAX_ML[site_key]


def _water_fill(total: float, caps: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Volumes summing to ``total`` (when capacity allows), proportional to ``shares`` within [MIN, caps]."""
    v = total * shares / shares.sum()
    for _ in range(30):
        v = np.clip(v, MIN_LESION_ML, caps)
        excess = total - float(v.sum())
        if abs(excess) <= 1e-9 * max(total, 1.0):
            break
        free = v < caps - 1e-12 if excess > 0 else v > MIN_LESION_ML + 1e-12
        if not free.any():
            break
        v[free] += excess * v[free] / v[free].sum()
    return np.clip(v, MIN_LESION_ML, caps)


def draw_plan(diagnosis: str, advanced: bool, rng: np.random.Generator, body_ml: float = 70000.0) -> LesionPlan:
    """Draw the lesion plan of one patient (count, sites, volumes, uptake); pure in its arguments."""
    if diagnosis == "negative":
        return LesionPlan(diagnosis, advanced, 0.0, ())
    cfg = config_of(diagnosis, advanced)
    side = "left" if rng.random() < 0.5 else "right"
    other = "right" if side == "left" else "left"
    upper_first = bool(rng.random() < 0.65)  # lymphoma early: which side of the diaphragm
    skin_primary = str(rng.choice(SKIN_REGIONS))
    skin_primary = skin_primary.replace("left", side).replace("right", side)

    total = float(cfg.total_median_ml * np.exp(cfg.total_sigma * rng.standard_normal()))
    total = float(np.clip(total, MIN_TOTAL_ML, min(MAX_TOTAL_ML, MAX_BODY_FRACTION * body_ml)))
    n = 1 + int(np.floor(cfg.count_median * np.exp(cfg.count_sigma * rng.standard_normal())))
    if advanced and diagnosis == "lymphoma":
        n = max(n, 3)
    elif advanced:
        n = max(n, 2)
    n = int(min(n, cfg.count_max, max(1, int(total / MIN_LESION_ML))))

    # sites: the primary first, then draws from the weights
    primary = {"lymphoma": "node_same_side" if not advanced else "node_upper", "melanoma": "skin_same",
               "lung_cancer": "lung_same", "prostate_cancer": "prostate"}[diagnosis]
    keys, w = zip(*cfg.sites)
    p = np.asarray(w, float) / float(np.sum(w))
    sites = [primary]
    if advanced and diagnosis == "lymphoma":
        sites.append("node_lower")  # nodes on both sides of the diaphragm (Ann Arbor III)
    if advanced and diagnosis == "prostate_cancer" and rng.random() < 0.4:
        sites[0] = "node_pelvic"  # post-prostatectomy: no prostate lesion
    while len(sites) < n:
        sites.append(str(keys[int(rng.choice(len(keys), p=p))]))
    sites = sites[:n]
    caps = np.array([_site_max(s) for s in sites])
    while caps.sum() < total and len(sites) < cfg.count_max:
        sites.append(cfg.sink)
        caps = np.append(caps, _site_max(cfg.sink))

    shares = rng.dirichlet(np.full(len(sites), cfg.dirichlet))
    if diagnosis in ("lung_cancer", "lymphoma"):  # the primary / first nodal mass is the largest
        i = int(np.argmax(shares))
        shares[[0, i]] = shares[[i, 0]]
    vols = _water_fill(total, caps, shares)

    suv_patient = float(cfg.suv_median * np.exp(cfg.suv_sigma * rng.standard_normal()))
    stations_same = UPPER_STATIONS if upper_first else LOWER_STATIONS
    lesions = []
    for site, vol in zip(sites, vols):
        vol = float(vol)
        region, kind, near = _region_of(site, rng, side, other, skin_primary, stations_same, diagnosis)
        n_parts = 1
        if kind == "node":
            if vol > SITE_MAX_ML["node"] or (vol >= 25.0 and rng.random() < 0.6):
                n_parts = int(rng.integers(3, MAX_PARTS + 1))
            if near is None and vol <= 5.0 and rng.random() < 0.5:
                near = {"paraaortic": "ureter", "iliac_left": "ureter", "iliac_right": "ureter",
                        "mesenteric": "bowel", "supraclavicular_left": "brown_fat",
                        "supraclavicular_right": "brown_fat", "neck_left": "brown_fat",
                        "neck_right": "brown_fat"}.get(region)
            if near is not None and vol > 5.0:
                near = None
        p_nec = 0.0 if vol < 5.0 else (0.15 if vol < 30.0 else 0.45)
        if diagnosis == "prostate_cancer":
            p_nec *= 0.3
        necrotic = bool(rng.random() < p_nec)
        low = bool(vol <= 5.0 and rng.random() < 0.15)
        suv = float(np.clip(suv_patient * np.exp(0.25 * rng.standard_normal()), 2.5, 20.0))
        het = float(rng.uniform(0.08, 0.35))
        lesions.append(PlannedLesion(region, kind, vol, suv, het, necrotic, low, n_parts, near))
    return LesionPlan(diagnosis, advanced, total, tuple(lesions))


#: ``petctfm synth --organ-metastases``: per diagnosis of an advanced case, the organ sites the default plans
#: never use, as ``(organ, probability that a case has them, most lesions, smallest ml, largest ml)``. The
#: probabilities are enriched over clinical prevalence (brain metastases at staging: roughly 10-20 % of advanced
#: lung cancer and 20-40 % of stage IV melanoma; renal involvement in 3-8 % of lymphoma on CT; cardiac and
#: bladder involvement rarer still), so a cohort of tens of cases holds enough of them to measure what a
#: method does there; docs/synthetic-data.md.
ORGAN_METASTASES: dict[str, tuple[tuple[str, float, int, float, float], ...]] = {
    "lung_cancer": (("brain", 0.35, 3, 0.2, 8.0), ("kidney", 0.08, 1, 0.5, 15.0)),
    "melanoma": (("brain", 0.35, 4, 0.2, 8.0), ("kidney", 0.08, 2, 0.5, 15.0), ("heart", 0.10, 1, 0.3, 4.0)),
    "lymphoma": (("kidney", 0.20, 2, 1.0, 40.0), ("heart", 0.05, 1, 1.0, 10.0), ("brain", 0.03, 1, 1.0, 15.0)),
    "prostate_cancer": (("bladder", 0.20, 1, 0.5, 10.0),),
}
#: The organ sites of :data:`ORGAN_METASTASES` as lesion regions (a kidney lesion is on one side).
ORGAN_METASTASIS_REGIONS = ("brain", "kidney_left", "kidney_right", "heart", "bladder")


#: ``petctfm synth --extranodal-sites``: per diagnosis of an advanced case, extranodal sites the default plans
#: never use, as in :data:`ORGAN_METASTASES`: adrenal metastases (a nodule above and medial to a kidney's upper
#: pole), pleural deposits (nodules on the pleura of one lung: several per case) and peritoneal deposits (nodules
#: in the visceral fat against bowel, stomach or the liver surface). Approximate rates, enriched for the rarer
#: ones: adrenal metastases are found in roughly 10-20 % of advanced lung cancer at staging (more at autopsy),
#: less often in melanoma and rarely in lymphoma or prostate cancer; malignant pleural involvement in about 15 %
#: of lung cancer; peritoneal disease in a few % of melanoma and lymphoma; docs/synthetic-data.md.
EXTRANODAL_SITES: dict[str, tuple[tuple[str, float, int, float, float], ...]] = {
    "lung_cancer": (("adrenal", 0.25, 2, 0.5, 30.0), ("pleura", 0.20, 6, 0.2, 4.0), ("peritoneum", 0.03, 3, 0.2, 3.0)),
    "melanoma": (("adrenal", 0.15, 2, 0.5, 20.0), ("pleura", 0.05, 3, 0.2, 3.0), ("peritoneum", 0.10, 6, 0.2, 5.0)),
    "lymphoma": (("adrenal", 0.05, 2, 1.0, 40.0), ("pleura", 0.05, 3, 0.5, 10.0), ("peritoneum", 0.05, 4, 0.5, 10.0)),
    "prostate_cancer": (("adrenal", 0.03, 1, 0.5, 5.0), ("peritoneum", 0.03, 3, 0.2, 2.0)),
}
#: The sites of :data:`EXTRANODAL_SITES` as lesion regions (adrenal and pleura on one side).
EXTRANODAL_REGIONS = ("adrenal_left", "adrenal_right", "pleura_left", "pleura_right", "peritoneum")
#: Sites whose lesions of one case share a side (pleural deposits spread over one pleura); a kidney or adrenal
#: lesion draws its own side.
_ONE_SIDE = ("pleura",)
_SIDED = ("kidney", "adrenal", "pleura")


def _draw_site_lesions(plan: LesionPlan, rng: np.random.Generator,
                       table: dict[str, tuple[tuple[str, float, int, float, float], ...]]) -> LesionPlan:
    """The lesions ``table`` (:data:`ORGAN_METASTASES`, :data:`EXTRANODAL_SITES`) adds to ``plan``: a plan of
    their own (only the new lesions; none for an early or negative plan), pure in its arguments. Per site:
    present with its probability, 1 to its most lesions, volumes log-uniform in its range; uptake scattered
    (log-SD 0.25) around the median SUVmean of ``plan``'s lesions, as a patient's other lesions are; necrosis and
    low contrast as in :func:`draw_plan`."""
    if not plan.advanced or not plan.lesions:
        return LesionPlan(plan.diagnosis, plan.advanced, 0.0, ())
    suv_patient = float(np.median([les.suv_mean for les in plan.lesions]))
    side = lambda: "left" if rng.random() < 0.5 else "right"  # noqa: E731
    lesions = []
    for site, p, most, lo, hi in table.get(plan.diagnosis, ()):
        if rng.random() >= p:
            continue
        shared = side() if site in _ONE_SIDE else None
        for _ in range(int(rng.integers(1, most + 1))):
            vol = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            region = f"{site}_{shared or side()}" if site in _SIDED else site
            necrotic = bool(vol >= 5.0 and rng.random() < 0.15)
            low = bool(vol <= 5.0 and rng.random() < 0.15)
            suv = float(np.clip(suv_patient * np.exp(0.25 * rng.standard_normal()), 2.5, 20.0))
            lesions.append(PlannedLesion(region, "organ", vol, suv, float(rng.uniform(0.08, 0.35)), necrotic, low))
    return LesionPlan(plan.diagnosis, plan.advanced, float(sum(les.volume_ml for les in lesions)), tuple(lesions))


def draw_organ_metastases(plan: LesionPlan, rng: np.random.Generator) -> LesionPlan:
    """The lesions :data:`ORGAN_METASTASES` adds to ``plan`` (:func:`_draw_site_lesions`)."""
    return _draw_site_lesions(plan, rng, ORGAN_METASTASES)


def draw_extranodal_sites(plan: LesionPlan, rng: np.random.Generator) -> LesionPlan:
    """The lesions :data:`EXTRANODAL_SITES` adds to ``plan`` (:func:`_draw_site_lesions`)."""
    return _draw_site_lesions(plan, rng, EXTRANODAL_SITES)


def _region_of(site: str, rng: np.random.Generator, side: str, other: str, skin_primary: str,
               stations_same: tuple[str, ...], diagnosis: str) -> tuple[str, str, str | None]:
    """(region, kind, near) for a site key."""
    pick = lambda seq: str(seq[int(rng.integers(len(seq)))])  # noqa: E731
    if site == "node_same_side":
        return pick(stations_same), "node", None
    if site == "node_upper":
        return pick(UPPER_STATIONS), "node", None
    if site == "node_lower":
        return pick(LOWER_STATIONS), "node", None
    if site == "node_any":
        return pick(UPPER_STATIONS + LOWER_STATIONS), "node", None
    if site == "node_thoracic":
        return pick((f"hilum_{side}", "mediastinum", "mediastinum", f"hilum_{other}")), "node", None
    if site == "node_supraclavicular":
        return f"supraclavicular_{side}", "node", None
    if site == "node_regional":  # melanoma: the basin draining the primary's region
        basin = {"skin_head_neck": (f"neck_{side}", f"supraclavicular_{side}"),
                 "skin_trunk": (f"axilla_{side}", f"inguinal_{side}"),
                 f"skin_arm_{side}": (f"axilla_{side}",), f"skin_leg_{side}": (f"inguinal_{side}", f"iliac_{side}")}
        return pick(basin.get(skin_primary, (f"axilla_{side}",))), "node", None
    if site == "node_bowel":
        return "mesenteric", "node", "bowel"
    if site == "node_pelvic":
        return pick((f"iliac_{side}", f"iliac_{side}", f"iliac_{other}")), "node", None
    if site == "node_retro":
        return "paraaortic", "node", ("ureter" if rng.random() < 0.5 else None)
    if site == "lung_same":
        return f"lung_{side}", "organ", None
    if site == "lung_other":
        return f"lung_{other}", "organ", None
    if site == "lung_any":
        return f"lung_{side if rng.random() < 0.5 else other}", "organ", None
    if site == "skin_same":
        return skin_primary, "organ", None
    if site == "skin_any":
        r = pick(SKIN_REGIONS)
        return r.replace("left", side) if rng.random() < 0.5 else r, "organ", None
    return site, "organ", None  # liver, spleen, bone, prostate
