"""Reading PET/CT DICOM trees: find studies and series, build SimpleITK volumes, read DICOM-SEG.

* :func:`scan_tree` walks a folder (any nesting, any file names, with or without ``.dcm``), reads only the
  headers (``stop_before_pixels``) and groups files by StudyInstanceUID and SeriesInstanceUID.
* :func:`pick_series` chooses the CT, PT and SEG series of one study (most slices; PT prefers
  attenuation-corrected series).
* :func:`read_volume` sorts the slices of a series along the slice normal ``row x col`` (from
  ImageOrientationPatient) by ImagePositionPatient, applies each slice's RescaleSlope/Intercept and an
  optional per-slice factor (SUV), and returns a float32 SimpleITK image in ITK/DICOM LPS geometry.
* :func:`read_seg_on` reads a DICOM-SEG (highdicom) onto the frames of the PT series it references: its lesion
  segments as one mask, its organ segments (SNOMED CT codes) as an organ map.
* :func:`read_rtstruct_on` rasterizes the lesion ROIs of an RTSTRUCT onto the PT grid (when no SEG exists).

Only uncompressed / natively decodable transfer syntaxes are supported (what pydicom decodes without
plug-ins).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.core.labels import LESION_NAME
from petctfm.io.walk import walk_files

HEADER_TAGS = [
    "StudyInstanceUID", "SeriesInstanceUID", "Modality", "PatientID", "SOPInstanceUID", "ImageType",
    "CorrectedImage", "Units", "ReferencedSeriesSequence", "StudyDate", "SeriesDate",
]


@dataclass
class SeriesInfo:
    """One series: its modality, files (paths relative to the tree root) and SOP instance UIDs."""

    uid: str
    modality: str
    files: list[str] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)
    attenuation_corrected: bool = True
    referenced_series: list[str] = field(default_factory=list)


@dataclass
class StudyInfo:
    uid: str
    patient_id: str
    series: dict[str, SeriesInfo] = field(default_factory=dict)
    folder: str = ""  # deepest folder (relative) that holds every file of the study
    duplicate_files: list[str] = field(default_factory=list)  # second copies of instances already seen


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part-10 file (128-byte preamble + ``DICM``), whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan_tree(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()
              ) -> tuple[dict[str, StudyInfo], list[tuple[str, str]]]:
    """Headers of every DICOM file under ``root``, grouped by study and series.

    Walked by :func:`petctfm.io.walk.walk_files` (regular files only, links into the tree not followed,
    ``exclude`` folders skipped). A file whose SOPInstanceUID is already in its series (a copy of the same
    study elsewhere in the tree) is not added again; it is listed in ``StudyInfo.duplicate_files``.

    Returns ``(studies, bad)``: studies by StudyInstanceUID, and ``(relative path, reason)`` for files that
    look like DICOM (``DICM`` preamble) but whose header cannot be parsed. Files without the preamble are
    ignored (not DICOM Part-10).
    """
    import pydicom

    root = Path(root)
    studies: dict[str, StudyInfo] = {}
    bad: list[tuple[str, str]] = []
    for path in walk_files(root, exclude):
        if not is_dicom_file(path):
            continue
        rel = str(path.relative_to(root))
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            modality = str(ds.Modality).upper()
        except Exception as exc:  # noqa: BLE001 - any parse error means a corrupt file
            bad.append((rel, f"unreadable DICOM header ({type(exc).__name__})"))
            continue
        study = studies.setdefault(study_uid, StudyInfo(study_uid, str(getattr(ds, "PatientID", ""))))
        series = study.series.get(series_uid)
        if series is None:
            refs = [str(item.SeriesInstanceUID) for item in getattr(ds, "ReferencedSeriesSequence", [])
                    if "SeriesInstanceUID" in item]
            corrected = [str(v).upper() for v in (getattr(ds, "CorrectedImage", None) or [])]
            series = SeriesInfo(series_uid, modality, attenuation_corrected=("ATTN" in corrected or not corrected),
                                referenced_series=refs)
            study.series[series_uid] = series
        sop = str(getattr(ds, "SOPInstanceUID", ""))
        if sop and sop in series.sop_uids:
            study.duplicate_files.append(rel)
            continue
        series.files.append(rel)
        series.sop_uids.append(sop)
    for study in studies.values():
        files = [f for s in study.series.values() for f in s.files]
        study.folder = os.path.commonpath([str(Path(f).parent) for f in files]) if files else ""
    return studies, bad


def pick_series(study: StudyInfo) -> dict[str, SeriesInfo | None]:
    """The CT, PT and SEG series of a study: ``{"CT": ..., "PT": ..., "SEG": ..., "RTSTRUCT": ...}``.

    CT and PT: the series with the most files (PT: attenuation-corrected first). SEG: one that references
    the chosen PT series, else any SEG of the study. Missing ones are None.
    """
    by_mod: dict[str, list[SeriesInfo]] = {}
    for s in study.series.values():
        by_mod.setdefault(s.modality, []).append(s)
    ct = max(by_mod.get("CT", []), key=lambda s: (len(s.files), s.uid), default=None)
    pt = max(by_mod.get("PT", []), key=lambda s: (s.attenuation_corrected, len(s.files), s.uid), default=None)
    segs = by_mod.get("SEG", [])
    seg = None
    if pt is not None:
        seg = next((s for s in segs if pt.uid in s.referenced_series), None)
    if seg is None and segs:
        seg = sorted(segs, key=lambda s: s.uid)[0]
    rt = sorted(by_mod.get("RTSTRUCT", []), key=lambda s: s.uid)[0] if by_mod.get("RTSTRUCT") else None
    return {"CT": ct, "PT": pt, "SEG": seg, "RTSTRUCT": rt}


def _geometry_of(ds: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"{where}: missing or invalid ImageOrientationPatient/ImagePositionPatient") from None
    if iop.shape != (6,) or ipp.shape != (3,):
        raise InputError(f"{where}: malformed ImageOrientationPatient/ImagePositionPatient")
    return iop, ipp


def read_volume(
    root: str | os.PathLike,
    files: list[str],
    slice_factor: Callable[[Any, str], float] | None = None,
) -> tuple[sitk.Image, list[Any]]:
    """Read one single-frame series as a float32 SimpleITK image (LPS geometry, values rescaled).

    Args:
        root: the tree root; ``files`` are relative to it (error messages name them relative).
        slice_factor: ``f(dataset, where) -> float`` multiplied into each slice after rescale (e.g. the SUV
            factor, which may differ per slice); None = 1.
    Returns:
        ``(image, datasets)`` with the datasets (pixel data released) in slice order along the normal.
    """
    import pydicom

    root = Path(root)
    if not files:
        raise InputError(f"{root}: empty series")
    slices = []
    for rel in files:
        where = rel
        try:
            ds = pydicom.dcmread(root / rel)
            arr = ds.pixel_array
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{where}: cannot read DICOM pixels ({msg})") from None
        if arr.ndim != 2:
            raise InputError(f"{where}: expected a single-frame 2D image, got pixel array {arr.shape}")
        iop, ipp = _geometry_of(ds, where)
        slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        values = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if slice_factor is not None:
            values *= np.float32(slice_factor(ds, where))
        del ds.PixelData
        slices.append((iop, ipp, values, ds, where))
    iop0 = slices[0][0]
    row, col = iop0[:3], iop0[3:]
    normal = np.cross(row, col)
    for iop, _, values, _, where in slices:
        if not np.allclose(iop, iop0, atol=1e-4):
            raise InputError(f"{where}: ImageOrientationPatient differs between slices of the series")
        if values.shape != slices[0][2].shape:
            raise InputError(f"{where}: slice size {values.shape} differs from {slices[0][2].shape}")
    slices.sort(key=lambda s: float(np.dot(s[1], normal)))
    pos = np.array([float(np.dot(s[1], normal)) for s in slices])
    if len(slices) > 1:
        steps = np.diff(pos)
        if np.any(steps < 1e-3):
            raise InputError(f"{slices[int(np.argmin(steps)) + 1][4]}: duplicate slice position in series")
        step = float(np.median(steps))
        if np.max(np.abs(steps - step)) > 0.1 * step + 1e-3:
            raise InputError(f"{slices[0][4]}: non-uniform slice spacing ({steps.min():.3f}..{steps.max():.3f} mm)"
                             " (missing slices?)")
    else:
        step = float(getattr(slices[0][3], "SliceThickness", 1.0) or 1.0)
    first = slices[0][3]
    try:
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"{slices[0][4]}: missing PixelSpacing") from None
    volume = np.stack([s[2] for s in slices])  # [z, rows (y), cols (x)] = SimpleITK array order
    img = sitk.GetImageFromArray(volume)
    img.SetSpacing((col_spacing, row_spacing, step))
    img.SetOrigin(tuple(float(v) for v in slices[0][1]))
    direction = np.stack([row, col, normal], axis=1)
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img, [s[3] for s in slices]


class SegLabels(NamedTuple):
    """A DICOM-SEG read onto the PT grid (:func:`read_seg_on`): ``lesion`` uint8 (1 = a lesion segment),
    ``organs`` uint8 in :data:`petctfm.core.labels.ORGAN_LABELS` values or None (no organ segment), and one
    line per segment left out (``ignored``: unknown codes, or mapped to ``ignore``)."""

    lesion: sitk.Image
    organs: sitk.Image | None
    ignored: list[str]


def read_seg_on(root: str | os.PathLike, seg_file: str, pt_datasets: list[Any], reference: sitk.Image,
                roles: dict[str, str] | None = None) -> SegLabels:
    """Read a DICOM-SEG onto the PT grid: its lesion segments as one mask, its organ segments as an organ map.

    Each segment's role is :func:`petctfm.io.dicom_seg.segment_role` (``roles``: segment label -> role,
    ``harmonize --label-roles``, then the SNOMED CT codes petctfm's writer uses, then the label): the lesion
    segments together are ``lesion``; an organ segment paints its organ's ORGAN_LABELS value into ``organs``
    (overlapping organ segments: the lower segment number keeps the voxel); a segment of unknown codes is left
    out with a line in ``ignored`` (``<file>: segment 3 'Vertebra L1' (...): unknown codes, ignored``).

    The SEG must reference the PT instances (``pt_datasets`` in volume slice order); frames of instances
    that the SEG omits are empty (highdicom's ``omit_empty_frames``).
    """
    import highdicom as hd

    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.io.dicom_seg import segment_role

    path = Path(root) / seg_file
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{seg_file}: cannot read DICOM-SEG ({type(exc).__name__}: {str(exc)[:100]})") from None
    uids = [str(ds.SOPInstanceUID) for ds in pt_datasets]
    referenced = {str(u) for (_, _, u) in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise InputError(f"{seg_file}: DICOM-SEG does not reference the PT series (other references not supported)")
    lesions: list[int] = []
    organs: list[tuple[int, str]] = []
    ignored: list[str] = []
    for item in seg.SegmentSequence:
        number, role = int(item.SegmentNumber), segment_role(item, roles)
        if role == "lesion":
            lesions.append(number)
        elif role is not None and role != "ignore":
            organs.append((number, role))
        else:
            codes = "/".join(str(getattr(sq[0], "CodeMeaning", "?")) for sq in
                             (item.get("SegmentedPropertyCategoryCodeSequence"),
                              item.get("SegmentedPropertyTypeCodeSequence")) if sq)
            why = "mapped to ignore" if role == "ignore" else "unknown codes (not a lesion nor one of petctfm's organs)"
            ignored.append(f"{seg_file}: segment {number} {str(getattr(item, 'SegmentLabel', ''))[:64]!r} "
                           f"({codes}): {why}, ignored")
    shape = (len(uids), int(pt_datasets[0].Rows), int(pt_datasets[0].Columns))

    def pixels(numbers: list[int], combine: bool) -> np.ndarray:
        try:
            return np.asarray(seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=combine,
                relabel=combine, assert_missing_frames_are_empty=True, skip_overlap_checks=True))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{seg_file}: cannot map DICOM-SEG frames to the PT slices ({str(exc)[:120]})") from None

    lesion = (pixels(lesions, True) > 0).astype(np.uint8) if lesions else np.zeros(shape, np.uint8)
    organ_map = None
    if organs:
        organ_map = np.zeros(shape, np.uint8)
        stack = pixels([n for n, _ in organs], False)  # [z, rows, cols, segment]
        for i, (_, name) in enumerate(organs):
            organ_map[(stack[..., i] > 0) & (organ_map == 0)] = ORGAN_LABELS[name]

    def image(arr: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(arr)  # [z, rows, cols]
        img.CopyInformation(reference)
        return img

    return SegLabels(image(lesion), None if organ_map is None else image(organ_map), ignored)


LESION_ROI = re.compile(LESION_NAME, re.IGNORECASE)  # the one lesion-name rule (core.labels)


def read_rtstruct_on(root: str | os.PathLike, rt_file: str, reference: sitk.Image) -> sitk.Image:
    """Rasterize the lesion ROIs of an RTSTRUCT onto ``reference`` (the PT grid): uint8, 1 = lesion.

    Lesion ROIs: RTROIInterpretedType GTV, or an ROI name matching
    :data:`petctfm.core.labels.LESION_NAME` (gtv, lesion, tumor, cancer, metastasis, node, lymph ...).
    Each CLOSED_PLANAR contour is mapped to the reference's continuous voxel indices, assigned to the
    nearest slice and filled with the even-odd rule (holes drawn as inner contours stay empty); a voxel is
    inside when its centre is. Contours on planes oblique to the reference slices are not supported.
    """
    import pydicom
    from matplotlib.path import Path as MplPath

    path = Path(root) / rt_file
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{rt_file}: cannot read RTSTRUCT ({type(exc).__name__})") from None
    names = {int(r.ROINumber): str(getattr(r, "ROIName", "")) for r in getattr(ds, "StructureSetROISequence", [])}
    kinds = {int(o.ReferencedROINumber): str(getattr(o, "RTROIInterpretedType", "")).upper()
             for o in getattr(ds, "RTROIObservationsSequence", [])}
    lesion_rois = {n for n in names if kinds.get(n) == "GTV" or LESION_ROI.search(names[n])}
    size = reference.GetSize()
    mask = np.zeros(size[::-1], dtype=np.uint8)  # [z, y, x]
    d = np.asarray(reference.GetDirection()).reshape(3, 3)
    inv = np.linalg.inv(d @ np.diag(reference.GetSpacing()))
    origin = np.asarray(reference.GetOrigin())
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    centres = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(float)
    for roi in getattr(ds, "ROIContourSequence", []):
        if int(roi.ReferencedROINumber) not in lesion_rois:
            continue
        per_slice: dict[int, np.ndarray] = {}
        for contour in getattr(roi, "ContourSequence", []):
            if str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                continue
            pts = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            idx = (pts - origin) @ inv.T  # continuous [x, y, z] indices
            k = int(np.round(idx[:, 2].mean()))
            if np.ptp(idx[:, 2]) > 0.5:
                raise InputError(f"{rt_file}: contour not in a plane of the PET slices (oblique RTSTRUCT)")
            if not 0 <= k < size[2] or len(pts) < 3:
                continue
            inside = MplPath(idx[:, :2]).contains_points(centres).reshape(size[1], size[0])
            per_slice[k] = per_slice.get(k, np.zeros_like(inside)) ^ inside  # even-odd: holes
        for k, filled in per_slice.items():
            mask[k] |= filled.astype(np.uint8)
    img = sitk.GetImageFromArray(mask)
    img.CopyInformation(reference)
    return img
