"""Harmonize one PET/CT case: load (any layout) -> SUV -> one RAS grid -> crop to body -> write.

This module holds the per-case processing (:func:`harmonize_images`, :func:`process_case`); reading is
:mod:`petctfm.harmonize.load`, the grids and the resampler :mod:`petctfm.harmonize.resample`, the checks
:mod:`petctfm.harmonize.qa`, the folder loop :mod:`petctfm.harmonize.api`.

Steps for one :class:`~petctfm.harmonize.discover.SourceCase`:

1. **Load** PET in SUV, CT in HU, lesion mask and optional organ labels as SimpleITK images, each with its own
   geometry (DICOM: slices sorted along the normal, SUV from the tags per slice, SEG onto the PT frames).
2. **Check** the inputs (NaN/inf, orientation, spacing; see :mod:`petctfm.harmonize.qa`).
3. **Grid.** The target grid is axis-aligned RAS (ITK direction ``diag(-1, -1, 1)`` in LPS) with the target
   spacing, voxel faces on the lattice ``k * spacing``, covering the PET field of view. A coarse pass (4x the
   spacing) finds the body (CT > -500 HU where CT exists; Gaussian-smoothed PET > 0.3 SUV where it does not;
   components < 5 % of the largest dropped) and the CT coverage of the PET FOV; the fine grid is the body
   bounding box + ``margin_mm`` inside the PET FOV. No CT overlap at all -> the case fails.
4. **Resample** onto the fine grid (separable 1D passes for axis-aligned grids, ``sitk.Resample`` for
   oblique ones; the same passes in torch on a GPU when a ``resampler`` from
   :mod:`petctfm.harmonize.resample_torch` is given): PET linear (no B-spline overshoot, SUV stays >= 0), CT
   linear with -1000 HU outside the CT FOV (the covered fraction is recorded as ``ct_fov_coverage``), labels
   nearest neighbour. CT is clipped to ``ct_window`` (default [-1000, 1000] HU), PET below at 0.
5. **Write** ``image.npy`` (2, X, Y, Z) [SUV, HU], ``label.npy``, ``organs.npy``, ``meta.json`` with
   :func:`petctfm.data.format.write_case` (one atomic folder) and optionally a QA thumbnail.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

from petctfm.core import plausibility as plaus
from petctfm.core.errors import InputError, OutputError, PetctfmError
from petctfm.harmonize import qa
from petctfm.harmonize.discover import KEPT_FIELDS, SourceCase
from petctfm.harmonize.duplicates import voxel_key
from petctfm.harmonize.load import load_case_images
from petctfm.harmonize.resample import LPS_TO_RAS, affine_of, ras_bounds, ras_grid, resample_sitk, resample_xyz
from petctfm.io.atomic import atomic_write_json, output_failure
from petctfm.io.images import array_xyz
from petctfm.io.walk import printable

DEFAULT_SPACING = (2.0, 2.0, 3.0)
DEFAULT_CT_WINDOW = (-1000.0, 1000.0)
#: Target spacing (mm) harmonize accepts, per axis: at least 0.5 mm (finer than any clinical PET, 2-6 mm, and
#: than CT in-plane, 0.6-1 mm: it adds voxels, not detail; a 600 x 400 x 1800 mm body at 0.05 mm would be
#: 3.5e12 voxels), at most 20 mm (petctfm's coarsest phantoms use 15 mm).
TARGET_SPACING_MM = (0.5, 20.0)
BODY_HU = -500.0
LUNG_HU = -950.0  # the CT body of the PET/CT overlap check includes the lungs (-900..-700 HU)
BODY_SUV = 0.3
WORK_DIR = ".work"
FAILED_DIR = "failed"


#: The coarse body pass samples at most 4x the target spacing, and at least this many voxels across the PET
#: field of view along each axis: a small field of view (a 48 mm wide 0.5 x 0.5 x 20 mm study) must not fall
#: between the voxel centres of a grid 4 x 8 mm coarse (it was "empty body mask" at 8 mm, kept at 2 mm).
COARSE_MIN_VOXELS = 4


def coarse_spacing(lo: np.ndarray, hi: np.ndarray, spacing) -> tuple[float, float, float]:
    """Spacing of the coarse body pass over the RAS box ``[lo, hi]``: 4x ``spacing``, finer where the box is
    less than :data:`COARSE_MIN_VOXELS` such voxels across (never finer than ``spacing``). Harmonize and predict
    (any model spacing) then find the same body in the same study."""
    extent = np.asarray(hi, float) - np.asarray(lo, float)
    sp = np.asarray(spacing, float)
    return tuple(float(v) for v in np.maximum(sp, np.minimum(4 * sp, extent / COARSE_MIN_VOXELS)))


def body_crop_box(suv: sitk.Image, ct: sitk.Image, spacing, margin_mm: float
                  ) -> tuple[np.ndarray, np.ndarray, float, float | None]:
    """RAS box of the body inside the PET FOV (+ margin), the fraction of that box that CT covers, and the
    fraction of the PET body (coarse PET above half its median in the CT body, where CT exists) inside the CT
    body (> -950 HU, lungs included), None when there is no PET body to compare
    (:func:`petctfm.core.plausibility.check_body_overlap`).

    Coverage is measured inside the body's bounding box, not the whole PET field of view: a CT
    reconstructed on a 500 mm circle inside a 700 mm PET FOV covers the patient fully, which is what matters.
    """
    lo, hi = ras_bounds(suv)
    coarse = ras_grid(lo, hi, coarse_spacing(lo, hi, spacing))
    ct_c = array_xyz(resample_sitk(ct, coarse, False, -5000.0, sitk.sitkFloat32))
    pet_c = array_xyz(resample_sitk(suv, coarse, True, 0.0, sitk.sitkFloat32))
    covered = ct_c > -4000
    coverage = float(covered.mean())
    if coverage == 0.0:
        raise InputError("no PET/CT overlap: the CT field of view does not intersect the PET field of view")
    from scipy.ndimage import gaussian_filter, median_filter

    pet_s = gaussian_filter(pet_c, sigma=1.0)  # PET noise in air must not count as body
    # PET/CT body overlap: PET above half its median in the CT body (the threshold follows the PET's scale, and
    # half-maximum of the linear PET meets the nearest-neighbour CT edge); a 3-voxel median filter, not the
    # Gaussian (which spreads a hot lesion into the air), drops single noisy voxels when the grid is big enough
    pet_m = median_filter(pet_c, size=3) if min(pet_c.shape) >= 8 else pet_c
    ct_body = covered & (ct_c > LUNG_HU)
    level = float(np.median(pet_m[ct_body])) if ct_body.any() else 0.0
    pet_body = covered & (pet_m > (0.5 * level if level > 0 else BODY_SUV))
    overlap = float((pet_body & ct_body).sum() / pet_body.sum()) if pet_body.sum() >= 8 else None
    body = np.where(covered, ct_c > BODY_HU, pet_s > BODY_SUV)
    if body.any():  # drop small specks (noise, table edges): keep components >= 5% of the largest
        import cc3d

        labels, n = cc3d.connected_components(body, connectivity=26, return_N=True)
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            body = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))
    if not body.any():
        raise InputError("empty body mask: no CT > -500 HU and no PET > 0.3 SUV inside the PET field of view")
    idx = np.argwhere(body)
    box = tuple(slice(a, b + 1) for a, b in zip(idx.min(axis=0), idx.max(axis=0)))
    coverage = float(covered[box].mean())
    sp_c = np.asarray(coarse.GetSpacing())
    origin_c = np.asarray(coarse.GetOrigin()) @ LPS_TO_RAS
    blo = origin_c + idx.min(axis=0) * sp_c - sp_c / 2 - margin_mm
    bhi = origin_c + idx.max(axis=0) * sp_c + sp_c / 2 + margin_mm
    return np.maximum(blo, lo), np.minimum(bhi, hi), coverage, overlap


# ------------------------------------------------------------------------------------------- harmonize


def harmonize_images(
    images: dict[str, sitk.Image | None],
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW,
    margin_mm: float = 10.0,
    resampler: Callable[..., np.ndarray] | None = None,
) -> dict[str, Any]:
    """Resample one case onto the RAS target grid cropped to the body.

    ``resampler``: a drop-in for :func:`resample_xyz` (same arguments, same result), e.g.
    :func:`petctfm.harmonize.resample_torch.torch_resampler` to run the fine-grid resampling on a GPU;
    default :func:`resample_xyz` (NumPy/SimpleITK). The coarse body-box pass always runs on the CPU.

    Returns ``image`` float32 (2, X, Y, Z) [SUV, HU], ``label`` uint8 (X, Y, Z), ``organs`` uint8 or None,
    ``affine`` (4x4 RAS), ``ct_fov_coverage`` and the QA inputs (source spacings, histograms, source lesion
    volume).
    """
    resample = resampler or resample_xyz
    suv, ct, seg, organs = images["suv"], images["ct"], images.get("seg"), images.get("organs")
    src = qa.check_inputs(suv, ct, seg)
    lo, hi, coverage, overlap = body_crop_box(suv, ct, spacing, margin_mm)
    src["warnings"] += plaus.check_ct_values(sitk.GetArrayViewFromImage(ct)[(slice(None, None, 2),) * 3], "CT")
    src["warnings"] += plaus.check_body_overlap(overlap)
    ref = ras_grid(lo, hi, spacing)
    pet = np.maximum(resample(suv, ref, True, 0.0), 0.0)
    cta = np.clip(resample(ct, ref, True, ct_window[0]), *ct_window)
    if seg is not None:
        label = (resample(seg, ref, False, 0, dtype=np.float32) > 0).astype(np.uint8)
    else:
        label = np.zeros(pet.shape, np.uint8)
    org = resample(organs, ref, False, 0, dtype=np.uint8) if organs is not None else None
    src["soft_tissue_suv_median"] = plaus.soft_tissue_suv_median(pet, cta)
    plaus.check_soft_tissue_suv(src["soft_tissue_suv_median"])  # a PET in Bq/ml: refused here, for predict too
    src["body_overlap"] = None if overlap is None else round(overlap, 4)
    stride = (slice(None, None, 2),) * 3
    src["hist_before"] = {"PET": qa.histogram(sitk.GetArrayViewFromImage(suv)[stride], qa.PET_HIST),
                          "CT": qa.histogram(sitk.GetArrayViewFromImage(ct)[stride], qa.CT_HIST)}
    src["hist_after"] = {"PET": qa.histogram(pet[stride], qa.PET_HIST), "CT": qa.histogram(cta[stride], qa.CT_HIST)}
    image = np.stack([pet, cta]).astype(np.float32, copy=False)
    return {"image": image, "label": label, "organs": org, "affine": affine_of(ref), "ct_fov_coverage": coverage,
            "source": src, "reference": ref}


def lesion_volumes(label: np.ndarray, spacing) -> list[float]:
    """Volume (ml, 4 decimals) of each lesion of a harmonized ``label`` (X, Y, Z): 26-connected components
    (cc3d), largest first; [] without lesions. Lesions that touch on the harmonized grid count as one, as in
    the autoPET lesion metrics."""
    import cc3d

    if not label.any():
        return []
    components = cc3d.connected_components(np.asarray(label) > 0, connectivity=26)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return [round(float(n) * voxel_ml, 4) for n in sorted(np.bincount(components.ravel())[1:], reverse=True)]


def case_stats(image: np.ndarray, label: np.ndarray, organs: np.ndarray | None, spacing) -> dict[str, Any]:
    """SUVmax, liver SUVmean (organ label 1), lesion count (cc3d, 26-connected), total volume (ml) and the
    volume of each lesion (``lesion_volumes_ml``, :func:`lesion_volumes`)."""
    from petctfm.core.labels import ORGAN_LABELS

    pet = image[0]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    stats: dict[str, Any] = {"suv_max": round(float(pet.max()), 4), "liver_suv_mean": None}
    if organs is not None and (organs == ORGAN_LABELS["liver"]).any():
        stats["liver_suv_mean"] = round(float(pet[organs == ORGAN_LABELS["liver"]].mean()), 4)
    if organs is not None and (organs == ORGAN_LABELS["aorta"]).any():
        stats["blood_pool_suv_mean"] = round(float(pet[organs == ORGAN_LABELS["aorta"]].mean()), 4)
    stats["lesion_volumes_ml"] = lesion_volumes(label, spacing)
    stats["lesion_count"] = len(stats["lesion_volumes_ml"])
    stats["lesion_volume_ml"] = round(float((label > 0).sum()) * voxel_ml, 4)
    stats["lesion_suv_max"] = round(float(pet[label > 0].max()), 4) if label.any() else None
    return stats


def _sanitize(msg: str, case: SourceCase) -> str:
    """One line, input root replaced by its folder name (no absolute paths in outputs)."""
    line = " ".join(printable(msg).split())
    root = printable(case.root)
    line = line.replace(root.rstrip("/") + "/", "").replace(root, Path(root).name)
    return line[:300]


def failed_path(out: str | os.PathLike, case_id: str) -> Path:
    return Path(out) / WORK_DIR / FAILED_DIR / f"{case_id}.json"


def is_done(out: str | os.PathLike, case_id: str) -> bool:
    from petctfm.data.format import case_dir

    return (case_dir(out, case_id) / "meta.json").is_file()


def process_case(case: SourceCase, out: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Harmonize and write one case; never raises for bad input (returns ``status: failed`` + reason).

    ``opts``: spacing, ct_window, margin_mm, suv_kind, thumbnails (bool), threads (SimpleITK threads),
    label_roles (``--label-roles``: DICOM-SEG segment label -> role; nnU-Net tables are read at discovery).
    """
    from petctfm.data.format import write_case

    t0 = time.perf_counter()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(opts.get("threads", 1)))
    base = {"case_id": case.case_id, "source": printable(Path(case.root).name), "source_format": case.fmt,
            "source_path": printable(case.rel)}
    try:
        images, extra = load_case_images(case, opts.get("suv_kind", "bw"), opts.get("label_roles"))
        pet_key = voxel_key(images["suv"])  # decoded-content identity, from the image just read (duplicates.py)
        spacing = tuple(opts.get("spacing", DEFAULT_SPACING))
        h = harmonize_images(images, spacing, tuple(opts.get("ct_window", DEFAULT_CT_WINDOW)),
                             float(opts.get("margin_mm", 10.0)))
        h["source"]["warnings"] += extra.get("label_notes", [])  # DICOM-SEG segments left out: QA flags
        meta = {k: v for k, v in {**extra, **case.meta}.items() if k in KEPT_FIELDS}
        meta.setdefault("site", Path(case.root).name.lower())
        meta = {k: meta.get(k) for k in KEPT_FIELDS}
        stats = case_stats(h["image"], h["label"], h["organs"], spacing)
        checks = qa.check_case(h, stats, meta.get("tracer"), meta.get("weight_kg"))
        if checks["fatal"]:
            raise InputError(checks["fatal"])
        record = {
            **base, **meta, "patient": case.patient, "orientation": "RAS", "ct_fov_coverage": round(h["ct_fov_coverage"], 4),
            "pet_voxel_key": pet_key, "synthetic": bool(extra.get("synthetic")),  # written by petctfm synth
            "has_label": images.get("seg") is not None, "has_organs": h["organs"] is not None,
            "stats": stats, "qa": checks["row"], "hist_before": h["source"]["hist_before"],
            "hist_after": h["source"]["hist_after"],
            "harmonize": {"spacing": list(spacing), "ct_window": list(opts.get("ct_window", DEFAULT_CT_WINDOW)),
                          "pet_interpolation": "linear", "ct_interpolation": "linear", "label_interpolation": "nearest",
                          "ct_outside_fov_hu": float(opts.get("ct_window", DEFAULT_CT_WINDOW)[0]),
                          "suv": "sul" if opts.get("suv_kind") == "lbm" else "bw"},
        }
        write_case(out, case.case_id, h["image"], h["label"], h["affine"], record, organs=h["organs"])
        failed_path(out, case.case_id).unlink(missing_ok=True)
        if opts.get("thumbnails", True):
            qa.thumbnail(out, case.case_id, h, meta)
        return {"case_id": case.case_id, "status": "done", "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - any failure of one case quarantines it; the run goes on
        full = output_failure(exc, Path(out) / "cases")
        if full is not None:  # the disk, not the case: stop the run (io.atomic.output_failure says which)
            raise OutputError(f"{out}: cannot write the dataset ({full}); no case was quarantined for it, re-run "
                              "when there is room") from None
        reason = _sanitize(str(exc) or type(exc).__name__, case)
        if not isinstance(exc, PetctfmError):
            reason = f"{type(exc).__name__}: {reason}"
            if os.environ.get("PETCTFM_DEBUG"):
                traceback.print_exc()
        if case.rel and case.rel not in reason:  # name the input (a value check names only "PET" or "CT")
            reason = f"{case.rel}: {reason}"
        atomic_write_json(failed_path(out, case.case_id), {**base, "reason": reason})
        return {"case_id": case.case_id, "status": "failed", "reason": reason, "seconds": time.perf_counter() - t0}
