"""One time point of ``petctfm response``: a ``petctfm predict`` output folder (docs/predict.md) and the PET it
was predicted from.

The folder gives ``lesions.nii.gz`` (the mask on the input PET grid), ``summary.json`` (whose
``input.source`` names the PET file or case folder) and, after ``predict --organs``, ``organs.csv`` (the
``liver_reference`` and ``blood_pool_reference`` rows and the SUL factor). ``predict`` does not copy the PET
into its folder, so the PET is read from ``input.source`` (as written, else relative to the folder) or from an
explicit path (``--baseline-pet`` / ``--followup-pet``). A study ``predict`` read from DICOM is read again the
way predict read it (the largest PT series of the folder, SUV from its tags), and its PT headers are kept
(:attr:`TimePoint.pt_datasets`: the DICOM-SEGs and the SR of :mod:`petctfm.response.dicom` reference them). The
lesion table is recomputed from the mask and that
PET with :func:`petctfm.evaluate.lesions.lesion_table` (the function ``predict`` wrote ``lesions.csv`` with),
so labels, SUVs and centroids agree with the label image used for matching.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError

SUMMARY = "summary.json"
MASK = "lesions.nii.gz"
ORGANS_CSV = "organs.csv"
PET_NAMES = ("SUV.nii.gz", "SUV.nii", "PET.nii.gz", "PET.nii", "SUV.mha", "SUV.nrrd")
PREDICT_HINT = ("run `petctfm predict --model RUN --pet PET --ct CT --out FOLDER` on the study first, or give "
                "`--model RUN` with a study folder (autoPET-style, or DICOM with a PT and a CT series)")


@dataclass
class TimePoint:
    role: str  # baseline | followup
    folder: Path
    pet: sitk.Image  # SUV, the grid of the mask
    pet_path: Path
    labels: np.ndarray  # (X, Y, Z) uint32, 1..n by decreasing volume (18-connected)
    n: int
    table: list[dict[str, Any]]  # lesion_table rows (label order), centroids LPS mm
    organs: dict[str, dict[str, Any]] = field(default_factory=dict)  # organs.csv rows by organ name
    sul_factor: float | None = None  # LBM / weight (SUL = SUV x factor); None: unknown
    summary: dict[str, Any] = field(default_factory=dict)
    pt_datasets: list[Any] | None = None  # DICOM PT headers in slice order (a DICOM input), else None

    @property
    def units(self) -> str:
        return "SUL" if self.sul_factor is not None else "SUV"

    def sul(self, suv: float | None) -> float | None:
        if suv is None or not math.isfinite(suv):
            return None
        return suv * (self.sul_factor if self.sul_factor is not None else 1.0)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def read_organs(path: Path) -> dict[str, dict[str, Any]]:
    """``organs.csv`` rows by organ name, numeric columns as floats (empty -> NaN)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable organs table ({exc})") from None
    if rows and "organ" not in rows[0]:
        raise InputError(f"{path}: not an organs.csv of `petctfm predict --organs` (no 'organ' column)")
    out = {}
    for r in rows:
        out[r["organ"]] = {k: (v if k in ("organ", "kind", "note") else _float(v)) for k, v in r.items()}
    return out


def sul_factor(organs: dict[str, dict[str, Any]]) -> float | None:
    """LBM / weight from ``organs.csv`` (``sul_mean / suv_mean`` of any row where both are known), else None."""
    for r in organs.values():
        s, u = r.get("sul_mean", math.nan), r.get("suv_mean", math.nan)
        if math.isfinite(s) and math.isfinite(u) and u > 0:
            return s / u
    return None


def _read_dicom_pet(folder: Path, where: str) -> tuple[sitk.Image, list[Any]]:
    """The largest PT series under ``folder`` in SUV (predict's reading: :func:`petctfm.predict.sources.dicom_series`,
    :func:`petctfm.harmonize.load.read_dicom_suv`) and its headers in slice order."""
    from petctfm.harmonize.load import read_dicom_suv
    from petctfm.predict.sources import dicom_series

    try:
        return read_dicom_suv("/", dicom_series(folder, "PT"))
    except InputError as exc:
        raise InputError(f"{where}: {exc}" if str(folder) not in str(exc) else str(exc)) from None


def _read_pet(folder: Path, summary: dict[str, Any], explicit: str | os.PathLike | None, flag: str
              ) -> tuple[sitk.Image, Path, list[Any] | None]:
    """``(PET in SUV, its path, DICOM PT headers in slice order or None)``: ``explicit`` (an image file, or a
    DICOM folder holding the PT series), else the input named in ``summary.json`` (an image file, an
    autoPET-style case folder, or the DICOM folder ``predict`` read)."""
    from petctfm.io.images import read_image

    if explicit is not None:
        p = Path(explicit)
        if p.is_dir():
            return _with_path(_read_dicom_pet(p, flag), p)
        if not p.is_file():
            raise InputError(f"{p}: {flag} file not found")
        return read_image(p), p, None
    inp = summary.get("input") or {}
    source = str(inp.get("source") or "")
    if not source:
        raise InputError(f"{folder / SUMMARY}: names no input PET; give it with {flag}")
    if inp.get("kind") == "dicom":
        for cand in (Path(source.split("#")[0]), folder / source.split("#")[0]):
            if cand.is_dir():
                return _with_path(_read_dicom_pet(cand, f"{folder / SUMMARY}: its DICOM input"), cand)
        raise InputError(f"{folder / SUMMARY}: its DICOM input {source} is not there; give the PT series folder "
                         f"with {flag}")
    for cand in (Path(source), folder / source):
        if cand.is_file():
            return read_image(cand), cand, None
        if cand.is_dir():
            for name in PET_NAMES:
                if (cand / name).is_file():
                    return read_image(cand / name), cand / name, None
    raise InputError(f"{folder / SUMMARY}: its input PET {source} is not there; give it with {flag}")


def _with_path(read: tuple[sitk.Image, list[Any]], path: Path) -> tuple[sitk.Image, Path, list[Any]]:
    return read[0], path, read[1]


def study_date(folder: str | os.PathLike) -> tuple["dt.date | None", str]:
    """The study date of a ``--baseline`` / ``--followup`` folder and where it was found, or ``(None, "")``.

    A ``petctfm predict`` output folder: ``summary.json["input"]["study_date"]`` as predict recorded it (null:
    unknown to predict, so unknown here). A ``summary.json`` without that field (written before predict recorded
    dates, or built by hand): the study named by its ``input.source`` (as written, else relative to the folder),
    asked the way predict would have (:func:`petctfm.io.study_date.of_path`). A study folder (no
    ``summary.json``): :func:`petctfm.io.study_date.of_path` of the folder. Never raises: an unreadable file
    is no date."""
    from petctfm.io.study_date import of_path, parse_date

    folder = Path(folder)
    if not folder.is_dir():
        return None, ""
    if not (folder / SUMMARY).is_file():
        found = of_path(folder)
        return found.date, found.source
    try:
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, ""
    inp = summary.get("input") if isinstance(summary, dict) else None
    if not isinstance(inp, dict):
        return None, ""
    if "study_date" in inp:  # recorded by predict (None: it found none)
        day = parse_date(inp["study_date"])
        how = f" ({inp['study_date_source']})" if inp.get("study_date_source") else ""
        return day, (f"{folder / SUMMARY}{how}" if day else "")
    source = str(inp.get("source") or "").split("#")[0]
    for cand in (Path(source), folder / source) if source else ():
        if cand.exists():
            found = of_path(cand)
            return found.date, found.source
    return None, ""


def load_timepoint(folder: str | os.PathLike, role: str, pet: str | os.PathLike | None = None) -> TimePoint:
    """Read one ``predict`` output folder (module docstring); one-line :class:`InputError` (exit 3) naming the
    file when it is not one, has no lesion mask, or its PET is missing or on another grid."""
    from petctfm.evaluate.lesions import label_lesions, lesion_table
    from petctfm.io.images import array_xyz, read_image

    folder = Path(folder)
    flag = f"--{role}-pet"
    if not folder.exists():
        raise InputError(f"{folder}: --{role} folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: --{role} is a file, not a `petctfm predict` output folder; {PREDICT_HINT}")
    if not (folder / SUMMARY).is_file():
        raise InputError(f"{folder}: not a `petctfm predict` output folder (no {SUMMARY}); {PREDICT_HINT}")
    try:
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{folder / SUMMARY}: unreadable ({type(exc).__name__})") from None
    if not isinstance(summary, dict):
        raise InputError(f"{folder / SUMMARY}: not a JSON object")
    if not (folder / MASK).is_file():
        raise InputError(f"{folder}: no {MASK} (an organ-only prediction?); run `petctfm predict` with a lesion model")
    pet_img, pet_path, pt_datasets = _read_pet(folder, summary, pet, flag)
    mask_img = read_image(folder / MASK)
    same = (pet_img.GetSize() == mask_img.GetSize()
            and np.allclose(pet_img.GetSpacing(), mask_img.GetSpacing(), atol=1e-3)
            and np.allclose(pet_img.GetOrigin(), mask_img.GetOrigin(), atol=1e-2)
            and np.allclose(pet_img.GetDirection(), mask_img.GetDirection(), atol=1e-4))
    if not same:
        raise InputError(f"{pet_path}: not the grid of {folder / MASK} (size {pet_img.GetSize()} vs "
                         f"{mask_img.GetSize()}); give the PET the prediction was made from")
    suv = array_xyz(pet_img).astype(np.float32, copy=False)
    mask = array_xyz(mask_img) > 0
    labels, n = label_lesions(mask, 18)
    table = lesion_table(mask, suv, pet_img, connectivity=18)
    organs = read_organs(folder / ORGANS_CSV) if (folder / ORGANS_CSV).is_file() else {}
    return TimePoint(role, folder, pet_img, pet_path, labels, n, table, organs, sul_factor(organs), summary,
                     pt_datasets)


__all__ = ["TimePoint", "load_timepoint", "read_organs", "sul_factor", "study_date", "PREDICT_HINT"]
