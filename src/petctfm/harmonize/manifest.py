"""Finalize a harmonized dataset from its written cases: splits, normalization, manifest, QA, quarantine.

Runs after all cases are written (automatically at the end of an unsharded run, or ``petctfm harmonize
--finalize DATASET`` after all shards). It only reads ``cases/*/meta.json``, ``cases/*/image.npy`` and the
failure records in ``.work/failed/``, so it is cheap and can be re-run at any time.

Normalization statistics: per modality, mean and standard deviation of the clipped values (PET [0, 20] SUV,
CT the stored window) over ALL stored voxels of the TRAINING cases, streamed slab by slab in float64, leaving
out a case whose per-case mean is a robust outlier (median +- 5 scaled MADs, :func:`robust_outliers`), so one
absurd-but-finite case cannot shift every case's normalization; those cases are listed in
``normalization.excluded`` of dataset.json (none on a sound dataset, where the numbers are the plain pooled ones). All
voxels (not only body voxels) because that is what the loader normalizes and feeds to the network: zero
after normalization is then the mean of what the model actually sees (the MAE's masked-patch fill value).
The crop to the body keeps the air fraction moderate. PET also gets the mean and standard deviation of
``log1p`` of the clipped SUV (``normalization.PET.log1p``), the statistics of the ``log1p`` PET transform
(:func:`petctfm.data.format.select_pet_transform`, docs/pretrain.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.provenance import summarize as summarize_provenance
from petctfm.data import format as fmt
from petctfm.harmonize.duplicates import DUPLICATES_CSV, decoded_duplicates, write_duplicates_csv
from petctfm.harmonize.pipeline import FAILED_DIR, WORK_DIR, lesion_volumes
from petctfm.harmonize.qa import site_histograms, write_qa_table
from petctfm.harmonize.splits import CASE_SPLITS, make_splits
from petctfm.io.atomic import atomic_write_json, atomic_write_text
from petctfm.io.tables import csv_text

PET_CLIP = (0.0, 20.0)
MANIFEST_COLUMNS = [
    "case_id", "split", "site", "tracer", "diagnosis", "stage", "age", "sex", "weight_kg", "shape", "spacing",
    "suv_max", "liver_suv_mean", "lesion_count", "lesion_volume_ml", "lesion_volumes_ml", "ct_fov_coverage",
    "qa_status", "qa_flags",
    "source", "source_format", "source_path",
]
QUARANTINE_COLUMNS = ["case_id", "source", "source_format", "source_path", "reason"]


def read_metas(out: str | os.PathLike) -> list[dict[str, Any]]:
    """``meta.json`` of every complete case folder (temporary folders start with a dot and are skipped)."""
    root = Path(out) / fmt.CASES_DIR
    if not root.is_dir():
        return []
    metas = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / "meta.json").is_file():
            continue
        metas.append(json.loads((d / "meta.json").read_text()))
    return metas


def read_failures(out: str | os.PathLike, done: set[str]) -> list[dict[str, Any]]:
    root = Path(out) / WORK_DIR / FAILED_DIR
    rows = []
    for p in sorted(root.glob("*.json")) if root.is_dir() else []:
        rec = json.loads(p.read_text())
        if rec["case_id"] not in done:
            rows.append(rec)
    return rows


#: A train case whose clipped per-case mean lies further than this many scaled MADs (1.4826 * MAD) from the
#: median of the per-case means, and further than the floor below, is left out of the normalization statistics
#: (robust against one absurd-but-finite case; with fewer than 3 train cases nothing is left out).
OUTLIER_MADS = 5.0
OUTLIER_FLOOR = {"PET": ("relative", 0.5), "CT": ("absolute", 300.0)}


def _case_sums(out: str | os.PathLike, cid: str, clips: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Per-channel ``[sum, sum of squares, count]`` of the clipped values of one case (and ``PET.log1p``)."""
    acc = {name: [0.0, 0.0, 0] for name in (*fmt.CHANNELS, "PET.log1p")}
    image = np.load(fmt.case_dir(out, cid) / "image.npy", mmap_mode="r")
    for c, name in enumerate(fmt.CHANNELS):
        lo, hi = clips[name]
        for x0 in range(0, image.shape[1], 32):
            v = np.clip(np.asarray(image[c, x0:x0 + 32], dtype=np.float64), lo, hi)
            acc[name][0] += float(v.sum())
            acc[name][1] += float(np.square(v).sum())
            acc[name][2] += v.size
            if name == "PET":
                lv = np.log1p(v)
                acc["PET.log1p"][0] += float(lv.sum())
                acc["PET.log1p"][1] += float(np.square(lv).sum())
                acc["PET.log1p"][2] += lv.size
    return acc


def robust_outliers(case_means: dict[str, dict[str, float]]) -> list[str]:
    """Cases (of ``{case_id: {channel: clipped mean}}``) whose mean of any channel is an outlier: more than
    :data:`OUTLIER_MADS` scaled MADs and more than the channel's :data:`OUTLIER_FLOOR` from the median."""
    if len(case_means) < 3:
        return []
    bad = set()
    for name, (kind, floor) in OUTLIER_FLOOR.items():
        ids = list(case_means)
        m = np.array([case_means[c][name] for c in ids])
        med = float(np.median(m))
        mad = 1.4826 * float(np.median(np.abs(m - med)))
        limit = max(OUTLIER_MADS * mad, floor * abs(med) if kind == "relative" else floor, 1e-6)
        bad.update(c for c, v in zip(ids, m) if abs(v - med) > limit)
    return sorted(bad)


def normalization_stats(out: str | os.PathLike, case_ids: list[str], ct_window: tuple[float, float],
                        excluded: list[str] | None = None) -> dict[str, Any]:
    """Mean/std of clipped PET and CT over all voxels of ``case_ids`` (and of ``log1p`` of the clipped PET,
    ``PET.log1p``), pooled over the cases that are not outliers (:func:`robust_outliers`; their ids are
    appended to ``excluded`` when given). On a dataset without outliers: the plain pooled mean/std."""
    clips = {"PET": PET_CLIP, "CT": tuple(ct_window)}
    per_case = {cid: _case_sums(out, cid, clips) for cid in case_ids}
    outliers = robust_outliers({cid: {n: a[n][0] / max(a[n][2], 1) for n in fmt.CHANNELS}
                                for cid, a in per_case.items()})
    if excluded is not None:
        excluded.extend(outliers)
    acc = {name: [0.0, 0.0, 0] for name in (*fmt.CHANNELS, "PET.log1p")}
    for cid, a in per_case.items():
        if cid in outliers:
            continue
        for name in acc:
            acc[name] = [x + y for x, y in zip(acc[name], a[name])]
    stats: dict[str, Any] = {}
    for name, (s, ss, n) in acc.items():
        mean = s / n
        std = float(np.sqrt(max(ss / n - mean**2, 0.0)))
        ms = {"mean": round(mean, 6), "std": round(max(std, 1e-6), 6)}
        if name == "PET.log1p":
            stats["PET"]["log1p"] = ms
        else:
            stats[name] = {**ms, "clip": list(clips[name]), "voxels": int(n)}
    return stats


def finalize(out: str | os.PathLike, seed: int = 0, input_sources: list[dict[str, Any]] | None = None,
             holdout_site: str | None = None) -> dict[str, Any]:
    """Write splits.json, dataset.json, manifest.csv, quarantine.csv and qa/ from the written cases.
    ``holdout_site``: that site's cases form the ``holdout`` split (:func:`make_splits`), outside the
    train split and so outside the normalization statistics."""
    out = Path(out)
    metas = _unique_metas(out)
    failures = read_failures(out, {m["case_id"] for m in metas})
    atomic_write_text(out / fmt.QUARANTINE_CSV, csv_text(failures, QUARANTINE_COLUMNS))
    spacings = _one_spacing(out, metas)
    splits = make_splits([{"case_id": m["case_id"], "patient": m["patient"], "site": m.get("site"),
                           "tracer": m.get("tracer"), "positive": m["stats"]["lesion_count"] > 0} for m in metas],
                         seed, holdout_site)
    atomic_write_json(out / fmt.SPLITS_JSON, splits)
    info = _dataset_info(out, metas, failures, spacings, splits, holdout_site)
    fmt.write_dataset_info(out, info)
    split_of = {cid: s for s in CASE_SPLITS for cid in splits.get(s, [])}
    atomic_write_text(out / fmt.MANIFEST_CSV, csv_text(_manifest_rows(out, metas, split_of), MANIFEST_COLUMNS))
    write_qa_table(out, metas)
    site_histograms(out, metas)
    return {"num_cases": len(metas), "num_failed": len(failures), "splits": splits, "info": info}


def _unique_metas(out: Path) -> list[dict[str, Any]]:
    """The written cases (:func:`read_metas`) less the duplicates: those an earlier run recorded in
    duplicates.csv, and those found now by their decoded voxels (:func:`decoded_duplicates`, which are added
    to duplicates.csv)."""
    metas = read_metas(out)
    dup_csv = out / DUPLICATES_CSV  # harmonize.duplicates: a second copy written by an earlier run stays out
    if dup_csv.is_file():
        dups = {r["case_id"] for r in csv.DictReader(io.StringIO(dup_csv.read_text(encoding="utf-8")))}
        metas = [m for m in metas if m["case_id"] not in dups]
    decoded = decoded_duplicates(metas)  # same voxels, other file bytes: found only once read (duplicates.py)
    if decoded:
        old = list(csv.DictReader(io.StringIO(dup_csv.read_text(encoding="utf-8")))) if dup_csv.is_file() else []
        write_duplicates_csv(out, sorted(old + decoded, key=lambda r: r["case_id"]))
        gone = {r["case_id"] for r in decoded}
        metas = [m for m in metas if m["case_id"] not in gone]
    return metas


def _one_spacing(out: Path, metas: list[dict[str, Any]]) -> set[tuple]:
    """The set of harmonized spacings of ``metas`` (one element, or none without cases); InputError when the
    cases were harmonized with different spacings."""
    spacings = {tuple(m["harmonize"]["spacing"]) for m in metas}
    if len(spacings) > 1:
        from petctfm.core.errors import InputError

        raise InputError(f"{out}: cases were harmonized with different spacings {sorted(spacings)}; "
                         "use one --spacing per dataset")
    return spacings


def _dataset_info(out: Path, metas: list[dict[str, Any]], failures: list[dict[str, Any]], spacings: set[tuple],
                  splits: dict[str, Any], holdout_site: str | None) -> dict[str, Any]:
    """dataset.json's content: grid and label conventions, counts, CT window, SUV kind, the normalization
    statistics over the train split (:func:`normalization_stats`), organ labels, sources, sites, tracers."""
    ct_window = tuple(metas[0]["harmonize"]["ct_window"]) if metas else (-1000.0, 1000.0)
    info: dict[str, Any] = {
        "name": out.name,
        "description": "petctfm harmonized PET/CT (channel 0 PET SUV, channel 1 CT HU)",
        "spacing": list(next(iter(spacings))) if spacings else None,
        "orientation": "RAS",
        "axis_order": "xyz",
        "labels": {"background": 0, "lesion": 1},
        "num_cases": len(metas),
        "num_quarantined": len(failures),
        "ct_window": list(ct_window),
        "suv": sorted({m["harmonize"].get("suv", "bw") for m in metas}) or ["bw"],
        "normalization_over": "all stored voxels of the train split, after clipping",
    }
    if holdout_site is not None:
        info["holdout_site"] = holdout_site
    if splits["train"]:
        excluded: list[str] = []
        info["normalization"] = normalization_stats(out, splits["train"], ct_window, excluded)
        info["normalization_excluded"] = excluded  # robust outliers left out of the statistics (docs/reliability.md)
    if any(m.get("has_organs") for m in metas):
        from petctfm.core.labels import ORGAN_LABELS

        info["organ_labels"] = dict(ORGAN_LABELS)
    sources: dict[tuple, int] = {}
    for m in metas:
        key = (m.get("source"), m.get("source_format"))
        sources[key] = sources.get(key, 0) + 1
    info["sources"] = [{"name": n, "format": f, "num_cases": k} for (n, f), k in sorted(sources.items())]
    info["provenance"] = summarize_provenance([m.get("synthetic") for m in metas])  # petctfm synth or not
    info["sites"] = sorted({str(m.get("site")) for m in metas})
    info["tracers"] = sorted({str(m.get("tracer")) for m in metas})
    return info


def _manifest_rows(out: Path, metas: list[dict[str, Any]], split_of: dict[str, str]) -> list[dict[str, Any]]:
    """One manifest.csv row per case (:data:`MANIFEST_COLUMNS`); per-lesion volumes are measured from the
    stored label of a case written before they were recorded."""
    rows = []
    for m in metas:
        vols = m["stats"].get("lesion_volumes_ml")
        if vols is None:  # a case written before per-lesion volumes were recorded: measure its label now
            vols = lesion_volumes(np.load(fmt.case_dir(out, m["case_id"]) / "label.npy", mmap_mode="r"),
                                  m["spacing"])
        rows.append({**{k: m.get(k) for k in MANIFEST_COLUMNS}, **{k: m["stats"].get(k) for k in
                     ("suv_max", "liver_suv_mean", "lesion_count", "lesion_volume_ml")},
                     "lesion_volumes_ml": json.dumps(vols),
                     "split": split_of.get(m["case_id"], ""), "qa_status": m.get("qa", {}).get("status"),
                     "qa_flags": m.get("qa", {}).get("warnings") or "",
                     "shape": "x".join(str(s) for s in m["shape"]),
                     "spacing": "x".join(f"{s:g}" for s in m["spacing"])})
    return rows
