"""The one DICOM-SEG writer: a binary lesion mask on a PT series' grid -> a highdicom BINARY Segmentation.

Used for the synthetic ground truth (:func:`petctfm.synth.dicom.write_seg`: algorithm type MANUAL,
deterministic UIDs and dates) and for predictions (:func:`petctfm.predict.outputs.write_seg`: AUTOMATIC, the
model named in the algorithm identification); the differences are the parameters of :func:`build_seg`.

One segment (``segment_label``, default "Lesion": morphologically abnormal structure / neoplasm, SNOMED CT),
or, with ``segments``, one segment per object of a label map (:class:`SegmentSpec`: its value, label and kind;
a lesion is coded as above, an organ as anatomical structure / its SNOMED CT organ where :data:`ORGAN_CODES`
has one, else the generic "Organ"). The algorithm type (MANUAL, SEMIAUTOMATIC for prompted or human-corrected
masks, AUTOMATIC) is ``algorithm_type``. Frames reference the source PT instances (same FrameOfReferenceUID). Empty frames are omitted when the mask
has voxels; an all-zero mask keeps every frame (highdicom cannot write a SEG without frames), so a reader
gets an all-zero mask back.

The same code table read backwards says what a segment of any DICOM-SEG is (:func:`segment_role`: lesion, one of
petctfm's organs, or unknown), for :func:`petctfm.io.dicom_read.read_seg_on` (``harmonize``).

Shapes: ``frames`` (n_slices, rows, cols), slices in the order of ``source_images``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from petctfm.core.labels import organ_key
from petctfm.io.atomic import atomic_path

ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC")  # highdicom.seg.SegmentAlgorithmTypeValues
KINDS = ("lesion", "organ")
# ORGAN_LABELS name -> pydicom SNOMED CT keyword (codes.SCT.<keyword>); laterality is in the segment label only
# (segment_role reads it from there, or from a SegmentedPropertyTypeModifierCodeSequence Left/Right)
ORGAN_CODES = {"liver": "Liver", "spleen": "Spleen", "kidney_left": "Kidney", "kidney_right": "Kidney",
               "heart": "Heart", "lung_left": "Lung", "lung_right": "Lung", "bladder": "Bladder", "brain": "Brain",
               "aorta": "Aorta", "bone": "Bone", "salivary_glands": "SalivaryGland"}

#: Segments one petctfm DICOM-SEG holds at most (its label frames are uint8).
MAX_SEGMENTS = 255


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of a label map: the voxels equal to ``value``, labelled ``label`` (<= 64 characters),
    coded as a ``kind`` ("lesion" or "organ"); ``tracking_uid``: its Tracking UID (default a fresh one; the
    same UID in two studies' SEGs marks the same finding, as ``petctfm response`` does for a matched lesion)."""

    value: int
    label: str
    kind: str = "lesion"
    tracking_uid: str | None = None


def organ_segment_label(name: str) -> str:
    """A segment label of an organ name: ``kidney_left`` -> ``Kidney left`` (what :func:`segment_role` reads the
    side of a paired organ from, beside the codes of :func:`segment_codes`)."""
    return name.replace("_", " ").strip().capitalize()


def segment_codes(kind: str, label: str) -> tuple[Any, Any]:
    """(segmented property category, type) codes: a lesion -> (Morphologically abnormal structure, Neoplasm);
    an organ -> (Anatomical structure, its SNOMED CT code from :data:`ORGAN_CODES`, else "Organ")."""
    from pydicom.sr.codedict import codes

    if kind == "lesion":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    if kind == "organ":
        keyword = ORGAN_CODES.get(organ_key(label) or "")
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, keyword) if keyword else codes.SCT.Organ
    raise ValueError(f"segment kind {kind!r} is not one of {', '.join(KINDS)}")


#: Segmented property types read as a lesion whatever their category (pydicom ``codes.SCT`` keywords); a segment
#: whose category is Morphologically abnormal structure (SCT 49755003) is a lesion whatever its type. A lymph
#: node segment in a PET study is an involved node, as for RTSTRUCT ROIs (``core.labels.LESION_NAME``).
LESION_TYPES = ("Neoplasm", "Lesion", "Mass", "NeoplasmPrimary", "NeoplasmMetastatic", "Nodule", "LymphNode")
_LATERALITY = {"7771000": "left", "24028007": "right"}  # SCT Left, Right (SegmentedPropertyTypeModifierCode)


def _code(item: Any, sequence: str) -> tuple[str, str]:
    """(coding scheme, code value) of the first item of ``sequence`` in ``item``, ("", "") when absent."""
    seq = getattr(item, sequence, None) or []
    if not seq:
        return "", ""
    return str(getattr(seq[0], "CodingSchemeDesignator", "")).upper(), str(getattr(seq[0], "CodeValue", ""))


def _organ_codes() -> dict[str, list[str]]:
    """SNOMED CT code value -> the ORGAN_LABELS names that :data:`ORGAN_CODES` writes with it (the writer's table
    read backwards: kidney 64033007 -> kidney_left, kidney_right)."""
    from pydicom.sr.codedict import codes

    out: dict[str, list[str]] = {}
    for name, keyword in ORGAN_CODES.items():
        out.setdefault(str(getattr(codes.SCT, keyword).value), []).append(name)
    return out


def segment_role(segment: Any, roles: dict[str, str] | None = None) -> str | None:
    """What one DICOM-SEG segment (an item of ``SegmentSequence``) is: ``"lesion"``, an ORGAN_LABELS organ name,
    ``"ignore"``, or None (unknown).

    In this order: ``roles`` (``harmonize --label-roles``: segment label -> role,
    :func:`petctfm.io.label_table.label_role`); the codes (category Morphologically abnormal structure, or a type
    of :data:`LESION_TYPES` -> lesion; a type of :data:`ORGAN_CODES`, SNOMED CT, -> that organ, the side of a
    paired organ from the SegmentedPropertyTypeModifierCodeSequence (SCT Left / Right) or else the segment label,
    "Kidney left", as petctfm's writer puts it); then the segment label by the name rules of nnU-Net labels
    (:func:`petctfm.core.labels.organ_key`, :func:`~petctfm.core.labels.is_lesion_name`). A paired organ
    without a side is None.
    """
    from pydicom.sr.codedict import codes

    from petctfm.io.label_table import label_role

    label = str(getattr(segment, "SegmentLabel", "") or "")
    if roles:
        explicit = label_role(label, roles, infer=False)
        if explicit is not None:
            return explicit
    snomed = ("SCT", "SRT")  # SRT: the SNOMED designator of older objects
    category = _code(segment, "SegmentedPropertyCategoryCodeSequence")
    scheme, value = _code(segment, "SegmentedPropertyTypeCodeSequence")
    if category[0] in snomed and category[1] == str(codes.SCT.MorphologicallyAbnormalStructure.value):
        return "lesion"
    if scheme in snomed:
        if value in {str(getattr(codes.SCT, k).value) for k in LESION_TYPES}:
            return "lesion"
        candidates = _organ_codes().get(value, [])
        if len(candidates) == 1:
            return candidates[0]
        if candidates:  # a paired organ: the side from the modifier, else from the label
            side = _LATERALITY.get(_code(segment, "SegmentedPropertyTypeModifierCodeSequence")[1])
            by_label = organ_key(label)
            if side is not None:
                return next((c for c in candidates if c.endswith("_" + side)), None)
            return by_label if by_label in candidates else None
    return label_role(label, None)


def build_seg(frames: np.ndarray, source_images: Sequence[Any], *, series_number: int, series_description: str,
              content_description: str, manufacturer_model_name: str, software_versions: str,
              algorithm: tuple[str, str] | None = None, segment_label: str = "Lesion",
              tracking_id: str = "lesions", tracking_uid: str | None = None, series_instance_uid: str | None = None,
              sop_instance_uid: str | None = None, content_label: str = "LESIONS",
              content_creator_name: str | None = None, when: dt.datetime | None = None,
              segments: Sequence[SegmentSpec] | None = None, algorithm_type: str | None = None,
              algorithm_parameters: dict[str, str] | None = None) -> Any:
    """A highdicom BINARY ``Segmentation`` of ``frames`` over ``source_images`` (pydicom PT headers in slice
    order): one segment (nonzero = in it), or with ``segments`` one per spec (``frames`` a label map
    [slices, rows, cols]: segment i+1 = the voxels equal to ``segments[i].value``; or one binary mask per
    segment, [slices, rows, cols, len(segments)], where segments may overlap, e.g. a lesion inside an organ;
    tracking id ``"<tracking_id> <value>"``).

    ``algorithm``: ``(name, version)`` of the algorithm (family: artificial intelligence); ``algorithm_type``:
    one of :data:`ALGORITHM_TYPES`, default AUTOMATIC with an algorithm and MANUAL without (any type but
    MANUAL needs ``algorithm``); ``algorithm_parameters``: name -> value pairs stored in its identification
    (AlgorithmParameters; ``petctfm predict --push`` records its result key there). UIDs default to fresh ones; ``when``: content and series date/time (default: highdicom's,
    i.e. now). A frame grid that differs from the PT series raises ``ValueError``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module otherwise
    frames = np.asarray(frames)
    if segments is None:
        segments = [SegmentSpec(1, segment_label)]
        frames = (frames > 0).astype(np.uint8)
        tracking = [(tracking_id, tracking_uid or hd.UID())]
    else:
        if not segments or len(segments) > MAX_SEGMENTS:
            raise ValueError(f"expected 1..{MAX_SEGMENTS} segments, got {len(segments)}")
        if frames.ndim == 4:  # one binary mask per segment: they may overlap
            if frames.shape[3] != len(segments):
                raise ValueError(f"{frames.shape[3]} masks for {len(segments)} segments")
            frames = (frames > 0).astype(np.uint8)
        else:
            remap = np.zeros(int(max(frames.max(initial=0), max(sp.value for sp in segments))) + 1, np.uint8)
            for i, sp in enumerate(segments):
                remap[int(sp.value)] = i + 1
            frames = remap[frames.astype(np.int64)]
        tracking = [(f"{tracking_id} {sp.value}", sp.tracking_uid or hd.UID()) for sp in segments]
    algorithm_type = algorithm_type or ("MANUAL" if algorithm is None else "AUTOMATIC")
    if algorithm_type not in ALGORITHM_TYPES:
        raise ValueError(f"algorithm type {algorithm_type!r} is not one of {', '.join(ALGORITHM_TYPES)}")
    if algorithm_type != "MANUAL" and algorithm is None:
        raise ValueError(f"a {algorithm_type} segmentation needs the algorithm (name, version)")
    first = source_images[0]
    if frames.shape[:3] != (len(source_images), int(first.Rows), int(first.Columns)):
        raise ValueError(f"mask {frames.shape} does not match the PT series "
                         f"({len(source_images)} x {first.Rows} x {first.Columns})")
    kind: dict[str, Any] = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues[algorithm_type]}
    if algorithm_type != "MANUAL":
        kind["algorithm_identification"] = hd.AlgorithmIdentificationSequence(
            name=algorithm[0], version=algorithm[1], family=codes.cid7162.ArtificialIntelligence,
            parameters=dict(algorithm_parameters) if algorithm_parameters else None)
    descriptions = []
    for i, (sp, (tid, tuid)) in enumerate(zip(segments, tracking)):
        category, prop = segment_codes(sp.kind, sp.label)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=str(sp.label)[:64], segmented_property_category=category,
            segmented_property_type=prop, **kind, tracking_uid=tuid, tracking_id=tid))
    optional: dict[str, Any] = {}
    if content_creator_name is not None:
        optional["content_creator_name"] = content_creator_name
    if when is not None:
        optional.update(content_date=when.date(), content_time=when.time(), series_date=when.date(),
                        series_time=when.time())
    return hd.seg.Segmentation(
        source_images=list(source_images), pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(), series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1, manufacturer="petctfm",
        manufacturer_model_name=manufacturer_model_name, software_versions=software_versions,
        device_serial_number="0", content_description=content_description, content_label=content_label,
        series_description=series_description, omit_empty_frames=bool(frames.any()), **optional)


def save_seg(seg: Any, path: str | os.PathLike) -> Path:
    """Write a Segmentation (or any pydicom dataset) as a DICOM file, atomically; the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path


__all__ = ["ALGORITHM_TYPES", "KINDS", "LESION_TYPES", "ORGAN_CODES", "SegmentSpec", "organ_key",
           "organ_segment_label", "segment_codes",
           "segment_role", "build_seg", "save_seg"]
