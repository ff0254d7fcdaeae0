"""``petctfm synth`` on disk: generate N cases (in parallel) and write them in the requested layouts.

Output folder::

    out_dir/autopet/<case_id>/...     autoPET NIfTI layout          (synth.layouts.write_autopet_case)
    out_dir/nnunet/...                nnU-Net v2 raw layout         (synth.layouts.write_nnunet_case)
    out_dir/dicom/<case_id>/...       CT + PT series and DICOM-SEG  (io.dicom_write.write_dicom_case)
    out_dir/metadata.csv              one row per case, sorted by case id
    out_dir/organ_covariance.json     with metabolic_structure=True only: the planted organ correlation and
                                      group differences (synth.metabolic.planted)

Determinism: case ``i`` depends only on ``(i, seed, size, sites, tracers)`` (the generator seeds each case
from these), the writers use no clock and no random UIDs, and the CSV is sorted, so the bytes written are
the same for any number of workers.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable, Sequence


FORMATS: tuple[str, ...] = ("autopet", "nnunet", "dicom")
#: The planted organ covariance of a cohort written with ``metabolic_structure=True``.
ORGAN_COVARIANCE_JSON = "organ_covariance.json"


def case_row(case) -> dict[str, Any]:
    """The metadata.csv row of a case: ``case_id`` plus every top-level, non-dict metadata value."""
    row: dict[str, Any] = {"case_id": case.case_id}
    for key, value in case.meta.items():
        if key != "case_id" and not isinstance(value, dict):
            row[key] = value
    return row


def write_case(case, out_dir: str | os.PathLike, formats: Iterable[str] = FORMATS, seed: int | None = None) -> dict:
    """Write one case in every requested layout under ``out_dir``; returns its metadata.csv row.

    ``seed`` seeds the DICOM UIDs (default ``case.meta["seed"]`` or 0). The nnU-Net ``dataset.json`` is not
    touched here (see :func:`petctfm.synth.layouts.write_nnunet_dataset_json`, called once after all cases).
    The row gets a ``dicom_seg`` column (``lesion``/``empty``) when DICOM is written.
    """
    from petctfm.synth import layouts

    formats = check_formats(formats)
    out_dir = Path(out_dir)
    seed = int(case.meta.get("seed", 0) if seed is None else seed)
    row = case_row(case)
    if "autopet" in formats:
        layouts.write_autopet_case(case, out_dir / "autopet")
    if "nnunet" in formats:
        layouts.write_nnunet_case(case, out_dir / "nnunet")
    if "dicom" in formats:
        from petctfm.synth.dicom import write_dicom_case

        _, row["dicom_seg"] = write_dicom_case(case, out_dir / "dicom", seed=seed)
    return row


def check_formats(formats: Iterable[str]) -> list[str]:
    from petctfm.core.checks import check_choices

    formats = [f.strip().lower() for f in formats if f.strip()]
    return list(dict.fromkeys(check_choices("formats", formats, FORMATS)))


def _check_choice(kind: str, values: Sequence[str] | None, known: Iterable[str]) -> list[str] | None:
    if values is None:
        return None
    from petctfm.core.checks import check_choices

    return check_choices(kind + "s", [v.strip() for v in values if v.strip()], known)


def _make_case(index: int, seed: int, size: str, sites, tracers, out_dir: str, formats: list[str],
               metabolic_structure: bool = False, organ_metastases: bool = False,
               extranodal_sites: bool = False) -> dict:
    """Generate case ``index`` and write it (runs in a worker process)."""
    from petctfm.synth import generator

    case = generator.generate_case(index, seed, size=size, sites=sites, tracers=tracers,
                                   metabolic_structure=metabolic_structure, organ_metastases=organ_metastases,
                                   extranodal_sites=extranodal_sites)
    return write_case(case, out_dir, formats, seed=seed)


def synthesize(
    out_dir: str | os.PathLike,
    n_cases: int,
    seed: int,
    size: str = "small",
    sites: Sequence[str] | None = None,
    tracers: Sequence[str] | None = None,
    formats: Iterable[str] = FORMATS,
    workers: int = 1,
    progress: bool = True,
    metabolic_structure: bool = False,
    organ_metastases: bool = False,
    extranodal_sites: bool = False,
) -> list[dict[str, Any]]:
    """Generate ``n_cases`` cases (indices 0..n-1) and write them; returns the metadata rows (sorted).

    ``workers`` > 1 runs generation + writing in a process pool ("spawn" start method: no fork of a process
    holding threads such as the progress bar's); 1 runs in this process. ``metabolic_structure``: organ uptake
    follows latent factors (:mod:`petctfm.synth.metabolic`), recorded per case in ``metadata.csv``
    (``metabolic_structure``, ``metabolic_group``, ``metabolic_log_uptake``) and for the cohort in
    ``organ_covariance.json``; off, the bytes written are those of earlier versions. ``organ_metastases``:
    advanced cases may also get lesions inside the brain, kidneys, heart or bladder
    (:func:`petctfm.synth.burden.draw_organ_metastases`), counted per case in ``metadata.csv``
    (``organ_metastases``); off, the bytes are those of earlier versions. ``extranodal_sites``: likewise adrenal,
    pleural and peritoneal lesions (:func:`petctfm.synth.burden.draw_extranodal_sites`), counted in
    ``extranodal_lesions``. Bad arguments raise
    :class:`~petctfm.core.errors.UsageError` naming the argument before anything is written.
    """
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from petctfm.synth.layouts import write_metadata_csv, write_nnunet_dataset_json

    from petctfm.core.checks import check_choice, check_int

    formats = check_formats(formats)
    n_cases = check_int("n_cases", n_cases, lo=1)
    workers = check_int("workers", workers, lo=1)
    seed = check_int("seed", seed, lo=0)
    from petctfm.synth import generator
    from petctfm.synth.sites import SITES

    check_choice("size", size, generator.SIZES)
    sites = _check_choice("site", sites, SITES)
    tracers = _check_choice("tracer", [t.lower() for t in tracers] if tracers else tracers, generator.TRACERS)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = (int(seed), size, sites, tracers, str(out_dir), formats, bool(metabolic_structure),
            bool(organ_metastases), bool(extranodal_sites))
    rows: list[dict[str, Any]] = []
    columns = (
        TextColumn("[bold]synth[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"{size} cases -> {out_dir}", total=int(n_cases))
        if int(workers) == 1:
            for i in range(int(n_cases)):
                rows.append(_make_case(i, *args))
                bar.advance(task)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(int(workers), int(n_cases)), mp_context=ctx) as pool:
                futures = [pool.submit(_make_case, i, *args) for i in range(int(n_cases))]
                try:
                    for future in as_completed(futures):
                        rows.append(future.result())
                        bar.advance(task)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    rows.sort(key=lambda r: str(r["case_id"]))
    if "nnunet" in formats:
        write_nnunet_dataset_json(out_dir / "nnunet")
    write_metadata_csv(rows, out_dir / "metadata.csv")
    covariance = out_dir / ORGAN_COVARIANCE_JSON
    if metabolic_structure:
        from petctfm.io.atomic import atomic_write_json
        from petctfm.synth.metabolic import planted

        atomic_write_json(covariance, planted(rows))
    elif covariance.is_file():  # left by an earlier run with the structure into this folder: no longer true
        covariance.unlink()
    return rows
