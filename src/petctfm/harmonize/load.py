"""Read one :class:`~petctfm.harmonize.discover.SourceCase` into SimpleITK images, each on its own grid.

PET in SUV, CT in HU, the lesion mask and optional organ labels, plus the metadata the files carry:

* **DICOM**: slices sorted along the normal (:mod:`petctfm.io.dicom_read`), SUV from the tags per slice
  (:mod:`petctfm.harmonize.suv`), DICOM-SEG / RTSTRUCT onto the PT frames; demographics and tracer from the
  PT headers (:func:`dicom_demographics`).
* **NIfTI/MHA/NRRD** (autoPET, nnU-Net, pairs): one thread per file; a PET in Bq/ml (autoPET ``PET.nii.gz``
  without ``SUV.nii.gz``) becomes SUV from ``metadata.csv``; a truncated ``.nii.gz`` is an error
  (:func:`check_gzip_complete`), not a silently short volume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.core.provenance import is_synth_mark
from petctfm.harmonize.discover import SourceCase
from petctfm.harmonize.metadata import clean
from petctfm.io.images import image_notes, read_image


def _tracer_from_dicom(ds: Any) -> str | None:
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None) or []
    text = " ".join(str(getattr(item, "Radiopharmaceutical", "")) + " " +
                    " ".join(str(getattr(c, "CodeMeaning", "")) for c in getattr(item, "RadiopharmaceuticalCodeSequence", []))
                    for item in seq).lower()
    if "psma" in text or "pylarify" in text or "piflufolastat" in text:
        return "psma"
    if "fdg" in text or re.search(r"fl[a-z-]*glucose", text):
        return "fdg"  # FDG, Fluorodeoxyglucose, Fludeoxyglucose F^18^ (the DICOM code meaning), Fluordesoxyglucose
    return None


def _radiopharmaceutical_from_dicom(ds: Any) -> str | None:
    """The radiopharmaceutical as the header names it, isotope kept (``Ga-68 PSMA-11``, ``Fludeoxyglucose
    F^18^``; the radionuclide's code meaning put first when the name has no mass number), reduced to the
    metadata's short-token form (:func:`~petctfm.harmonize.metadata.clean`: lowercase ``[a-z0-9_- ]``, 32
    characters). None without a name."""
    for item in getattr(ds, "RadiopharmaceuticalInformationSequence", None) or []:
        name = str(getattr(item, "Radiopharmaceutical", "") or "").strip()
        if not name:
            name = " ".join(str(getattr(c, "CodeMeaning", "")) for c in getattr(item, "RadiopharmaceuticalCodeSequence", []))
        nuclide = " ".join(str(getattr(c, "CodeMeaning", "")) for c in getattr(item, "RadionuclideCodeSequence", []))
        if name.strip() and not re.search(r"\d", name) and nuclide.strip():
            name = f"{nuclide} {name}"
        if name.strip():
            return clean("radiopharmaceutical", name.replace("^", ""))
    return None


def dicom_demographics(ds: Any) -> dict[str, Any]:
    """Sex, age (years), weight (kg), height (cm), tracer (the family: fdg / psma) and radiopharmaceutical (the
    name, isotope kept) from one PT header; absent tags are left out."""
    out: dict[str, Any] = {}
    sex = str(getattr(ds, "PatientSex", "") or "").upper()[:1]
    if sex in ("M", "F"):
        out["sex"] = sex
    age = str(getattr(ds, "PatientAge", "") or "")
    m = re.fullmatch(r"(\d{3})([YMWD])", age)
    if m:
        out["age"] = float(m.group(1)) / {"Y": 1, "M": 12, "W": 52.18, "D": 365.25}[m.group(2)]
    try:
        if getattr(ds, "PatientWeight", None):
            out["weight_kg"] = float(ds.PatientWeight)
        if getattr(ds, "PatientSize", None):
            out["height_cm"] = float(ds.PatientSize) * 100.0
    except (TypeError, ValueError):
        pass
    tracer = _tracer_from_dicom(ds)
    if tracer:
        out["tracer"] = tracer
    pharm = _radiopharmaceutical_from_dicom(ds)
    if pharm:
        out["radiopharmaceutical"] = pharm
    return out


def check_gzip_complete(path: Path) -> None:
    """Raise :class:`InputError` if a ``.nii.gz`` is truncated (SimpleITK may read such a file silently).

    A gzip member ends with ISIZE, the uncompressed size mod 2**32; for a complete NIfTI it equals
    ``vox_offset + voxels * bitpix / 8`` from the header (nibabel reads only the header here).
    """
    if not str(path).lower().endswith(".nii.gz"):
        return
    import nibabel as nib

    try:
        hdr = nib.load(str(path)).header
        offset = int(hdr["vox_offset"]) or int(getattr(hdr, "single_vox_offset", 352))  # 0 = right after header
        expected = offset + int(np.prod(hdr.get_data_shape())) * int(hdr["bitpix"]) // 8
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read image header ({type(exc).__name__})") from None
    if isize != expected % 2**32:
        raise InputError(f"{path}: cannot read image (truncated or corrupt gzip: {isize} of {expected} bytes)")


def _read(path: Path) -> sitk.Image:
    img = read_image(path)
    check_gzip_complete(path)
    return img


def read_dicom_suv(root: str | os.PathLike, files: list[str], suv_kind: str = "bw") -> tuple[sitk.Image, list[Any]]:
    """A DICOM PT series (``files`` relative to ``root``, or absolute) in SUV: slices sorted along the normal
    (:func:`petctfm.io.dicom_read.read_volume`), SUV from the tags per slice (:func:`petctfm.harmonize.suv.suv_factor`,
    computed once per acquisition time unless the slices are not decay-corrected). Returns ``(suv image (LPS),
    PT headers in slice order)``."""
    from petctfm.harmonize.suv import suv_factor
    from petctfm.io.dicom_read import read_volume

    cache: dict[tuple, float] = {}

    def factor(ds: Any, where: str) -> float:
        key = (str(getattr(ds, "AcquisitionTime", "")), str(getattr(ds, "AcquisitionDateTime", "")))
        if key not in cache or str(getattr(ds, "DecayCorrection", "")).upper() == "NONE":
            cache[key] = suv_factor(ds, where, suv_kind)
        return cache[key]

    return read_volume(root, files, slice_factor=factor)


def load_case_images(case: SourceCase, suv_kind: str = "bw") -> tuple[dict[str, sitk.Image | None], dict[str, Any]]:
    """Images ``{"suv", "ct", "seg", "organs"}`` (SimpleITK, own geometry) and metadata found in the files."""
    root = Path(case.root)
    extra: dict[str, Any] = {}
    if case.error:
        raise InputError(case.error)
    if case.fmt == "dicom":
        from petctfm.io.dicom_read import read_rtstruct_on, read_seg_on, read_volume

        suv, pt_datasets = read_dicom_suv(root, case.files["PT"], suv_kind)
        ct, _ = read_volume(root, case.files["CT"])
        seg = None
        if case.files.get("SEG"):
            seg = read_seg_on(root, case.files["SEG"][0], pt_datasets, suv)
        elif case.files.get("RTSTRUCT"):
            seg = read_rtstruct_on(root, case.files["RTSTRUCT"][0], suv)
        extra.update(dicom_demographics(pt_datasets[0]))
        extra["pt_datasets"] = pt_datasets  # headers in slice order (predict's DICOM-SEG); not a KEPT_FIELD
        extra["synthetic"] = is_synth_mark(getattr(pt_datasets[0], "SoftwareVersions", None))
        return {"suv": suv, "ct": ct, "seg": seg, "organs": None}, extra
    f = case.files
    if "suv" not in f and "pet" not in f:
        raise InputError(f"{case.rel}: missing modality: no PET/SUV image")
    ct_rel = f.get("ct") or f.get("ctres")
    if not ct_rel:
        raise InputError(f"{case.rel}: missing modality: no CT image (CT.nii.gz or CTres.nii.gz)")
    bqml, m = "suv" not in f, case.meta  # PET in Bq/ml: SUV from metadata.csv
    if bqml and not all(m.get(k) for k in ("weight_kg", "injected_activity_bq", "uptake_min")):
        raise InputError(f"{f['pet']}: no SUV.nii.gz and no weight_kg/injected_activity_bq/uptake_min in "
                         "metadata.csv to compute SUV from Bq/ml (missing SUV tags)")
    roles = {"pet": f.get("suv") or f["pet"], "ct": ct_rel, "seg": f.get("seg"), "organs": f.get("organs")}
    images = _read_parallel({r: root / rel for r, rel in roles.items() if rel})
    extra["synthetic"] = is_synth_mark(image_notes(root / roles["pet"]))  # written by petctfm synth?
    suv = sitk.Cast(images["pet"], sitk.sitkFloat32)
    if bqml:
        from petctfm.core.plausibility import check_weight_kg
        from petctfm.harmonize.suv import suv_from_bqml

        check_weight_kg(m["weight_kg"], f"{f['pet']}: metadata.csv weight_kg")
        suv = suv_from_bqml(suv, m["weight_kg"], m["injected_activity_bq"], m["uptake_min"] * 60.0,
                            m.get("half_life_s", 6586.2))  # F-18 unless metadata says otherwise
    # int16 CT stays int16 (half the memory traffic); resampling gives float32
    return {"suv": suv, "ct": images["ct"], "seg": images.get("seg"), "organs": images.get("organs")}, extra


def _read_parallel(paths: dict[str, Path]) -> dict[str, sitk.Image]:
    """``{role: image}`` read by one thread per file: gzip inflation and ITK's readers release the GIL, so a
    whole-body PET + CT pair reads in about the time of the larger one. The first failing file's error is
    raised (the same one-line :class:`InputError` as reading it alone)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = {role: pool.submit(_read, path) for role, path in paths.items()}
        return {role: fut.result() for role, fut in futures.items()}
