"""The one DICOM-SEG writer: a binary lesion mask on a PT series' grid -> a highdicom BINARY Segmentation.

Used for the synthetic ground truth (:func:`petctfm.synth.dicom.write_seg`: algorithm type MANUAL,
deterministic UIDs and dates) and for predictions (:func:`petctfm.predict.outputs.write_seg`: AUTOMATIC, the
model named in the algorithm identification); the differences are the parameters of :func:`build_seg`.

One segment (``segment_label``, default "Lesion": morphologically abnormal structure / neoplasm, SNOMED CT).
Frames reference the source PT instances (same FrameOfReferenceUID). Empty frames are omitted when the mask
has voxels; an all-zero mask keeps every frame (highdicom cannot write a SEG without frames), so a reader
gets an all-zero mask back.

Shapes: ``frames`` (n_slices, rows, cols), slices in the order of ``source_images``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from petctfm.io.atomic import atomic_path


def build_seg(frames: np.ndarray, source_images: Sequence[Any], *, series_number: int, series_description: str,
              content_description: str, manufacturer_model_name: str, software_versions: str,
              algorithm: tuple[str, str] | None = None, segment_label: str = "Lesion",
              tracking_id: str = "lesions", tracking_uid: str | None = None, series_instance_uid: str | None = None,
              sop_instance_uid: str | None = None, content_label: str = "LESIONS",
              content_creator_name: str | None = None, when: dt.datetime | None = None) -> Any:
    """A highdicom BINARY ``Segmentation`` of ``frames`` (nonzero = in the segment) over ``source_images``
    (pydicom PT headers in slice order).

    ``algorithm``: ``(name, version)`` of an AUTOMATIC segmentation (family: artificial intelligence);
    None = MANUAL. UIDs default to fresh ones; ``when``: content and series date/time (default: highdicom's,
    i.e. now). A frame grid that differs from the PT series raises ``ValueError``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module otherwise
    frames = (np.asarray(frames) > 0).astype(np.uint8)
    first = source_images[0]
    if frames.shape != (len(source_images), int(first.Rows), int(first.Columns)):
        raise ValueError(f"mask {frames.shape} does not match the PT series "
                         f"({len(source_images)} x {first.Rows} x {first.Columns})")
    if algorithm is None:
        kind = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues.MANUAL}
    else:
        kind = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                "algorithm_identification": hd.AlgorithmIdentificationSequence(
                    name=algorithm[0], version=algorithm[1], family=codes.cid7162.ArtificialIntelligence)}
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=segment_label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, **kind,
        tracking_uid=tracking_uid or hd.UID(), tracking_id=tracking_id)
    optional: dict[str, Any] = {}
    if content_creator_name is not None:
        optional["content_creator_name"] = content_creator_name
    if when is not None:
        optional.update(content_date=when.date(), content_time=when.time(), series_date=when.date(),
                        series_time=when.time())
    return hd.seg.Segmentation(
        source_images=list(source_images), pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
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


__all__ = ["build_seg", "save_seg"]
