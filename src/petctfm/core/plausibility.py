"""Plausibility ranges of PET/CT values, body weight and geometry: the one place that says what is impossible
(refused: an :class:`~petctfm.core.errors.InputError` naming the image and the problem) and what is merely
unusual (returned as a *flag*, a one-line string that harmonize writes to ``qa.csv`` / ``manifest.csv`` and
predict to ``summary.json``).

Every range, its reason and its literature source are listed in ``docs/reliability.md`` ("Plausibility
ranges"). ``harmonize`` (:mod:`petctfm.harmonize.qa`) and ``predict`` (through the same
:func:`petctfm.harmonize.pipeline.harmonize_images`) call these functions, so both refuse the same inputs.

Arrays are any shape (a strided view of a volume is enough); values must already be finite (NaN/inf is
refused before, by :func:`petctfm.harmonize.qa.check_inputs`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from petctfm.core.errors import InputError

# --- PET (SUV, body weight) ---------------------------------------------------------------------------------
#: SUVmax above this is physically impossible for FDG / PSMA: a PET in Bq/ml passed as SUV, a weight in grams,
#: a wrong unit or scale factor (Bq/ml images of a 70 kg patient given 200-400 MBq hold 1e3-1e5).
SUV_MAX_IMPOSSIBLE = 1000.0
#: SUVmax above this is unusual (bladder, kidneys and hot lesions stay below ~50-100 for FDG/PSMA): flagged.
SUV_MAX_UNUSUAL = 100.0
#: Median SUV of soft tissue (CT 0..100 HU) above this: the PET is in Bq/ml (1 SUV ~ 3000-6000 Bq/ml), refused.
SOFT_TISSUE_SUV_IMPOSSIBLE = 50.0
#: A PET in which a fraction this large of the voxels sits near -1000 is a CT (air), i.e. PET and CT swapped.
AIR_FRACTION_SWAPPED = 0.05
#: DICOM PatientWeight / metadata weight_kg outside this is refused (> 1000 is taken as grams).
WEIGHT_KG_POSSIBLE = (1.0, 350.0)
#: ... and outside this flagged (adult whole-body PET/CT; children and bariatric patients exist).
WEIGHT_KG_USUAL = (20.0, 200.0)

# --- CT (HU) ----------------------------------------------------------------------------------------------
#: A CT of a body always holds air or lung: without any voxel below this (HU) it is not a CT in HU (a PET in
#: the CT slot, or raw stored values without RescaleIntercept), refused.
CT_MIN_HU_REQUIRED = -200.0
#: Median HU of the body (CT > -500 HU) outside this is unusual (soft tissue is -100..+100 HU): flagged.
CT_BODY_MEDIAN_USUAL = (-300.0, 300.0)

# --- geometry ---------------------------------------------------------------------------------------------
#: Fewer voxels than this along any axis is not a 3D study (a 1x1x1 image, a single slice): refused, naming the
#: size, before any other check (a 1x1x1 image used to be refused as "no PET/CT overlap").
MIN_VOXELS_PER_AXIS = 4
#: Voxel spacing (mm) outside this is a header error (pixdim 0 or unset, metres or micrometres): refused.
SPACING_MM_POSSIBLE = (0.01, 100.0)
#: ... and outside this unusual for whole-body PET/CT (clinical PET 2-6 mm, CT 0.5-5 mm; the petctfm
#: synth ``tiny`` phantoms use up to 15 mm on purpose): flagged.
SPACING_MM_USUAL = (0.3, 20.0)
#: Less than this fraction of the PET body inside the CT body (on the 4x-coarse grid): another patient's CT,
#: or a different position: refused. Below :data:`BODY_OVERLAP_USUAL`: flagged.
BODY_OVERLAP_POSSIBLE = 0.5
BODY_OVERLAP_USUAL = 0.8
#: A lesion label of which less than this fraction of the source volume survives on the PET grid lies outside
#: the PET (its affine is off): refused, instead of silently becoming a negative case.
LABEL_KEPT_POSSIBLE = 0.5


def check_size(size: Sequence[int], name: str) -> None:
    """InputError when image ``name`` has fewer than :data:`MIN_VOXELS_PER_AXIS` voxels along an axis."""
    sz = [int(v) for v in size]
    if min(sz) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{name}: {' x '.join(map(str, sz))} voxels is not a 3D study (at least "
                         f"{MIN_VOXELS_PER_AXIS} voxels along each axis)")


def check_spacing(spacing: Sequence[float], name: str) -> list[str]:
    """Flags for ``spacing`` (mm, 3 values) of image ``name``; InputError when it cannot be real."""
    sp = [float(s) for s in spacing]
    lo, hi = SPACING_MM_POSSIBLE
    if not all(math.isfinite(s) and lo <= s <= hi for s in sp):
        raise InputError(f"{name}: voxel spacing {_r(sp)} mm is impossible (outside {lo:g}-{hi:g} mm: a header "
                         "with pixdim 0, unset or in the wrong unit)")
    ulo, uhi = SPACING_MM_USUAL
    if not all(ulo <= s <= uhi for s in sp):
        return [f"{name} spacing {_r(sp)} mm outside the usual {ulo:g}-{uhi:g} mm"]
    return []


def check_weight_kg(weight: float, where: str) -> list[str]:
    """Flags for a body weight in kg (DICOM PatientWeight, metadata weight_kg); InputError when impossible."""
    w = float(weight)
    lo, hi = WEIGHT_KG_POSSIBLE
    if not math.isfinite(w) or not lo <= w <= hi:
        hint = f" (grams? {w / 1000:g} kg)" if math.isfinite(w) and w >= 1000 else ""
        raise InputError(f"{where}: body weight {w:g} kg is impossible (outside {lo:g}-{hi:g} kg){hint}")
    return weight_flags(w)


def weight_flags(weight: float | None) -> list[str]:
    """Flags for a known body weight in kg (never raises): outside :data:`WEIGHT_KG_USUAL` is unusual (a child,
    a bariatric patient, or a typo in a weight that was not needed for SUV). None / not a number: no flag."""
    try:
        w = float(weight)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    if not math.isfinite(w):
        return []
    ulo, uhi = WEIGHT_KG_USUAL
    return [] if ulo <= w <= uhi else [f"body weight {w:g} kg outside the usual {ulo:g}-{uhi:g} kg"]


def check_finite(arr: np.ndarray, name: str) -> None:
    """InputError naming ``name`` when ``arr`` holds NaN or infinite values (checked before any range)."""
    arr = np.asarray(arr)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN/inf values ({int((~np.isfinite(arr)).sum())} voxels)")


def soft_tissue_suv_median(pet: np.ndarray, ct: np.ndarray) -> float | None:
    """Median SUV of soft tissue (CT 0..100 HU) of a PET and a CT on one grid; None without soft tissue."""
    soft = (ct > 0) & (ct < 100)
    return float(np.median(pet[soft])) if soft.any() else None


def check_pet_study(pet: np.ndarray, ct: np.ndarray | None = None, name: str = "PET") -> list[str]:
    """All checks of a PET in SUV (and, when given, a CT in HU on the PET grid) that a model input must pass:
    finite values, :func:`check_pet_values`, :func:`check_soft_tissue_suv` (a PET in Bq/ml). Used where an
    image goes to a model without harmonization (``segment``); ``harmonize`` and ``predict`` run the same
    functions inside :func:`petctfm.harmonize.pipeline.harmonize_images`. Returns the flags."""
    check_size(np.shape(pet), name)
    check_finite(pet, name)
    flags = check_pet_values(np.asarray(pet)[::2, ::2, ::2], name)
    if ct is not None:
        check_finite(ct, "CT")
        check_soft_tissue_suv(soft_tissue_suv_median(pet, ct), name)
    return flags


def check_pet_values(pet: np.ndarray, name: str = "PET") -> list[str]:
    """Flags for a PET in SUV (any shape); InputError for an empty, sign-flipped, swapped or non-SUV PET."""
    pet = np.asarray(pet)
    vmin, vmax = float(pet.min()), float(pet.max())
    if vmax <= 0:
        raise InputError(f"{name}: every voxel is <= 0 (max {vmax:g}): an empty or sign-flipped PET")
    air = float(((pet > -1100) & (pet < -900)).mean())
    if vmin < -500 and air > AIR_FRACTION_SWAPPED:
        raise InputError(f"{name}: {100 * air:.0f}% of the voxels are near -1000 (air in HU): this is a CT, "
                         "not a PET (PET and CT swapped?)")
    if -vmin > vmax:
        raise InputError(f"{name}: more negative than positive (min {vmin:.4g}, max {vmax:.4g}): a sign-flipped "
                         "or non-PET image")
    if vmax > SUV_MAX_IMPOSSIBLE:
        raise InputError(f"{name}: SUVmax {vmax:.4g} > {SUV_MAX_IMPOSSIBLE:g} is impossible for SUV (a PET in "
                         "Bq/ml given as SUV, a body weight in grams, or a wrong scale factor)")
    flags = []
    if vmax > SUV_MAX_UNUSUAL:
        flags.append(f"{name} SUVmax {vmax:.1f} > {SUV_MAX_UNUSUAL:g} (unusual)")
    if vmin < -1.0:
        flags.append(f"{name} has negative SUV down to {vmin:.2f}")
    return flags


def check_soft_tissue_suv(median_suv: float | None, name: str = "PET") -> list[str]:
    """InputError when the soft-tissue median SUV says the PET is in Bq/ml (no flags: qa.py has the range)."""
    if median_suv is not None and median_suv > SOFT_TISSUE_SUV_IMPOSSIBLE:
        raise InputError(f"{name}: soft-tissue median SUV {median_suv:.4g} > {SOFT_TISSUE_SUV_IMPOSSIBLE:g}: the "
                         "PET is in Bq/ml (or scaled), not SUV")
    return []


def check_ct_values(ct: np.ndarray, name: str = "CT") -> list[str]:
    """Flags for a CT in HU (any shape); InputError for a constant CT or one without air (not HU / swapped)."""
    ct = np.asarray(ct)
    vmin, vmax = float(ct.min()), float(ct.max())
    if vmax - vmin < 1e-3:
        raise InputError(f"{name}: every voxel is {vmin:g}: an empty CT")
    if vmin > CT_MIN_HU_REQUIRED:
        raise InputError(f"{name}: no voxel below {CT_MIN_HU_REQUIRED:g} HU (min {vmin:.4g}, max {vmax:.4g}): no "
                         "air or lung, so not a CT in HU (PET and CT swapped? raw values without RescaleIntercept?)")
    body = ct[ct > -500]
    if body.size:
        med = float(np.median(body))
        lo, hi = CT_BODY_MEDIAN_USUAL
        if not lo <= med <= hi:
            return [f"{name} body median {med:.0f} HU outside the usual {lo:g}..{hi:g} HU"]
    return []


def check_body_overlap(fraction: float | None) -> list[str]:
    """``fraction``: share of the PET body (smoothed PET > 0.3 SUV) inside the CT body (> -500 HU), where both
    exist. InputError below :data:`BODY_OVERLAP_POSSIBLE`, a flag below :data:`BODY_OVERLAP_USUAL`."""
    if fraction is None:
        return []
    if fraction < BODY_OVERLAP_POSSIBLE:
        raise InputError(f"PET and CT do not show the same body: only {100 * fraction:.0f}% of the PET body lies "
                         "inside the CT body (a CT of another patient or position, or a wrong affine)")
    if fraction < BODY_OVERLAP_USUAL:
        return [f"only {100 * fraction:.0f}% of the PET body inside the CT body"]
    return []


def check_label_kept(source_ml: float | None, kept_ml: float, voxel_ml: float = 0.0) -> list[str]:
    """InputError when a lesion label of ``source_ml`` keeps less than :data:`LABEL_KEPT_POSSIBLE` of its volume
    (``kept_ml``) on the harmonized PET grid: its affine puts it outside the PET. Only for labels of at least
    0.5 ml and 4 target voxels (``voxel_ml``), which nearest-neighbour resampling cannot lose by itself."""
    if source_ml and source_ml >= max(0.5, 4 * voxel_ml) and kept_ml < LABEL_KEPT_POSSIBLE * source_ml:
        raise InputError(f"lesion label: only {kept_ml:.1f} of {source_ml:.1f} ml lie inside the PET body crop "
                         "(its affine is off the PET's; a positive case would silently become negative)")
    return []


#: A lesion label with less than this fraction of its voxels inside the body outline (CT > -500 HU, holes filled
#: slice by slice: the lungs count as inside) is flagged: moved off the patient (a wrong affine, another study's
#: label).
LABEL_IN_BODY_USUAL = 0.5
#: A lesion (26-connected component of the label) whose mean SUV is below this fraction of the median SUV of the
#: body around it (a shell of :data:`LABEL_SHELL_MM` around the lesion, inside the body, outside every label) is
#: flagged: a label moved off its lesion onto colder tissue, or a label of another study. False-flag rate on the
#: phantoms in docs/reliability.md ("Quiet label problems").
LABEL_UPTAKE_RATIO_USUAL = 0.8
LABEL_SHELL_MM = 10.0
#: At most this many lesions (the largest) are compared with their surroundings (cost stays bounded).
LABEL_MAX_LESIONS_CHECKED = 50


def check_label_placement(pet: np.ndarray, ct: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                          body_hu: float = -500.0) -> list[str]:
    """Flags (never raises) for a lesion label that sits where no lesion is, on one harmonized grid (X, Y, Z):
    less than :data:`LABEL_IN_BODY_USUAL` of its voxels inside the body, or lesions whose mean SUV is below
    :data:`LABEL_UPTAKE_RATIO_USUAL` x the median SUV of the body around them (module constants)."""
    lab = np.asarray(label) > 0
    if not lab.any():
        return []
    import cc3d
    from scipy.ndimage import binary_dilation, binary_fill_holes, find_objects

    body = np.asarray(ct) > body_hu  # tissue: the shell around a lesion
    planar = np.zeros((3, 3, 3), bool)
    planar[:, :, 1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # holes filled slice by slice: lungs are inside the body
    outline = binary_fill_holes(body, structure=planar)
    flags = []
    inside = float(outline[lab].mean())
    if inside < LABEL_IN_BODY_USUAL:
        flags.append(f"lesion label: only {100 * inside:.0f}% of its voxels inside the body outline (CT > "
                     f"{body_hu:g} HU, lungs included): moved off the patient?")
    comps, n = cc3d.connected_components(lab, connectivity=26, return_N=True)
    sizes = np.bincount(comps.ravel())[1:]
    order = np.argsort(-sizes)[:LABEL_MAX_LESIONS_CHECKED] + 1
    r = [max(1, int(math.ceil(LABEL_SHELL_MM / float(s)))) for s in spacing]
    boxes = find_objects(comps)
    low = []
    for k in order:
        box = tuple(slice(max(0, b.start - ri), b.stop + ri) for b, ri in zip(boxes[k - 1], r))
        comp = comps[box] == k
        grow = binary_dilation(comp, structure=np.ones((2 * r[0] + 1, 2 * r[1] + 1, 2 * r[2] + 1), bool))
        shell = grow & ~lab[box] & body[box]
        if shell.sum() < 8:
            continue
        around = max(float(np.median(pet[box][shell])), 0.05)
        ratio = float(pet[box][comp].mean()) / around
        if ratio < LABEL_UPTAKE_RATIO_USUAL:
            low.append(ratio)
    if low:
        flags.append(f"lesion label: {len(low)} of {n} lesion(s) with mean SUV below {LABEL_UPTAKE_RATIO_USUAL:g}x "
                     f"the body around them (lowest {min(low):.2f}x): moved off its lesion?")
    return flags


def _r(values: Sequence[float]) -> list[float]:
    return [round(v, 3) if math.isfinite(v) else v for v in values]


__all__ = [
    "SUV_MAX_IMPOSSIBLE", "SUV_MAX_UNUSUAL", "SOFT_TISSUE_SUV_IMPOSSIBLE", "AIR_FRACTION_SWAPPED", "WEIGHT_KG_POSSIBLE",
    "WEIGHT_KG_USUAL", "CT_MIN_HU_REQUIRED", "CT_BODY_MEDIAN_USUAL", "SPACING_MM_POSSIBLE", "SPACING_MM_USUAL",
    "BODY_OVERLAP_POSSIBLE", "BODY_OVERLAP_USUAL", "LABEL_KEPT_POSSIBLE", "MIN_VOXELS_PER_AXIS", "check_size",
    "check_spacing", "check_weight_kg", "weight_flags",
    "check_finite", "soft_tissue_suv_median", "check_pet_study", "check_pet_values", "check_soft_tissue_suv", "check_ct_values", "check_body_overlap", "check_label_kept",
]
