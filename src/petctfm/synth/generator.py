"""Assemble one synthetic PET/CT case: patient, anatomy, physiology, lesions, scanner grids, noise.

Pipeline of :func:`generate_case` (all randomness from ``np.random.default_rng([seed, index])``):

1. site = ``sites[index % len(sites)]`` (balanced multi-site runs); patient (sex, age, height, weight,
   arms), tracer, diagnosis (~40 % negative controls), dose and times.
2. Scanner grids of the site (PET and CT differ in spacing, matrix, field of view, origin; both carry the
   site's direction cosines) and an axis-aligned "truth" grid covering the body.
3. Anatomy label map on the truth grid -> HU and SUV maps (per-patient tissue values + texture) -> lesion
   plan drawn (``burden.draw_plan``: count, volumes, sites, uptake per diagnosis), placed and blended in
   (anti-aliased occupancy).
4. CT: kernel blur (+ anti-alias) on the truth grid, linear resampling onto the CT grid, correlated noise.
   PET: SUV -> Bq/ml (dose, weight, decay to scan start, site calibration bias), PSF blur, resampling onto
   the PET grid, count-dependent (Poisson-like) noise. ``suv = pet * weight_g / decayed_dose`` exactly.
5. ctres (CT -> PET grid, linear), organs (nearest), seg (occupancy >= 0.5, plus each lesion's centre voxel);
   per-lesion SEG volumes (``lesion_volumes_ml``) from the truth-grid lesion owner map.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from petctfm.core.errors import InputError
from petctfm.io.images import image_from_array
from petctfm.synth.anatomy import add_benign_hotspots, build_anatomy
from petctfm.synth.body import Patient, body_extent, body_of
from petctfm.synth.case import SynthCase
from petctfm.synth.burden import (EXTRANODAL_REGIONS, ORGAN_METASTASIS_REGIONS, draw_extranodal_sites,
                                  draw_organ_metastases, draw_plan)
from petctfm.synth.lesions import place_lesions, render_lesions, stage_of
from petctfm.synth import metabolic as metabolic_model
from petctfm.synth.physiology import draw_physiology, render
from petctfm.synth.sites import SITES, SIZE_SCALE, SiteProfile, scaled_spacing
from petctfm.synth.tissues import organ_lut

#: The random stream of the opt-in organ metastases (``default_rng([seed, index, ORGAN_METASTASIS_STREAM])``),
#: apart from the case's own and the metabolic structure's (24).
ORGAN_METASTASIS_STREAM = 25
#: The random stream of the opt-in extranodal sites (adrenal, pleura, peritoneum; ``--extranodal-sites``).
EXTRANODAL_STREAM = 26

SIZES = ("tiny", "small", "full")
TRACERS = ("fdg", "psma")
DIAGNOSES = ("melanoma", "lymphoma", "lung_cancer", "prostate_cancer", "negative")
NEGATIVE_FRACTION = 0.4

# FDG is F-18; PSMA is modelled as [68Ga]Ga-PSMA-11 (the most common PSMA ligand in the autoPET-III data).
RADIONUCLIDE = {"fdg": ("F-18", 6586.2, "Fluorodeoxyglucose"), "psma": ("Ga-68", 4062.6, "Ga-68 PSMA-11")}

_SURNAMES = ("MILLER", "NGUYEN", "OKAFOR", "SCHMIDT", "ROSSI", "HANSEN", "KOWALSKI", "GARCIA", "TANAKA",
             "MURPHY", "DUBOIS", "SILVA", "LINDQVIST", "PETROV", "AHMED", "COHEN", "BERG", "MORI")
_GIVEN_M = ("JAMES", "LUCAS", "OMAR", "PETER", "HENRIK", "MARCO", "DAVID", "KENJI", "SAMUEL", "ERIK")
_GIVEN_F = ("ANNA", "MARIA", "SOFIA", "GRACE", "LENA", "AMARA", "YUKI", "CLARA", "INGRID", "NORA")


@dataclass(frozen=True)
class Grid:
    """A scanner voxel grid: size (x, y, z voxels), spacing (mm), origin (mm, LPS), direction (row-major 3x3)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    #: The patient's pose in this scanner (follow-up studies, ``synth.followup``): a rigid body -> scanner map
    #: ``x_scanner = R (x_body - c) + c + t`` given as ``(cx, cy, cz, rx, ry, rz, tx, ty, tz)`` (mm, radians,
    #: ITK Euler angles). None (every baseline case): body and scanner frames coincide.
    pose: tuple[float, ...] | None = None

    @staticmethod
    def centered(center, spacing, size, direction) -> "Grid":
        d = np.diag(np.asarray(direction, dtype=np.float64).reshape(3, 3))
        origin = [float(c - dk * (n - 1) / 2.0 * s) for c, dk, n, s in zip(center, d, size, spacing)]
        return Grid(tuple(int(n) for n in size), tuple(float(s) for s in spacing), tuple(origin), tuple(direction))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical (lo, hi) of the voxel centres."""
        d = np.diag(np.asarray(self.direction).reshape(3, 3))
        o = np.asarray(self.origin)
        end = o + d * (np.asarray(self.size) - 1) * np.asarray(self.spacing)
        return np.minimum(o, end), np.maximum(o, end)

    def resample(self, img: sitk.Image, interp, default: float, pixel_type) -> sitk.Image:
        f = sitk.ResampleImageFilter()
        f.SetSize([int(s) for s in self.size])
        f.SetOutputSpacing(self.spacing)
        f.SetOutputOrigin(self.origin)
        f.SetOutputDirection(self.direction)
        f.SetInterpolator(interp)
        f.SetDefaultPixelValue(float(default))
        f.SetOutputPixelType(pixel_type)
        if self.pose is not None:  # the output (scanner) point -> the body point it shows
            f.SetTransform(self.pose_transform().GetInverse())
        return f.Execute(img)

    def pose_transform(self) -> sitk.Euler3DTransform:
        """The body -> scanner transform of :attr:`pose` (identity when None)."""
        t = sitk.Euler3DTransform()
        if self.pose is not None:
            p = [float(v) for v in self.pose]
            t.SetCenter(p[0:3])
            t.SetRotation(*p[3:6])
            t.SetTranslation(p[6:9])
        return t

    def to_scanner(self, point):
        """A body-frame point (mm, LPS) in this scanner's frame; ``point`` itself when there is no pose."""
        if self.pose is None:
            return point
        return np.asarray(self.pose_transform().TransformPoint([float(v) for v in point]), np.float64)


def _check_args(index: int, seed: int, size: str, sites, tracers) -> tuple[list[str], list[str]]:
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise InputError(f"case index must be a non-negative integer, got {index!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    sites = list(SITES) if sites is None else list(sites)
    tracers = list(TRACERS) if tracers is None else list(tracers)
    if not sites:
        raise InputError("no site given")
    if not tracers:
        raise InputError("no tracer given")
    bad = [s for s in sites if s not in SITES]
    if bad:
        raise InputError(f"unknown site(s) {', '.join(bad)}; known: {', '.join(SITES)}")
    bad = [t for t in tracers if t not in TRACERS]
    if bad:
        raise InputError(f"unknown tracer(s) {', '.join(bad)}; known: {', '.join(TRACERS)}")
    return sites, tracers


def _draw_clinical(rng: np.random.Generator, tracers: list[str]) -> dict:
    negative = bool(rng.random() < NEGATIVE_FRACTION)
    if "psma" in tracers and "fdg" in tracers:
        tracer = "psma" if rng.random() < 0.25 else "fdg"
    else:
        tracer = tracers[0]
    sex = "M" if tracer == "psma" or rng.random() < 0.5 else "F"
    if negative:
        diagnosis = "negative"
    elif tracer == "psma":
        diagnosis = "prostate_cancer"
    else:
        diagnosis = str(rng.choice(["lymphoma", "melanoma", "lung_cancer"]))
    age_range = {"lymphoma": (20, 80), "prostate_cancer": (52, 85)}.get(diagnosis, (35, 85))
    if tracer == "psma":
        age_range = (52, 85)
    age = int(rng.integers(age_range[0], age_range[1] + 1))
    height = float(np.clip(rng.normal(176, 7) if sex == "M" else rng.normal(163, 6.5), 148, 200))
    bmi = float(np.clip(rng.normal(26, 4.5), 17.5, 42))
    weight = round(bmi * (height / 100) ** 2, 1)
    arms = "up" if rng.random() < 0.6 else "down"
    advanced = bool(rng.random() < 0.5)
    return dict(negative=negative, tracer=tracer, sex=sex, diagnosis=diagnosis, age=age,
                height_cm=round(height, 1), weight_kg=weight, arms=arms, advanced=advanced)


def _draw_times(rng: np.random.Generator, tracer: str, weight: float, profile: SiteProfile, age: int) -> dict:
    if tracer == "fdg":
        mbq = float(np.clip(profile.fdg_mbq_per_kg * weight * rng.uniform(0.9, 1.1), 150, 500))
    else:
        mbq = float(np.clip(2.0 * weight * rng.uniform(0.85, 1.15), 80, 250))
    dose_bq = round(mbq, 1) * 1e6
    day = dt.date(2019, 1, 2) + dt.timedelta(days=int(rng.integers(0, 2400)))
    inj = dt.datetime.combine(day, dt.time(7, 30)) + dt.timedelta(seconds=int(rng.integers(0, 6 * 3600)))
    uptake_s = int(rng.integers(50 * 60, 90 * 60 + 1))
    acq = inj + dt.timedelta(seconds=uptake_s)
    birth = day - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    return dict(injected_activity_bq=float(dose_bq), injection_time=inj.isoformat(),
                acquisition_time=acq.isoformat(), uptake_s=uptake_s, uptake_min=round(uptake_s / 60.0, 2),
                birth_date=birth.strftime("%Y%m%d"), study_date=day.strftime("%Y%m%d"))


def _grids(profile: SiteProfile, size: str, patient: Patient, rng: np.random.Generator):
    """CT grid, PET grid and truth-grid axes for this patient at this site and size."""
    sc = SIZE_SCALE[size]
    b = body_of(patient)
    top = float(rng.uniform(10, 40))
    bottom = b.z(0.66) - float(rng.uniform(0, 40))
    psp = scaled_spacing(profile, size, "pet")
    pfov = profile.pet_matrix * profile.pet_spacing_mm[0]
    pn_xy = int(round(pfov / psp[0]))
    pn_z = int(np.ceil((top - bottom) / psp[2])) + 1
    (pox, poy), (cox, coy) = profile.center_offset_mm
    pet = Grid.centered((pox + rng.uniform(-5, 5), poy + rng.uniform(-5, 5), top - (pn_z - 1) / 2 * psp[2]),
                        psp, (pn_xy, pn_xy, pn_z), profile.direction)
    csp = scaled_spacing(profile, size, "ct")
    cfov = profile.ct_matrix * profile.ct_spacing_mm[0]
    cn_xy = int(round(cfov / csp[0]))
    ctop = top + float(rng.uniform(-5, 30))
    cbot = bottom - float(rng.uniform(-10, 30))
    cn_z = int(np.ceil((ctop - cbot) / csp[2])) + 1
    ct = Grid.centered((cox + rng.uniform(-5, 5), coy + rng.uniform(-5, 5), ctop - (cn_z - 1) / 2 * csp[2]),
                       csp, (cn_xy, cn_xy, cn_z), profile.direction)
    lo, hi = body_extent(patient)
    plo, phi = pet.bounds()
    clo, chi = ct.bounds()
    lo = np.maximum(lo, np.minimum(plo, clo) - 20)
    hi = np.minimum(hi, np.maximum(phi, chi) + 20)
    tsp = sc["truth"]
    axes = tuple(np.arange(lo[k], hi[k] + tsp[k] * 0.5, tsp[k], dtype=np.float64) for k in range(3))
    return ct, pet, axes


def _truth_image(arr_xyz: np.ndarray, axes) -> sitk.Image:
    return image_from_array(arr_xyz, tuple(float(a[1] - a[0]) for a in axes), tuple(float(a[0]) for a in axes))


def _blur(arr: np.ndarray, sigma_mm, spacing) -> np.ndarray:
    sig = [float(s) / float(sp) for s, sp in zip(sigma_mm, spacing)]
    if max(sig) < 0.2:
        return arr
    return ndimage.gaussian_filter(arr, sig, mode="nearest", truncate=3.0)


def _correlated_noise(shape_zyx, sigma_vox_zyx, rng: np.random.Generator) -> np.ndarray:
    """Unit-SD Gaussian noise (float32), smoothed to the given correlation (voxels, z/y/x order)."""
    n = rng.standard_normal(shape_zyx, dtype=np.float32)
    if max(sigma_vox_zyx) >= 0.2:
        n = ndimage.gaussian_filter(n, sigma_vox_zyx, mode="wrap", truncate=3.0)
        n /= float(n.std()) or 1.0
    return n


def lesion_instances(seg_arr: np.ndarray, owner: np.ndarray, axes, pet_grid: "Grid", pet_img: sitk.Image,
                     lesions: list) -> np.ndarray:
    """The lesion instance map on the PET grid (int64, (z, y, x) like ``seg_arr``): 0 outside the SEG, else the
    number ``k + 1`` of the lesion ``lesions[k]`` that owns the voxel.

    Each SEG voxel belongs to the lesion that owns it on the truth grid (nearest-neighbour resampling of the
    owner map); SEG voxels without an owner (edge of the linear interpolation) go to the nearest lesion
    centre (in the scanner's frame, ``pet_grid.to_scanner``).
    """
    own = sitk.GetArrayFromImage(pet_grid.resample(_truth_image(owner, axes), sitk.sitkNearestNeighbor, 0,
                                                   sitk.sitkUInt8)).astype(np.int64)
    inst = np.where(seg_arr > 0, own, 0)
    orphan = np.argwhere((seg_arr > 0) & (own == 0))
    if len(orphan):
        pts = np.array([pet_img.TransformIndexToPhysicalPoint([int(i) for i in zyx[::-1]]) for zyx in orphan])
        cen = np.array([pet_grid.to_scanner(les.center) for les in lesions])
        nearest = np.argmin(((pts[:, None, :] - cen[None]) ** 2).sum(-1), axis=1) + 1
        inst[tuple(orphan.T)] = nearest
    return inst


def _lesion_volumes(seg_arr: np.ndarray, owner: np.ndarray, axes, pet_grid: "Grid", pet_img: sitk.Image,
                    lesions: list, vox_ml: float) -> list[float]:
    """Per-lesion volumes (ml) of the PET-grid SEG, in the order of ``lesions``; they sum to the SEG volume
    (the voxel counts of :func:`lesion_instances`)."""
    inst = lesion_instances(seg_arr, owner, axes, pet_grid, pet_img, lesions)
    counts = np.bincount(inst[seg_arr > 0], minlength=len(lesions) + 1)[1:len(lesions) + 1]
    return [float(c) * vox_ml for c in counts]


def generate_case(index: int, seed: int, size: str = "small", sites: list[str] | None = None,
                  tracers: list[str] | None = None, metabolic_structure: bool = False,
                  organ_metastases: bool = False, extranodal_sites: bool = False) -> SynthCase:
    """Generate case ``index`` of the cohort defined by ``seed`` (deterministic in all arguments).

    Args:
        index: case number (``case_id = f"PETCT_{index:04d}"``); the site is ``sites[index % len(sites)]``.
        seed: cohort seed; the case's generator is ``np.random.default_rng([seed, index])``.
        size: ``tiny`` (unit tests, < 1 s), ``small`` (~4 mm PET voxels, a few s), ``full`` (clinical grids).
        sites: allowed site names (keys of ``SITES``; default all, in their order).
        tracers: allowed tracers (``fdg``, ``psma``; default both). PSMA is used only for male patients
            and then the diagnosis is prostate cancer or negative.
        metabolic_structure: organ uptake follows patient-level latent factors (:mod:`petctfm.synth.metabolic`,
            its own random stream); off (the default), the case is bit-identical to earlier versions.
        organ_metastases: an advanced case may also get lesions inside the brain, kidneys, heart or bladder
            (:func:`petctfm.synth.burden.draw_organ_metastases`), drawn and placed from a random stream of their
            own after the case's other lesions: the patient, the organs and the other lesions are those of the
            case without them (the image noise is not). Off (the default): bit-identical to earlier versions.
        extranodal_sites: an advanced case may also get adrenal, pleural or peritoneal lesions
            (:func:`petctfm.synth.burden.draw_extranodal_sites`), from a stream of their own placed after the
            others (and after the organ metastases), in the same way. Off (the default): bit-identical.

    Returns:
        A :class:`SynthCase`; see its docstring for the images and ``docs/synthetic-data.md`` for ``meta``.
    """
    # Every draw comes from this one generator, in the order of the steps below (the module docstring).
    st = prepare_patient(index, seed, size, sites, tracers, metabolic_structure, organ_metastases, extranodal_sites)
    scan = Acquisition(st.site, st.profile, st.patient, st.times, st.ct_grid, st.pet_grid)
    return acquire_study(st, st.lesions, scan, st.rng)[0]


@dataclass
class PreparedPatient:
    """Steps 1-3 of :func:`generate_case` for one patient, before the lesions are rendered: what a second study
    of the same patient (``synth.followup``) starts from. ``hu`` / ``suv_true`` (float, truth grid x, y, z) hold
    no lesion yet and :func:`acquire_study` changes them in place (copy them first to scan the patient twice);
    ``lesions`` are placed, not rendered; ``rng`` is the case's generator, positioned after the placement."""

    index: int
    seed: int
    size: str
    site: str
    profile: SiteProfile
    clin: dict
    patient: Patient
    times: dict
    ct_grid: Grid
    pet_grid: Grid
    axes: tuple
    metabolic: tuple | None
    anat: object
    hotspots: object
    phys: object
    hu: np.ndarray
    suv_true: np.ndarray
    lesions: list
    planned_ml: float
    rng: np.random.Generator
    organ_metastases: bool = False  # drawn with ``organ_metastases`` (its metadata then counts them)
    extranodal_sites: bool = False  # drawn with ``extranodal_sites`` (its metadata then counts them)


@dataclass
class Acquisition:
    """How one study is acquired: the site (name and profile), the patient as weighed that day (weight ->
    SUV and dose), the dose and times (``_draw_times``), the CT and PET grids (with a ``pose`` for a
    follow-up) and, for a follow-up, the fixed identity fields and extra ``meta`` entries."""

    site: str
    profile: SiteProfile
    patient: Patient
    times: dict
    ct_grid: Grid
    pet_grid: Grid
    identity: dict | None = None  # None: drawn (the last draws of a case); else these fields are used
    extra_meta: dict | None = None


def prepare_patient(index: int, seed: int, size: str = "small", sites: list[str] | None = None,
                    tracers: list[str] | None = None, metabolic_structure: bool = False,
                    organ_metastases: bool = False, extranodal_sites: bool = False) -> PreparedPatient:
    """Steps 1-3 of :func:`generate_case` (same arguments, same draws): patient, times, grids, anatomy and
    the placed lesions (:class:`PreparedPatient`)."""
    sites, tracers = _check_args(index, seed, size, sites, tracers)
    rng = np.random.default_rng([int(seed), int(index)])
    site = sites[index % len(sites)]
    profile = SITES[site]
    clin = _draw_clinical(rng, tracers)
    patient = Patient(clin["sex"], clin["age"], clin["height_cm"], clin["weight_kg"], clin["arms"])
    times = _draw_times(rng, clin["tracer"], patient.weight_kg, profile, patient.age)
    ct_grid, pet_grid, axes = _grids(profile, size, patient, rng)
    metabolic = None
    if metabolic_structure:  # its own stream: the main one (and so everything else about the case) is unchanged
        group = metabolic_model.group_of(clin["diagnosis"])
        z = metabolic_model.draw(np.random.default_rng([int(seed), int(index), metabolic_model.METABOLIC_STREAM]),
                                 group, patient.age)
        metabolic = (group, z)
    anat, hotspots, phys, hu, suv_true = _truth_maps(axes, patient, clin["tracer"], rng,
                                                     metabolic[1] if metabolic else None)
    orng = np.random.default_rng([int(seed), int(index), ORGAN_METASTASIS_STREAM]) if organ_metastases else None
    xrng = np.random.default_rng([int(seed), int(index), EXTRANODAL_STREAM]) if extranodal_sites else None
    lesions, planned_ml = _plan_and_place_lesions(anat, clin, patient, pet_grid, size, rng, orng, xrng)
    return PreparedPatient(int(index), int(seed), size, site, profile, clin, patient, times, ct_grid, pet_grid,
                           axes, metabolic, anat, hotspots, phys, hu, suv_true, lesions, planned_ml, rng,
                           bool(organ_metastases), bool(extranodal_sites))


def acquire_study(st: PreparedPatient, lesions: list, scan: Acquisition, rng: np.random.Generator
                  ) -> tuple[SynthCase, list, np.ndarray | None]:
    """Steps 3 (rendering ``lesions`` into ``st.hu`` / ``st.suv_true``, in place) to 5 of :func:`generate_case`
    with the acquisition ``scan``, all draws from ``rng``. Returns ``(case, kept lesions, owner)``: the lesions
    that kept some volume (rendered: their ``suv_max`` / ``suv_mean`` / ``volume_ml`` are what was drawn) and
    the truth-grid owner map (uint8 (x, y, z), lesion ``k + 1`` of the kept list; None without lesions), for
    :func:`lesion_instances`."""
    clin, patient, times, profile = st.clin, scan.patient, scan.times, scan.profile
    ct_grid, pet_grid, axes = scan.ct_grid, scan.pet_grid, st.axes
    lesions, occ, owner = _render_lesions(st.anat, lesions, st.hu, st.suv_true, rng)
    diagnosis = clin["diagnosis"] if lesions else "negative"
    ct, noise_sd = _scan_ct(st.hu, st.anat.spacing, axes, ct_grid, profile, patient, rng)
    pet, suv, decayed, suv_factor = _scan_pet(st.suv_true, st.anat.spacing, axes, pet_grid, profile, clin["tracer"],
                                              patient, times, rng)
    ctres = pet_grid.resample(ct, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    organs = pet_grid.resample(_truth_image(organ_lut()[st.anat.labels], axes), sitk.sitkNearestNeighbor, 0,
                               sitk.sitkUInt8)
    seg, seg_arr, lesion_vols = _seg_on_pet_grid(occ, owner, lesions, axes, pet_grid, pet)
    vox_ml = float(np.prod(pet_grid.spacing)) / 1000.0
    identity = _fake_identity(rng, patient.sex, times) if scan.identity is None else dict(scan.identity)
    index, seed, size = st.index, st.seed, st.size
    meta = {
        "case_id": f"PETCT_{index:04d}",
        "site": scan.site,
        "tracer": clin["tracer"],
        "diagnosis": diagnosis,
        "stage": stage_of(diagnosis, lesions),
        "age": patient.age,
        "sex": patient.sex,
        "weight_kg": patient.weight_kg,
        "height_cm": patient.height_cm,
        "injected_activity_bq": times["injected_activity_bq"],
        "injection_time": times["injection_time"],
        "acquisition_time": times["acquisition_time"],
        "uptake_min": times["uptake_min"],
        "n_lesions": len(lesions),
        "lesion_volume_ml": round(float(seg_arr.sum()) * vox_ml, 3),
        "lesion_volumes_ml": [round(v, 3) for v in lesion_vols],
        "planned_lesion_volume_ml": round(st.planned_ml, 3),
        "arms": patient.arms,
        **identity,
        **_dose_meta(clin["tracer"], times, decayed, suv_factor),
        "bmi": round(patient.bmi, 1),
        "seed": int(seed),
        "index": int(index),
        "size": size,
        **_scanner_meta(profile, noise_sd, pet_grid, ct_grid),
        "benign_hotspots": st.hotspots,
        "reference_suv": st.phys.summary(),
        "lesions": _lesions_meta(lesions, lesion_vols),
    }
    if st.metabolic:
        meta.update(metabolic_model.case_meta(*st.metabolic))
    if st.organ_metastases:  # how many of the kept lesions lie in the opt-in organ sites
        meta["organ_metastases"] = sum(les.region in ORGAN_METASTASIS_REGIONS for les in lesions)
    if st.extranodal_sites:  # how many of the kept lesions lie in the opt-in extranodal sites
        meta["extranodal_lesions"] = sum(les.region in EXTRANODAL_REGIONS for les in lesions)
    if scan.extra_meta:
        meta.update(scan.extra_meta)
    case = SynthCase(case_id=meta["case_id"], ct=ct, pet=pet, suv=suv, ctres=ctres, seg=seg, organs=organs,
                     meta=meta)
    return case, lesions, owner


def _truth_maps(axes, patient: Patient, tracer: str, rng: np.random.Generator, metabolic_z: dict | None = None):
    """Step 3 without lesions, on the truth grid ``axes`` (x, y, z coordinates, mm): the anatomy, its benign
    hot spots (brown fat for FDG, likelier in young lean patients; an injection-site spot), the physiology and
    the rendered maps (``metabolic_z``: the organ multipliers of :mod:`petctfm.synth.metabolic`). Returns ``(anat, hotspots, phys, hu, suv_true)``; ``hu`` and ``suv_true`` are float
    arrays (x, y, z) of the truth grid's shape."""
    anat = build_anatomy(axes, patient, rng)
    young_lean = patient.age < 45 and patient.bmi < 25
    brown = tracer == "fdg" and rng.random() < (0.3 if young_lean else 0.06)
    hotspots = add_benign_hotspots(anat, patient, rng, brown_fat=bool(brown), injection=bool(rng.random() < 0.15))
    phys = draw_physiology(tracer, rng)
    if metabolic_z is not None:
        phys = metabolic_model.apply(phys, metabolic_z)
    hu, suv_true = render(anat, phys, rng)
    return anat, hotspots, phys, hu, suv_true


def _plan_and_place_lesions(anat, clin: dict, patient: Patient, pet_grid: Grid, size: str,
                            rng: np.random.Generator, organ_rng: np.random.Generator | None = None,
                            extranodal_rng: np.random.Generator | None = None) -> tuple[list, float]:
    """The lesion plan (``burden.draw_plan``: count, volumes, sites, uptake; drawn first, from the rng alone)
    placed in the anatomy inside the PET field of view. With ``organ_rng`` (``organ_metastases``), the organ
    metastases of the plan (``burden.draw_organ_metastases``) are drawn and placed from that stream after the
    others, clear of them; with ``extranodal_rng`` (``extranodal_sites``), the adrenal, pleural and peritoneal
    lesions (``burden.draw_extranodal_sites``) then, from that stream, clear of all of them. Returns
    ``(lesions, planned volume ml)``; none for a negative case."""
    diagnosis = clin["diagnosis"]
    if diagnosis == "negative":
        return [], 0.0
    plan = draw_plan(diagnosis, clin["advanced"], rng, body_ml=patient.weight_kg * 1000.0)
    planned_ml = float(sum(plan.volumes_ml))
    gap = 1.5 * max(pet_grid.spacing)
    # at `tiny` (PET voxels ~9 mm) a lesion is at least one PET voxel wide, else it could not be seen
    min_d = float(np.mean(pet_grid.spacing)) if size == "tiny" else 4.0
    lesions = place_lesions(anat, diagnosis, plan, rng, min_gap_mm=gap, bounds=pet_grid.bounds(),
                            min_diameter_mm=min_d)
    if organ_rng is not None:
        extra = draw_organ_metastases(plan, organ_rng)
        if extra.lesions:
            planned_ml += float(sum(extra.volumes_ml))
            lesions += place_lesions(anat, diagnosis, extra, organ_rng, min_gap_mm=gap, bounds=pet_grid.bounds(),
                                     min_diameter_mm=min_d, existing=lesions)
    if extranodal_rng is not None:
        extra = draw_extranodal_sites(plan, extranodal_rng)
        if extra.lesions:
            planned_ml += float(sum(extra.volumes_ml))
            lesions += place_lesions(anat, diagnosis, extra, extranodal_rng, min_gap_mm=gap,
                                     bounds=pet_grid.bounds(), min_diameter_mm=min_d, existing=lesions)
    return lesions, planned_ml


def _render_lesions(anat, lesions: list, hu: np.ndarray, suv_true: np.ndarray, rng: np.random.Generator):
    """Blend ``lesions`` into ``hu`` and ``suv_true`` (in place, :func:`render_lesions`). Returns
    ``(lesions, occ, owner)``: the lesions that kept some volume, the occupancy (float32, truth grid x, y, z)
    and the owner map (uint8, truth grid, lesion k + 1 renumbered to the kept lesions; None without lesions)."""
    owner = np.zeros(anat.labels.shape, np.uint8) if lesions else None
    occ = render_lesions(anat, lesions, hu, suv_true, rng, owner=owner)
    if lesions:  # a lesion clipped away entirely by its allowed tissues is dropped (owner ids renumbered)
        keep = [k for k, les in enumerate(lesions) if les.volume_ml > 0]
        lut = np.zeros(len(lesions) + 1, np.uint8)
        lut[[k + 1 for k in keep]] = np.arange(1, len(keep) + 1)
        owner = lut[owner]
        lesions = [lesions[k] for k in keep]
    return lesions, occ, owner


def _scan_ct(hu: np.ndarray, tsp, axes, ct_grid: Grid, profile: SiteProfile, patient: Patient,
             rng: np.random.Generator) -> tuple[sitk.Image, float]:
    """Step 4, CT: ``hu`` (truth grid x, y, z, spacing ``tsp``) blurred by the site's kernel (+ anti-alias),
    resampled linearly onto the CT grid, plus correlated noise scaled by the patient's abdominal diameter and
    the voxel volume; int16 in [-1024, 3071]. Returns ``(ct image, noise SD in HU)``."""
    ct_sig = [np.hypot(profile.ct_kernel_fwhm_mm / 2.355, 0.4 * s) for s in ct_grid.spacing]
    ct_img = ct_grid.resample(_truth_image(_blur(hu, ct_sig, tsp), axes), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    ct_arr = sitk.GetArrayFromImage(ct_img)  # [z, y, x]
    b = body_of(patient)
    a_abd, b_abd = b.torso_ab(np.array([b.z(0.4)]))
    diam_scale = float(2 * np.sqrt(a_abd[0] * b_abd[0]) / 300.0)
    vol_ratio = np.prod(ct_grid.spacing) / np.prod((profile.ct_spacing_mm[0],) * 2 + (profile.ct_spacing_mm[2],))
    noise_sd = profile.ct_noise_hu * diam_scale * max(1.0 / np.sqrt(vol_ratio), 0.25)
    grain = profile.ct_noise_grain_mm / 2.355
    sigma_vox_zyx = (0.3, grain / ct_grid.spacing[1], grain / ct_grid.spacing[0])
    ct_arr += noise_sd * _correlated_noise(ct_arr.shape, sigma_vox_zyx, rng)
    ct_i16 = np.clip(np.rint(ct_arr), -1024, 3071).astype(np.int16)
    ct = sitk.GetImageFromArray(ct_i16)
    ct.CopyInformation(ct_img)
    return ct, noise_sd


def _scan_pet(suv_true: np.ndarray, tsp, axes, pet_grid: Grid, profile: SiteProfile, tracer: str,
              patient: Patient, times: dict, rng: np.random.Generator):
    """Step 4, PET: ``suv_true`` (truth grid x, y, z, spacing ``tsp``) -> activity in Bq/ml at scan start
    (dose decayed over the uptake time, site calibration bias), PSF blur, linear resampling onto the PET grid,
    count-dependent noise. Returns ``(pet, suv, decayed dose Bq, suv_factor)``: PET (Bq/ml) and SUV float32
    images on the PET grid, ``suv = pet * suv_factor`` with ``suv_factor = weight_g / decayed``."""
    half_life = RADIONUCLIDE[tracer][1]
    weight_g = patient.weight_kg * 1000.0
    decayed = times["injected_activity_bq"] * np.exp(-np.log(2.0) * times["uptake_s"] / half_life)
    act = suv_true * np.float32(decayed / weight_g * profile.suv_calibration)
    psf_sig = [np.hypot(profile.pet_psf_fwhm_mm / 2.355, 0.4 * s) for s in pet_grid.spacing]
    pet_img = pet_grid.resample(_truth_image(_blur(act, psf_sig, tsp), axes), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    pet_arr = sitk.GetArrayFromImage(pet_img)
    vox_ml = float(np.prod(pet_grid.spacing)) / 1000.0
    k = np.float32(vox_ml * profile.pet_frame_s * profile.pet_sensitivity)  # counts per (Bq/ml)
    counts = np.clip(pet_arr, 0, None) * k
    noise = _correlated_noise(counts.shape, (0.6, 0.6, 0.6), rng)
    noisy = np.clip(counts + np.sqrt(counts + np.float32(2.0)) * noise, 0.0, None) / k
    pet_f32 = noisy.astype(np.float32)
    pet = sitk.GetImageFromArray(pet_f32)
    pet.CopyInformation(pet_img)
    suv_factor = weight_g / decayed
    suv = sitk.GetImageFromArray((pet_f32.astype(np.float64) * suv_factor).astype(np.float32))
    suv.CopyInformation(pet_img)
    return pet, suv, decayed, suv_factor


def _seg_on_pet_grid(occ: np.ndarray, owner: np.ndarray | None, lesions: list, axes, pet_grid: Grid,
                     pet: sitk.Image) -> tuple[sitk.Image, np.ndarray, list[float]]:
    """Step 5, the lesion mask on the PET grid (geometry of ``pet``): truth-grid occupancy ``occ`` resampled
    linearly, >= 0.5, plus each lesion's centre voxel. Returns ``(seg image, seg array uint8 (z, y, x),
    per-lesion SEG volumes ml)`` (:func:`_lesion_volumes`)."""
    lesion_vols: list[float] = []
    if lesions:
        occ_img = pet_grid.resample(_truth_image(occ, axes), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        seg_arr = (sitk.GetArrayFromImage(occ_img) >= 0.5).astype(np.uint8)
    else:
        seg_arr = np.zeros(tuple(reversed(pet.GetSize())), dtype=np.uint8)
    for les in lesions:
        idx = pet.TransformPhysicalPointToIndex([float(v) for v in pet_grid.to_scanner(les.center)])
        if all(0 <= i < n for i, n in zip(idx, pet_grid.size)):
            seg_arr[idx[2], idx[1], idx[0]] = 1
    if lesions:
        vox_ml = float(np.prod(pet_grid.spacing)) / 1000.0
        lesion_vols = _lesion_volumes(seg_arr, owner, axes, pet_grid, pet, lesions, vox_ml)
    seg = sitk.GetImageFromArray(seg_arr)
    seg.CopyInformation(pet)
    return seg, seg_arr, lesion_vols


def _fake_identity(rng: np.random.Generator, sex: str, times: dict) -> dict:
    """The fake DICOM identity (the last draws of a case, in this order): patient name, id, dates, accession
    number, referring physician, patient position."""
    given = (_GIVEN_M if sex == "M" else _GIVEN_F)[int(rng.integers(len(_GIVEN_M)))]
    name = f"{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{given}"
    patient_id = f"SYN{int(rng.integers(10 ** 7, 10 ** 8))}"
    accession = f"ACC{int(rng.integers(10 ** 6, 10 ** 7))}"
    referring = f"{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{_GIVEN_F[int(rng.integers(len(_GIVEN_F)))]}"
    return {
        "patient_name": name,
        "patient_id": patient_id,
        "birth_date": times["birth_date"],
        "study_date": times["study_date"],
        "accession_number": accession,
        "referring_physician": referring,
        "patient_position": "HFS",  # head first supine
    }


def _dose_meta(tracer: str, times: dict, decayed: float, suv_factor: float) -> dict:
    """Uptake time, radionuclide, radiopharmaceutical, half-life, decayed dose and SUV factor of ``meta``."""
    rn, hl, pharm = RADIONUCLIDE[tracer]
    return {
        "uptake_s": times["uptake_s"],
        "radionuclide": rn,
        "radiopharmaceutical": pharm,
        "half_life_s": hl,
        "decayed_activity_bq": float(decayed),
        "suv_factor": float(suv_factor),
    }


def _scanner_meta(profile: SiteProfile, noise_sd: float, pet_grid: Grid, ct_grid: Grid) -> dict:
    """The scanner fields of ``meta``: the site's device, PET and CT settings, CT noise, both grid spacings."""
    return {
        "manufacturer": profile.manufacturer,
        "model_name": profile.model_name,
        "institution_name": profile.institution_name,
        "station_name": profile.station_name,
        "orientation": profile.orientation,
        "device_serial_number": f"{profile.station_name}-{zlib.crc32(profile.name.encode()) % 10 ** 5:05d}",
        "pet_psf_fwhm_mm": profile.pet_psf_fwhm_mm,
        "pet_frame_s": profile.pet_frame_s,
        "pet_recon": profile.pet_recon,
        "suv_calibration": profile.suv_calibration,
        "ct_kernel": profile.ct_kernel,
        "ct_kvp": profile.ct_kvp,
        "ct_noise_sd_hu": round(float(noise_sd), 2),
        "pet_spacing_mm": list(pet_grid.spacing),
        "ct_spacing_mm": list(ct_grid.spacing),
    }


def _lesions_meta(lesions: list, lesion_vols: list[float]) -> list[dict]:
    """``meta["lesions"]``: per lesion its region, kind, centre, size, uptake, CT pattern and volumes."""
    return [
        {"region": les.region, "kind": les.kind, "center_mm": [round(float(v), 2) for v in les.center],
         "diameter_mm": round(les.diameter_mm, 2), "suv_max": round(les.suv_max, 3), "necrotic": les.necrotic,
         "low_contrast": les.low_contrast, "ct_pattern": les.ct, "above_diaphragm": les.above_diaphragm,
         "volume_ml": round(les.volume_ml, 3), "seg_volume_ml": round(v, 3),
         "planned_volume_ml": round(les.planned_volume_ml, 3), "suv_mean": round(les.suv_mean, 3),
         "heterogeneity": round(les.heterogeneity, 3), "n_parts": 1 + len(les.parts), "near": les.near}
        for les, v in zip(lesions, lesion_vols)
    ]
