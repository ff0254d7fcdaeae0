"""``petctfm predict --dicomweb URL``: studies from a PACS in, results back into it (docs/pacs.md).

For each study (given by UID, or found by a QIDO query, :func:`find_studies`):

1. its series are listed (:meth:`petctfm.io.dicomweb.DicomWeb.series`) and the PT series and its CT chosen
   (:func:`petctfm.io.dicomweb.pick_pet_ct`: same frame of reference, else a CT within 30 min);
2. with ``push``, the study's SEG series are checked first (:func:`already_pushed`): one made by this model
   (algorithm name and version) from this PT series with this result key (the model's weights and the settings
   that change the mask, :func:`result_key`) means the result is there: nothing is fetched, predicted or pushed;
3. the two series are fetched by WADO-RS into the instance cache (:func:`fetch_study`) and read as a DICOM
   folder is (:func:`petctfm.predict.sources.source_from_files`), predicted by
   :func:`petctfm.predict.predictor.predict_one` into ``OUT/study-<digest>/`` (the usual files), the cache
   folder of the study removed afterwards;
4. with ``push``, STOW-RS of the report picture as a Secondary Capture, the lesion table as a TID 1500 SR
   (:mod:`petctfm.io.dicom_results`) and last the DICOM-SEG (``lesions.seg.dcm``, the SEG marks the result as
   complete). Their series and instance UIDs are derived from the result key, so a push repeated after a crash
   between two stores stores the same instances again, not new ones.

A study that fails (no PT, no matching CT, missing instances, a server error after the retries, a study petctfm
refuses) is one line in ``OUT/failed.csv`` and the batch goes on; exit codes as ``--in`` (docs/reliability.md).
Study UIDs appear only as digests (``study-<digest>`` folders, ``uid#<digest>`` in messages).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from petctfm.core.errors import InputError, OutputError, PetctfmError, UsageError
from petctfm.harmonize.discover import SourceCase
from petctfm.io.dicomweb import DicomWeb, InstanceCache, SeriesMeta, derived_uid, pick_pet_ct, short_uid
from petctfm.predict.outputs import REPORT_FILE, SEG_FILE, TABLE_FILE

#: QIDO filter names of ``--query KEY=VALUE`` -> :meth:`DicomWeb.studies` arguments.
QUERY_KEYS = {"modality": "modality", "date": "date", "patient": "patient_id"}


def study_folder(study_uid: str) -> str:
    """The output / cache folder name of a study: ``study-<8 hex digits>`` (the digest :func:`short_uid` prints)."""
    return "study-" + short_uid(study_uid).split("#", 1)[1]


def parse_query(filters: list[str]) -> dict[str, str]:
    """``["modality=PT", "date=20240101-20240131", "patient=P1"]`` -> :meth:`DicomWeb.studies` keywords (modality
    PT unless given). UsageError naming ``query`` for an unknown key or a malformed date."""
    import re

    out: dict[str, str] = {"modality": "PT"}
    for item in filters:
        key, sep, value = str(item).partition("=")
        key = key.strip().lower()
        if not sep or key not in QUERY_KEYS or not value.strip():
            raise UsageError(f"query={item!r}: expected KEY=VALUE with KEY one of {', '.join(QUERY_KEYS)}",
                             arg="query")
        value = value.strip()
        if key == "date" and not re.fullmatch(r"\d{8}(-\d{8})?|\d{8}-|-\d{8}", value):
            raise UsageError(f"query={item!r}: a date is YYYYMMDD or a range YYYYMMDD-YYYYMMDD", arg="query")
        if key == "modality" and not re.fullmatch(r"[A-Za-z]{2,4}", value):
            raise UsageError(f"query={item!r}: a modality is a DICOM modality code (PT, CT)", arg="query")
        out[QUERY_KEYS[key]] = value.upper() if key == "modality" else value
    return out


def find_studies(web: DicomWeb, filters: list[str]) -> list[str]:
    """Study Instance UIDs matching the QIDO ``filters`` (:func:`parse_query`), sorted by date."""
    return [s["study"] for s in web.studies(**parse_query(filters))]


def result_key(pt: SeriesMeta, predictor: Any) -> str:
    """What identifies a result: the PT series, the model's weights and the settings that change the mask
    (threshold, TTA, overlap, spacing, fast). 16 hex digits of a BLAKE2b digest (no UID can be read from it)."""
    d = predictor.describe()
    parts = [pt.uid, d["model"].get("weights_blake2b") or str(d["model"].get("path")),
             repr([d["inference"].get(k) for k in ("threshold", "tta_flips", "overlap")]),
             repr([d["preprocessing"].get(k) for k in ("spacing_mm", "fast")])]
    return hashlib.blake2b("\n".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def seg_identity(key: str) -> dict[str, Any]:
    """UIDs and algorithm parameters of the pushed DICOM-SEG (:func:`petctfm.predict.outputs.write_seg`)."""
    return {"series_instance_uid": derived_uid("petctfm", key, "seg series"),
            "sop_instance_uid": derived_uid("petctfm", key, "seg instance"),
            "algorithm_parameters": {"petctfm_result": key}}


def already_pushed(series: list[SeriesMeta], pt: SeriesMeta, key: str, algorithm: tuple[str, str]) -> bool:
    """Whether the study's ``series`` (:meth:`DicomWeb.series`) hold a SEG series of this algorithm (name,
    version) that references the PT series and carries the result ``key`` in its algorithm parameters."""
    for seg in series:
        if seg.modality != "SEG" or pt.uid not in seg.referenced_series:
            continue
        if any(name == algorithm[0] and version == algorithm[1] and f"petctfm_result={key}" in params
               for name, version, params in seg.algorithms):
            return True
    return False


def fetch_study(web: DicomWeb, study_uid: str, cache: InstanceCache, pt: SeriesMeta | None = None,
                ct: SeriesMeta | None = None) -> tuple[SourceCase, SeriesMeta]:
    """The study's PT and CT series (chosen by :func:`pick_pet_ct` unless given) fetched into
    ``cache/study-<digest>/{PT,CT}`` and found there as ``--pet/--ct`` DICOM folders are: ``(case, pt)``;
    the case's ``rel`` names the server and the study digest (summary.json's source), never a UID."""
    from petctfm.predict.sources import source_from_files

    if pt is None or ct is None:
        pt, ct = pick_pet_ct(web.series(study_uid, ("PT", "CT")))
    folder = study_folder(study_uid)
    pt_dir = web.fetch_series(pt, cache, f"{folder}/PT")
    ct_dir = web.fetch_series(ct, cache, f"{folder}/CT")
    case = source_from_files(pt_dir, ct_dir)
    return replace(case, case_id=folder, rel=f"{web.url} {short_uid(study_uid)}"), pt


def _table(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "label" and v not in ("", None) and _is_number(v) else v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def push_results(web: DicomWeb, case_dir: Path, pt_datasets: list[Any], summary: dict[str, Any], key: str,
                 algorithm: tuple[str, str]) -> list[str]:
    """STOW-RS the results of one predicted study (module doc, step 4); returns what was stored
    (``["SC", "SR", "SEG"]``, SC only when ``report.png`` exists)."""
    import pydicom

    from petctfm.io.dicom_results import build_lesion_sr, build_secondary_capture

    seg = pydicom.dcmread(case_dir / SEG_FILE)
    stored = []
    if (case_dir / REPORT_FILE).is_file():
        import matplotlib.image as mpimg
        import numpy as np

        rgb = mpimg.imread(case_dir / REPORT_FILE)
        rgb = (np.clip(rgb[..., :3], 0, 1) * 255).round().astype(np.uint8) if rgb.dtype != np.uint8 else rgb
        sc = build_secondary_capture(rgb, pt_datasets[0], series_instance_uid=derived_uid("petctfm", key, "sc series"),
                                     sop_instance_uid=derived_uid("petctfm", key, "sc instance"))
        web.store([sc], f"report picture of {short_uid(str(seg.StudyInstanceUID))}")
        stored.append("SC")
    sr = build_lesion_sr(_table(case_dir / TABLE_FILE), summary, pt_datasets, seg,
                         series_instance_uid=derived_uid("petctfm", key, "sr series"),
                         sop_instance_uid=derived_uid("petctfm", key, "sr instance"), algorithm=algorithm)
    web.store([sr], f"lesion report of {short_uid(str(seg.StudyInstanceUID))}")
    stored.append("SR")
    web.store([seg], f"DICOM-SEG of {short_uid(str(seg.StudyInstanceUID))}")  # last: the result is complete
    stored.append("SEG")
    return stored


def predict_dicomweb(web: DicomWeb, studies: list[str], predictor: Any, out: str | os.PathLike, push: bool = False,
                     report: bool = True, cache_root: str | os.PathLike | None = None,
                     echo: Any = None) -> dict[str, Any]:
    """Predict every study of ``studies`` (Study Instance UIDs) from ``web`` into ``out/study-<digest>/`` and, with
    ``push``, store the results back (module doc). Never raises for a bad study; a full disk stops (OutputError).
    ``echo(line)``: called with one line per study as it finishes (default: nothing).

    Returns ``{"done": [...], "already": [...] (pushed before: skipped), "pushed": {case: [kinds]},
    "failed": [{"case", "reason"}]}``; writes ``out/failed.csv`` and ``out/cases.csv``
    (:func:`petctfm.predict.batch.write_batch_tables`).
    """
    from petctfm.core.version import __version__
    from petctfm.predict.batch import write_batch_tables
    from petctfm.predict.predictor import predict_one, prepare

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo = echo or (lambda line: None)
    algorithm = (predictor.model_name, __version__)
    done, already, failed, pushed, ids = [], [], [], {}, []
    with InstanceCache(cache_root) as cache:
        for study_uid in dict.fromkeys(studies):  # each study once, in the order given
            case_id = study_folder(study_uid)
            ids.append(case_id)
            try:
                series = web.series(study_uid, ("PT", "CT", "SEG"))
                pt, ct = pick_pet_ct(series)
                key = result_key(pt, predictor)
                if push and already_pushed(series, pt, key, algorithm):
                    already.append(case_id)
                    echo(f"{case_id}: the result of this model is in the PACS already: nothing pushed")
                    continue
                case, _ = fetch_study(web, study_uid, cache, pt, ct)
                prep = prepare(case, predictor)
                summary = predict_one(case, predictor, out / case_id, report=report, prepared=prep,
                                      seg_identity=seg_identity(key))
                if push:
                    if predictor.organ_only:
                        raise InputError("an organ model writes no lesion SEG: nothing to push")
                    pushed[case_id] = push_results(web, out / case_id, prep.pt_datasets, summary, key, algorithm)
                done.append(case_id)
                echo(f"{case_id}: {summary.get('lesion_count')} lesion(s), TMTV {summary.get('tmtv_ml') or 0:.1f} ml"
                     + (f"; pushed {', '.join(pushed[case_id])}" if case_id in pushed else ""))
            except OutputError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad study never stops the others
                msg = str(exc) if isinstance(exc, PetctfmError) else f"{type(exc).__name__}: {exc}"
                msg = " ".join(msg.split())[:400]
                if short_uid(study_uid) not in msg and case_id not in msg:
                    msg = f"study {short_uid(study_uid)}: {msg}"
                failed.append({"case": case_id, "reason": msg})
                echo(f"failed: {case_id}: {msg}")
            finally:
                cache.drop(case_id)
    write_batch_tables(out, ids, failed)
    return {"done": done, "already": already, "pushed": pushed, "failed": failed}


__all__ = ["QUERY_KEYS", "study_folder", "parse_query", "find_studies", "result_key", "seg_identity",
           "already_pushed", "fetch_study", "push_results", "predict_dicomweb"]
