"""Write a synthetic PET/CT case as real DICOM: a CT series, a PET series and a DICOM-SEG of the lesions.

Layout written by :func:`write_dicom_case` (the whole case folder appears at once, see ``io.atomic``)::

    root/<case_id>/CT/CT_0001.dcm ...   CT Image Storage, one file per slice, HU = stored * slope + intercept
    root/<case_id>/PT/PT_0001.dcm ...   PET Image Storage, Units BQML, DecayCorrection START, per-slice slope
    root/<case_id>/SEG/seg.dcm          Segmentation Storage (highdicom), BINARY, one segment "Lesion"

Geometry. ITK and DICOM share the LPS patient frame, so a SimpleITK image with direction matrix ``D``
(columns = world directions of the x, y, z index axes), origin ``o`` and spacing ``s`` maps to slices with
``ImageOrientationPatient = D[:, 0] + D[:, 1]`` (row direction, then column direction) and
``ImagePositionPatient(k) = o + k * s_z * D[:, 2]``. DICOM readers (SimpleITK/GDCM included) stack slices
along the slice normal ``D[:, 0] x D[:, 1]``; when the image's z axis points the other way (a left-handed
direction matrix, e.g. a site storing "flipped" axes) the image is first flipped along z (physically the same
image) so that instance numbers and file names follow the physical slice order along the normal.

Identity. All UIDs are derived from ``(seed, case_id, role)`` with :func:`pydicom.uid.generate_uid`
(``entropy_srcs``), and every date/time comes from the case metadata, so the same seed gives byte-identical
files. Every file carries the case's *fake* patient name/ID/birth date, institution, accession number and
referring physician on purpose: harmonization must strip them.

SUV from the tags (what a reader must do): ``SUV = pixel_Bqml * PatientWeight[g] /
(RadionuclideTotalDose * 2 ** (-(SeriesDateTime - RadiopharmaceuticalStartDateTime) / RadionuclideHalfLife))``
with ``pixel_Bqml = stored * RescaleSlope + RescaleIntercept`` (slope per slice).

Negative cases (empty lesion mask). highdicom 0.28 accepts an all-zero BINARY mask when empty frames are
not omitted, so a SEG is always written: for a negative case it holds one empty frame per PET slice
(``omit_empty_frames=False``) and a reader gets an all-zero mask back; :func:`write_seg` reports
``"empty"``. Cases with lesions omit empty frames (the usual, compact encoding).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_dir
from petctfm.io.images import array_xyz

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
SOFTWARE = "petctfm synth"

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


def _ds(value: float) -> str:
    """A DS (decimal string, at most 16 characters) for ``value``."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _meta(meta: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first non-empty ``meta[key]``; also looks one level down (e.g. a nested scanner profile dict)."""
    nested = [v for v in meta.values() if isinstance(v, dict)]
    for source in (meta, *nested):
        for key in keys:
            value = source.get(key)
            if value not in (None, ""):
                return value
    return default


def _parse_time(meta: dict[str, Any], key: str, case_id: str) -> dt.datetime:
    value = meta.get(key)
    if value in (None, ""):
        raise InputError(f"case {case_id}: metadata has no '{key}' (ISO date-time needed for the DICOM tags)")
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"case {case_id}: metadata '{key}'={value!r} is not an ISO date-time") from None


def _da(t: dt.datetime | dt.date) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def radionuclide(meta: dict[str, Any]) -> tuple[str, float]:
    """(canonical radionuclide name, half-life in s) from the metadata; F-18 / 6586.2 s if absent."""
    raw = str(_meta(meta, "radionuclide", default="F-18"))
    key = re.sub(r"[^a-z0-9]", "", raw.lower())
    names = {"f18": "F-18", "18f": "F-18", "18fluorine": "F-18", "ga68": "Ga-68", "68ga": "Ga-68", "68gallium": "Ga-68"}
    if key not in names:
        raise InputError(f"case {meta.get('case_id', '?')}: unknown radionuclide {raw!r} (known: F-18, Ga-68)")
    name = names[key]
    half_life = float(_meta(meta, "half_life_s", default=RADIONUCLIDES[name][1]))
    return name, half_life


def _code_item(code) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _radiopharmaceutical(tracer: str, nuclide: str) -> tuple[str, Any]:
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


def _stamp_scan_time(ds: Dataset, scan) -> None:
    """Acquisition, content and instance-creation date/time = scan start (deterministic bytes)."""
    for kind in ("Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{kind}Date", _da(scan))
        setattr(ds, f"{kind}Time", _tm(scan))


def _common(case, seed: int, modality: str, series_uid: str, series_number: int, description: str):
    """Patient, study, series, frame-of-reference and equipment attributes shared by CT and PT slices."""
    from pydicom.dataset import Dataset

    meta = case.meta
    scan = _parse_time(meta, "acquisition_time", case.case_id)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Patient (fake identifiers on purpose)
    ds.PatientName = str(_meta(meta, "patient_name", default=f"Synthetic^{case.case_id}"))
    ds.PatientID = str(_meta(meta, "patient_id", default=case.case_id))
    ds.PatientBirthDate = str(_meta(meta, "birth_date", default="19600101")).replace("-", "")[:8]
    sex = str(_meta(meta, "sex", default="O")).upper()[:1]
    ds.PatientSex = sex if sex in ("M", "F") else "O"
    if meta.get("age") not in (None, ""):
        ds.PatientAge = f"{int(round(float(meta['age']))):03d}Y"
    if meta.get("weight_kg") not in (None, ""):
        ds.PatientWeight = _ds(float(meta["weight_kg"]))
    if meta.get("height_cm") not in (None, ""):
        ds.PatientSize = _ds(float(meta["height_cm"]) / 100.0)
    # Study
    ds.StudyInstanceUID = case_uid(seed, case.case_id, "study")
    ds.StudyDate = _da(scan)
    ds.StudyTime = _tm(scan)
    ds.StudyID = "1"
    ds.StudyDescription = f"PET/CT {str(meta.get('tracer', '')).upper()} whole body (synthetic)"
    ds.AccessionNumber = str(_meta(meta, "accession_number", default="A" + ds.StudyInstanceUID.replace(".", "")[-10:]))
    ds.ReferringPhysicianName = str(_meta(meta, "referring_physician", default="Synthetic^Referrer"))
    # Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate = _da(scan)
    ds.SeriesTime = _tm(scan)
    ds.PatientPosition = "FFS" if str(meta.get("patient_position", "")).upper() == "FFS" else "HFS"
    # Frame of reference (shared by CT, PT and SEG of one case)
    ds.FrameOfReferenceUID = case_uid(seed, case.case_id, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    # Equipment (site-specific, fake)
    ds.Manufacturer = str(_meta(meta, "manufacturer", default="petctfm"))
    ds.ManufacturerModelName = str(_meta(meta, "model_name", "model", "manufacturer_model_name", default="synthetic"))
    ds.InstitutionName = str(_meta(meta, "institution_name", "institution", default=str(meta.get("site", "unknown"))))
    if _meta(meta, "station_name"):
        ds.StationName = str(_meta(meta, "station_name"))
    ds.SoftwareVersions = SOFTWARE
    ds.DeviceSerialNumber = str(_meta(meta, "device_serial_number", default=str(meta.get("site", "0"))))
    return ds


def _image_pixel(ds, rows: int, cols: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0


def _save(ds, sop_class_uid: str, path: Path) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def _slices(img: sitk.Image) -> tuple[sitk.Image, list[float], list[list[float]], np.ndarray]:
    """(canonical image, IOP, IPPs, array [z, rows=y, cols=x]) ready for per-slice export."""
    img, iop, ipps = slice_geometry(img)
    arr = np.transpose(array_xyz(img), (2, 1, 0))  # [z, y, x]: rows run along y, columns along x
    return img, iop, ipps, arr


def _plane(ds, img: sitk.Image, iop: list[float]) -> None:
    """The Image Plane attributes shared by all slices of a series."""
    sx, sy, sz = img.GetSpacing()
    ds.ImageOrientationPatient = [_ds(v) for v in iop]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]  # row spacing (between rows, along y), column spacing (along x)
    ds.SliceThickness = _ds(sz)


def _fresh(ds, keyword: str, value: Any) -> None:
    """Set ``ds.<keyword>`` as a new data element (a shallow copy taken earlier keeps its old value)."""
    if keyword in ds:
        delattr(ds, keyword)
    setattr(ds, keyword, value)


def _slice(ds, iop: list[float], ipp: list[float], k: int) -> None:
    """The per-slice position attributes of slice ``k`` (0-based, in file order)."""
    _fresh(ds, "ImagePositionPatient", [_ds(v) for v in ipp])
    _fresh(ds, "SliceLocation", _ds(float(np.dot(ipp, np.cross(iop[:3], iop[3:])))))
    _fresh(ds, "InstanceNumber", k + 1)


# ------------------------------------------------------------------------------------------------ CT


def write_ct_series(case, out_dir: Path, seed: int) -> list[Path]:
    """Write ``case.ct`` (HU, native CT grid) as one CT Image Storage file per slice in ``out_dir``.

    Stored values are ``HU + 1024`` as uint16 with RescaleIntercept -1024 (as most scanners do) when the
    HU range allows it, else signed int16 with intercept 0; both are lossless for integer HU.
    """
    img, iop, ipps, arr = _slices(case.ct)
    hu = np.rint(arr).astype(np.int32)
    if hu.min() >= -1024 and hu.max() <= 65535 - 1024:
        stored, intercept, signed = (hu + 1024).astype(np.uint16), -1024, False
    elif hu.min() >= -32768 and hu.max() <= 32767:
        stored, intercept, signed = hu.astype(np.int16), 0, True
    else:
        raise InputError(f"case {case.case_id}: CT values {hu.min()}..{hu.max()} HU do not fit 16 bits")
    series_uid = case_uid(seed, case.case_id, "CT", "series")
    scan = _parse_time(case.meta, "acquisition_time", case.case_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one dataset for the series; the per-slice attributes are overwritten before each file is written
    ds = _common(case, seed, "CT", series_uid, 2, "CT whole body (synthetic)")
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    _stamp_scan_time(ds, scan)
    ds.AcquisitionNumber = 1
    ds.KVP = _ds(float(_meta(case.meta, "ct_kvp", default=120)))
    if _meta(case.meta, "ct_kernel"):
        ds.ConvolutionKernel = str(_meta(case.meta, "ct_kernel"))
    _plane(ds, img, iop)
    _image_pixel(ds, arr.shape[1], arr.shape[2], signed)
    ds.RescaleIntercept = str(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    paths = []
    for k, ipp in enumerate(ipps):
        ds.SOPInstanceUID = case_uid(seed, case.case_id, "CT", k)
        _slice(ds, iop, ipp, k)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = out_dir / f"CT_{k + 1:04d}.dcm"
        _save(ds, CT_IMAGE_STORAGE, path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------ PT


def pet_scaling(slice_bqml: np.ndarray) -> tuple[np.ndarray, float]:
    """Quantize one PET slice (Bq/ml, float) to int16 with its own RescaleSlope (as scanners do).

    The slope is ``max|v| / 32767`` written as a DS string; the stored values are computed with the
    slope *as written*, so ``stored * slope`` reproduces ``v`` to half a quantization step.
    """
    peak = float(np.max(np.abs(slice_bqml))) if slice_bqml.size else 0.0
    slope = float(_ds(peak / 32767.0)) if peak > 0 else 1.0
    if peak > 0 and slope * 32767.0 < peak:  # DS rounding went down: stay inside int16
        slope = float(_ds(slope * (1 + 1e-9) + 1e-12 * peak))
    stored = np.clip(np.rint(slice_bqml / slope), -32768, 32767).astype(np.int16)
    return stored, slope


def write_pt_series(case, out_dir: Path, seed: int) -> list:
    """Write ``case.pet`` (Bq/ml decay-corrected to scan start) as PET Image Storage files in ``out_dir``.

    Returns the written headers (in instance order, without pixel data) so the SEG can reference them.
    """
    from pydicom.dataset import Dataset

    meta = case.meta
    img, iop, ipps, arr = _slices(case.pet)
    scan = _parse_time(meta, "acquisition_time", case.case_id)
    inj = _parse_time(meta, "injection_time", case.case_id)
    if inj > scan:
        raise InputError(f"case {case.case_id}: injection_time {inj} is after acquisition_time {scan}")
    dose = _meta(meta, "injected_activity_bq")
    if dose in (None, "") or float(dose) <= 0:
        raise InputError(f"case {case.case_id}: metadata needs a positive 'injected_activity_bq'")
    if meta.get("weight_kg") in (None, ""):
        raise InputError(f"case {case.case_id}: metadata needs 'weight_kg' (PatientWeight for SUV)")
    nuclide, half_life = radionuclide(meta)
    from pydicom.sr.codedict import codes

    nuclide_code = getattr(codes.SCT, RADIONUCLIDES[nuclide][0])
    tracer = str(meta.get("tracer", "fdg"))
    pharm_name, pharm_code = _radiopharmaceutical(tracer, nuclide)
    pharm_name = str(_meta(meta, "radiopharmaceutical", default=pharm_name))

    series_uid = case_uid(seed, case.case_id, "PT", "series")
    frame_ms = int(round(float(_meta(meta, "pet_frame_s", "frame_duration_s", default=120)) * 1000))
    out_dir.mkdir(parents=True, exist_ok=True)
    # one dataset for the series; the per-slice attributes are overwritten before each file is written
    ds = _common(case, seed, "PT", series_uid, 3, f"PET {tracer.upper()} AC (synthetic)")
    ds.SOPClassUID = PET_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # PET Series module
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["WHOLE BODY", "IMAGE"]
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    ds.RandomsCorrectionMethod = "DLYD"
    ds.AttenuationCorrectionMethod = "CTAC"
    ds.ReconstructionMethod = str(_meta(meta, "pet_recon", default="OSEM"))
    ds.DecayCorrection = "START"
    ds.NumberOfSlices = len(ipps)
    _stamp_scan_time(ds, scan)
    # PET Isotope module
    rp = Dataset()
    rp.Radiopharmaceutical = pharm_name
    rp.RadiopharmaceuticalStartTime = _tm(inj)
    rp.RadiopharmaceuticalStartDateTime = inj.strftime("%Y%m%d%H%M%S.%f")
    rp.RadionuclideTotalDose = _ds(float(dose))
    rp.RadionuclideHalfLife = _ds(half_life)
    rp.RadionuclidePositronFraction = _ds(0.9686 if nuclide == "F-18" else 0.8911)
    rp.RadionuclideCodeSequence = [_code_item(nuclide_code)]
    rp.RadiopharmaceuticalCodeSequence = [_code_item(pharm_code)]
    ds.RadiopharmaceuticalInformationSequence = [rp]
    # NM/PET Patient Orientation module (type 2: present, may be empty)
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []
    # PET Image module
    _plane(ds, img, iop)
    _image_pixel(ds, arr.shape[1], arr.shape[2], signed=True)
    ds.RescaleIntercept = "0"
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = frame_ms
    ds.DecayFactor = "1"  # values already referenced to the series (scan start) time
    ds.AcquisitionNumber = 1
    datasets = []
    for k, ipp in enumerate(ipps):
        # per-slice values go into new elements, so the shallow header copies kept for the SEG stay right
        _fresh(ds, "SOPInstanceUID", case_uid(seed, case.case_id, "PT", k))
        _slice(ds, iop, ipp, k)
        _fresh(ds, "ImageIndex", k + 1)
        stored, slope = pet_scaling(arr[k])
        _fresh(ds, "RescaleSlope", _ds(slope))
        if "PixelData" in ds:
            del ds.PixelData
        datasets.append(Dataset(dict(ds.items())))  # header only, elements shared: the SEG references it
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        _save(ds, PET_IMAGE_STORAGE, out_dir / f"PT_{k + 1:04d}.dcm")
    return datasets


# ----------------------------------------------------------------------------------------------- SEG


def write_seg(case, pt_datasets: list, path: Path, seed: int) -> str:
    """Write the lesion mask (``case.seg``, PET grid) as a BINARY DICOM-SEG referencing the PT series
    (:func:`petctfm.io.dicom_seg.build_seg`, algorithm type MANUAL, deterministic UIDs and dates).

    Returns ``"lesion"`` when the mask has voxels, ``"empty"`` for a negative case (then every frame is
    stored, all zero, since highdicom cannot omit all frames; reading back gives an all-zero mask).
    """
    from petctfm.io.dicom_seg import build_seg, save_seg

    mask = _slices(case.seg)[3]  # [z, rows, cols] in the same slice order as the PT files
    if mask.shape[0] != len(pt_datasets) or (mask.shape[1], mask.shape[2]) != (
        int(pt_datasets[0].Rows),
        int(pt_datasets[0].Columns),
    ):
        raise InputError(f"case {case.case_id}: SEG grid {mask.shape} differs from the PET grid")
    scan = _parse_time(case.meta, "acquisition_time", case.case_id)
    seg = build_seg(
        mask, pt_datasets, series_number=4, series_description="Lesion segmentation (synthetic)",
        content_description="Lesions (synthetic ground truth)", manufacturer_model_name="petctfm synth",
        software_versions=SOFTWARE, tracking_id="lesions",
        tracking_uid=case_uid(seed, case.case_id, "SEG", "tracking"),
        series_instance_uid=case_uid(seed, case.case_id, "SEG", "series"),
        sop_instance_uid=case_uid(seed, case.case_id, "SEG", "instance"),
        content_creator_name="Synthetic^Generator", when=scan,
    )
    # deterministic bytes: highdicom stamps the creation time with "now"
    seg.InstanceCreationDate = _da(scan)
    seg.InstanceCreationTime = _tm(scan)
    # ... and a random DimensionOrganizationUID and a "now" contribution time: make them deterministic too
    dim_uid = case_uid(seed, case.case_id, "SEG", "dimension-organization")
    for item in list(seg.get("DimensionOrganizationSequence", [])) + list(seg.get("DimensionIndexSequence", [])):
        item.DimensionOrganizationUID = dim_uid
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = scan.strftime("%Y%m%d%H%M%S.%f")
    # the fake identifiers in every file, as in the image series
    seg.InstitutionName = pt_datasets[0].InstitutionName
    seg.AccessionNumber = pt_datasets[0].AccessionNumber
    seg.ReferringPhysicianName = pt_datasets[0].ReferringPhysicianName
    save_seg(seg, path)
    return "lesion" if mask.any() else "empty"


# ----------------------------------------------------------------------------------------------- case


def write_dicom_case(case, root: str | os.PathLike, seed: int) -> tuple[Path, str]:
    """Write ``root/<case_id>/{CT,PT,SEG}`` atomically; returns ``(case_dir, seg_status)``.

    ``seg_status`` is ``"lesion"`` or ``"empty"`` (see :func:`write_seg`).
    """
    target = Path(root) / case.case_id
    with atomic_dir(target) as tmp:
        write_ct_series(case, tmp / "CT", seed)
        pt = write_pt_series(case, tmp / "PT", seed)
        status = write_seg(case, pt, tmp / "SEG" / "seg.dcm", seed)
    return target, status
