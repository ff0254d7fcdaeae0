"""Read one :class:`~petctfm.harmonize.discover.SourceCase` into SimpleITK images, each on its own grid.

PET in SUV, CT in HU, the lesion mask and optional organ labels, plus the metadata the files carry:

* **DICOM**: slices sorted along the normal (:mod:`petctfm.io.dicom_read`), SUV from the tags per slice
  (:mod:`petctfm.harmonize.suv`), DICOM-SEG / RTSTRUCT onto the PT frames (a SEG's lesion segments -> the
  lesion mask, its organ segments -> the organ map); demographics and tracer from the PT headers
  (:func:`dicom_demographics`).
* **NIfTI/MHA/NRRD** (autoPET, nnU-Net, pairs): one thread per file; a PET in Bq/ml (autoPET ``PET.nii.gz``
  without ``SUV.nii.gz``) becomes SUV from ``metadata.csv``; a truncated ``.nii.gz`` is an error
  (:func:`check_gzip_complete`), not a silently short volume; an nnU-Net multi-label map whose table names
  organs is split into the lesion mask and the organ map (:func:`split_label_map`).
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


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


def split_label_map(seg: sitk.Image, value_roles: dict[int, list[str]], where: str) -> tuple[sitk.Image, sitk.Image | None]:
    """An nnU-Net multi-label map -> (lesion mask uint8, organ map uint8 in ORGAN_LABELS values or None), same
    geometry; ``value_roles`` from :func:`petctfm.io.layouts.nnunet.nnunet_label_roles` (value -> ``"lesion"``
    and/or an organ name; ``[]`` ignored). A value the table does not name, or not an integer, is an
    :class:`InputError` naming ``where`` (the label file). Organ map None when the table names no organ."""
    from petctfm.core.labels import ORGAN_LABELS

    arr = sitk.GetArrayViewFromImage(seg)
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v != 0 and (v != int(v) or int(v) not in value_roles)]
    if bad:
        raise InputError(f"{where}: label value {bad[0]:g} is not in dataset.json's labels "
                         f"(named: {sorted(value_roles)})")
    size = int(values.max()) + 1 if values.size else 1
    lesion_lut, organ_lut = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
    for v, roles in value_roles.items():
        if v < size:
            lesion_lut[v] = 1 if "lesion" in roles else 0
            organ_lut[v] = next((ORGAN_LABELS[r] for r in roles if r != "lesion"), 0)
    index = np.asarray(arr).astype(np.uint8, copy=False)  # every value checked: 0 or a table value in 0..255

    def image(lut: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(lut[index])
        img.CopyInformation(seg)
        return img

    has_organs = any(r != "lesion" for roles in value_roles.values() for r in roles)
    return image(lesion_lut), image(organ_lut) if has_organs else None


def load_case_images(case: SourceCase, suv_kind: str = "bw", label_roles: dict[str, str] | None = None
                     ) -> tuple[dict[str, sitk.Image | None], dict[str, Any]]:
    """Images ``{"suv", "ct", "seg", "organs"}`` (SimpleITK, own geometry) and metadata found in the files.

    ``seg`` is the lesion mask, ``organs`` the organ map in :data:`petctfm.core.labels.ORGAN_LABELS` values:
    an autoPET ``ORGANS.nii.gz`` / pairs ``*organs*`` file; the organ values of an nnU-Net multi-label map
    (``case.value_roles``, :func:`split_label_map`); the organ segments of a DICOM-SEG
    (:func:`petctfm.io.dicom_read.read_seg_on`, ``label_roles`` the ``--label-roles`` table). ``extra["label_notes"]``:
    one line per DICOM-SEG segment left out (QA flags of the case).
    """
    root = Path(case.root)
    extra: dict[str, Any] = {}
    if case.error:
        raise InputError(case.error)
    if case.fmt == "dicom":
        from petctfm.io.dicom_read import read_rtstruct_on, read_seg_on, read_volume

        suv, pt_datasets = read_dicom_suv(root, case.files["PT"], suv_kind)
        ct, _ = read_volume(root, case.files["CT"])
        seg = organs = None
        if case.files.get("SEG"):
            seg, organs, ignored = read_seg_on(root, case.files["SEG"][0], pt_datasets, suv, label_roles)
            for line in ignored:
                log.warning("%s", line)
            if ignored:
                extra["label_notes"] = ignored
        elif case.files.get("RTSTRUCT"):
            seg = read_rtstruct_on(root, case.files["RTSTRUCT"][0], suv)
        extra.update(dicom_demographics(pt_datasets[0]))
        extra["pt_datasets"] = pt_datasets  # headers in slice order (predict's DICOM-SEG); not a KEPT_FIELD
        extra["synthetic"] = is_synth_mark(getattr(pt_datasets[0], "SoftwareVersions", None))
        return {"suv": suv, "ct": ct, "seg": seg, "organs": organs}, extra
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
    seg, organs = images.get("seg"), images.get("organs")
    if seg is not None and case.value_roles is not None:  # an nnU-Net label map with organs: split it
        seg, organs = split_label_map(seg, case.value_roles, f["seg"])
    # int16 CT stays int16 (half the memory traffic); resampling gives float32
    return {"suv": suv, "ct": images["ct"], "seg": seg, "organs": organs}, extra


def _read_parallel(paths: dict[str, Path]) -> dict[str, sitk.Image]:
    """``{role: image}`` read by one thread per file: gzip inflation and ITK's readers release the GIL, so a
    whole-body PET + CT pair reads in about the time of the larger one. The first failing file's error is
    raised (the same one-line :class:`InputError` as reading it alone)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = {role: pool.submit(_read, path) for role, path in paths.items()}
        return {role: fut.result() for role, fut in futures.items()}
