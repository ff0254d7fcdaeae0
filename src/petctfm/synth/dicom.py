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

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_dir
from petctfm.synth.dicom_tags import (
    RADIONUCLIDES, SOFTWARE, case_uid, code_item, common_modules, fmt_da, fmt_ds, fmt_tm, fresh_element, image_pixel_module, meta_value, parse_time, plane_module, radionuclide, radiopharmaceutical, save_dataset, slice_module, slices_of, stamp_scan_time,
)

if TYPE_CHECKING:
    pass

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"

# ------------------------------------------------------------------------------------------------ CT


def write_ct_series(case, out_dir: Path, seed: int) -> list[Path]:
    """Write ``case.ct`` (HU, native CT grid) as one CT Image Storage file per slice in ``out_dir``.

    Stored values are ``HU + 1024`` as uint16 with RescaleIntercept -1024 (as most scanners do) when the
    HU range allows it, else signed int16 with intercept 0; both are lossless for integer HU.
    """
    img, iop, ipps, arr = slices_of(case.ct)
    hu = np.rint(arr).astype(np.int32)
    if hu.min() >= -1024 and hu.max() <= 65535 - 1024:
        stored, intercept, signed = (hu + 1024).astype(np.uint16), -1024, False
    elif hu.min() >= -32768 and hu.max() <= 32767:
        stored, intercept, signed = hu.astype(np.int16), 0, True
    else:
        raise InputError(f"case {case.case_id}: CT values {hu.min()}..{hu.max()} HU do not fit 16 bits")
    series_uid = case_uid(seed, case.case_id, "CT", "series")
    scan = parse_time(case.meta, "acquisition_time", case.case_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one dataset for the series; the per-slice attributes are overwritten before each file is written
    ds = common_modules(case, seed, "CT", series_uid, 2, "CT whole body (synthetic)")
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    stamp_scan_time(ds, scan)
    ds.AcquisitionNumber = 1
    ds.KVP = fmt_ds(float(meta_value(case.meta, "ct_kvp", default=120)))
    if meta_value(case.meta, "ct_kernel"):
        ds.ConvolutionKernel = str(meta_value(case.meta, "ct_kernel"))
    plane_module(ds, img, iop)
    image_pixel_module(ds, arr.shape[1], arr.shape[2], signed)
    ds.RescaleIntercept = str(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    paths = []
    for k, ipp in enumerate(ipps):
        ds.SOPInstanceUID = case_uid(seed, case.case_id, "CT", k)
        slice_module(ds, iop, ipp, k)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = out_dir / f"CT_{k + 1:04d}.dcm"
        save_dataset(ds, CT_IMAGE_STORAGE, path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------ PT


def pet_scaling(slice_bqml: np.ndarray) -> tuple[np.ndarray, float]:
    """Quantize one PET slice (Bq/ml, float) to int16 with its own RescaleSlope (as scanners do).

    The slope is ``max|v| / 32767`` written as a DS string; the stored values are computed with the
    slope *as written*, so ``stored * slope`` reproduces ``v`` to half a quantization step.
    """
    peak = float(np.max(np.abs(slice_bqml))) if slice_bqml.size else 0.0
    slope = float(fmt_ds(peak / 32767.0)) if peak > 0 else 1.0
    if peak > 0 and slope * 32767.0 < peak:  # DS rounding went down: stay inside int16
        slope = float(fmt_ds(slope * (1 + 1e-9) + 1e-12 * peak))
    stored = np.clip(np.rint(slice_bqml / slope), -32768, 32767).astype(np.int16)
    return stored, slope


def write_pt_series(case, out_dir: Path, seed: int) -> list:
    """Write ``case.pet`` (Bq/ml decay-corrected to scan start) as PET Image Storage files in ``out_dir``.

    Returns the written headers (in instance order, without pixel data) so the SEG can reference them.
    """
    from pydicom.dataset import Dataset

    meta = case.meta
    img, iop, ipps, arr = slices_of(case.pet)
    scan = parse_time(meta, "acquisition_time", case.case_id)
    inj = parse_time(meta, "injection_time", case.case_id)
    if inj > scan:
        raise InputError(f"case {case.case_id}: injection_time {inj} is after acquisition_time {scan}")
    dose = meta_value(meta, "injected_activity_bq")
    if dose in (None, "") or float(dose) <= 0:
        raise InputError(f"case {case.case_id}: metadata needs a positive 'injected_activity_bq'")
    if meta.get("weight_kg") in (None, ""):
        raise InputError(f"case {case.case_id}: metadata needs 'weight_kg' (PatientWeight for SUV)")
    nuclide, half_life = radionuclide(meta)
    from pydicom.sr.codedict import codes

    nuclide_code = getattr(codes.SCT, RADIONUCLIDES[nuclide][0])
    tracer = str(meta.get("tracer", "fdg"))
    pharm_name, pharm_code = radiopharmaceutical(tracer, nuclide)
    pharm_name = str(meta_value(meta, "radiopharmaceutical", default=pharm_name))

    series_uid = case_uid(seed, case.case_id, "PT", "series")
    frame_ms = int(round(float(meta_value(meta, "pet_frame_s", "frame_duration_s", default=120)) * 1000))
    out_dir.mkdir(parents=True, exist_ok=True)
    # one dataset for the series; the per-slice attributes are overwritten before each file is written
    ds = common_modules(case, seed, "PT", series_uid, 3, f"PET {tracer.upper()} AC (synthetic)")
    ds.SOPClassUID = PET_IMAGE_STORAGE
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # PET Series module
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["WHOLE BODY", "IMAGE"]
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    ds.RandomsCorrectionMethod = "DLYD"
    ds.AttenuationCorrectionMethod = "CTAC"
    ds.ReconstructionMethod = str(meta_value(meta, "pet_recon", default="OSEM"))
    ds.DecayCorrection = "START"
    ds.NumberOfSlices = len(ipps)
    stamp_scan_time(ds, scan)
    # PET Isotope module
    rp = Dataset()
    rp.Radiopharmaceutical = pharm_name
    rp.RadiopharmaceuticalStartTime = fmt_tm(inj)
    rp.RadiopharmaceuticalStartDateTime = inj.strftime("%Y%m%d%H%M%S.%f")
    rp.RadionuclideTotalDose = fmt_ds(float(dose))
    rp.RadionuclideHalfLife = fmt_ds(half_life)
    rp.RadionuclidePositronFraction = fmt_ds(0.9686 if nuclide == "F-18" else 0.8911)
    rp.RadionuclideCodeSequence = [code_item(nuclide_code)]
    rp.RadiopharmaceuticalCodeSequence = [code_item(pharm_code)]
    ds.RadiopharmaceuticalInformationSequence = [rp]
    # NM/PET Patient Orientation module (type 2: present, may be empty)
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []
    # PET Image module
    plane_module(ds, img, iop)
    image_pixel_module(ds, arr.shape[1], arr.shape[2], signed=True)
    ds.RescaleIntercept = "0"
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = frame_ms
    ds.DecayFactor = "1"  # values already referenced to the series (scan start) time
    ds.AcquisitionNumber = 1
    datasets = []
    for k, ipp in enumerate(ipps):
        # per-slice values go into new elements, so the shallow header copies kept for the SEG stay right
        fresh_element(ds, "SOPInstanceUID", case_uid(seed, case.case_id, "PT", k))
        slice_module(ds, iop, ipp, k)
        fresh_element(ds, "ImageIndex", k + 1)
        stored, slope = pet_scaling(arr[k])
        fresh_element(ds, "RescaleSlope", fmt_ds(slope))
        if "PixelData" in ds:
            del ds.PixelData
        datasets.append(Dataset(dict(ds.items())))  # header only, elements shared: the SEG references it
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        save_dataset(ds, PET_IMAGE_STORAGE, out_dir / f"PT_{k + 1:04d}.dcm")
    return datasets


# ----------------------------------------------------------------------------------------------- SEG


def write_seg(case, pt_datasets: list, path: Path, seed: int) -> str:
    """Write the lesion mask (``case.seg``, PET grid) as a BINARY DICOM-SEG referencing the PT series
    (:func:`petctfm.io.dicom_seg.build_seg`, algorithm type MANUAL, deterministic UIDs and dates): segment 1
    the lesions, then one segment per organ of ``case.organs`` present (SNOMED CT codes, ``Kidney left``-style
    labels; a lesion overlaps the organ it lies in), as a whole-body organ segmentation stored beside the lesion
    annotation would be; ``harmonize`` reads them into ``organs.npy``
    (:func:`petctfm.io.dicom_read.read_seg_on`).

    Returns ``"lesion"`` when the lesion mask has voxels, ``"empty"`` for a negative case (reading back gives an
    all-zero lesion mask).
    """
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.io.dicom_seg import SegmentSpec, build_seg, organ_segment_label, save_seg

    mask = slices_of(case.seg)[3]  # [z, rows, cols] in the same slice order as the PT files
    if mask.shape[0] != len(pt_datasets) or (mask.shape[1], mask.shape[2]) != (
        int(pt_datasets[0].Rows),
        int(pt_datasets[0].Columns),
    ):
        raise InputError(f"case {case.case_id}: SEG grid {mask.shape} differs from the PET grid")
    masks = [mask > 0]
    segments = [SegmentSpec(1, "Lesion", "lesion", case_uid(seed, case.case_id, "SEG", "tracking"))]
    organs = slices_of(case.organs)[3] if getattr(case, "organs", None) is not None else None
    for name, value in ORGAN_LABELS.items():
        if value and organs is not None and (organs == value).any():
            masks.append(organs == value)
            segments.append(SegmentSpec(int(value), organ_segment_label(name), "organ",
                                        case_uid(seed, case.case_id, "SEG", f"tracking-{name}")))
    scan = parse_time(case.meta, "acquisition_time", case.case_id)
    seg = build_seg(
        np.stack(masks, axis=-1), pt_datasets, series_number=4, series_description="Lesion segmentation (synthetic)",
        content_description="Lesions and organs (synthetic ground truth)", manufacturer_model_name="petctfm synth",
        software_versions=SOFTWARE, tracking_id="lesions", segments=segments,
        series_instance_uid=case_uid(seed, case.case_id, "SEG", "series"),
        sop_instance_uid=case_uid(seed, case.case_id, "SEG", "instance"),
        content_creator_name="Synthetic^Generator", when=scan,
    )
    # deterministic bytes: highdicom stamps the creation time with "now"
    seg.InstanceCreationDate = fmt_da(scan)
    seg.InstanceCreationTime = fmt_tm(scan)
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
