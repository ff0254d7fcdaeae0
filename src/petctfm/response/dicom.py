"""DICOM outputs of ``petctfm response`` when the studies were read from DICOM (docs/response.md).

- **One DICOM-SEG per DICOM study** (``baseline_lesions.seg.dcm``, ``followup_lesions.seg.dcm``), written with
  the project's one DICOM-SEG writer (:func:`petctfm.io.dicom_seg.build_seg`): each references the PT instances
  of **its own** study (and so carries that study's patient, study and frame of reference), one segment per
  match group present in that study, labelled ``lesion <number> (<status>)`` with the group number of
  ``lesions.csv`` and ``response.png``. A group's segment has the same Tracking ID (``lesion <number>``) and
  Tracking UID in both SEGs: DICOM's own way of saying "the same finding at two time points". A study without
  lesions gets no SEG (a SEG needs a segment).
- **A TID 1500 Measurement Report** (``response_sr.dcm``, Comprehensive 3D SR, highdicom) in the follow-up's
  study, with the baseline's instances as other evidence:

  - per match group and time point where it has lesions, a volumetric ROI group (TID 1411) referencing its
    segment in that study's SEG, with the group's tracking identifier (the same UID as the SEGs'), the time
    point (TID 1502: baseline / posttreatment, order 1 / 2), SULpeak (SUVlbm(Janma), or SUVbw when the lean
    body mass is unknown, peak value within ROI), SUVmax, SUVpeak (SUVbw), volume and TLG, and the group's
    match status as a qualitative evaluation;
  - per time point a whole-body group (TID 1501): TMTV, total TLG and the PERCIST target SULpeak;
  - a response group (TID 1501, follow-up time point, method PERCIST 1.0): the PERCIST category and the
    Deauville score as qualitative evaluations, the SULpeak % change.

  Values are those of ``response.json`` and ``lesions.csv`` (rounded the same way). DICOM has no codes for the
  PERCIST categories, PERCIST itself, the Deauville score or a match status, so these use a private coding
  scheme, ``99PETCTFM`` (:data:`CODES`; DICOM PS3.16 section 8: "99" schemes are local), declared in the
  Coding Scheme Identification Sequence. Measurement names and units are standard (DCM, SCT, UCUM).

Why TID 1500 and not a free-text Comprehensive SR: its measurement groups reference the SEG segments and carry
a tracking identifier per lesion across time points, which is exactly what a lesion table of a response is,
and highdicom builds and parses it (``hd.sr.MeasurementReport``), so a reader's tools (OHIF, 3D Slicer's
QuantitativeReporting, dcmqi) can list it.

Shapes: label maps (X, Y, Z) on the PET grid; SEG frames (slices, rows, cols) in the PT slice order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.io.dicom_results import measurement, unit
from petctfm.io.dicom_seg import MAX_SEGMENTS, save_seg

TOO_MANY = f"more than a DICOM-SEG of petctfm holds ({MAX_SEGMENTS})"

SEG_FILES = {"baseline": "baseline_lesions.seg.dcm", "followup": "followup_lesions.seg.dcm"}
SR_FILE = "response_sr.dcm"
SCHEME = "99PETCTFM"
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 911, 912
#: Private codes (value, meaning) of the scheme :data:`SCHEME`.
CODES = {
    "percist": ("PERCIST1.0", "PERCIST 1.0"),
    "CMR": ("CMR", "Complete metabolic response"),
    "PMR": ("PMR", "Partial metabolic response"),
    "SMD": ("SMD", "Stable metabolic disease"),
    "PMD": ("PMD", "Progressive metabolic disease"),
    "NE": ("NE", "Not evaluable"),
    "deauville": ("DEAUVILLE", "Deauville five-point score"),
    "match_status": ("MATCHSTATUS", "Lesion match status"),
    "sulpeak_change": ("SULPEAKCHANGE", "SULpeak change"),
    **{f"DS{k}": (f"DS{k}", f"Deauville score {k}") for k in range(1, 6)},
    **{s: (s.upper(), f"Lesion {s}") for s in ("matched", "split", "merged", "complex", "disappeared", "new")},
}
TIME_POINTS = {"baseline": ("baseline", 1), "followup": ("follow-up", 2)}


def code(key: str):
    """The private code of :data:`CODES` ``key`` (a pydicom ``Code`` of scheme :data:`SCHEME`)."""
    from pydicom.sr.coding import Code

    value, meaning = CODES[key]
    return Code(value, SCHEME, meaning)


def group_map(labels: np.ndarray, members: dict[int, list[int]]) -> np.ndarray:
    """(X, Y, Z) uint16 map of group numbers from a study's lesion labels (X, Y, Z; 1..n) and ``{group number:
    that study's labels in the group}``; 0 outside every group."""
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.uint16)
    for number, labs in members.items():
        for lab in labs:
            lut[int(lab)] = number
    return lut[labels]


def build_group_seg(tp: Any, groups: list[Any], side: str, uids: dict[int, str]) -> Any | None:
    """The SEG of one DICOM time point ``tp`` (:class:`petctfm.response.inputs.TimePoint` with ``pt_datasets``):
    one segment per group with lesions on ``side`` ("baseline" / "followup"), value and label the group number,
    Tracking UID ``uids[number]``. None when the study has no lesion."""
    from petctfm.core.errors import InputError
    from petctfm.core.version import __version__
    from petctfm.io.dicom_seg import SegmentSpec, build_seg

    members = {g.number: list(getattr(g, side)) for g in groups if getattr(g, side)}
    if not members:
        return None
    if len(members) > MAX_SEGMENTS:  # write_dicom_outputs checks first; a direct caller gets the one-line error
        raise InputError(f"{tp.folder}: {len(members)} lesion groups, {TOO_MANY}")
    specs = [SegmentSpec(n, f"lesion {n} ({next(g.status for g in groups if g.number == n)})", "lesion", uids[n])
             for n in sorted(members)]
    frames = np.ascontiguousarray(np.transpose(group_map(tp.labels, members), (2, 1, 0)))  # [slice, rows, cols]
    word = TIME_POINTS[side][0]
    return build_seg(frames, tp.pt_datasets, series_number=SEG_SERIES_NUMBER,
                     series_description=f"petctfm response lesions ({word})",
                     content_description=f"Lesion groups of petctfm response, {word} (research use only)",
                     manufacturer_model_name="petctfm response", software_versions=__version__,
                     algorithm=("petctfm response", __version__), tracking_id="lesion", segments=specs,
                     content_label="RESPONSE")


def _units(units: str):
    """(measurement name, unit) of SULpeak in ``units`` ("SUL": SUVlbm(Janma), "SUV": SUVbw)."""
    from pydicom.sr.codedict import codes

    if units == "SUL":
        return codes.DCM.SuvlbmJanma, unit("suvlbm")
    return codes.DCM.Suvbw, unit("suvbw")


def _time_point(side: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    word, order = TIME_POINTS[side]
    kind = codes.cid6146.Baseline if side == "baseline" else codes.cid6146.Posttreatment
    return hd.sr.TimePointContext(time_point=word, time_point_type=kind, time_point_order=order)


def _lesion_groups(rows: list[dict[str, Any]], segs: dict[str, Any], units: dict[str, str],
                   uids: dict[int, str]) -> list[Any]:
    """Per group and time point with lesions: a TID 1411 group referencing its segment (module docstring)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    suv_name, suv_unit = codes.DCM.Suvbw, unit("suvbw")
    out = []
    for side in ("baseline", "followup"):
        seg = segs.get(side)
        if seg is None:
            continue
        numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
        by_group = {int(str(d.TrackingID).split()[-1]): k for d, k in zip(seg.SegmentSequence, numbers)}
        sul_name, sul_unit = _units(units[side])
        for row in rows:
            n = int(row["number"])
            if n not in by_group:
                continue
            ms = [measurement(sul_name, row[f"{side}_sul_peak"], sul_unit, codes.DCM.PeakValueWithinROI),
                  measurement(suv_name, row[f"{side}_suv_max"], suv_unit, codes.SCT.Maximum),
                  measurement(suv_name, row[f"{side}_suv_peak"], suv_unit, codes.DCM.PeakValueWithinROI),
                  measurement(codes.SCT.Volume, row[f"{side}_volume_ml"], unit("ml")),
                  measurement(codes.DCM.TotalLesionGlycolysis, row[f"{side}_tlg"], unit("g"))]
            ms = [m for m in ms if m is not None]
            out.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=uids[n], identifier=f"lesion {n}"),
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=by_group[n]),
                time_point_context=_time_point(side), finding_type=codes.SCT.Neoplasm,
                finding_category=codes.SCT.MorphologicallyAbnormalStructure, measurements=ms,
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(code("match_status"), code(row["status"]))]))
    return out


def _whole_body_groups(result: dict[str, Any]) -> list[Any]:
    """Per time point (TID 1501): TMTV, total TLG and the PERCIST target SULpeak; then the response group."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    out = []
    for side in ("baseline", "followup"):
        r = result[side]
        ms = [measurement(codes.DCM.MetabolicVolume, r["tmtv_ml"], unit("ml")),
              measurement(codes.DCM.TotalLesionGlycolysis, r["tlg"], unit("g"))]
        name, peak_unit = _units(r["units"])  # that time point's units (SUL when its lean body mass is known)
        ms.append(measurement(name, r.get("hottest_sulpeak"), peak_unit, codes.DCM.PeakValueWithinROI))
        ms = [m for m in ms if m is not None]
        out.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(identifier=f"whole body, {TIME_POINTS[side][0]}"),
            time_point_context=_time_point(side), method=code("percist"), measurements=ms))
    pc, ds = result["percist"], result["deauville"]
    evals = [hd.sr.QualitativeEvaluation(codes.DCM.ResponseEvaluation, code(pc["category"] or "NE"))]
    if ds.get("score") is not None:
        evals.append(hd.sr.QualitativeEvaluation(code("deauville"), code(f"DS{int(ds['score'])}")))
    ms = [m for m in [measurement(code("sulpeak_change"), pc.get("change_percent"), unit("%"))]
          if m is not None]
    out.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="PERCIST response"),
        time_point_context=_time_point("followup"), method=code("percist"), measurements=ms or None,
        qualitative_evaluations=evals))
    return out


def build_response_sr(result: dict[str, Any], rows: list[dict[str, Any]], segs: dict[str, Any], base: Any,
                      fu: Any, uids: dict[int, str]) -> Any:
    """The TID 1500 Measurement Report of the response (module docstring) as a highdicom ``Comprehensive3DSR``
    in the follow-up's study; ``segs``: the two SEGs (None for a study without lesions)."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    from petctfm.core.version import __version__
    from petctfm.harmonize.load import dicom_demographics

    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="petctfm response")
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    fdg = dicom_demographics(fu.pt_datasets[0]).get("tracer") == "fdg"
    procedure = (codes.SCT.PETCTFDGImagingOfWholeBody if fdg else codes.SCT.PositronEmissionTomographyOfWholeBody)
    units = {"baseline": base.units, "followup": fu.units}
    groups = _lesion_groups(rows, segs, units, uids) + _whole_body_groups(result)
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=groups)
    evidence = [s for s in (segs.get("followup"), segs.get("baseline")) if s is not None]
    evidence = list(fu.pt_datasets) + evidence + list(base.pt_datasets)  # [0]: the follow-up study's
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_number=SR_SERIES_NUMBER, series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="petctfm",
        series_description="petctfm response (PERCIST 1.0; research use only)", is_complete=True,
        is_final=False, is_verified=False)
    sr.SoftwareVersions = __version__
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "petctfm local codes (PERCIST categories, Deauville score, match status)"
    scheme.CodingSchemeResponsibleOrganization = "petctfm"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_dicom_outputs(folder: Path, result: dict[str, Any], rows: list[dict[str, Any]], groups: list[Any],
                        base: Any, fu: Any) -> list[str]:
    """Write the SEG of each DICOM time point and, when both are DICOM, the SR into ``folder`` (atomic writes);
    returns the file names written (none when neither study is DICOM). A time point with more than MAX_SEGMENTS lesion
    groups (a SEG's limit; a noisy model) gets neither: a one-line warning, and ``result["dicom_outputs"]`` says
    why (the NIfTI, CSV and JSON outputs are written as always)."""
    import highdicom as hd

    logging.getLogger("highdicom").setLevel(logging.WARNING)
    dicom = [(side, tp) for side, tp in (("baseline", base), ("followup", fu)) if tp.pt_datasets is not None]
    counts = {side: sum(1 for g in groups if getattr(g, side)) for side, _ in dicom}
    over = [tp.folder for side, tp in dicom if counts[side] > MAX_SEGMENTS]
    if over:  # a SEG's limit: no SEG, and no SR to reference it
        why = ("DICOM outputs not written: " + ", ".join(f"{n} {side} lesion groups" for side, n in counts.items())
               + f", {TOO_MANY}")
        logging.getLogger(__name__).warning("%s: %s", over[0], why)
        result["dicom_outputs"] = why
        return []
    uids = {g.number: str(hd.UID()) for g in groups}
    segs: dict[str, Any] = {}
    files = []
    for side, tp in dicom:
        segs[side] = build_group_seg(tp, groups, side, uids)
        if segs[side] is not None:
            save_seg(segs[side], folder / SEG_FILES[side])
            files.append(SEG_FILES[side])
    if base.pt_datasets is not None and fu.pt_datasets is not None:
        save_seg(build_response_sr(result, rows, segs, base, fu, uids), folder / SR_FILE)
        files.append(SR_FILE)
    return files


__all__ = ["SEG_FILES", "SR_FILE", "SCHEME", "CODES", "code", "group_map", "build_group_seg", "build_response_sr",
           "write_dicom_outputs"]
