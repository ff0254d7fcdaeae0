"""Folder and list mode of ``petctfm predict`` (``--in FOLDER``, ``--batch LIST.csv``): many cases, one model.

:func:`predict_folder`: a background thread reads and preprocesses the next case while the current one is
inferred (:func:`petctfm.predict.predictor.predict_one`); a case that fails is listed in ``OUT/failed.csv``
(case, reason) and the others complete; finished cases (``summary.json`` present) are skipped unless
``overwrite`` and made from the same input and model (:func:`petctfm.predict.identity.stale_reason`; otherwise
redone, with a line saying why); ``OUT/cases.csv`` holds one summary row per finished case
(with ``flags``: the input's plausibility flags from its ``summary.json``, ``; ``-joined, empty when none).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from petctfm.core.errors import InputError, OutputError, PetctfmError
from petctfm.harmonize.discover import SourceCase
from petctfm.io.tables import csv_text
from petctfm.predict.outputs import SUMMARY_FILE
from petctfm.predict.predictor import Predictor, Prepared, predict_one, prepare
from petctfm.predict.sources import named_error

FAILED_CSV = "failed.csv"
CASES_CSV = "cases.csv"


def predict_folder(cases: list[SourceCase], predictor: Predictor, out: str | os.PathLike, overwrite: bool = False,
                   report: bool = True, progress: bool = True) -> dict[str, Any]:
    """Predict every case into ``out/<case_id>/``; never raises for a bad case.

    Case ``i + 1`` is read and preprocessed in a background thread while case ``i`` is inferred. Returns
    ``{"done": [...], "skipped": [...], "failed": [{"case", "reason"}], "redone": [{"case", "reason"}]}``
    (``redone``: had a stale summary.json); writes ``out/failed.csv`` (empty
    but for the header when nothing failed) and ``out/cases.csv`` (one summary row per finished case).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from petctfm.predict.identity import stale_reason

    settings = predictor.describe()
    todo, skipped, redone = [], [], []
    for c in cases:
        stored = out / c.case_id / SUMMARY_FILE
        if overwrite or not stored.is_file():
            todo.append(c)
        elif (why := stale_reason(stored, c, settings)) is not None:
            todo.append(c)
            redone.append({"case": c.case_id, "reason": why})
        else:
            skipped.append(c.case_id)
    done: list[str] = []
    failed: list[dict[str, str]] = []

    def safe_prepare(case: SourceCase) -> Prepared | Exception:
        if case.error:
            return named_error(InputError(case.error), case)
        try:
            return prepare(case, predictor)
        except Exception as exc:  # noqa: BLE001 - reported in failed.csv
            return exc

    columns = (TextColumn("predict {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar, ThreadPoolExecutor(1) as pool:
        task = bar.add_task("", total=len(todo))
        nxt = pool.submit(safe_prepare, todo[0]) if todo else None
        for i, case in enumerate(todo):
            bar.update(task, description=case.case_id)
            prep = nxt.result()
            nxt = pool.submit(safe_prepare, todo[i + 1]) if i + 1 < len(todo) else None  # overlaps inference
            try:
                if isinstance(prep, Exception):
                    raise prep
                predict_one(case, predictor, out / case.case_id, report=report, prepared=prep)
                done.append(case.case_id)
            except OutputError:  # a full disk fails every later case too: stop (exit 4), nothing half-written
                raise
            except Exception as exc:  # noqa: BLE001 - one bad case never stops the others
                reason = str(exc) if isinstance(exc, PetctfmError) else str(named_error(exc, case))
                failed.append({"case": case.case_id, "reason": " ".join(reason.split())[:400]})
            del prep
            bar.advance(task)
    write_batch_tables(out, [c.case_id for c in cases], failed)
    return {"done": done, "skipped": skipped, "failed": failed, "redone": redone}


def write_batch_tables(out: Path, case_ids: list[str], failed: list[dict[str, str]]) -> None:
    """``out/failed.csv`` (case, reason; the header alone when nothing failed) and ``out/cases.csv``: one summary
    row per case of ``case_ids`` whose ``out/<case>/summary.json`` exists (shared by folder, list and DICOMweb
    mode)."""
    import json

    from petctfm.io.atomic import atomic_write_text

    atomic_write_text(out / FAILED_CSV, csv_text(failed, ("case", "reason")))
    rows = []
    for case_id in case_ids:
        path = out / case_id / SUMMARY_FILE
        if path.is_file():
            s = json.loads(path.read_text())
            rows.append({"case": case_id, **{k: s.get(k) for k in ("lesion_count", "tmtv_ml", "total_tlg",
                                                                       "suv_max", "suv_peak")},
                         "seconds": (s.get("timings_s") or {}).get("total"),
                         "flags": "; ".join(s.get("flags") or [])})  # summary.json's plausibility flags
    atomic_write_text(out / CASES_CSV, csv_text(rows, ("case", "lesion_count", "tmtv_ml", "total_tlg", "suv_max",
                                                   "suv_peak", "seconds", "flags")))


__all__ = ["FAILED_CSV", "CASES_CSV", "predict_folder", "write_batch_tables"]
