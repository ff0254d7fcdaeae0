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

from petctfm.core.labels import ORGAN_LABELS
from petctfm.io.atomic import atomic_path

ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC")  # highdicom.seg.SegmentAlgorithmTypeValues
KINDS = ("lesion", "organ")
# ORGAN_LABELS name -> pydicom SNOMED CT keyword (codes.SCT.<keyword>); laterality is in the segment label only
ORGAN_CODES = {"liver": "Liver", "spleen": "Spleen", "kidney_left": "Kidney", "kidney_right": "Kidney",
               "heart": "Heart", "lung_left": "Lung", "lung_right": "Lung", "bladder": "Bladder", "brain": "Brain",
               "aorta": "Aorta", "bone": "Bone", "salivary_glands": "SalivaryGland"}


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of a label map: the voxels equal to ``value``, labelled ``label`` (<= 64 characters),
    coded as a ``kind`` ("lesion" or "organ"); ``tracking_uid``: its Tracking UID (default a fresh one; the
    same UID in two studies' SEGs marks the same finding, as ``petctfm response`` does for a matched lesion)."""

    value: int
    label: str
    kind: str = "lesion"
    tracking_uid: str | None = None


def organ_key(name: str) -> str | None:
    """The :data:`petctfm.core.labels.ORGAN_LABELS` name of ``name`` ("Kidney left" -> "kidney_left"), or None."""
    key = "_".join(str(name).strip().lower().replace("-", " ").split())
    return key if key in ORGAN_LABELS and key != "background" else None


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


def build_seg(frames: np.ndarray, source_images: Sequence[Any], *, series_number: int, series_description: str,
              content_description: str, manufacturer_model_name: str, software_versions: str,
              algorithm: tuple[str, str] | None = None, segment_label: str = "Lesion",
              tracking_id: str = "lesions", tracking_uid: str | None = None, series_instance_uid: str | None = None,
              sop_instance_uid: str | None = None, content_label: str = "LESIONS",
              content_creator_name: str | None = None, when: dt.datetime | None = None,
              segments: Sequence[SegmentSpec] | None = None, algorithm_type: str | None = None) -> Any:
    """A highdicom BINARY ``Segmentation`` of ``frames`` over ``source_images`` (pydicom PT headers in slice
    order): one segment (nonzero = in it), or with ``segments`` one per spec (``frames`` a label map; segment
    i+1 = the voxels equal to ``segments[i].value``; tracking id ``"<tracking_id> <value>"``).

    ``algorithm``: ``(name, version)`` of the algorithm (family: artificial intelligence); ``algorithm_type``:
    one of :data:`ALGORITHM_TYPES`, default AUTOMATIC with an algorithm and MANUAL without (any type but
    MANUAL needs ``algorithm``). UIDs default to fresh ones; ``when``: content and series date/time (default: highdicom's,
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
        if not segments or len(segments) > 255:
            raise ValueError(f"expected 1..255 segments, got {len(segments)}")
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
    if frames.shape != (len(source_images), int(first.Rows), int(first.Columns)):
        raise ValueError(f"mask {frames.shape} does not match the PT series "
                         f"({len(source_images)} x {first.Rows} x {first.Columns})")
    kind: dict[str, Any] = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues[algorithm_type]}
    if algorithm_type != "MANUAL":
        kind["algorithm_identification"] = hd.AlgorithmIdentificationSequence(
            name=algorithm[0], version=algorithm[1], family=codes.cid7162.ArtificialIntelligence)
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


__all__ = ["ALGORITHM_TYPES", "KINDS", "ORGAN_CODES", "SegmentSpec", "organ_key", "segment_codes", "build_seg",
           "save_seg"]
