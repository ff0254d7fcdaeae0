"""The organ outputs of ``petctfm predict --organs MODEL`` (or ``--model`` an organ model): files and table.

The readout itself (SUV statistics per organ, lesion voxels excluded, SUL, the PERCIST liver sphere and the
blood-pool cylinder) is :func:`petctfm.evaluate.organs.organ_readout`; this module feeds it the prediction on the
input PET grid and writes:

- ``organs.nii.gz``: uint8 organ label map on the input PET grid (the organ values of the model's
  ``task.classes``, e.g. :data:`petctfm.core.labels.ORGAN_LABELS`), PET geometry as ``lesions.nii.gz``;
- ``organs.csv``: :data:`petctfm.evaluate.organs.ORGAN_COLUMNS`, one row per organ found, then the
  ``liver_reference`` and ``blood_pool_reference`` rows;
- ``organs.seg.dcm`` (DICOM input): one DICOM-SEG segment per organ found, coded as anatomical structure + the
  organ's SNOMED CT code (:data:`petctfm.io.dicom_seg.ORGAN_CODES`), through the one DICOM-SEG writer.

Weight, height and sex for SUL come from the DICOM PT header (PatientWeight kg, PatientSize m, PatientSex);
NIfTI input carries none, so ``sul_mean`` is empty there unless the Python API is given them.

Shapes: ``organs`` and ``mask`` (X, Y, Z) indexed like ``array_xyz(pet)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from petctfm.io.images import ras_affine  # noqa: F401  (re-exported: predict's callers import it from here)

ORGANS_FILE = "organs.nii.gz"
ORGANS_CSV = "organs.csv"
ORGANS_SEG_FILE = "organs.seg.dcm"


def patient_of(pt_datasets: list[Any] | None) -> dict[str, Any]:
    """``{"weight_kg", "height_cm", "sex"}`` from a DICOM PT header (None where a tag is missing or not a
    positive number); all None without DICOM."""
    out: dict[str, Any] = {"weight_kg": None, "height_cm": None, "sex": None}
    if not pt_datasets:
        return out
    ds = pt_datasets[0]
    for key, tag, scale in (("weight_kg", "PatientWeight", 1.0), ("height_cm", "PatientSize", 100.0)):
        try:
            v = float(getattr(ds, tag, None))
        except (TypeError, ValueError):
            continue
        if np.isfinite(v) and v > 0:
            out[key] = v * scale
    sex = str(getattr(ds, "PatientSex", "") or "").strip().upper()
    out["sex"] = sex if sex in ("M", "F") else None
    return out


def organ_table(organs: np.ndarray, mask: np.ndarray | None, pet: sitk.Image, classes: Mapping[str, int],
                patient: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rows of ``organs.csv``: :func:`petctfm.evaluate.organs.organ_readout` of the input PET (SUV) with
    the predicted ``organs``, the lesion ``mask`` excluded (None: no lesion model), ``classes`` the organ model's
    name -> value table, ``patient`` the weight/height/sex (:func:`patient_of`)."""
    from petctfm.evaluate.organs import organ_readout
    from petctfm.io.images import array_xyz

    p = dict(patient or {})
    suv = array_xyz(pet).astype(np.float32, copy=False)
    labels = {k: int(v) for k, v in classes.items() if int(v) != 0}
    return organ_readout(suv, organs, mask, None, affine=ras_affine(pet), labels=labels,
                         weight_kg=p.get("weight_kg"), height_cm=p.get("height_cm"), sex=p.get("sex"))


def organ_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``summary.json["organs"]`` holds: organs found, the two reference SUVmeans (None when not placed)."""
    def ref(name: str) -> float | None:
        for r in rows:
            if r["organ"] == name and r["n_voxels"] and r["suv_mean"] == r["suv_mean"]:
                return round(float(r["suv_mean"]), 4)
        return None

    return {"found": [r["organ"] for r in rows if r["kind"] == "organ"],
            "liver_reference_suv_mean": ref("liver_reference"),
            "blood_pool_reference_suv_mean": ref("blood_pool_reference")}


def organs_csv(rows: list[dict[str, Any]]) -> str:
    """``organs.csv`` text: :data:`~petctfm.evaluate.organs.ORGAN_COLUMNS`, floats rounded to 4 decimals, NaN
    empty."""
    from petctfm.evaluate.organs import ORGAN_COLUMNS
    from petctfm.io.tables import csv_text

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return "" if v != v else round(v, 4)
        return v

    return csv_text([{k: clean(v) for k, v in r.items()} for r in rows], ORGAN_COLUMNS)


def write_organ_seg(organs: np.ndarray, classes: Mapping[str, int], pt_datasets: list[Any],
                    path: str | os.PathLike, model_name: str) -> Path | None:
    """``organs.seg.dcm``: one segment per organ present in ``organs`` (X, Y, Z on the PT series' grid), kind
    ``organ`` (SNOMED CT codes by :func:`petctfm.io.dicom_seg.segment_codes`), AUTOMATIC; None when no organ
    was found (nothing written)."""
    from petctfm.core.version import __version__
    from petctfm.io.dicom_seg import SegmentSpec, build_seg, organ_segment_label, save_seg

    present = set(np.unique(organs).tolist())
    specs = [SegmentSpec(int(v), organ_segment_label(k), "organ") for k, v in classes.items()
             if int(v) != 0 and int(v) in present]
    if not specs:
        return None
    frames = np.ascontiguousarray(np.transpose(organs.astype(np.uint8), (2, 1, 0)))  # [slice, rows, cols]
    seg = build_seg(frames, pt_datasets, series_number=902, series_description="petctfm predicted organs",
                    content_description="Organs predicted by petctfm (research use only)",
                    manufacturer_model_name="petctfm predict", software_versions=__version__,
                    algorithm=(model_name, __version__), tracking_id="organ", content_label="ORGANS",
                    segments=specs)
    return save_seg(seg, path)


__all__ = ["ORGANS_FILE", "ORGANS_CSV", "ORGANS_SEG_FILE", "ras_affine", "patient_of", "organ_table",
           "organ_summary", "organs_csv", "write_organ_seg"]
