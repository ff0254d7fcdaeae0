"""DICOM objects for results other than masks (the masks are :mod:`petctfm.io.dicom_seg`'s): the lesion table as a
Structured Report, a picture as a Secondary Capture. Both with highdicom, both in the study of the source PT series.

* :func:`build_lesion_sr`: a **Comprehensive 3D SR, TID 1500 Measurement Report**. One measurement group per
  lesion (tracking identifier ``lesion <label>``; its place a 3D POINT at the lesion's centroid in the PT frame of
  reference, source series the PT series): metabolic volume (ml), SUVbw max / mean / peak (g/ml) and total lesion
  glycolysis (g), coded with DICOM's PET measurement concepts (CID 7466 / 7464: DCM 126032, 126400 + SCT
  Maximum / Mean, 126031, 126033); the patient totals (TMTV, total TLG, lesion count) in a last group over the
  whole SEG segment. Why an SR and not an Encapsulated PDF: the numbers stay numbers with codes and units (a
  reader, a registry or ``dcmqi`` reads them back without OCR), TID 1500 is what quantitative imaging results
  are stored as (and what OHIF and 3D Slicer show next to a SEG), and it references the SEG and the PT series it
  measures; the picture a human reads goes as the Secondary Capture beside it.
* :func:`build_secondary_capture`: an RGB picture (``report.png``) as a Secondary Capture Image in the PT's study.

UIDs are given by the caller (``petctfm predict --push`` derives them from the input and the model, so a result
stored twice is one instance). Shapes: ``rgb`` (rows, cols, 3) uint8.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def measurement(name: Any, value: Any, unit: Any, derivation: Any = None) -> Any:
    """A TID 300 numeric measurement (highdicom), or None for an unknown value (None, "", NaN: left out of its
    group). Every petctfm SR builds its measurements here (this module's lesion SR, ``response``'s report)."""
    import highdicom as hd

    if value is None or value == "" or not np.isfinite(float(value)):
        return None
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)


def unit(kind: str) -> Any:
    """The UCUM unit code of ``kind``: ``ml``, ``g``, ``%``, ``suvbw`` (SUV body weight, g/ml), ``suvlbm`` (SUV
    lean body mass, Janmahasatian), ``none``."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    table = {"ml": lambda: Code("ml", "UCUM", "milliliter"), "g": lambda: Code("g", "UCUM", "gram"),
             "%": lambda: Code("%", "UCUM", "Percent"),
             "suvbw": lambda: codes.UCUM.StandardizedUptakeValueBodyWeight,
             "suvlbm": lambda: codes.UCUM.StandardizedUptakeValueLeanBodyMassJanma,
             "none": lambda: codes.UCUM.NoUnits}
    return table[kind]()


def build_lesion_sr(table: Sequence[dict[str, Any]], totals: dict[str, Any], pt_datasets: Sequence[Any],
                    seg: Any, *, series_instance_uid: str, sop_instance_uid: str, algorithm: tuple[str, str],
                    series_number: int = 902, when: Any = None) -> Any:
    """The TID 1500 report of ``table`` (rows of ``lesions.csv``: ``label``, ``volume_ml``, ``suv_max``,
    ``suv_mean``, ``suv_peak``, ``tlg``, ``centroid_{x,y,z}_mm`` in patient LPS mm) and ``totals``
    (``lesion_count``, ``tmtv_ml``, ``total_tlg``) over the PT series ``pt_datasets`` and the DICOM-SEG ``seg``
    (segment 1 = the lesions). ``algorithm``: (name, version) of the device observer. Returns a
    ``highdicom.sr.Comprehensive3DSR``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code
    import uuid

    ml, suv, grams = unit("ml"), unit("suvbw"), unit("g")
    first = pt_datasets[0]
    source = hd.sr.SourceSeriesForSegmentation(str(first.SeriesInstanceUID))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'petctfm device ' + algorithm[0]).int}", name=algorithm[0],
            model_name=algorithm[0]))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    method = hd.sr.AlgorithmIdentification(name=algorithm[0], version=algorithm[1])
    groups = []
    for row in table:
        point = np.array([[float(row["centroid_x_mm"]), float(row["centroid_y_mm"]), float(row["centroid_z_mm"])]])
        surface = hd.sr.VolumeSurface(graphic_type=hd.sr.GraphicTypeValues3D.POINT, graphic_data=point,
                                      frame_of_reference_uid=str(first.FrameOfReferenceUID), source_series=source)
        measurements = [m for m in [
            measurement(codes.DCM.MetabolicVolume, row["volume_ml"], ml),
            measurement(codes.DCM.StandardizedUptakeValue, row["suv_max"], suv, codes.SCT.Maximum),
            measurement(codes.DCM.StandardizedUptakeValue, row["suv_mean"], suv, codes.SCT.Mean),
            measurement(codes.DCM.PeakValueWithinROI, row["suv_peak"], suv),
            measurement(codes.DCM.TotalLesionGlycolysis, row["tlg"], grams),
        ] if m is not None]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {row['label']}"),
            referenced_volume_surface=surface, finding_type=codes.SCT.Lesion, algorithm_id=method,
            measurements=measurements))
    segment = hd.sr.ReferencedSegment(sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                                      segment_number=1, source_series=source)
    whole = [measurement(codes.DCM.MetabolicVolume, totals.get("tmtv_ml") or 0.0, ml),
             measurement(codes.DCM.TotalLesionGlycolysis, totals.get("total_tlg") or 0.0, grams),
             measurement(Code("lesion-count", "99PETCTFM", "Number of lesions"),
                          totals.get("lesion_count") or 0, unit("none"))]
    groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="all lesions"),
        referenced_segment=segment, finding_type=codes.SCT.Lesion, algorithm_id=method, measurements=whole))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=Code("44139-4", "LN", "PET whole body"),
                                     imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
    optional = {} if when is None else {"content_date": when.date(), "content_time": when.time(),
                                        "series_date": when.date(), "series_time": when.time()}
    return hd.sr.Comprehensive3DSR(
        evidence=[*pt_datasets, seg], content=report, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid, instance_number=1, manufacturer="petctfm",
        is_complete=True, series_description="petctfm lesion table (research use only)", **optional)


def build_secondary_capture(rgb: np.ndarray, ref: Any, *, series_instance_uid: str, sop_instance_uid: str,
                            series_number: int = 903, description: str = "petctfm report (research use only)"
                            ) -> Any:
    """An RGB picture ``rgb`` (rows, cols, 3) uint8 as a Secondary Capture Image in the study of dataset ``ref``
    (its patient and study modules copied)."""
    import highdicom as hd

    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3], dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB picture (rows, cols, 3), got {rgb.shape}")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_instance_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=1, manufacturer="petctfm",
        patient_orientation=("L", "F"))
    sc.SeriesDescription = description
    return sc


__all__ = ["build_lesion_sr", "build_secondary_capture"]
