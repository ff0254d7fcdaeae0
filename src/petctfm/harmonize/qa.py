"""Quality assurance of harmonized cases: per-case checks, ``qa/qa.csv``, thumbnails, per-site histograms.

The ranges are :mod:`petctfm.core.plausibility` (documented with their sources in docs/reliability.md).

Fatal (the case is quarantined, never trained on): NaN/inf in PET or CT; an impossible voxel spacing (pixdim 0,
wrong unit); a non-orthonormal direction matrix; a PET that is all <= 0, mostly negative, a CT (air at -1000:
PET and CT swapped), SUVmax > 1000 or a soft-tissue median SUV > 50 (Bq/ml or grams, not SUV); a CT that is
constant or has no air (not HU, or a PET in the CT slot); no PET/CT overlap or less than half of the PET body
inside the CT body; an empty body; negative label values; a lesion label that keeps less than half of its
volume on the PET (its affine is off).

Flags (the case is kept, ``status=warn`` in qa.csv with the reasons; meant to be rare on sound data):

* ``ct_fov_coverage < 0.9``: CT covers less than 90 % of the body box (the rest is -1000 HU);
* spacing outside 0.3-20 mm; oblique (non axis-aligned) acquisition; PET body only 50-80 % inside the CT body;
* SUVmax > 100; negative SUV below -1; CT body median outside -300..300 HU;
* SUV implausible for the tracer: liver SUVmean outside FDG 1-4 / PSMA 1.5-12 / unknown 0.5-15, or, without
  organ labels, the median SUV of soft tissue (CT 0..100 HU) outside 0.2-4;
* label values other than {0, 1} (binarized as > 0);
* less than 95 % of lesion voxels inside the PET support (PET > 0);
* lesion volume after resampling differs by more than 5 % from the source (labels >= 1 ml and >= 100 voxels
  of the target grid: below that, nearest-neighbour partial voxels alone move the volume by more than 5 %).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from petctfm.core import plausibility as plaus
from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_path, atomic_write_text
from petctfm.io.tables import csv_text

QA_DIR = "qa"
PET_HIST = (0.0, 20.0, 80)  # SUV bins for the QA histograms (lo, hi, n)
CT_HIST = (-1100.0, 1600.0, 54)
LIVER_RANGE = {"fdg": (1.0, 4.0), "psma": (1.5, 12.0)}
LIVER_DEFAULT = (0.5, 15.0)
SOFT_TISSUE_RANGE = (0.2, 4.0)
LESION_VOXELS_FOR_VOLUME_CHECK = 100  # the 5 % volume flag needs a label of at least this many target voxels
QA_COLUMNS = [
    "case_id", "site", "tracer", "status", "warnings", "ct_fov_coverage", "pet_spacing", "ct_spacing",
    "liver_suv_mean", "soft_tissue_suv_median", "suv_max", "body_overlap", "label_values", "label_in_pet", "lesion_volume_ml",
    "lesion_volume_ml_source",
]


def histogram(values: np.ndarray, spec: tuple[float, float, int]) -> list[int]:
    """Voxel counts of ``values`` in the ``spec = (lo, hi, n)`` bins (values clipped into the range)."""
    lo, hi, n = spec
    return np.histogram(np.clip(values, lo, hi), bins=n, range=(lo, hi))[0].astype(int).tolist()


def _orientation_ok(img: sitk.Image, name: str) -> bool:
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise InputError(f"{name}: direction matrix is not orthonormal ({np.round(d, 3).tolist()})")
    return bool(np.allclose(np.abs(d), np.round(np.abs(d)), atol=1e-3))


def check_inputs(suv: sitk.Image, ct: sitk.Image, seg: sitk.Image | None) -> dict[str, Any]:
    """Checks on the loaded source images; raises :class:`InputError` for fatal problems (the plausibility
    ranges of :mod:`petctfm.core.plausibility`); ``warnings`` holds the flags. The CT's values are checked
    after the PET/CT overlap (:func:`petctfm.harmonize.pipeline.harmonize_images`): a CT that misses the PET
    is reported as such, not as an empty CT."""
    warnings = []
    for name, img in (("PET", suv), ("CT", ct)):
        plaus.check_size(img.GetSize(), name)
    for name, img in (("PET", suv), ("CT", ct)):
        plaus.check_finite(sitk.GetArrayViewFromImage(img), name)
        warnings += plaus.check_spacing(img.GetSpacing(), name)
        if not _orientation_ok(img, name):
            warnings.append(f"{name} oblique")
    stride = (slice(None, None, 2),) * 3  # values on every 8th voxel: enough for ranges and fractions
    warnings += plaus.check_pet_values(sitk.GetArrayViewFromImage(suv)[stride], "PET")
    pet_sp, ct_sp = list(suv.GetSpacing()), list(ct.GetSpacing())
    label_values: list[int] = [0, 1]
    src_ml = None
    if seg is not None:
        sarr = sitk.GetArrayViewFromImage(seg)
        values = np.unique(sarr)
        if (values < 0).any():
            raise InputError(f"lesion label has negative values {values[values < 0][:3].tolist()}")
        label_values = sorted({0, 1} | {int(v) for v in values})
        if label_values != [0, 1]:
            warnings.append(f"label values {label_values[:6]} (binarized > 0)")
        src_ml = float((sarr > 0).sum()) * float(np.prod(seg.GetSpacing())) / 1000.0
    return {"pet_spacing": [round(s, 3) for s in pet_sp], "ct_spacing": [round(s, 3) for s in ct_sp],
            "label_values": label_values, "lesion_volume_ml_source": src_ml, "warnings": warnings}


def check_case(h: dict[str, Any], stats: dict[str, Any], tracer: str | None,
               weight_kg: float | None = None) -> dict[str, Any]:
    """QA row of one harmonized case: ``{"fatal": None | reason, "row": {...}}``; ``weight_kg`` (DICOM
    PatientWeight or metadata, when known) outside the usual range is flagged."""
    src = h["source"]
    warnings = list(src["warnings"]) + plaus.weight_flags(weight_kg)
    pet, label = h["image"][0], h["label"]
    if h["ct_fov_coverage"] < 0.9:
        warnings.append(f"CT covers {100 * h['ct_fov_coverage']:.0f}% of the PET FOV (rest filled -1000 HU)")
    soft_median = src.get("soft_tissue_suv_median")
    src_ml, out_ml = src.get("lesion_volume_ml_source"), stats["lesion_volume_ml"]
    liver = stats.get("liver_suv_mean")
    if liver is not None:
        lo, hi = LIVER_RANGE.get(str(tracer), LIVER_DEFAULT)
        if not lo <= liver <= hi:
            warnings.append(f"liver SUVmean {liver:.2f} outside {lo}-{hi} for tracer {tracer}")
    elif soft_median is not None and not SOFT_TISSUE_RANGE[0] <= soft_median <= SOFT_TISSUE_RANGE[1]:
        warnings.append(f"soft-tissue SUV median {soft_median:.2f} outside {SOFT_TISSUE_RANGE}")
    in_pet = float((pet[label > 0] > 0).mean()) if label.any() else 1.0
    if in_pet < 0.95:
        warnings.append(f"only {100 * in_pet:.0f}% of lesion voxels inside the PET support")
    voxel_ml = float(np.prod(h["reference"].GetSpacing())) / 1000
    plaus.check_label_kept(src_ml, out_ml, voxel_ml)
    warnings += plaus.check_label_placement(pet, h["image"][1], label, h["reference"].GetSpacing())
    # 5 % is only meaningful for a label of >= 100 target voxels: a 2-voxel lesion on an 8 mm grid moves by 50 %
    if src_ml and src_ml >= max(1.0, LESION_VOXELS_FOR_VOLUME_CHECK * voxel_ml) and abs(out_ml - src_ml) > 0.05 * src_ml:
        warnings.append(f"lesion volume {out_ml:.1f} ml vs {src_ml:.1f} ml in the source (> 5%)")
    row = {
        "status": "warn" if warnings else "ok", "warnings": "; ".join(warnings),
        "ct_fov_coverage": round(h["ct_fov_coverage"], 4), "pet_spacing": src["pet_spacing"],
        "ct_spacing": src["ct_spacing"], "liver_suv_mean": liver,
        "soft_tissue_suv_median": None if soft_median is None else round(soft_median, 4),
        "suv_max": stats["suv_max"], "body_overlap": src.get("body_overlap"), "label_values": src["label_values"], "label_in_pet": round(in_pet, 4),
        "lesion_volume_ml": out_ml,
        "lesion_volume_ml_source": None if src_ml is None else round(src_ml, 4),
    }
    return {"fatal": None, "row": row}


def thumbnail(out: str | os.PathLike, case_id: str, h: dict[str, Any], meta: dict[str, Any]) -> Path | None:
    """``qa/thumbs/<case_id>.png`` with ``petctfm.viz.render.render_case`` (skipped if it is not importable)."""
    try:
        from petctfm.viz.render import render_case
    except ImportError:
        return None
    ref = h["reference"]

    def img(arr: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
        im.CopyInformation(ref)
        return im

    organs = img(h["organs"]) if h["organs"] is not None else None
    path = thumbnail_path(out, case_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"{case_id}  {meta.get('site') or ''}  {meta.get('tracer') or ''}"
    fig = render_case(img(h["image"][0]), img(h["image"][1]), seg=img(h["label"]), organs=organs, title=title,
                      out_png=path, dpi=50)
    del fig
    return path


def thumbnail_path(out: str | os.PathLike, case_id: str) -> Path:
    return Path(out) / QA_DIR / "thumbs" / f"{case_id}.png"


def complete_thumbnails(out: str | os.PathLike, case_ids: list[str]) -> list[str]:
    """Draw the missing ``qa/thumbs/<id>.png`` of harmonized cases from what ``cases/<id>/`` holds (a run killed
    between writing a case and its thumbnail left it without one; the re-run skips the case itself). Returns
    the case ids drawn."""
    from petctfm.data import format as fmt
    from petctfm.harmonize.resample import LPS_TO_RAS, RAS_DIRECTION
    from petctfm.io.images import image_from_array

    drawn = []
    for cid in case_ids:
        if thumbnail_path(out, cid).is_file():
            continue
        case = fmt.load_case(out, cid)
        affine = np.asarray(case["meta"]["affine"], float)  # axis-aligned RAS (harmonize.resample.affine_of)
        ref = image_from_array(np.zeros(case["image"].shape[1:], np.uint8), tuple(np.diag(affine)[:3]),
                               tuple(affine[:3, 3] @ LPS_TO_RAS), tuple(RAS_DIRECTION))
        h = {"reference": ref, "image": np.asarray(case["image"]), "label": np.asarray(case["label"]),
             "organs": np.asarray(case["organs"]) if "organs" in case else None}
        if thumbnail(out, cid, h, case["meta"]) is not None:
            drawn.append(cid)
    return drawn


def write_qa_table(out: str | os.PathLike, metas: list[dict[str, Any]]) -> Path:
    rows = [{"case_id": m["case_id"], "site": m.get("site"), "tracer": m.get("tracer"), **m.get("qa", {})}
            for m in metas]
    return atomic_write_text(Path(out) / QA_DIR / "qa.csv", csv_text(rows, QA_COLUMNS))


def site_histograms(out: str | os.PathLike, metas: list[dict[str, Any]]) -> Path | None:
    """``qa/site_histograms.png``: per-site PET (SUV) and CT (HU) histograms before/after harmonization."""
    if not metas:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    sites = sorted({str(m.get("site")) for m in metas})
    fig = Figure(figsize=(12, 7), dpi=90)
    axes = fig.subplots(2, 2)
    for row, (mod, spec, unit) in enumerate((("PET", PET_HIST, "SUV"), ("CT", CT_HIST, "HU"))):
        lo, hi, n = spec
        centers = lo + (np.arange(n) + 0.5) * (hi - lo) / n
        for col, when in enumerate(("hist_before", "hist_after")):
            ax = axes[row, col]
            for site in sites:
                counts = np.sum([m[when][mod] for m in metas if str(m.get("site")) == site and when in m], axis=0)
                if np.ndim(counts) == 0 or counts.sum() == 0:
                    continue
                ax.semilogy(centers, counts / counts.sum(), label=site, lw=1.2)
            ax.set_title(f"{mod} {'before (source grid)' if col == 0 else 'after (harmonized)'}")
            ax.set_xlabel(unit)
            ax.set_ylabel("fraction of voxels")
            ax.legend(fontsize=7)
    fig.suptitle("Per-site intensity histograms (synthetic data if generated by petctfm synth)")
    fig.tight_layout()
    path = Path(out) / QA_DIR / "site_histograms.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
