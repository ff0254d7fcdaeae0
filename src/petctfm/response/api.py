"""``petctfm response``: baseline + follow-up ``predict`` outputs -> ``response.json``, ``lesions.csv``,
``response.png`` (docs/response.md). :func:`assess_response` is the whole command; the steps live in
:mod:`.inputs`, :mod:`.register`, :mod:`.match`, :mod:`.criteria` and :mod:`.report`."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from petctfm.evaluate.percist import MARKED, Reference, deauville, measurability_threshold, percist
from petctfm.response.inputs import TimePoint, load_timepoint
from petctfm.response.match import MAX_DISTANCE_MM, MIN_OVERLAP, Group, match_lesions

RESPONSE_JSON = "response.json"
LESIONS_CSV = "lesions.csv"
REPORT_PNG = "response.png"

#: Columns of ``lesions.csv``, one row per match group.
COLUMNS = ["number", "status", "linked_by", "baseline_labels", "followup_labels",
           "baseline_suv_max", "followup_suv_max", "suv_max_change_percent",
           "baseline_suv_peak", "followup_suv_peak", "baseline_sul_peak", "followup_sul_peak",
           "sulpeak_change_percent", "baseline_volume_ml", "followup_volume_ml", "volume_change_percent",
           "baseline_tlg", "followup_tlg", "tlg_change_percent",
           "baseline_centroid_x_mm", "baseline_centroid_y_mm", "baseline_centroid_z_mm",
           "followup_centroid_x_mm", "followup_centroid_y_mm", "followup_centroid_z_mm", "centroid_distance_mm"]


def check_options(min_overlap: float = MIN_OVERLAP, max_distance_mm: float = MAX_DISTANCE_MM,
                  marked: float = MARKED, register_on: str = "pet") -> None:
    """Usage errors (exit 2) before anything is read."""
    from petctfm.core.checks import check_choice, check_float

    check_float("min_overlap", min_overlap, 0.0, 1.0, lo_open=True)
    check_float("max_distance_mm", max_distance_mm, 0.0, None, lo_open=True)
    check_float("marked", marked, 1.0, None, lo_open=True)
    check_choice("register_on", register_on, ("pet",))


def check_dates(baseline: str | os.PathLike, followup: str | os.PathLike) -> dict[str, Any]:
    """The two study dates (:func:`petctfm.response.inputs.study_date`); an :class:`InputError` (exit 3) when
    both are known and the follow-up's is before the baseline's (swapped studies). Returns ``{"baseline",
    "followup"`` (ISO dates or None), ``"interval_days"`` (None unless both are known), ``"sources"}``."""
    from petctfm.core.errors import InputError
    from petctfm.response.inputs import study_date

    (db, wb), (df, wf) = study_date(baseline), study_date(followup)
    if db is not None and df is not None and df < db:
        raise InputError(f"{followup}: the follow-up study date {df.isoformat()} is before the baseline's "
                         f"{db.isoformat()} ({wf} vs {wb}); are --baseline and --followup swapped?")
    return {"baseline": None if db is None else db.isoformat(), "followup": None if df is None else df.isoformat(),
            "interval_days": None if db is None or df is None else (df - db).days,
            "sources": {"baseline": wb or None, "followup": wf or None}}


def _pct(b: float | None, f: float | None) -> float | None:
    if b is None or f is None or not (b > 0) or not math.isfinite(f):
        return None
    return 100.0 * (f - b) / b


def _agg(tp: TimePoint, labels: list[int]) -> dict[str, Any]:
    """Group values at one time point: SUVmax / SUVpeak the hottest member, volume and TLG summed,
    centroid volume-weighted (LPS mm, the time point's own space)."""
    if not labels:
        return {"suv_max": None, "suv_peak": None, "sul_peak": None, "volume_ml": 0.0, "tlg": 0.0, "centroid": None}
    rows = [tp.table[k - 1] for k in labels]
    vol = sum(r["volume_ml"] for r in rows)
    c = np.array([[r["centroid_x_mm"], r["centroid_y_mm"], r["centroid_z_mm"]] for r in rows])
    w = np.array([r["volume_ml"] for r in rows])
    peak = max(r["suv_peak"] for r in rows)
    return {"suv_max": max(r["suv_max"] for r in rows), "suv_peak": peak, "sul_peak": tp.sul(peak),
            "volume_ml": vol, "tlg": sum(r["tlg"] for r in rows), "centroid": (c * w[:, None]).sum(0) / w.sum()}


def _r(v: Any, nd: int = 4) -> Any:
    if v is None:
        return None
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def _ref_json(ref: Reference | None) -> dict[str, Any] | None:
    return None if ref is None else {"mean": _r(ref.mean), "sd": _r(ref.sd), "suv_max": _r(ref.max)}


def _references(tp: TimePoint) -> tuple[Reference | None, Reference | None]:
    """Liver and blood-pool references of one time point in its units (SUL when known) with their SUVmax."""
    out = []
    for name, key in (("liver", "liver_reference"), ("blood_pool", "blood_pool_reference")):
        row = tp.organs.get(key)
        if row is None or not math.isfinite(row.get("suv_mean", math.nan)):
            out.append(None)
            continue
        f = tp.sul_factor if tp.sul_factor is not None else 1.0
        out.append(Reference(name, row["suv_mean"] * f, row.get("suv_sd", math.nan) * f, row.get("suv_max", math.nan)))
    return out[0], out[1]


def _group_rows(groups: list[Group], base: TimePoint, fu: TimePoint, fu_centroids_base: np.ndarray
                ) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        b, f = _agg(base, g.baseline), _agg(fu, g.followup)
        fc = None
        if g.followup:
            w = np.array([fu.table[k - 1]["volume_ml"] for k in g.followup])
            fc = (fu_centroids_base[np.array(g.followup) - 1] * w[:, None]).sum(0) / w.sum()
        dist = None if b["centroid"] is None or fc is None else float(np.linalg.norm(b["centroid"] - fc))
        gone = g.status == "disappeared"
        row = {"number": g.number, "status": g.status, "linked_by": g.linked_by,
               "baseline_labels": ";".join(map(str, g.baseline)), "followup_labels": ";".join(map(str, g.followup)),
               "baseline_suv_max": _r(b["suv_max"]), "followup_suv_max": _r(f["suv_max"]),
               "suv_max_change_percent": _r(-100.0 if gone else _pct(b["suv_max"], f["suv_max"]), 2),
               "baseline_suv_peak": _r(b["suv_peak"]), "followup_suv_peak": _r(f["suv_peak"]),
               "baseline_sul_peak": _r(b["sul_peak"]), "followup_sul_peak": _r(f["sul_peak"]),
               "sulpeak_change_percent": _r(-100.0 if gone else _pct(b["sul_peak"], f["sul_peak"]), 2),
               "baseline_volume_ml": _r(b["volume_ml"]), "followup_volume_ml": _r(f["volume_ml"]),
               "volume_change_percent": _r(_pct(b["volume_ml"], f["volume_ml"]), 2),
               "baseline_tlg": _r(b["tlg"]), "followup_tlg": _r(f["tlg"]),
               "tlg_change_percent": _r(_pct(b["tlg"], f["tlg"]), 2),
               "centroid_distance_mm": _r(dist, 2)}
        for side, c in (("baseline", b["centroid"]), ("followup", fc)):
            for ax, k in zip("xyz", range(3)):
                row[f"{side}_centroid_{ax}_mm"] = None if c is None else _r(c[k], 2)
        rows.append(row)
    return rows


def _totals(tp: TimePoint) -> dict[str, Any]:
    return {"tmtv_ml": _r(sum(r["volume_ml"] for r in tp.table)), "tlg": _r(sum(r["tlg"] for r in tp.table)),
            "lesion_count": tp.n}


def _label_image(tp: TimePoint) -> sitk.Image:
    from petctfm.io.images import image_from_array

    pet = tp.pet
    return image_from_array(tp.labels.astype(np.uint32), pet.GetSpacing(), pet.GetOrigin(), pet.GetDirection())


class _StudyPredictor:
    """Turns a study folder into a prediction folder with ``petctfm predict``'s own API (model loaded once), or
    passes a prediction folder through."""

    def __init__(self, model, organs_model, device: str, out: Path):
        self.model, self.organs_model, self.device, self.out = model, organs_model, device, out
        self.predictor = None

    def ensure(self, folder: str | os.PathLike, role: str) -> Path:
        from petctfm.core.errors import InputError
        from petctfm.response.inputs import PREDICT_HINT, SUMMARY

        folder = Path(folder)
        if not folder.is_dir() or (folder / SUMMARY).is_file():
            return folder  # a prediction folder (or an error load_timepoint words)
        if self.model is None:
            raise InputError(f"{folder}: not a `petctfm predict` output folder (no summary.json); {PREDICT_HINT}")
        case = study_case(folder)
        from petctfm.predict.batch import predict_folder
        from petctfm.predict.predictor import Predictor

        if self.predictor is None:
            self.predictor = Predictor.load(self.model, self.device, organs=self.organs_model)
        dest = self.out / "predict" / role
        res = predict_folder([case], self.predictor, dest, report=False, progress=False)
        if res["failed"]:
            raise InputError(f"{folder}: prediction failed: {res['failed'][0]['reason']}")
        return dest / case.case_id


def study_case(folder: Path):
    """The :class:`~petctfm.harmonize.discover.SourceCase` of a study folder, as ``petctfm predict --pet --ct``
    reads it: an autoPET-style folder (``SUV.nii.gz`` + ``CT.nii.gz`` or ``CTres.nii.gz``), else a DICOM folder
    holding a PT and a CT series (the largest of each; :func:`petctfm.predict.sources.source_from_files` with the
    folder given twice). One-line :class:`InputError` (exit 3) when it is neither."""
    from petctfm.core.errors import InputError
    from petctfm.predict.sources import source_from_files
    from petctfm.response.inputs import PREDICT_HINT

    ct = next((folder / n for n in ("CT.nii.gz", "CTres.nii.gz") if (folder / n).is_file()), None)
    if (folder / "SUV.nii.gz").is_file() and ct is not None:
        return source_from_files((folder / "SUV.nii.gz").resolve(), ct.resolve())
    try:
        return source_from_files(folder.resolve(), folder.resolve())
    except InputError as exc:
        why = str(exc).split(": ", 1)[-1]
        raise InputError(f"{folder}: neither a `petctfm predict` output folder nor a study folder (SUV.nii.gz and "
                         f"CT.nii.gz, or DICOM PT and CT series: {why}); {PREDICT_HINT}") from None


def assess_response(baseline: str | os.PathLike, followup: str | os.PathLike, out: str | os.PathLike, *,
                    baseline_pet: str | os.PathLike | None = None, followup_pet: str | os.PathLike | None = None,
                    register_on: str = "pet", min_overlap: float = MIN_OVERLAP,
                    max_distance_mm: float = MAX_DISTANCE_MM, marked: float = MARKED, report: bool = True,
                    model: str | os.PathLike | None = None, organs_model: str | os.PathLike | None = None,
                    device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Treatment response from two ``petctfm predict`` output folders (docs/response.md). Writes
    ``response.json`` (last), ``lesions.csv`` and ``response.png`` into ``out`` as one set
    (:func:`petctfm.io.atomic.atomic_outputs`) and returns the ``response.json`` dict.

    ``baseline`` / ``followup`` may also be a study folder (:func:`study_case`: autoPET-style ``SUV.nii.gz`` +
    ``CT.nii.gz`` or ``CTres.nii.gz``, or DICOM PT + CT) when ``model`` (a ``petctfm finetune`` lesion model; ``organs_model`` optional) is given:
    it is predicted first into ``out/predict/<role>/`` (:class:`_StudyPredictor`).

    Errors: :class:`~petctfm.core.errors.UsageError` (exit 2) for an option out of range, before anything is
    read; :class:`~petctfm.core.errors.OutputError` (exit 4) when ``out`` cannot be written, checked next;
    :class:`~petctfm.core.errors.InputError` (exit 3) for a folder that is not a ``predict`` output or whose
    PET is missing.
    """
    from petctfm.core.errors import UsageError
    from petctfm.io.atomic import atomic_outputs, atomic_write_bytes, atomic_write_json, atomic_write_text
    from petctfm.io.tables import csv_text
    from petctfm.response.register import register_followup, resample_labels, to_baseline_points

    check_options(min_overlap, max_distance_mm, marked, register_on)
    if Path(baseline).resolve() == Path(followup).resolve():
        raise UsageError(f"baseline={baseline}: the same folder as the follow-up; give two studies", arg="baseline")
    from petctfm.io.atomic import ensure_output_dir

    ensure_output_dir(out)
    dates = check_dates(baseline, followup)
    t0 = time.perf_counter()
    runner = _StudyPredictor(model, organs_model, device, Path(out))
    baseline, followup = runner.ensure(baseline, "baseline"), runner.ensure(followup, "followup")
    base = load_timepoint(baseline, "baseline", baseline_pet)
    fu = load_timepoint(followup, "followup", followup_pet)
    t_read = time.perf_counter()
    try:
        reg = register_followup(base.pet, fu.pet, modality=register_on, seed=seed)
    except RuntimeError as exc:  # ITK: e.g. no overlap after the moments start; one line, not a traceback
        from petctfm.core.errors import InputError

        why = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{fu.pet_path}: registration to {base.pet_path} failed ({why})") from None
    t_reg = time.perf_counter()
    from petctfm.io.images import array_xyz

    fu_on_base = array_xyz(resample_labels(_label_image(fu), base.pet, reg))
    cb = np.array([[r["centroid_x_mm"], r["centroid_y_mm"], r["centroid_z_mm"]] for r in base.table]).reshape(-1, 3)
    cf = np.array([[r["centroid_x_mm"], r["centroid_y_mm"], r["centroid_z_mm"]] for r in fu.table]).reshape(-1, 3)
    cf_base = to_baseline_points(reg, cf) if len(cf) else cf
    groups = match_lesions(base.labels, base.n, fu_on_base, fu.n, cb, cf_base, min_overlap, max_distance_mm)
    rows = _group_rows(groups, base, fu, cf_base)

    liver_b, pool_b = _references(base)
    liver_f, pool_f = _references(fu)
    thr_b, thr_b_why = measurability_threshold(liver_b, pool_b)
    thr_f, _ = measurability_threshold(liver_f, pool_f)
    peak_b = max((base.sul(r["suv_peak"]) for r in base.table), default=None)
    peak_f = max((fu.sul(r["suv_peak"]) for r in fu.table), default=None)
    new_groups = [g for g in groups if g.status == "new"]
    new_peak = {g.number: max(fu.sul(fu.table[k - 1]["suv_peak"]) for k in g.followup) for g in new_groups}
    new_max = {g.number: max(fu.table[k - 1]["suv_max"] for k in g.followup) for g in new_groups}
    pc = percist(peak_b, peak_f, thr_b, thr_f, liver_f.mean if liver_f is not None else None, new_peak)
    ds = deauville(max((r["suv_max"] for r in fu.table), default=None), liver_f, pool_f, new_max, marked)
    tb, tf = _totals(base), _totals(fu)
    counts = {s: sum(g.status == s for g in groups) for s in
              ("matched", "split", "merged", "complex", "disappeared", "new")}
    units = "SUL" if base.sul_factor is not None and fu.sul_factor is not None else "SUV"
    result = {
        "baseline": {"folder": str(base.folder), "pet": str(base.pet_path), "units": base.units,
                     "sul_factor": _r(base.sul_factor), **tb,
                     "hottest_sulpeak": _r(peak_b), "measurability_threshold": _r(thr_b),
                     "liver_reference": _ref_json(liver_b), "blood_pool_reference": _ref_json(pool_b)},
        "followup": {"folder": str(fu.folder), "pet": str(fu.pet_path), "units": fu.units,
                     "sul_factor": _r(fu.sul_factor), **tf,
                     "hottest_sulpeak": _r(peak_f), "measurability_threshold": _r(thr_f),
                     "liver_reference": _ref_json(liver_f), "blood_pool_reference": _ref_json(pool_f)},
        "study_dates": dates,
        "units": units,
        "units_note": ("" if units == "SUL" else "lean body mass unknown (no organs.csv with sul_mean): SUV used "
                       "for SULpeak; the 30 % criteria hold, the 0.8 absolute criterion is applied in SUV units"),
        "percist": {**pc.to_json(), "threshold_rule": thr_b_why, "version": "PERCIST 1.0 (Wahl 2009)"},
        "deauville": ds,
        "tmtv": {"baseline_ml": _r(tb["tmtv_ml"]), "followup_ml": _r(tf["tmtv_ml"]),
                 "change_percent": _r(_pct(tb["tmtv_ml"], tf["tmtv_ml"]), 2)},
        "tlg": {"baseline": _r(tb["tlg"]), "followup": _r(tf["tlg"]), "change_percent": _r(_pct(tb["tlg"], tf["tlg"]), 2)},
        "lesions": counts,
        "registration": reg.to_json(),
        "matching": {"min_overlap": min_overlap, "max_distance_mm": max_distance_mm, "connectivity": 18},
        "note": "research software on its own predictions; not a medical device",
    }
    t_match = time.perf_counter()
    with atomic_outputs(out, RESPONSE_JSON) as tmp:
        atomic_write_text(tmp / LESIONS_CSV, csv_text(rows, COLUMNS))
        files = [LESIONS_CSV]
        if base.pt_datasets is not None or fu.pt_datasets is not None:  # DICOM in: SEGs (+ SR) out
            from petctfm.response.dicom import write_dicom_outputs

            files += write_dicom_outputs(tmp, result, rows, groups, base, fu)
        if report:
            from petctfm.response.report import render_response

            title = (f"PERCIST {pc.category or '-'} ({pc.reason})   Deauville {ds['score'] or '-'}   "
                     f"TMTV {tb['tmtv_ml']:.1f} -> {tf['tmtv_ml']:.1f} ml")
            png = render_response(base.pet, _label_image(base), fu.pet, _label_image(fu), groups, rows, title)
            atomic_write_bytes(tmp / REPORT_PNG, png)
            files.append(REPORT_PNG)
        t_end = time.perf_counter()
        result["outputs"] = files + [RESPONSE_JSON]
        result["timings_s"] = {"read": round(t_read - t0, 3), "register": round(t_reg - t_read, 3),
                               "match_and_criteria": round(t_match - t_reg, 3), "write": round(t_end - t_match, 3)}
        result = json.loads(json.dumps(result, default=str))
        atomic_write_json(tmp / RESPONSE_JSON, result)
    return result


__all__ = ["assess_response", "check_options", "check_dates", "COLUMNS", "RESPONSE_JSON", "LESIONS_CSV", "REPORT_PNG"]
