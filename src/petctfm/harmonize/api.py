"""Python API of harmonization: a folder (or several) of PET/CT cases -> one petctfm dataset.

:func:`harmonize_folder` is what ``petctfm harmonize`` runs: discover the cases in every input
(:mod:`petctfm.harmonize.discover`), keep this shard's share, skip the cases already written, process the rest
(:func:`petctfm.harmonize.pipeline.process_case`, in a pool of spawned worker processes when ``workers > 1``),
optionally write NIfTI copies, then finalize the dataset (:func:`petctfm.harmonize.manifest.finalize`: splits,
normalization statistics, manifest, QA report, quarantine list). :func:`finalize_dataset` is
``petctfm harmonize --finalize``. Options are a :class:`HarmonizeOptions` (or its fields as keywords); their
names mirror the CLI flags (``--ct-window`` -> ``ct_window``, ``--no-thumbnails`` -> ``thumbnails=False``,
``--format`` -> ``fmt``), and a value out of range is a UsageError naming the field before anything is read.

Example::

    from petctfm.harmonize.api import harmonize_folder

    summary = harmonize_folder("data/synth/dicom", "data/harmonized", workers=2)
    print(summary["n_cases"], [f["case_id"] for f in summary["failed"]])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

from petctfm.core.checks import check_choice, check_float, check_int, fail
from petctfm.core.errors import InputError, UsageError
from petctfm.harmonize.discover import FORMATS, SourceCase, discover, parse_shard, shard as select_shard
from petctfm.harmonize.duplicates import drop_duplicates, write_duplicates_csv
from petctfm.harmonize.manifest import finalize
from petctfm.harmonize.pipeline import (DEFAULT_CT_WINDOW, DEFAULT_SPACING, TARGET_SPACING_MM, WORK_DIR, is_done,
                                       process_case)
from petctfm.io.atomic import atomic_write_text, check_output_file, ensure_output_dir
from petctfm.io.tables import csv_text

MAPPING_COLUMNS = ["case_id", "source_root", "source_path", "format"]


def parse_spacing(values: Sequence[float] | None) -> tuple[float, float, float]:
    """Target spacing (mm) from ``spacing`` (X, Y, Z); None/empty -> ``DEFAULT_SPACING``; else three finite
    numbers in [0.5, 20] mm (:data:`~petctfm.harmonize.pipeline.TARGET_SPACING_MM`; a UsageError about
    ``spacing``)."""
    if values is None or (not isinstance(values, str) and len(values) == 0):
        return DEFAULT_SPACING
    try:
        got = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        got = ()
    lo, hi = TARGET_SPACING_MM
    if len(got) != 3 or any(not math.isfinite(v) or not lo <= v <= hi for v in got):
        raise fail("spacing", got or values, f"must be three finite numbers in [{lo:g}, {hi:g}] mm")
    return got  # type: ignore[return-value]


def parse_ct_window(values: Sequence[float]) -> tuple[float, float]:
    """The CT clip window (LO, HI) in HU: two finite numbers, LO < HI (a UsageError about ``ct_window``)."""
    try:
        got = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        got = ()
    if len(got) != 2 or not all(math.isfinite(v) for v in got) or got[0] >= got[1]:
        raise fail("ct_window", got or values, "must be two finite numbers LO < HI in HU")
    return got  # type: ignore[return-value]


def check_mapping_target(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The resolved ``--write-mapping`` target: outside the dataset folder ``out``, and a regular file or
    nothing yet (a device, FIFO or folder is refused: :func:`petctfm.io.atomic.check_output_file`)."""
    target, dataset = Path(path).expanduser().resolve(), Path(out).resolve()
    if target == dataset or dataset in target.parents:
        raise InputError(f"--write-mapping {path}: must be outside the dataset folder {out}")
    return check_output_file(path, "--write-mapping")


def write_mapping_csv(path: str | os.PathLike, out: str | os.PathLike, cases: list[SourceCase]) -> Path:
    """Pseudonym -> source path CSV at ``path``, which must lie outside the dataset folder ``out``."""
    target = check_mapping_target(path, out)
    rows = [{"case_id": c.case_id, "source_root": c.root, "source_path": c.rel, "format": c.fmt} for c in cases]
    return atomic_write_text(target, csv_text(rows, MAPPING_COLUMNS))


def finalize_dataset(dataset: str | os.PathLike, seed: int = 0, holdout_site: str | None = None) -> dict[str, Any]:
    """(Re)compute splits, statistics, manifest and QA of a harmonized ``dataset`` (after all shards ran);
    ``holdout_site``: keep that site's cases out of train/val/test, in the ``holdout`` split.

    Returns :func:`petctfm.harmonize.manifest.finalize`'s summary: ``num_cases``, ``num_failed``, ``splits``,
    ``info`` (the dataset.json content).
    """
    if not (Path(dataset) / "cases").is_dir():
        raise InputError(f"{dataset}: no cases/ folder (not a harmonize output)")
    ensure_output_dir(dataset, "--finalize DATASET")
    return finalize(dataset, seed, holdout_site=holdout_site)


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the harmonize process dies (also by SIGKILL), so that no
    orphaned worker keeps running. Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; elsewhere a daemon thread
    that polls the parent pid every second."""
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="petctfm-parent-watch").start()


def worker_pool(workers: int):
    """A spawn-context process pool whose workers die with this process (:func:`_die_with_parent`)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_die_with_parent,
                               initargs=(os.getpid(),))


def check_compatible(out: str | os.PathLike, opts: dict[str, Any]) -> None:
    """Before anything is written: the cases already in ``out`` must have been harmonized with this run's
    spacing, CT window and SUV kind (a dataset mixes none of them); otherwise a one-line UsageError naming the
    folder to remove and the options that differ (``spacing=(6.0, 6.0, 6.0) (the 2 case(s) there have ...)``;
    ``arg`` the first of them)."""
    from petctfm.data.format import CASES_DIR

    root = Path(out) / CASES_DIR
    metas = sorted(root.glob("[!.]*/meta.json")) if root.is_dir() else []
    if not metas:
        return
    import json

    try:
        old = json.loads(metas[0].read_text()).get("harmonize") or {}
    except (OSError, ValueError):
        raise InputError(f"{metas[0]}: unreadable meta.json in the existing dataset") from None
    want = {"spacing": [float(v) for v in opts["spacing"]], "ct_window": [float(v) for v in opts["ct_window"]],
            "suv": "sul" if opts.get("suv_kind") == "lbm" else "bw"}
    keys = [k for k, v in want.items()
            if k in old and (old[k] != v if k == "suv" else [float(x) for x in old[k]] != v)]
    if keys:
        shown = {k: want[k] if k == "suv" else tuple(want[k]) for k in keys}
        diff = [f"{k}={shown[k]!r} (the {len(metas)} case(s) there have {old.get(k)})" for k in keys]
        raise UsageError(f"{out}: already holds cases harmonized differently: {'; '.join(diff)}; re-run with "
                         f"the dataset's settings, or remove the folder {Path(out) / CASES_DIR} (or choose another "
                         "dataset folder) to start over", arg=keys[0])


def _run_cases(todo: list[SourceCase], out: str, opts: dict[str, Any], workers: int,
               progress: bool) -> list[dict[str, Any]]:
    """``process_case`` over ``todo``, in this process or a spawn pool of ``workers`` (:func:`worker_pool`:
    the workers die with this process); results as they finish."""
    from concurrent.futures import as_completed

    def advance() -> None:
        if bar is not None:
            bar.advance(task)

    results: list[dict[str, Any]] = []
    bar = None
    if progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn("harmonize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn())
        bar.start()
        task = bar.add_task("cases", total=len(todo))
    try:
        if workers == 1 or len(todo) <= 1:
            for c in todo:
                results.append(process_case(c, out, opts))
                advance()
        else:
            with worker_pool(workers) as pool:
                futures = [pool.submit(process_case, c, out, opts) for c in todo]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    advance()
    finally:
        if bar is not None:
            bar.stop()
    return results


@dataclass
class HarmonizeOptions:
    """How :func:`harmonize_folder` harmonizes (docs/harmonize.md); checked when made (:meth:`validate`: a
    value out of range is a :class:`~petctfm.core.errors.UsageError` naming the field, ``workers=0: ...``).

    Fields:
        fmt: input layout, one of ``auto`` (detected per input), ``autopet``, ``nnunet``, ``dicom``, ``pairs``.
        spacing: target voxel spacing (X, Y, Z) mm in [0.5, 20], default (2, 2, 3). ct_window: CT clip window
            (LO, HI) in HU, LO < HI.
        margin: margin around the body crop (mm, >= 0). suv: ``"bw"`` body-weight SUV or ``"sul"`` (lean body
            mass).
        workers: worker processes (>= 1). shard: ``"i/n"`` (0 <= i < n): process only shard i of n and do not
            finalize.
        seed: seed of the splits. salt: secret mixed into the pseudonym hashes.
        metadata: metadata CSV (default: ``metadata.csv`` in the input folder or its parent).
        metadata_id: the metadata CSV's case id column (default ``case_id``; e.g. ``"Subject ID"``).
        write_mapping: write the pseudonym -> source path CSV here (must be outside the dataset).
        thumbnails: per-case QA thumbnails. nifti: also write NIfTI copies under ``out/nifti/``.
        progress: print the case count, a progress bar and the quarantined cases (what the CLI shows).
        holdout_site: a site whose cases form the ``holdout`` split, never in train/val/test or the
            normalization statistics (``petctfm experiment label-efficiency --holdout-site``).
        label_roles: a JSON file ``{label name: role}`` (role ``lesion``, ``ignore`` or one of petctfm's organs):
            what the labels of an nnU-Net ``dataset.json`` and the segments of a DICOM-SEG (by segment label)
            are, where their names or codes do not say it (:func:`petctfm.io.label_table.read_label_roles`).
    """

    fmt: str = "auto"
    spacing: Sequence[float] | None = None
    ct_window: Sequence[float] = DEFAULT_CT_WINDOW
    margin: float = 10.0
    suv: str = "bw"
    workers: int = 1
    shard: str | None = None
    seed: int = 0
    salt: str = ""
    metadata: str | os.PathLike | None = None
    metadata_id: str | None = None
    write_mapping: str | os.PathLike | None = None
    thumbnails: bool = True
    nifti: bool = False
    progress: bool = False
    holdout_site: str | None = None
    label_roles: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "HarmonizeOptions":
        """Check every field (UsageError with ``arg=`` the field); normalizes spacing and ct_window to tuples."""
        check_choice("fmt", self.fmt, FORMATS)
        self.spacing = parse_spacing(self.spacing)
        self.ct_window = parse_ct_window(self.ct_window)
        self.margin = check_float("margin", self.margin, lo=0)
        check_choice("suv", self.suv, ("bw", "sul"))
        self.workers = check_int("workers", self.workers, lo=1)
        if self.shard:
            parse_shard(self.shard)
        self.seed = check_int("seed", self.seed)
        return self

    @classmethod
    def from_kwargs(cls, options: "HarmonizeOptions | None" = None, **kwargs: Any) -> "HarmonizeOptions":
        """``options`` (or the defaults) with the fields in ``kwargs`` replaced; an unknown name is a
        UsageError naming it and the known fields."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            raise UsageError(f"harmonize_folder: unknown option(s) {', '.join(unknown)}; the options are "
                             f"{', '.join(known)}", arg=unknown[0])
        return replace(options, **kwargs) if options is not None else cls(**kwargs)


def harmonize_folder(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    options: HarmonizeOptions | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Harmonize every case under ``inputs`` into the dataset folder ``out`` (docs/harmonize.md).

    Args:
        inputs: one input folder or a list of them (``--in``, repeatable); layouts may differ.
        out: the dataset folder (``--out``); a re-run skips the cases already written there.
        options: a :class:`HarmonizeOptions` (default: its defaults).
        **kwargs: :class:`HarmonizeOptions` fields, replacing those of ``options``
            (``harmonize_folder("raw", "ds", workers=2, spacing=(4, 4, 4))``).

    Returns:
        ``{"out", "n_found", "n_in_shard", "n_skipped", "n_done", "n_failed", "failed": [{"case_id", "reason"}],
        "finalized", "n_cases", "n_quarantined", "mapping", "duplicates"}``: ``n_done``/``n_failed``/``failed``
        are this call's cases (``n_skipped`` were already written), ``n_cases``/``n_quarantined`` the whole
        dataset after finalizing (None for a shard), ``mapping`` the mapping CSV written (or None),
        ``duplicates`` the rows of ``OUT/duplicates.csv`` (studies found twice by content, not harmonized
        again; :mod:`petctfm.harmonize.duplicates`). The output folder, when inside an input, is not read.

    Raises:
        UsageError: an option out of range or unknown, no input or output (before anything is read or written).
        InputError: an input folder not found or with no cases; a ``label_roles`` file that is missing or
            malformed; an nnU-Net ``dataset.json`` label that is neither an organ nor a lesion name nor in
            ``label_roles`` (:func:`petctfm.io.layouts.nnunet.nnunet_label_roles`).
    """
    o = HarmonizeOptions.from_kwargs(options, **kwargs).validate()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise UsageError("inputs=[]: give at least one input folder", arg="inputs")
    if not out:
        raise UsageError(f"out={out!r}: give the dataset folder", arg="out")
    out = str(out)
    opts = {"spacing": tuple(o.spacing), "ct_window": tuple(o.ct_window), "margin_mm": o.margin,
            "suv_kind": "lbm" if o.suv == "sul" else "bw", "thumbnails": o.thumbnails, "threads": 1}
    # outputs first, before anything is read or written: --out, --write-mapping, the existing dataset
    ensure_output_dir(out, "--out", create=False)
    if o.write_mapping:
        check_mapping_target(o.write_mapping, out)
    check_compatible(out, opts)
    roles = None
    if o.label_roles:
        from petctfm.io.label_table import read_label_roles

        roles = opts["label_roles"] = read_label_roles(o.label_roles)
    cases = discover(inputs, o.fmt, salt=o.salt, metadata=str(o.metadata) if o.metadata else None,
                     metadata_id=o.metadata_id, exclude=[out], label_roles=roles)
    cases, duplicates = drop_duplicates(cases, inputs, lambda c: is_done(out, c.case_id),
                                        Path(out) / WORK_DIR / "content_keys.json")
    mapping = write_mapping_csv(o.write_mapping, out, cases) if o.write_mapping else None
    mine = select_shard(cases, o.shard)
    todo = [c for c in mine if not is_done(out, c.case_id)]
    if o.progress:
        dup = f" (+{len(duplicates)} duplicate(s) skipped, see {out}/duplicates.csv)" if duplicates else ""
        print(f"{len(cases)} cases found{dup}, {len(mine)} in this shard, {len(mine) - len(todo)} already done")
    results = _run_cases(todo, out, opts, o.workers, o.progress)
    failed = [{"case_id": r["case_id"], "reason": r["reason"]} for r in results if r["status"] != "done"]
    if o.progress:
        for r in failed:
            print(f"quarantined {r['case_id']}: {r['reason']}")
    todo_ids = {c.case_id for c in todo}
    before = [c.case_id for c in mine if c.case_id not in todo_ids and is_done(out, c.case_id)]  # earlier runs
    if o.thumbnails and before:  # a run killed between a case and its thumbnail: draw it now
        from petctfm.harmonize.qa import complete_thumbnails

        complete_thumbnails(out, before)
    if o.nifti:
        from petctfm.harmonize.export import export_nifti

        for cid in [r["case_id"] for r in results if r["status"] == "done"] + before:
            if cid in before and (Path(out) / "nifti" / cid).is_dir():
                continue
            export_nifti(out, cid)
    summary: dict[str, Any] = {
        "out": out, "n_found": len(cases), "n_in_shard": len(mine), "n_skipped": len(mine) - len(todo),
        "n_done": len(results) - len(failed), "n_failed": len(failed), "failed": failed, "finalized": not o.shard,
        "n_cases": None, "n_quarantined": None, "mapping": None if mapping is None else str(mapping),
        "duplicates": duplicates,
    }
    write_duplicates_csv(out, duplicates)
    if not o.shard:
        res = finalize(out, o.seed, holdout_site=o.holdout_site)
        summary.update(n_cases=res["num_cases"], n_quarantined=res["num_failed"])
    return summary


__all__ = ["HarmonizeOptions", "harmonize_folder", "finalize_dataset", "parse_spacing", "parse_ct_window",
           "write_mapping_csv", "check_mapping_target", "check_compatible"]
