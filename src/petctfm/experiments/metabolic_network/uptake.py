"""The cohort table of the metabolic network: per case, the SUVmean of each organ and the case's metadata.

Two sources:

- a harmonized dataset (``data``): the ground-truth organ maps ``cases/<id>/organs.npy`` on the PET channel of
  ``image.npy``, lesion voxels (``label.npy`` > 0) excluded; metadata from ``manifest.csv``;
- a folder of tables (``tables``): ``DIR/<case_id>/organs.csv`` with at least the columns ``organ, suv_mean``
  (what an organ readout such as ``petctfm predict --organs`` writes per case; lesion exclusion is then the
  writer's job), and a metadata CSV with a ``case_id`` column (``DIR/metadata.csv`` or ``DIR/manifest.csv``, or
  the file given as ``metadata``).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.errors import InputError
from petctfm.experiments.metabolic_network.plan import TABLE_COLUMNS, TABLE_FILE, TABLE_METADATA

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    """``values[i, j]``: SUVmean of organ ``organs[j]`` in case ``case_ids[i]`` (NaN: organ absent);
    ``meta[i]``: that case's metadata (strings as read); ``notes``: what was left out and why."""

    case_ids: list[str]
    organs: list[str]
    values: np.ndarray
    meta: list[dict[str, Any]]
    source: str
    notes: list[str] = field(default_factory=list)


#: An eroded organ with fewer voxels than this is measured whole (a small organ at a coarse grid).
MIN_ERODED_VOXELS = 3


def _gt_organ_suv_means(pet: np.ndarray, organs: np.ndarray, lesion: np.ndarray | None, labels: dict[str, int],
                        erode: int = 1) -> tuple[dict[str, float], int]:
    """SUVmean per organ of a ground-truth organ map, lesion voxels excluded (NaN when no voxel is left).

    Each organ is eroded by ``erode`` voxels first (6-connected; 0 = none), which keeps its edge voxels, where
    the PET blur mixes in the neighbours' uptake, out of the mean; an organ whose erosion leaves fewer than
    :data:`MIN_ERODED_VOXELS` voxels is measured whole. Returns ``(means, number of organs measured whole for
    that reason)``.

    Deliberately minimal and private: the full organ readout (volume, SUVmax/peak, SUL, PERCIST references) is
    being written separately for ``petctfm predict --organs`` (issue 24, item 2); this experiment should read its
    organ values from that module once it exists, and this function then goes.
    """
    from scipy import ndimage

    organs = np.asarray(organs)
    pet = np.asarray(pet, np.float64)
    keep = np.ones(organs.shape, bool) if lesion is None else np.asarray(lesion) == 0
    out: dict[str, float] = {}
    whole = 0
    for name, value in labels.items():
        mask = organs == value
        if erode > 0 and mask.any():
            eroded = ndimage.binary_erosion(mask, iterations=int(erode))
            if (eroded & keep).sum() >= MIN_ERODED_VOXELS:
                mask = eroded
            else:
                whole += 1
        mask &= keep
        out[name] = float(pet[mask].mean()) if mask.any() else math.nan
    return out, whole


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
            return [c.strip() for c in reader.fieldnames or []], rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot be read as CSV ({exc})") from None


def _metadata_by_id(path: Path) -> dict[str, dict[str, str]]:
    columns, rows = _read_csv(path)
    if "case_id" not in columns:
        raise InputError(f"{path}: no case_id column (columns: {', '.join(columns[:12]) or 'none'})")
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        cid = r["case_id"]
        if cid in out:
            raise InputError(f"{path}: case_id {cid!r} on two rows")
        out[cid] = r
    return out


def from_dataset(data: str | Path, erode: int = 1) -> Cohort:
    """The cohort of a harmonized dataset's ground-truth organ maps (every case of ``manifest.csv`` that has an
    ``organs.npy``), each organ eroded by ``erode`` voxels (:func:`_gt_organ_suv_means`)."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.data import format as fmt

    data = Path(data)
    if not data.is_dir():
        raise InputError(f"{data}: dataset folder not found")
    info = fmt.load_dataset_info(data)
    labels = {k: int(v) for k, v in (info.get("organ_labels") or ORGAN_LABELS).items() if k != "background"}
    manifest = data / fmt.MANIFEST_CSV
    if not manifest.is_file():
        raise InputError(f"{manifest}: not found; is {data} a finished harmonized dataset?")
    meta = _metadata_by_id(manifest)
    ids, values, metas, missing = [], [], [], []
    whole = 0
    for cid in sorted(meta):
        if not (fmt.case_dir(data, cid) / "organs.npy").is_file():
            missing.append(cid)
            continue
        case = fmt.load_case(data, cid)
        means, n_whole = _gt_organ_suv_means(case["image"][0], case["organs"], case.get("label"), labels, erode)
        whole += n_whole
        ids.append(cid)
        values.append([means[o] for o in labels])
        metas.append(meta[cid])
    if not ids:
        raise InputError(f"{data}: no case has a ground-truth organ map (cases/<id>/organs.npy); harmonize data "
                         "with organ labels (autoPET ORGANS.nii.gz) or give per-case organ tables with --tables")
    notes = [f"{len(missing)} case(s) without organs.npy left out ({', '.join(missing[:3])}"
             f"{', ...' if len(missing) > 3 else ''})"] if missing else []
    if whole:
        notes.append(f"{whole} organ value(s) (of {len(ids) * len(labels)}) measured on the whole organ: eroded by "
                     f"{erode} voxel(s) it kept fewer than {MIN_ERODED_VOXELS} voxels")
    eroded = f", organs eroded by {erode} voxel(s)" if erode else ""
    return Cohort(ids, list(labels), np.array(values, np.float64), metas,
                  f"ground-truth organ maps of {data} (lesion voxels excluded{eroded})", notes)


def from_tables(tables: str | Path, metadata: str | Path | None = None) -> Cohort:
    """The cohort of per-case ``organs.csv`` tables under ``tables`` (the contract in the module docstring)."""
    tables = Path(tables)
    if not tables.is_dir():
        raise InputError(f"{tables}: tables folder not found")
    files = sorted(p for p in tables.glob(f"*/{TABLE_FILE}") if p.is_file())
    if not files:
        raise InputError(f"{tables}: no <case_id>/{TABLE_FILE} found (each case's table needs the columns "
                         f"{', '.join(TABLE_COLUMNS)})")
    if metadata is not None:
        meta_path: Path | None = Path(metadata)
        if not meta_path.is_file():
            raise InputError(f"{meta_path}: metadata file not found")
    else:
        meta_path = next((tables / n for n in TABLE_METADATA if (tables / n).is_file()), None)
    meta = _metadata_by_id(meta_path) if meta_path is not None else {}
    per_case: dict[str, dict[str, float]] = {}
    organs: list[str] = []
    for path in files:
        columns, rows = _read_csv(path)
        lacking = [c for c in TABLE_COLUMNS if c not in columns]
        if lacking:
            raise InputError(f"{path}: no {', '.join(lacking)} column (columns: {', '.join(columns) or 'none'})")
        vals: dict[str, float] = {}
        for r in rows:
            try:
                v = float(r["suv_mean"]) if r["suv_mean"] != "" else math.nan
            except ValueError:
                raise InputError(f"{path}: suv_mean {r['suv_mean']!r} of organ {r['organ']!r} is not a number") \
                    from None
            if r["organ"] in vals:
                raise InputError(f"{path}: organ {r['organ']!r} on two rows")
            vals[r["organ"]] = v
            if r["organ"] not in organs:
                organs.append(r["organ"])
        per_case[path.parent.name] = vals
    notes: list[str] = []
    if meta_path is None:
        notes.append(f"no metadata file ({' or '.join(TABLE_METADATA)} in {tables}): no covariates, no groups")
    else:
        unknown = sorted(set(per_case) - set(meta))
        if unknown:
            raise InputError(f"{meta_path}: no row for case(s) {', '.join(unknown[:3])}"
                             f"{', ...' if len(unknown) > 3 else ''} of {tables}")
    ids = sorted(per_case)
    values = np.array([[per_case[c].get(o, math.nan) for o in organs] for c in ids], np.float64)
    return Cohort(ids, organs, values, [dict(meta.get(c, {})) for c in ids],
                  f"per-case {TABLE_FILE} tables in {tables}" + (f", metadata {meta_path}" if meta_path else ""),
                  notes)


__all__ = ["Cohort", "from_dataset", "from_tables"]
