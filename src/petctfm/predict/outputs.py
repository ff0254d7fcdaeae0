"""What ``petctfm predict`` writes for one case, and the per-lesion anatomical region.

Files (all atomic; ``summary.json`` last, so a folder with it is complete):

- ``lesions.nii.gz``: uint8 mask (1 = lesion) on the input PET grid, written by SimpleITK with the PET's
  origin, spacing and direction (nibabel reads the same affine as the input PET's, LPS- or RAS-stored).
- ``lesions.seg.dcm``: for DICOM input, a BINARY DICOM-SEG (highdicom) of one segment "Lesion"
  (algorithm type AUTOMATIC, the model named in the algorithm identification) whose frames reference the
  source PT series' instances (same FrameOfReferenceUID, one frame per PT slice holding lesion voxels;
  every frame when there is no lesion, as highdicom cannot write a SEG without frames).
- ``lesions.csv``: :func:`petctfm.evaluate.lesions.lesion_table` on the input PET grid in SUV (volume ml,
  SUVmax, SUVmean, SUVpeak in a 1 ml sphere, TLG, centroid in patient LPS mm, voxel bounding box) plus
  ``region``.
- ``summary.json``: TMTV, total TLG, lesion count, SUVmax/SUVpeak, model, settings, petctfm version,
  input kind, the study date and time (``input.study_date`` ISO, ``input.study_time``, ``input.study_date_source``;
  :mod:`petctfm.io.study_date`, null when unknown), timings per stage.
- ``report.png``: :func:`petctfm.viz.render.render_case` (PET MIP with the predicted lesion contours; coronal
  and axial fused PET/CT slices through the largest predicted lesion, at its SUVmax voxel; with an organ model
  the predicted organ contours too).
- with an organ model: ``organs.nii.gz``, ``organs.csv`` and (DICOM) ``organs.seg.dcm``
  (:mod:`petctfm.predict.organs`); an organ-only model writes no lesion files.

Region of a lesion (``region`` column, ``region_source`` says which rule gave it):

1. **organ labels** (autoPET-style ``ORGANS.nii.gz`` in the input): the organ holding at least half of the
   lesion's voxels (:data:`petctfm.core.labels.ORGAN_LABELS` names), e.g. ``liver``; else rule 2.
2. **body-region model** from the CT alone: on the harmonized grid (every 2nd voxel in-plane), per axial
   slice, the body outline (CT > -500 HU, holes filled) and the air inside it (<= -500 HU); slices whose
   inside air is >= 5 % of the outline are lung slices, the longest run of them (>= 40 mm) spans the lungs,
   apex ``z1`` to base ``z0``, height ``L``. Along the cranio-caudal axis: above ``z1`` head/neck; ``[z0, z1]`` thorax;
   ``[z0 - 0.8 L, z0)`` abdomen; ``[z0 - 1.4 L, z0 - 0.8 L)`` pelvis; below lower limbs. The factors are
   adult proportions (lung base -> iliac crest ~0.8 lung heights, iliac crest -> ischial tuberosities ~0.6),
   so the boundaries are approximate (a few cm): liver-dome lesions above the posterior lung bases count as
   thorax. Without lungs in the CT field of view the region is ``unknown``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from petctfm.harmonize.discover import SourceCase
from petctfm.io.atomic import atomic_write_json, atomic_write_text

MASK_FILE = "lesions.nii.gz"
SEG_FILE = "lesions.seg.dcm"
TABLE_FILE = "lesions.csv"
REPORT_FILE = "report.png"
SUMMARY_FILE = "summary.json"
REGION_COLUMNS = ["region", "region_source"]
LUNG_AIR_FRACTION = 0.05
MIN_LUNG_MM = 40.0
ABDOMEN_LUNGS, PELVIS_LUNGS = 0.8, 1.4  # region boundaries below the lung base, in lung heights


# ------------------------------------------------------------------------------------------------ regions


def lung_span(ct: np.ndarray, affine: np.ndarray) -> tuple[float, float] | None:
    """(base z, apex z) in mm (RAS/LPS z, superior positive) of the lungs on a harmonized CT (X, Y, Z) with
    an axis-aligned RAS ``affine``; None if no run of lung slices >= :data:`MIN_LUNG_MM` is found."""
    from scipy.ndimage import binary_fill_holes

    body = ct[::2, ::2] > -500.0  # every 2nd voxel in-plane: area fractions barely change, 4x less work
    planar = np.zeros((3, 3, 3), bool)
    planar[:, 1, 1] = planar[1, :, 1] = True  # in-plane 4-connectivity: holes are filled slice by slice
    filled = binary_fill_holes(body, structure=planar)
    area = filled.sum(axis=(0, 1))
    air = (filled & ~body).sum(axis=(0, 1))
    lung = (area > 0) & (air >= LUNG_AIR_FRACTION * np.maximum(area, 1))
    best, start = (0, -1, -1), None
    for k, v in enumerate(np.append(lung, False)):
        if v and start is None:
            start = k
        elif not v and start is not None:
            best = max(best, (k - start, start, k - 1))
            start = None
    dz = float(affine[2, 2])
    if best[0] * abs(dz) < MIN_LUNG_MM:
        return None
    z = [float(affine[2, 3] + dz * k) for k in (best[1], best[2])]
    return min(z), max(z)


def body_region(z_mm: float, lungs: tuple[float, float] | None) -> str:
    """Region of a point at cranio-caudal position ``z_mm`` (superior positive) given the lung span."""
    if lungs is None:
        return "unknown"
    z0, z1 = lungs
    height = z1 - z0
    if z_mm > z1:
        return "head/neck"
    if z_mm >= z0:
        return "thorax"
    if z_mm >= z0 - ABDOMEN_LUNGS * height:
        return "abdomen"
    if z_mm >= z0 - PELVIS_LUNGS * height:
        return "pelvis"
    return "lower limbs"


def _organ_names() -> dict[int, str]:
    from petctfm.core.labels import ORGAN_LABELS

    return {v: k for k, v in ORGAN_LABELS.items() if v > 0}


def quantify(mask: np.ndarray, pet: sitk.Image, organs: sitk.Image | None, harmonized: dict[str, Any],
             connectivity: int = 18) -> dict[str, Any]:
    """Lesion table (+ region) and patient totals of ``mask`` (X, Y, Z) on the PET grid of ``pet`` (SUV).

    ``organs``: optional organ label image (any grid; nearest-neighbour onto the PET grid); ``harmonized``:
    :func:`~petctfm.harmonize.pipeline.harmonize_images` output (its CT gives the lung landmarks).
    Returns ``{"table": [rows], "totals": lesions.summary(...), "lungs_z_mm": (base, apex) | None}``.
    """
    from petctfm.evaluate.lesions import label_lesions, lesion_table, summary
    from petctfm.harmonize.resample import resample_xyz
    from petctfm.io.images import array_xyz

    suv = array_xyz(pet).astype(np.float32, copy=False)
    table = lesion_table(mask, suv, pet, connectivity=connectivity)
    lungs = lung_span(harmonized["image"][1], harmonized["affine"]) if table else None
    counts = None
    if organs is not None and table:
        org = resample_xyz(organs, pet, False, 0, dtype=np.uint8)
        labels, _ = label_lesions(mask, connectivity)
        names = _organ_names()
        inside = labels > 0  # one pass over the lesion voxels: (lesion label, organ value) counts
        counts = np.bincount(labels[inside].astype(np.int64) * 256 + org[inside],
                             minlength=(int(labels.max()) + 1) * 256).reshape(-1, 256)
    for row in table:
        row["region"], row["region_source"] = body_region(row["centroid_z_mm"], lungs), "body model"
        if lungs is None:
            row["region_source"] = "none (no lungs in CT)"
        if counts is not None:
            c = counts[int(row["label"])]
            top = int(np.argmax(c[1:]) + 1)
            if c[top] * 2 >= c.sum() and top in names:
                row["region"], row["region_source"] = names[top], "organ labels"
    return {"table": table, "totals": summary(table), "lungs_z_mm": lungs}


# ------------------------------------------------------------------------------------------------ files


def write_mask(mask: np.ndarray, pet: sitk.Image, path: str | os.PathLike) -> Path:
    """uint8 mask (X, Y, Z) -> ``path`` with ``pet``'s geometry (SimpleITK copies origin/spacing/direction)."""
    from petctfm.io.images import write_image

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(mask.astype(np.uint8), (2, 1, 0))))
    img.CopyInformation(pet)
    return write_image(img, path)


def table_csv(table: list[dict[str, Any]]) -> str:
    """The lesion table as CSV, floats rounded to 4 decimals."""
    from petctfm.evaluate.lesions import LESION_COLUMNS
    from petctfm.io.tables import csv_text

    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in table]
    return csv_text(rows, LESION_COLUMNS + REGION_COLUMNS)


def write_seg(mask: np.ndarray, pt_datasets: list[Any], path: str | os.PathLike, model_name: str,
              identity: dict[str, Any] | None = None) -> Path:
    """Write ``mask`` (X, Y, Z, on the grid :func:`petctfm.io.dicom_read.read_volume` built from
    ``pt_datasets``, which are in slice order) as a BINARY DICOM-SEG referencing those PT instances
    (:func:`petctfm.io.dicom_seg.build_seg`: algorithm type AUTOMATIC, ``model_name`` identified).
    ``identity``: optional ``series_instance_uid``, ``sop_instance_uid`` and ``algorithm_parameters``
    (``predict --dicomweb``: UIDs derived from the input and model, so a result pushed twice is one instance)."""
    from petctfm.core.version import __version__
    from petctfm.io.dicom_seg import build_seg, save_seg

    frames = np.ascontiguousarray(np.transpose(mask > 0, (2, 1, 0))).astype(np.uint8)  # [slice, rows, cols]
    seg = build_seg(frames, pt_datasets, series_number=901, series_description="petctfm predicted lesions",
                    content_description="Lesions predicted by petctfm (research use only)",
                    manufacturer_model_name="petctfm predict", software_versions=__version__,
                    algorithm=(model_name, __version__), tracking_id="predicted lesions", **(identity or {}))
    return save_seg(seg, path)


def input_kind(case: SourceCase) -> str:
    if case.fmt == "dicom":
        return "dicom"
    name = str(case.files.get("suv") or case.files.get("pet") or "").lower()
    for suffix, kind in ((".nii.gz", "nifti"), (".nii", "nifti"), (".mha", "mha"), (".mhd", "mha"),
                         (".nrrd", "nrrd"), (".nhdr", "nrrd")):
        if name.endswith(suffix):
            return kind
    return case.fmt


def case_source(case: SourceCase) -> str:
    """The input as ``summary.json["input"]["source"]`` names it (PET file / DICOM folder / case folder)."""
    return case.rel if case.root == "/" else str(Path(case.root) / case.rel)


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4) if v == v else None
    return v


def input_flags(harmonized: dict[str, Any]) -> list[str]:
    """What is unusual about the input (kept, but worth a look): the plausibility flags of
    :mod:`petctfm.core.plausibility` found while harmonizing (spacing, SUVmax > 100, body overlap, CT
    values...) and a CT that covers less than 90 % of the body box. Impossible inputs never get here: they
    are refused with a one-line InputError (docs/reliability.md)."""
    flags = list((harmonized.get("source") or {}).get("warnings") or [])
    cov = harmonized.get("ct_fov_coverage")
    if cov is not None and cov < 0.9:
        flags.append(f"CT covers {100 * cov:.0f}% of the body box (rest filled -1000 HU)")
    return flags


def case_summary(case_id: str, kind: str, source: str | None, pet: sitk.Image, harmonized: dict[str, Any],
                 settings: dict[str, Any], result: dict[str, Any], timings: dict[str, float],
                 files: list[str], study: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` dict of one case (JSON types only): totals, input, ``settings`` (the predictor's
    ``describe()``), lung landmarks, version, ``timings`` per stage (+ ``total``, rounded), ``files`` written.
    ``study``: :meth:`petctfm.io.study_date.StudyDate.to_json` of the input (``input.study_date``,
    ``input.study_time``, ``input.study_date_source``; all None when not given or unknown)."""
    from petctfm.io.study_date import StudyDate

    from petctfm.core.version import __version__

    t = {k: v for k, v in timings.items() if k != "total"}
    t["total"] = sum(t.values())
    h = harmonized
    summary = {
        "case": case_id,
        **{k: _clean(v) for k, v in result["totals"].items()},
        "input": {"kind": kind, "source": source,
                  "pet_shape": list(pet.GetSize()), "pet_spacing_mm": [round(s, 4) for s in pet.GetSpacing()],
                  "harmonized_shape": list(h["image"].shape[1:]), "ct_fov_coverage": round(h["ct_fov_coverage"], 4),
                  **{**StudyDate().to_json(), **(study or {})}},
        **settings,
        "flags": input_flags(h),
        "lungs_z_mm": None if result["lungs_z_mm"] is None else [round(z, 1) for z in result["lungs_z_mm"]],
        "petctfm_version": __version__,
        "timings_s": {k: round(v, 4) for k, v in t.items()},
        "outputs": list(files),
        "note": "research software on its own predictions; not a medical device",
    }
    return json.loads(json.dumps(summary, default=str))


def write_case_outputs(out_dir: str | os.PathLike, summary: dict[str, Any], mask: np.ndarray,
                       table: list[dict[str, Any]], images: dict[str, Any], pt_datasets: list[Any] | None,
                       model_name: str, timings: dict[str, float], report: bool = True,
                       organs: dict[str, Any] | None = None, seg_identity: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
    """Write every output of one case into ``out_dir`` (created) as a whole: into a temporary folder, renamed
    into place when complete (:func:`petctfm.io.atomic.atomic_outputs`; ``summary.json`` last). Returns the summary
    as written: ``summary`` (:func:`case_summary`) with the write/report timings and the files added.

    ``mask`` (X, Y, Z) uint8 on the PET grid of ``images["suv"]``; ``table`` the lesion rows;
    ``pt_datasets``: DICOM PT headers (then ``lesions.seg.dcm`` too) or None; ``model_name``: the algorithm
    name in the DICOM-SEG and the report title. ``mask`` None (an organ-only model): no lesion files.
    ``organs``: :meth:`~petctfm.predict.predictor.Predictor.predict_prepared`'s organ result (``map``, ``rows``,
    ``classes``): ``organs.nii.gz``, ``organs.csv``, ``organs.seg.dcm`` (DICOM) and organ contours in the report
    (:mod:`petctfm.predict.organs`). ``seg_identity``: :func:`write_seg`'s ``identity`` for ``lesions.seg.dcm``.
    """
    from petctfm.io.atomic import atomic_outputs

    with atomic_outputs(out_dir, SUMMARY_FILE) as tmp:  # the case appears whole, or the old one stays
        return _write_case_outputs(tmp, summary, mask, table, images, pt_datasets, model_name, timings, report,
                                   organs, seg_identity)


def _write_organs(out: Path, organs: dict[str, Any], pet: sitk.Image, pt_datasets: list[Any] | None,
                  model_name: str) -> list[str]:
    from petctfm.predict import organs as O

    files = [O.ORGANS_FILE, O.ORGANS_CSV]
    write_mask(organs["map"], pet, out / O.ORGANS_FILE)
    atomic_write_text(out / O.ORGANS_CSV, O.organs_csv(organs["rows"]))
    if pt_datasets is not None and O.write_organ_seg(organs["map"], organs["classes"], pt_datasets,
                                                     out / O.ORGANS_SEG_FILE, model_name) is not None:
        files.append(O.ORGANS_SEG_FILE)
    return files


def _write_case_outputs(out: Path, summary: dict[str, Any], mask: np.ndarray | None, table: list[dict[str, Any]],
                        images: dict[str, Any], pt_datasets: list[Any] | None, model_name: str,
                        timings: dict[str, float], report: bool, organs: dict[str, Any] | None = None,
                        seg_identity: dict[str, Any] | None = None) -> dict[str, Any]:
    pet = images["suv"]
    timings = dict(timings)
    t0 = time.perf_counter()
    files = []
    if mask is not None:
        files.append(MASK_FILE)
        write_mask(mask, pet, out / MASK_FILE)
        if pt_datasets is not None:
            write_seg(mask, pt_datasets, out / SEG_FILE, model_name, seg_identity)
            files.append(SEG_FILE)
        atomic_write_text(out / TABLE_FILE, table_csv(table))
        files.append(TABLE_FILE)
    if organs is not None:
        files += _write_organs(out, organs, pet, pt_datasets, model_name)
    t1 = time.perf_counter()
    timings["write"] = t1 - t0
    if report:
        from petctfm.viz.render import render_case

        mask_img = organ_img = None
        if mask is not None:
            mask_img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(mask, (2, 1, 0))))
            mask_img.CopyInformation(pet)
            title = (f"{summary['case']}   predicted: {summary['lesion_count']} lesion(s), TMTV "
                     f"{summary['tmtv_ml']:.1f} ml")
        else:
            title = f"{summary['case']}   predicted organs"
        if organs is not None:  # organ contours (predicted) and the reference SUVs in the title
            organ_img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(organs["map"], (2, 1, 0))))
            organ_img.CopyInformation(pet)
            o = summary.get("organs") or {}
            refs = [f"{k} {o[key]:.2f}" for k, key in (("liver ref SUVmean", "liver_reference_suv_mean"),
                                                       ("blood pool", "blood_pool_reference_suv_mean"))
                    if o.get(key) is not None]
            title += f", {len(o.get('found') or [])} organs" + (f" ({'; '.join(refs)})" if refs else "")
        title += f"   [{model_name}; research use, not for diagnosis]"
        if summary.get("flags"):
            title += "\nFLAGGED INPUT: " + "; ".join(summary["flags"])[:160]
        fig = render_case(pet, images["ct"], pred=mask_img, organs=organ_img, title=title,
                          out_png=out / REPORT_FILE, dpi=80, focus="largest")
        del fig
        files.append(REPORT_FILE)
        timings["report"] = time.perf_counter() - t1
    t = {k: v for k, v in timings.items() if k != "total"}
    t["total"] = sum(t.values())
    summary = {**summary, "timings_s": {k: round(v, 4) for k, v in t.items()}, "outputs": files}
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


__all__ = ["MASK_FILE", "SEG_FILE", "TABLE_FILE", "REPORT_FILE", "SUMMARY_FILE", "lung_span", "body_region",
           "quantify", "write_mask", "table_csv", "write_seg", "input_kind", "case_source", "case_summary",
           "write_case_outputs"]
