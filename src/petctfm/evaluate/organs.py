"""Whole-body organs: the organ SUV readout (``organs.csv`` of ``petctfm predict``, cohort tables) and the
per-organ segmentation metrics (Dice, normalized surface distance) of organ models. The one home of both;
see docs/organs.md.

**Readout** (:func:`organ_readout`): one row per organ of a label map, then two reference rows.

- ``volume_ml``: every voxel of the organ (lesions inside it included: the organ's anatomical volume);
  ``excluded_lesion_ml``: the lesion voxels inside it. Every SUV value is over the organ's voxels **minus the
  lesion voxels** (``lesions > 0``): ``suv_mean``, ``suv_sd`` (ddof 1), ``suv_median``, ``suv_max``;
  ``suv_peak``: the highest mean SUV in a 1 ml sphere (radius 6.2 mm) whose voxels all lie in the organ minus
  lesions (when none fits, e.g. a thin organ, the sphere is clipped to those voxels).
- ``sul_mean``: SUV normalized to lean body mass, ``suv_mean * LBM / weight``, with Janmahasatian's LBM (the
  formula PERCIST asks for; its reference and formula: :mod:`petctfm.core.lbm`). NaN when weight, height or sex
  is unknown.
- ``liver_reference`` (PERCIST, Wahl et al., J Nucl Med 2009;50:122S): a 3 cm diameter sphere (radius 15 mm)
  in the right lobe of the liver (:func:`liver_reference_sphere`): every voxel of it lies in the liver eroded
  by ``edge_margin_mm`` (away from the edges) and at least ``lesion_margin_mm`` from every lesion voxel; the
  deepest such centre (largest distance to the liver edge) on the patient's right of the liver's centroid,
  else anywhere in the liver; a row of NaN (``note`` says why) when no sphere fits.
- ``blood_pool_reference``: the mediastinal blood pool of PERCIST / Deauville: a 1 cm diameter, 2 cm long
  cylinder in the descending thoracic aorta (:func:`blood_pool_roi`): the aorta label's axial slices within the
  lungs' cranio-caudal span; in each, the most posterior connected part (the descending aorta: posterior to the
  ascending aorta, beside the spine); in each slice the voxels of that part within 5 mm of its centre; of those
  slices, the 2 cm window of consecutive slices nearest the middle of the run that no lesion comes within
  ``lesion_margin_mm`` of (none: the middle window minus the lesion surroundings). The phantoms
  (``petctfm synth``) label the whole aorta (root, arch, descending, abdominal) as ``aorta``, so the same rule
  applies to them.

Orientation: ``affine`` (4x4 voxel -> RAS mm) tells the patient's right (+x in RAS), posterior (-y) and superior
(+z); without it
the arrays are taken as RAS-ordered (a harmonized case) with ``spacing``.

**Cohort value** (:func:`organ_suv_means`): the SUVmean per organ, lesion voxels excluded, after eroding each
organ by N voxels (default 1; edge voxels carry the neighbours' uptake through the PET blur): what the metabolic
covariance network (``petctfm experiment metabolic-network``) correlates, for ground-truth and predicted maps.

**Segmentation metrics** (:func:`organ_case_metrics`): per organ Dice (MONAI ``compute_dice``) and normalized
surface distance (MONAI ``compute_surface_dice``, tolerance ``nsd_tolerance_mm``, default 3 mm). A class absent
from a case is handled as nnU-Net v2 does (and as MONAI's NSD does): absent from both prediction and ground
truth -> NaN, left out of the means; present in only one of them -> 0. (MONAI's ``DiceMetric`` would give 1.0
with ``ignore_empty=False`` and NaN even for a false-positive organ with ``ignore_empty=True``; neither is
used.) :func:`organ_summary` gives each organ's mean over cases with a percentile bootstrap CI
(:func:`petctfm.evaluate.bootstrap.mean_ci`).

**SUVmean agreement** (:func:`organ_suv_agreement`, when the ground truth comes with its SUV image): per organ
the readout's ``suv_mean`` (:func:`organ_readout`: lesion voxels of the **ground-truth** lesion mask excluded)
over the true organ (``suv_mean_true``) and over the predicted organ (``suv_mean_pred``), and
``suv_mean_rel_err = (pred - true) / true`` (NaN when either is undefined: the organ absent or all lesion).
:func:`organ_summary` adds per organ ``n_suv`` (cases with a defined ``suv_mean_true``), ``n_suv_missed`` (of
those, the prediction has no voxel of the organ outside lesions), the median of ``|suv_mean_rel_err|`` over the
cases where it is defined with its percentile bootstrap CI (:func:`petctfm.evaluate.bootstrap.median_ci`), and
``suv_within_5pct``: the fraction of the ``n_suv`` cases with ``|rel err| <= 0.05`` (a missed organ counts as
outside). :func:`organ_suv_pooled`: the same pooled over the (case, organ) pairs of the target organs
(:data:`SUV_TARGET_ORGANS`), its CI resampling cases (each with all its organs).

Shapes: ``suv``, ``organs``, ``lesions``, ``pred``, ``gt``: (X, Y, Z) on one grid.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from petctfm.core.labels import ORGAN_LABELS
from petctfm.core.lbm import lean_body_mass  # noqa: F401  (its one owner; re-exported here)
from petctfm.evaluate.lesions import SPHERE_1ML_RADIUS_MM, kernel_at, sphere_kernel

NAN = float("nan")
LIVER_SPHERE_RADIUS_MM = 15.0  # PERCIST: 3 cm diameter
BLOOD_POOL_RADIUS_MM = 5.0  # PERCIST: 1 cm diameter ...
BLOOD_POOL_LENGTH_MM = 20.0  # ... 2 cm long, descending thoracic aorta
DEFAULT_NSD_TOLERANCE_MM = 3.0
#: The organs of issue 24's SUVmean target (liver, lungs, kidneys, spleen, heart, brain, bladder), pooled by
#: :func:`organ_suv_pooled` (those of them in the classes).
SUV_TARGET_ORGANS = ("liver", "lung_left", "lung_right", "kidney_left", "kidney_right", "spleen", "heart", "brain",
                     "bladder")
#: ``suv_within_5pct``: |relative SUVmean error| at most this.
SUV_TOLERANCE = 0.05
#: The per-case keys of :func:`organ_suv_agreement`, and the SUV columns :func:`organ_summary` adds.
SUV_CASE_KEYS = ("suv_mean_true", "suv_mean_pred", "suv_mean_rel_err")
SUV_SUMMARY_KEYS = ("n_suv", "n_suv_missed", "suv_abs_rel_err_median", "suv_abs_rel_err_ci_low",
                    "suv_abs_rel_err_ci_high", "suv_within_5pct")

#: Columns of ``organs.csv``, in order.
ORGAN_COLUMNS = ["organ", "kind", "label", "volume_ml", "n_voxels", "excluded_lesion_ml", "suv_mean", "suv_sd",
                 "suv_median", "suv_max", "suv_peak", "sul_mean", "note"]
LIVER_REFERENCE = "liver_reference"
BLOOD_POOL_REFERENCE = "blood_pool_reference"


# ------------------------------------------------------------------------------------------------ geometry


def _spacing_of(spacing: Sequence[float] | None, affine: np.ndarray | None) -> np.ndarray:
    if affine is not None:
        return np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    return np.asarray(spacing, np.float64)


def _ras(idx: np.ndarray, spacing: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """(N, 3) RAS mm of (N, 3) voxel indices (no affine: RAS-ordered axes, origin 0)."""
    idx = np.asarray(idx, np.float64)
    if affine is None:
        return idx * spacing
    a = np.asarray(affine, np.float64)
    return idx @ a[:3, :3].T + a[:3, 3]


def _axis_of(affine: np.ndarray | None, ras_axis: int) -> tuple[int, float]:
    """(array axis, sign) along which RAS axis ``ras_axis`` grows (the voxel axis closest to it)."""
    if affine is None:
        return ras_axis, 1.0
    d = np.asarray(affine, np.float64)[:3, :3]
    ax = int(np.argmax(np.abs(d[ras_axis])))
    return ax, float(np.sign(d[ras_axis, ax]) or 1.0)


def _distance_to_outside(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance in mm from each voxel of ``mask`` to the nearest voxel outside it (the image border counts as
    outside: the mask is padded by one background voxel)."""
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(np.asarray(mask, bool), 1)
    return distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]


def _distance_to(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance in mm from each voxel to the nearest voxel of ``mask`` (inf when it is empty)."""
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return np.full(mask.shape, np.inf)
    return distance_transform_edt(~np.asarray(mask, bool), sampling=spacing)


def _ball_at(shape: tuple[int, ...], centre: Sequence[int], spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    """(X, Y, Z) bool: voxels whose centre lies within ``radius_mm`` of voxel ``centre``."""
    out = np.zeros(shape, bool)
    box, part = kernel_at(shape, centre, sphere_kernel(spacing, radius_mm))
    out[box] = part
    return out


# ------------------------------------------------------------------------------------------------ references


def _box(mask: np.ndarray, pad_mm: float, spacing: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``pad_mm`` (clipped to the array): distance transforms run there."""
    idx = np.nonzero(mask)
    pad = np.ceil(pad_mm / spacing).astype(int) + 1
    return tuple(slice(max(0, int(i.min()) - int(p)), min(int(n), int(i.max()) + 1 + int(p)))
                 for i, p, n in zip(idx, pad, mask.shape))


def liver_reference_sphere(liver: np.ndarray, lesions: np.ndarray | None, spacing: Sequence[float] | None = None,
                           affine: np.ndarray | None = None, radius_mm: float = LIVER_SPHERE_RADIUS_MM,
                           edge_margin_mm: float = 5.0, lesion_margin_mm: float = 10.0
                           ) -> tuple[np.ndarray | None, str]:
    """The PERCIST liver reference sphere (module docstring): ``(mask (X, Y, Z) bool, note)``; mask None when no
    sphere fits (the note says why). Every sphere voxel lies at least ``edge_margin_mm`` inside the liver (its
    distance to the nearest non-liver voxel is > ``edge_margin_mm``) and at least ``lesion_margin_mm`` from every
    lesion voxel; the centre is on the patient's right (RAS +x) of the liver's centroid when possible."""
    sp = _spacing_of(spacing, affine)
    liver = np.asarray(liver, bool)
    if not liver.any():
        return None, "no liver"
    # everything below runs in the liver's box grown by the sphere + lesion margin (lesions farther away from
    # every liver voxel cannot come within the margin of a sphere inside the liver)
    box = _box(liver, radius_mm + lesion_margin_mm, sp)
    lv = liver[box]
    # a sphere of radius R at c lies in liver-eroded-by-m iff c is farther than R + m from the outside
    deep = _distance_to_outside(lv, sp)
    ok = deep > radius_mm + edge_margin_mm
    if lesions is not None and np.any(np.asarray(lesions)[box]):
        ok &= _distance_to(np.asarray(lesions)[box] > 0, sp) >= radius_mm + lesion_margin_mm
    if not ok.any():
        return None, "no 3 cm sphere fits in the liver away from its edges and lesions"
    offset = np.array([s.start for s in box])
    idx = np.argwhere(ok)
    centroid_x = _ras(np.argwhere(lv).mean(axis=0, keepdims=True) + offset, sp, affine)[0, 0]
    x = _ras(idx + offset, sp, affine)[:, 0]
    right = x > centroid_x  # RAS: +x is the patient's right
    note = "right lobe"
    if not right.any():
        note = "no sphere fits in the right lobe: placed elsewhere in the liver"
        right = np.ones(len(idx), bool)
    cand = idx[right]
    best = cand[int(np.argmax(deep[tuple(cand.T)]))] + offset
    return _ball_at(liver.shape, best, sp, radius_mm), note


def blood_pool_roi(aorta: np.ndarray, lungs: np.ndarray | None, lesions: np.ndarray | None,
                   spacing: Sequence[float] | None = None, affine: np.ndarray | None = None,
                   radius_mm: float = BLOOD_POOL_RADIUS_MM, length_mm: float = BLOOD_POOL_LENGTH_MM,
                   lesion_margin_mm: float = 10.0) -> tuple[np.ndarray | None, str]:
    """The mediastinal blood-pool ROI in the descending thoracic aorta (module docstring): ``(mask (X, Y, Z)
    bool, note)``; None when there is no aorta (in the lungs' span)."""
    from scipy.ndimage import label as cc_label

    sp = _spacing_of(spacing, affine)
    aorta = np.asarray(aorta, bool)
    if not aorta.any():
        return None, "no aorta"
    zax, zsign = _axis_of(affine, 2)
    yax, ysign = _axis_of(affine, 1)
    slices = np.nonzero(aorta.any(axis=tuple(a for a in range(3) if a != zax)))[0]
    note = "descending thoracic aorta"
    if lungs is not None and np.any(lungs):
        lz = np.nonzero(np.asarray(lungs, bool).any(axis=tuple(a for a in range(3) if a != zax)))[0]
        thoracic = slices[(slices >= lz.min()) & (slices <= lz.max())]
        if len(thoracic):
            slices = thoracic
        else:
            note = "no aorta within the lungs' span: the whole aorta used"
    else:
        note = "no lungs labelled: the whole aorta used"
    keep = np.ones(aorta.shape, bool)
    if lesions is not None:
        box = _box(aorta, lesion_margin_mm, sp)
        near = np.asarray(lesions)[box] > 0
        if near.any():
            keep[box] = _distance_to(near, sp) > lesion_margin_mm
    parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slice -> (2-D mask of the posterior part, centre)
    for k in slices:
        sl = [slice(None)] * 3
        sl[zax] = int(k)
        plane = aorta[tuple(sl)]
        lab, n = cc_label(plane)
        if n == 0:
            continue
        in_plane = [a for a in range(3) if a != zax]
        y_pos = in_plane.index(yax)
        best, best_y = None, np.inf
        for c in range(1, n + 1):
            pts = np.argwhere(lab == c)
            y = ysign * pts[:, y_pos].mean()  # RAS y of the part (up to an offset): smaller = more posterior
            if y < best_y:
                best, best_y = c, y
        part = lab == best
        parts[int(k)] = (part, np.argwhere(part).mean(axis=0))
    if not parts:
        return None, "no aorta"
    ks = np.array(sorted(parts))
    in_plane = [a for a in range(3) if a != zax]
    ii, jj = np.meshgrid(*(np.arange(aorta.shape[a]) for a in in_plane), indexing="ij")
    disks: dict[int, tuple[np.ndarray, bool]] = {}  # slice -> (disk minus the lesion surround, untouched by it)
    for k in ks:
        part, c = parts[int(k)]
        d2 = ((ii - c[0]) * sp[in_plane[0]]) ** 2 + ((jj - c[1]) * sp[in_plane[1]]) ** 2
        disk = part & (d2 <= radius_mm ** 2 * (1 + 1e-9))
        if not disk.any():  # thinner than a voxel row around the centre: the part itself
            disk = part
        sl = [slice(None)] * 3
        sl[zax] = int(k)
        kept = disk & keep[tuple(sl)]
        disks[int(k)] = (kept, bool(kept.sum() == disk.sum()))
    # the 2 cm window of consecutive slices nearest the middle of the run whose disks no lesion surround touches
    n_len = max(1, int(round(length_mm / sp[zax])))
    mid = float(np.median(ks))
    windows = [list(range(int(k), int(k) + n_len)) for k in ks]
    clean = [w for w in windows if all(z in disks and disks[z][1] for z in w)]
    if clean:
        chosen = min(clean, key=lambda w: abs((w[0] + w[-1]) / 2.0 - mid))
    else:
        note += "; no lesion-free 2 cm stretch: lesion surroundings removed from the middle one"
        chosen = [z for z in min(windows, key=lambda w: abs((w[0] + w[-1]) / 2.0 - mid)) if z in disks]
    roi = np.zeros(aorta.shape, bool)
    for k in chosen:
        sl = [slice(None)] * 3
        sl[zax] = int(k)
        roi[tuple(sl)] = disks[k][0]
    if not roi.any():
        return None, "the descending aorta is next to lesions everywhere"
    return roi, note


# ------------------------------------------------------------------------------------------------ readout


def _peak(suv: np.ndarray, region: np.ndarray, spacing: np.ndarray) -> float:
    """Max mean SUV in a 1 ml sphere of voxels of ``region`` (fully inside it when one fits, else clipped)."""
    from scipy.signal import fftconvolve

    idx = np.nonzero(region)
    if len(idx[0]) == 0:
        return NAN
    k = sphere_kernel(spacing, SPHERE_1ML_RADIUS_MM).astype(np.float64)
    half = np.array(k.shape) // 2
    lo = np.maximum(np.array([int(i.min()) for i in idx]) - half, 0)
    hi = np.minimum(np.array([int(i.max()) + 1 for i in idx]) + half, region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    inside = np.asarray(region[box], np.float64)
    sums = fftconvolve(np.asarray(suv[box], np.float64) * inside, k, mode="same")
    counts = np.rint(fftconvolve(inside, k, mode="same"))
    centres = inside > 0
    full = centres & (counts >= k.sum() - 0.5)
    use = full if full.any() else centres & (counts > 0)
    return float(np.max(sums[use] / counts[use]))


def region_stats(suv: np.ndarray, region: np.ndarray, spacing: Sequence[float], lbm_factor: float = NAN
                 ) -> dict[str, float]:
    """SUV statistics of the voxels of ``region`` (bool (X, Y, Z)): ``suv_mean``, ``suv_sd`` (ddof 1; 0 for one
    voxel), ``suv_median``, ``suv_max``, ``suv_peak`` (:func:`_peak`), ``sul_mean`` (``suv_mean * lbm_factor``,
    ``lbm_factor = LBM / weight``); NaN everywhere for an empty region."""
    sp = np.asarray(spacing, np.float64)
    v = np.asarray(suv, np.float64)[region]
    if v.size == 0:
        return {"suv_mean": NAN, "suv_sd": NAN, "suv_median": NAN, "suv_max": NAN, "suv_peak": NAN, "sul_mean": NAN}
    mean = float(v.mean())
    return {"suv_mean": mean, "suv_sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "suv_median": float(np.median(v)), "suv_max": float(v.max()), "suv_peak": _peak(suv, region, sp),
            "sul_mean": mean * lbm_factor}


#: :func:`organ_suv_means`: an organ whose erosion leaves fewer voxels than this (lesion voxels not counted) is
#: measured whole (a small organ on a coarse grid).
MIN_ERODED_VOXELS = 3


def organ_suv_means(suv: np.ndarray, organs: np.ndarray, lesions: np.ndarray | None, labels: Mapping[str, int],
                    erode: int = 1) -> tuple[dict[str, float], list[str]]:
    """SUVmean per organ of a label map, **lesion voxels excluded**, each organ eroded by ``erode`` voxels first:
    the cohort value of the metabolic network (``petctfm experiment metabolic-network``; docs/metabolic-network.md)
    for ground-truth and predicted organ maps alike.

    ``suv``, ``organs``, ``lesions`` (> 0 = lesion, or None): (X, Y, Z) on one grid; ``labels``: organ name ->
    value in ``organs`` (a ``background`` entry is ignored). Erosion is 6-connected, ``erode`` iterations (0 =
    the whole organ): the edge voxels of an organ carry its neighbours' uptake through the PET blur, which on a
    coarse grid makes correlations of its own. An organ whose eroded lesion-free part has fewer than
    :data:`MIN_ERODED_VOXELS` voxels is measured whole (minus lesions). The mean over the whole organ minus
    lesions is :func:`organ_readout`'s ``suv_mean``.

    Returns ``(means, whole)``: ``means[name]`` for every organ of ``labels`` (NaN when it is absent or all
    lesion), ``whole`` the organs measured whole because erosion left too little.
    """
    from scipy import ndimage

    organs = np.asarray(organs)
    suv = np.asarray(suv, np.float64)
    keep = np.ones(organs.shape, bool) if lesions is None else np.asarray(lesions) <= 0
    means: dict[str, float] = {}
    whole: list[str] = []
    for name, value in labels.items():
        if name == "background":
            continue
        mask = organs == int(value)
        if erode > 0 and mask.any():
            eroded = ndimage.binary_erosion(mask, iterations=int(erode))
            if (eroded & keep).sum() >= MIN_ERODED_VOXELS:
                mask = eroded
            else:
                whole.append(name)
        mask &= keep
        means[name] = float(suv[mask].mean()) if mask.any() else NAN
    return means, whole


def organ_readout(suv: np.ndarray, organs: np.ndarray, lesions: np.ndarray | None, spacing: Sequence[float] | None,
                  *, weight_kg: float | None = None, height_cm: float | None = None, sex: str | None = None,
                  labels: Mapping[str, int] | None = None, affine: np.ndarray | None = None,
                  references: bool = True) -> list[dict[str, Any]]:
    """Rows of ``organs.csv`` (keys :data:`ORGAN_COLUMNS`; module docstring): one per organ of ``labels``
    (name -> value in ``organs``; default :data:`petctfm.core.labels.ORGAN_LABELS`) present in ``organs``, in
    label order, then (``references``) the ``liver_reference`` and ``blood_pool_reference`` rows (those need
    ``liver`` / ``aorta`` in ``labels``; ``lung_left`` / ``lung_right`` bound the thorax).

    ``suv``, ``organs``, ``lesions`` (> 0 = lesion, or None): (X, Y, Z) on one grid; ``spacing`` (mm, 3) or
    ``affine`` (4x4 voxel -> RAS mm, which also gives the orientation); ``weight_kg``, ``height_cm``, ``sex``
    for ``sul_mean`` (NaN when unknown). Values are unrounded floats.
    """
    labels = dict(ORGAN_LABELS if labels is None else labels)
    labels.pop("background", None)
    sp = _spacing_of(spacing, affine)
    ml = float(np.prod(sp)) / 1000.0
    organs = np.asarray(organs)
    lesion = np.zeros(organs.shape, bool) if lesions is None else np.asarray(lesions) > 0
    lbm = lean_body_mass(weight_kg, height_cm, sex)
    try:
        factor = lbm / float(weight_kg)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        factor = NAN
    rows: list[dict[str, Any]] = []
    present = set(np.unique(organs).tolist())
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        if int(value) not in present:
            continue
        m = organs == int(value)
        n, n_les = int(m.sum()), int((m & lesion).sum())
        row = {"organ": name, "kind": "organ", "label": int(value), "volume_ml": n * ml, "n_voxels": n,
               "excluded_lesion_ml": n_les * ml, **region_stats(suv, m & ~lesion, sp, factor),
               "note": "" if n_les < n else "all voxels are lesion"}
        rows.append(row)
    if references:
        rows += reference_rows(suv, organs, lesion, sp, labels, affine, factor)
    return rows


def reference_rows(suv: np.ndarray, organs: np.ndarray, lesion: np.ndarray, spacing: np.ndarray,
                   labels: Mapping[str, int], affine: np.ndarray | None, lbm_factor: float) -> list[dict[str, Any]]:
    """The ``liver_reference`` and ``blood_pool_reference`` rows of :func:`organ_readout`."""
    ml = float(np.prod(spacing)) / 1000.0
    out = []
    liver = organs == labels["liver"] if "liver" in labels else np.zeros(organs.shape, bool)
    sphere, note = liver_reference_sphere(liver, lesion, spacing, affine)
    aorta = organs == labels["aorta"] if "aorta" in labels else np.zeros(organs.shape, bool)
    lungs = np.isin(organs, [labels[k] for k in ("lung_left", "lung_right") if k in labels])
    pool, pool_note = blood_pool_roi(aorta, lungs, lesion, spacing, affine)
    for name, label, mask, why in ((LIVER_REFERENCE, labels.get("liver"), sphere, "PERCIST 3 cm sphere: " + note),
                                   (BLOOD_POOL_REFERENCE, labels.get("aorta"), pool, "1 x 2 cm cylinder: " + pool_note)):
        m = np.zeros(organs.shape, bool) if mask is None else mask & ~lesion
        n = int(m.sum())
        out.append({"organ": name, "kind": "reference", "label": -1 if label is None else int(label),
                    "volume_ml": n * ml, "n_voxels": n, "excluded_lesion_ml": 0.0,
                    **region_stats(suv, m, spacing, lbm_factor), "note": why})
    return out


def reference_masks(organs: np.ndarray, lesions: np.ndarray | None, spacing: Sequence[float] | None = None,
                    affine: np.ndarray | None = None, labels: Mapping[str, int] | None = None
                    ) -> dict[str, np.ndarray | None]:
    """``{"liver_reference": sphere, "blood_pool_reference": cylinder}`` (bool (X, Y, Z) or None) as
    :func:`organ_readout` places them (for pictures and checks)."""
    labels = dict(ORGAN_LABELS if labels is None else labels)
    sp = _spacing_of(spacing, affine)
    organs = np.asarray(organs)
    lesion = np.zeros(organs.shape, bool) if lesions is None else np.asarray(lesions) > 0
    lungs = np.isin(organs, [labels[k] for k in ("lung_left", "lung_right") if k in labels])
    return {LIVER_REFERENCE: liver_reference_sphere(organs == labels.get("liver", -1), lesion, sp, affine)[0],
            BLOOD_POOL_REFERENCE: blood_pool_roi(organs == labels.get("aorta", -1), lungs, lesion, sp, affine)[0]}


# ------------------------------------------------------------------------------------------------ metrics


def organ_case_metrics(pred: np.ndarray, gt: np.ndarray, classes: Mapping[str, int], spacing: Sequence[float],
                       nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM, nsd: bool = True
                       ) -> dict[str, dict[str, float]]:
    """``{organ: {"dice", "nsd"}}`` of one case: ``pred`` and ``gt`` label maps (X, Y, Z) whose values are
    those of ``classes`` (name -> value). Absent from both -> NaN; from one -> 0 (module docstring). ``nsd``
    False skips the surface distance (validation during training: NaN)."""
    import torch
    from monai.metrics import compute_dice, compute_surface_dice

    names = [k for k in classes if k != "background"]
    values = [int(classes[k]) for k in names]
    p = np.asarray(pred)
    g = np.asarray(gt)
    oh_p = torch.from_numpy(np.stack([np.zeros(p.shape, bool)] + [p == v for v in values])[None])
    oh_g = torch.from_numpy(np.stack([np.zeros(g.shape, bool)] + [g == v for v in values])[None])
    dice = compute_dice(oh_p.float(), oh_g.float(), include_background=False, ignore_empty=False)[0].numpy()
    if nsd:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns for every class missing from pred or gt
            nsd_v = compute_surface_dice(oh_p.float(), oh_g.float(), [float(nsd_tolerance_mm)] * len(values),
                                         include_background=False, spacing=[float(s) for s in spacing])[0].numpy()
    else:
        nsd_v = np.full(len(values), np.nan)
    out = {}
    for i, (name, v) in enumerate(zip(names, values)):
        in_p, in_g = bool((p == v).any()), bool((g == v).any())
        d = NAN if not (in_p or in_g) else float(dice[i]) if (in_p and in_g) else 0.0
        s = NAN if not (in_p or in_g) or not nsd else float(nsd_v[i]) if (in_p and in_g) else 0.0
        out[name] = {"dice": d, "nsd": s}
    return out


def organ_suv_agreement(suv: np.ndarray, pred: np.ndarray, gt: np.ndarray, lesions: np.ndarray | None,
                        classes: Mapping[str, int], spacing: Sequence[float]) -> dict[str, dict[str, float]]:
    """``{organ: {"suv_mean_true", "suv_mean_pred", "suv_mean_rel_err"}}`` of one case (module docstring): the
    :func:`organ_readout` ``suv_mean`` of each organ of ``classes`` (name -> value) in ``gt`` and in ``pred``,
    the voxels of ``lesions`` (> 0; the ground truth's, or None) excluded from both, and ``(pred - true) /
    true``. NaN for an organ absent from (or all lesion in) a map; the relative error is NaN unless both are
    defined and the true mean is nonzero. ``suv``, ``pred``, ``gt``, ``lesions``: (X, Y, Z) on one grid."""
    names = {k: int(v) for k, v in classes.items() if k != "background"}

    def means(organs: np.ndarray) -> dict[str, float]:
        return {r["organ"]: r["suv_mean"]
                for r in organ_readout(suv, organs, lesions, spacing, labels=names, references=False)}

    true, predicted = means(np.asarray(gt)), means(np.asarray(pred))
    out = {}
    for name in names:
        t, p = true.get(name, NAN), predicted.get(name, NAN)
        rel = (p - t) / t if np.isfinite(t) and np.isfinite(p) and t != 0 else NAN
        out[name] = {"suv_mean_true": t, "suv_mean_pred": p, "suv_mean_rel_err": rel}
    return out


def _suv_pairs(metrics: Mapping[str, float]) -> tuple[bool, float]:
    """(true SUVmean defined, |rel err| or NaN) of one case's organ metrics."""
    t = metrics.get("suv_mean_true", NAN)
    rel = metrics.get("suv_mean_rel_err", NAN)
    return bool(np.isfinite(t)), abs(rel) if np.isfinite(rel) else NAN


def _suv_fields(truth_defined: Sequence[bool], abs_err: Sequence[float], n_resamples: int, seed: int,
                ci: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The :data:`SUV_SUMMARY_KEYS` of (case or case-organ) entries: truth defined, |rel err| (NaN if undefined)."""
    from petctfm.evaluate.bootstrap import median_ci

    n = int(sum(truth_defined))
    err = np.asarray(abs_err, np.float64)
    ok = np.asarray(truth_defined, bool) & np.isfinite(err)
    m = ci if ci is not None else median_ci(err[ok], n_resamples, seed)
    return {"n_suv": n, "n_suv_missed": n - int(ok.sum()), "suv_abs_rel_err_median": m["median"],
            "suv_abs_rel_err_ci_low": m["ci_low"], "suv_abs_rel_err_ci_high": m["ci_high"],
            "suv_within_5pct": float(np.sum(err[ok] <= SUV_TOLERANCE) / n) if n else NAN}


def organ_summary(per_case: Mapping[str, Mapping[str, Mapping[str, float]]], n_resamples: int = 1000, seed: int = 0
                  ) -> list[dict[str, Any]]:
    """One row per organ: ``organ``, ``n`` (cases where defined) and ``dice_mean``, ``dice_ci_low``,
    ``dice_ci_high``, ``nsd_mean``, ... over the cases of ``per_case`` ({case: {organ: {"dice", "nsd"}}}), NaN
    cases left out (:func:`petctfm.evaluate.bootstrap.mean_ci`, percentile bootstrap over cases); then the
    :data:`SUV_SUMMARY_KEYS` from the cases' :func:`organ_suv_agreement` keys (module docstring; ``n_suv`` 0 and
    NaN when no case has them, e.g. no SUV image)."""
    from petctfm.evaluate.bootstrap import mean_ci

    organs: list[str] = []
    for rows in per_case.values():
        organs += [o for o in rows if o not in organs]
    out = []
    for organ in organs:
        row: dict[str, Any] = {"organ": organ}
        for metric in ("dice", "nsd"):
            s = mean_ci([per_case[c].get(organ, {}).get(metric, NAN) for c in per_case], n_resamples, seed)
            row[f"n_{metric}"] = s["n"]
            row.update({f"{metric}_mean": s["mean"], f"{metric}_ci_low": s["ci_low"], f"{metric}_ci_high": s["ci_high"]})
        pairs = [_suv_pairs(per_case[c].get(organ, {})) for c in per_case]
        row.update(_suv_fields([p[0] for p in pairs], [p[1] for p in pairs], n_resamples, seed))
        out.append(row)
    return out


def organ_suv_pooled(per_case: Mapping[str, Mapping[str, Mapping[str, float]]], n_resamples: int = 1000,
                     seed: int = 0, organs: Sequence[str] = SUV_TARGET_ORGANS) -> dict[str, Any]:
    """The :data:`SUV_SUMMARY_KEYS` pooled over the (case, organ) pairs of ``organs`` (those in ``per_case``;
    listed under ``"organs"``): ``n_suv`` counts pairs, the median |rel err| is over all defined pairs, its
    percentile bootstrap CI resamples cases with all their organs (:func:`petctfm.evaluate.bootstrap.bootstrap_ci`;
    fewer than two distinct values: the CI is the median)."""
    import warnings

    from petctfm.evaluate.bootstrap import bootstrap_ci

    names = [o for o in organs if any(o in per_case[c] for c in per_case)]
    cases = list(per_case)
    pairs = [[_suv_pairs(per_case[c].get(o, {})) for o in names] for c in cases]
    truth = np.array([[p[0] for p in row] for row in pairs], bool).reshape(len(cases), len(names))
    err = np.array([[p[1] for p in row] for row in pairs], np.float64).reshape(len(cases), len(names))
    err[~truth] = NAN
    flat = err[np.isfinite(err)]
    median = float(np.median(flat)) if flat.size else NAN
    lo = hi = median
    if flat.size and n_resamples > 0 and np.unique(flat).size > 1:
        def stat(idx: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a resample of cases without a defined pair: NaN, skipped
                return np.nanmedian(err[idx].reshape(len(idx), -1), axis=-1)

        lo, hi = bootstrap_ci(stat, len(cases), n_resamples, seed, vectorized=True)
    fields = _suv_fields(truth.ravel().tolist(), err.ravel().tolist(), n_resamples, seed,
                         ci={"median": median, "ci_low": lo, "ci_high": hi})
    return {"organs": names, **fields}


__all__ = ["ORGAN_COLUMNS", "LIVER_REFERENCE", "BLOOD_POOL_REFERENCE", "LIVER_SPHERE_RADIUS_MM",
           "DEFAULT_NSD_TOLERANCE_MM", "lean_body_mass", "liver_reference_sphere", "blood_pool_roi", "region_stats",
           "organ_readout", "organ_suv_means", "MIN_ERODED_VOXELS", "reference_rows", "reference_masks",
           "organ_case_metrics", "organ_summary", "SUV_TARGET_ORGANS", "SUV_TOLERANCE", "SUV_CASE_KEYS",
           "SUV_SUMMARY_KEYS", "organ_suv_agreement", "organ_suv_pooled"]
