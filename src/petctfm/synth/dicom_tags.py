"""DICOM attribute helpers of the synthetic DICOM writer (:mod:`petctfm.synth.dicom`): deterministic UIDs,
DS/DA/TM formatting, radionuclide codes, slice geometry and the patient/study/series modules shared by the
CT and PET series.

Every date/time comes from the case metadata and every UID from ``(seed, case_id, role)``, so the same seed
gives byte-identical files; the case's *fake* identity is written on purpose (harmonization must strip it).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.core.provenance import SYNTH_MARK
from petctfm.io.images import array_xyz

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

SOFTWARE = SYNTH_MARK  # petctfm.core.provenance: harmonize records that the data is synthetic

# Radionuclide -> (SNOMED code keyword in pydicom's codedict, half-life in seconds).
RADIONUCLIDES: dict[str, tuple[str, float]] = {
    "F-18": ("_18Fluorine", 6586.2),
    "Ga-68": ("_68Gallium", 4062.6),
}


# --------------------------------------------------------------------------------------------- helpers


def case_uid(seed: int, case_id: str, *role: object) -> str:
    """A deterministic DICOM UID for ``(seed, case_id, role...)`` (same inputs => same UID)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["petctfm", str(int(seed)), str(case_id), *map(str, role)]))


def fmt_ds(value: float) -> str:
    """A DS (decimal string, at most 16 characters) for ``value``."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def meta_value(meta: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first non-empty ``meta[key]``; also looks one level down (e.g. a nested scanner profile dict)."""
    nested = [v for v in meta.values() if isinstance(v, dict)]
    for source in (meta, *nested):
        for key in keys:
            value = source.get(key)
            if value not in (None, ""):
                return value
    return default


def parse_time(meta: dict[str, Any], key: str, case_id: str) -> dt.datetime:
    value = meta.get(key)
    if value in (None, ""):
        raise InputError(f"case {case_id}: metadata has no '{key}' (ISO date-time needed for the DICOM tags)")
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"case {case_id}: metadata '{key}'={value!r} is not an ISO date-time") from None


def fmt_da(t: dt.datetime | dt.date) -> str:
    return t.strftime("%Y%m%d")


def fmt_tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def radionuclide(meta: dict[str, Any]) -> tuple[str, float]:
    """(canonical radionuclide name, half-life in s) from the metadata; F-18 / 6586.2 s if absent."""
    raw = str(meta_value(meta, "radionuclide", default="F-18"))
    key = re.sub(r"[^a-z0-9]", "", raw.lower())
    names = {"f18": "F-18", "18f": "F-18", "18fluorine": "F-18", "ga68": "Ga-68", "68ga": "Ga-68", "68gallium": "Ga-68"}
    if key not in names:
        raise InputError(f"case {meta.get('case_id', '?')}: unknown radionuclide {raw!r} (known: F-18, Ga-68)")
    name = names[key]
    half_life = float(meta_value(meta, "half_life_s", default=RADIONUCLIDES[name][1]))
    return name, half_life


def code_item(code) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def radiopharmaceutical(tracer: str, nuclide: str) -> tuple[str, Any]:
    """(name, code) of the radiopharmaceutical for a tracer family and radionuclide."""
    from pydicom.sr.codedict import codes

    if tracer.lower() == "fdg":
        return "Fluorodeoxyglucose", codes.SCT.FluorodeoxyglucoseF18
    if tracer.lower() == "psma":
        if nuclide == "Ga-68":
            return "Ga-68 PSMA-11", codes.NCIt.PSMA11Ga68
        return "F-18 DCFPyL", codes.NCIt.PiflufolastatF18
    raise InputError(f"unknown tracer {tracer!r} (known: fdg, psma)")


def slice_geometry(img: sitk.Image) -> tuple[sitk.Image, list[float], list[list[float]]]:
    """Prepare an image for slice-wise DICOM export.

    Returns ``(image, iop, ipps)``: the image, flipped along z if its z axis runs against the slice normal
    (physically identical), the 6 ImageOrientationPatient values and one ImagePositionPatient per slice
    ``k`` (in file/instance order, increasing along the normal).
    """
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    if float(np.dot(np.cross(d[:, 0], d[:, 1]), d[:, 2])) < 0:
        img = sitk.Flip(img, [False, False, True], flipAboutOrigin=False)
        d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(img.GetOrigin(), dtype=float)
    sz = float(img.GetSpacing()[2])
    iop = [float(v) for v in np.concatenate([d[:, 0], d[:, 1]])]
    ipps = [[float(v) for v in origin + k * sz * d[:, 2]] for k in range(img.GetSize()[2])]
    return img, iop, ipps


# ------------------------------------------------------------------------------------ shared modules


def stamp_scan_time(ds: Dataset, scan) -> None:
    """Acquisition, content and instance-creation date/time = scan start (deterministic bytes)."""
    for kind in ("Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{kind}Date", fmt_da(scan))
        setattr(ds, f"{kind}Time", fmt_tm(scan))


def common_modules(case, seed: int, modality: str, series_uid: str, series_number: int, description: str):
    """Patient, study, series, frame-of-reference and equipment attributes shared by CT and PT slices."""
    from pydicom.dataset import Dataset

    meta = case.meta
    scan = parse_time(meta, "acquisition_time", case.case_id)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Patient (fake identifiers on purpose)
    ds.PatientName = str(meta_value(meta, "patient_name", default=f"Synthetic^{case.case_id}"))
    ds.PatientID = str(meta_value(meta, "patient_id", default=case.case_id))
    ds.PatientBirthDate = str(meta_value(meta, "birth_date", default="19600101")).replace("-", "")[:8]
    sex = str(meta_value(meta, "sex", default="O")).upper()[:1]
    ds.PatientSex = sex if sex in ("M", "F") else "O"
    if meta.get("age") not in (None, ""):
        ds.PatientAge = f"{int(round(float(meta['age']))):03d}Y"
    if meta.get("weight_kg") not in (None, ""):
        ds.PatientWeight = fmt_ds(float(meta["weight_kg"]))
    if meta.get("height_cm") not in (None, ""):
        ds.PatientSize = fmt_ds(float(meta["height_cm"]) / 100.0)
    # Study
    ds.StudyInstanceUID = case_uid(seed, case.case_id, "study")
    ds.StudyDate = fmt_da(scan)
    ds.StudyTime = fmt_tm(scan)
    ds.StudyID = "1"
    ds.StudyDescription = f"PET/CT {str(meta.get('tracer', '')).upper()} whole body (synthetic)"
    ds.AccessionNumber = str(meta_value(meta, "accession_number", default="A" + ds.StudyInstanceUID.replace(".", "")[-10:]))
    ds.ReferringPhysicianName = str(meta_value(meta, "referring_physician", default="Synthetic^Referrer"))
    # Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate = fmt_da(scan)
    ds.SeriesTime = fmt_tm(scan)
    ds.PatientPosition = "FFS" if str(meta.get("patient_position", "")).upper() == "FFS" else "HFS"
    # Frame of reference (shared by CT, PT and SEG of one case)
    ds.FrameOfReferenceUID = case_uid(seed, case.case_id, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    # Equipment (site-specific, fake)
    ds.Manufacturer = str(meta_value(meta, "manufacturer", default="petctfm"))
    ds.ManufacturerModelName = str(meta_value(meta, "model_name", "model", "manufacturer_model_name", default="synthetic"))
    ds.InstitutionName = str(meta_value(meta, "institution_name", "institution", default=str(meta.get("site", "unknown"))))
    if meta_value(meta, "station_name"):
        ds.StationName = str(meta_value(meta, "station_name"))
    ds.SoftwareVersions = SOFTWARE
    ds.DeviceSerialNumber = str(meta_value(meta, "device_serial_number", default=str(meta.get("site", "0"))))
    return ds


def image_pixel_module(ds, rows: int, cols: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0


def save_dataset(ds, sop_class_uid: str, path: Path) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def slices_of(img: sitk.Image) -> tuple[sitk.Image, list[float], list[list[float]], np.ndarray]:
    """(canonical image, IOP, IPPs, array [z, rows=y, cols=x]) ready for per-slice export."""
    img, iop, ipps = slice_geometry(img)
    arr = np.transpose(array_xyz(img), (2, 1, 0))  # [z, y, x]: rows run along y, columns along x
    return img, iop, ipps, arr


def plane_module(ds, img: sitk.Image, iop: list[float]) -> None:
    """The Image Plane attributes shared by all slices of a series."""
    sx, sy, sz = img.GetSpacing()
    ds.ImageOrientationPatient = [fmt_ds(v) for v in iop]
    ds.PixelSpacing = [fmt_ds(sy), fmt_ds(sx)]  # row spacing (between rows, along y), column spacing (along x)
    ds.SliceThickness = fmt_ds(sz)


def fresh_element(ds, keyword: str, value: Any) -> None:
    """Set ``ds.<keyword>`` as a new data element (a shallow copy taken earlier keeps its old value)."""
    if keyword in ds:
        delattr(ds, keyword)
    setattr(ds, keyword, value)


def slice_module(ds, iop: list[float], ipp: list[float], k: int) -> None:
    """The per-slice position attributes of slice ``k`` (0-based, in file order)."""
    fresh_element(ds, "ImagePositionPatient", [fmt_ds(v) for v in ipp])
    fresh_element(ds, "SliceLocation", fmt_ds(float(np.dot(ipp, np.cross(iop[:3], iop[3:])))))
    fresh_element(ds, "InstanceNumber", k + 1)
