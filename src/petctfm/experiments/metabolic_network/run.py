"""The metabolic-network experiment: :func:`run_metabolic_network` (the entry point of ``petctfm experiment
metabolic-network``). See :mod:`petctfm.experiments.metabolic_network` and docs/metabolic-network.md."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.errors import InputError
from petctfm.experiments.metabolic_network import stats
from petctfm.experiments.metabolic_network.plan import (DEFAULT_COVARIATES, MIN_CASES, Settings, check_settings,
                                                        command_line)
from petctfm.experiments.metabolic_network.uptake import Cohort, from_dataset, from_tables

#: An organ is kept when it has a positive SUVmean in at least this share of the cases (unless named).
MIN_ORGAN_SHARE = 0.5
#: Planted edges: |planted r| at least this (organ_covariance.json of petctfm synth --metabolic-structure).
PLANTED_EDGE = 0.3
#: With a model: the cases it failed on (``case, reason``; header only when none did).
FAILED_CSV = "failed.csv"


def _select_organs(cohort: Cohort, settings: Settings, notes: list[str]) -> tuple[list[int], np.ndarray]:
    """Column indices of the organs analysed and the cases (bool) with a positive value in every one."""
    v = cohort.values
    ok = np.isfinite(v) & (v > 0)
    if settings.organs:
        unknown = [o for o in settings.organs if o not in cohort.organs]
        if unknown:
            raise InputError(f"{cohort.source}: no organ {', '.join(map(repr, unknown))} "
                             f"(organs: {', '.join(cohort.organs)})")
        cols = [cohort.organs.index(o) for o in settings.organs]
    else:
        share = ok.mean(axis=0)
        cols = [j for j in range(len(cohort.organs)) if share[j] >= MIN_ORGAN_SHARE]
        dropped = [f"{cohort.organs[j]} ({share[j]:.0%})" for j in range(len(cohort.organs)) if j not in cols]
        if dropped:
            notes.append(f"organs with a value in fewer than {MIN_ORGAN_SHARE:.0%} of the cases left out: "
                         f"{', '.join(dropped)}")
    if len(cols) < 3:
        raise InputError(f"{cohort.source}: {len(cols)} organ(s) to analyse; a network needs at least 3")
    rows = ok[:, cols].all(axis=1)
    if (~rows).any():
        notes.append(f"{int((~rows).sum())} case(s) without a positive SUVmean in every analysed organ left out")
    return cols, rows


def _covariates(cohort: Cohort, settings: Settings, notes: list[str]) -> list[str]:
    columns = set().union(*(m.keys() for m in cohort.meta)) if cohort.meta else set()
    if settings.covariates is not None:
        missing = [c for c in settings.covariates if c not in columns]
        if missing:
            raise InputError(f"{cohort.source}: no covariate column {', '.join(map(repr, missing))} in the "
                             f"metadata (columns: {', '.join(sorted(columns)[:15]) or 'none'})")
        return list(settings.covariates)
    used = [c for c in DEFAULT_COVARIATES if c in columns and c != settings.group_by]
    absent = [c for c in DEFAULT_COVARIATES if c not in columns]
    if absent:
        notes.append(f"default covariates not in the metadata, not used: {', '.join(absent)}")
    return used


def _group_labels(cohort: Cohort, settings: Settings) -> list[str | None]:
    """Each case's group name (None: in no compared group). A group of ``groups`` may join several values of
    the column with ``+`` (``negative+melanoma``)."""
    col = settings.group_by
    columns = set().union(*(m.keys() for m in cohort.meta)) if cohort.meta else set()
    if col not in columns:
        raise InputError(f"{cohort.source}: no group column {col!r} in the metadata "
                         f"(columns: {', '.join(sorted(columns)[:15]) or 'none'})")
    values = [str(m.get(col) or "").strip() for m in cohort.meta]
    if settings.groups is None:
        return [v or None for v in values]
    present = {v for v in values if v}
    name_of: dict[str, str] = {}
    for spec in settings.groups:
        for v in spec.split("+"):
            if v not in present:
                raise InputError(f"{cohort.source}: no case has {col} = {v!r} (values: "
                                 f"{', '.join(sorted(present)[:15])})")
            if v in name_of:
                raise InputError(f"groups: value {v!r} is in two groups ({name_of[v]} and {spec})")
            name_of[v] = spec
    return [name_of.get(v) for v in values]


def _network(z: np.ndarray, alpha: float, min_r: float) -> dict[str, np.ndarray]:
    """Pearson and Ledoit-Wolf partial correlation of ``z`` (n, p), BH-adjusted, and their edges
    (:func:`stats.edges`); every (p, p) matrix keyed as the report reads it."""
    r, p = stats.pearson(z)
    pr, pp = stats.partial(z)
    q, pq = stats.fdr(p), stats.fdr(pp)
    return {"r": r, "p": p, "q": q, "edge": stats.edges(r, q, alpha, min_r), "partial_r": pr, "partial_p": pp,
            "partial_q": pq, "partial_edge": stats.edges(pr, pq, alpha, min_r), "n": np.array(len(z))}


def _planted(path: str | Path, organs: list[str], pooled: dict[str, np.ndarray], diffs: list[dict[str, Any]],
             alpha: float, nulls: list[dict[str, Any]]) -> dict[str, Any]:
    """The recovery of a planted structure (``organ_covariance.json``): precision / recall of the edges
    against the planted edges (|r| >= PLANTED_EDGE) over the organs both have, and the p of each planted group
    difference in every compared pair of groups, with the share of random splits (``nulls``) in which that
    edge alone has p < alpha (its false-positive rate as a pre-specified test)."""
    try:
        truth = json.loads(Path(path).read_text())
        t_organs = list(truth["organs"])
        t_r = np.asarray(truth["correlation"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable organ_covariance.json ({exc})") from None
    common = [o for o in organs if o in t_organs]
    pairs = [(a, b) for i, a in enumerate(common) for b in common[i + 1:]]
    rows, tp, fp, fn = [], 0, 0, 0
    for a, b in pairs:
        i, j = organs.index(a), organs.index(b)
        pr = float(t_r[t_organs.index(a), t_organs.index(b)])
        planted_edge = abs(pr) >= PLANTED_EDGE
        found = bool(pooled["edge"][i, j])
        tp += planted_edge and found
        fp += found and not planted_edge
        fn += planted_edge and not found
        rows.append({"organ_a": a, "organ_b": b, "planted_r": pr, "planted_edge": planted_edge,
                     "r": float(pooled["r"][i, j]), "p_fdr": float(pooled["q"][i, j]), "found": found})
    differences = []
    for d in (truth.get("groups") or {}).get("differences", []):
        for res in diffs:
            if {d.get("organ_a"), d.get("organ_b")} == {res["organ_a"], res["organ_b"]}:
                i, j = organs.index(res["organ_a"]), organs.index(res["organ_b"])
                null_rate = (sum(1 for x in nulls if x["_p"][i, j] < alpha) / len(nulls)) if nulls else math.nan
                differences.append({**d, "group_a": res["group_a"], "group_b": res["group_b"],
                                    "r_a": res["r_a"], "r_b": res["r_b"], "p": res["p"], "p_fdr": res["p_fdr"],
                                    "null_split_rate": null_rate})
    return {"file": str(path), "organs": common, "edges": rows, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else math.nan, "recall": tp / (tp + fn) if tp + fn else math.nan,
            "differences": differences}


def run_metabolic_network(out: str | Path, data: str | Path | None = None, model: str | Path | None = None,
                          tables: str | Path | None = None, metadata: str | Path | None = None,
                          group_by: str | None = None, groups=None, covariates=None, organs=None,
                          alpha: float = 0.05, min_r: float = 0.0, permutations: int = 1000, bootstrap: int = 500,
                          null_splits: int = 20, min_group: int = 10, seed: int = 0, planted: str | Path | None = None, erode: int = 1,
                          device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """The whole-body metabolic covariance network of a cohort, written to ``out``.

    Args:
        out: output folder (created; files in it are overwritten).
        data: a harmonized dataset: its ground-truth organ maps, or with ``model`` (an organ model, ``petctfm
            finetune --task organs``) the organ maps it predicts on every case of the manifest; ground-truth lesion
            voxels (``label.npy``) excluded either way. A case the model fails on is left out with a one-line
            warning and listed in ``failed.csv`` (the returned ``failed``); the others go on.
        tables, metadata: instead of ``data``, per-case ``organs.csv`` tables (``DIR/<case_id>/organs.csv``,
            columns ``organ, suv_mean``) and a metadata CSV with ``case_id`` (default ``DIR/metadata.csv`` or
            ``DIR/manifest.csv``).
        group_by: a metadata column: a network per group and per-edge group differences. ``groups``: the groups
            to compare (list or comma-separated; ``a+b`` joins values); default every value with ``min_group``
            cases or more.
        covariates: metadata columns regressed out (list or comma-separated; numeric as is, others one-hot);
            default those of age, sex, site, tracer that the metadata has.
        organs: the organs to analyse (default: those with a value in at least half the cases).
        alpha: FDR level of the edges; min_r: their effect-size floor, |r| >= min_r (0 = FDR alone; the same
            floor for Pearson, partial and bootstrap-stability edges); permutations (>= 1000), bootstrap (resamples; 0 = none), null_splits
            (random halves tested like groups; 0 = none), seed: the random numbers.
        planted: an ``organ_covariance.json`` (``petctfm synth --metabolic-structure``): recovery reported.
        erode: with ``data``, each organ (ground-truth or predicted) is eroded by this many voxels before its
            SUVmean (edge voxels carry the neighbours' uptake through the PET blur); 0 = the whole organ.
        device: where the organ model runs (default CUDA when available); progress: a progress bar over the cases
            while the model predicts.

    Returns:
        ``{"out", "results_md", "edges_csv", "n_cases", "organs", "n_edges", "planted", "failed", ...}``
        (``failed``: ``[{"case", "reason"}]`` of the cases the model failed on).
    """
    from petctfm.experiments.metabolic_network import report
    from petctfm.io.atomic import ensure_output_dir

    settings = check_settings(data=data, model=model, tables=tables, metadata=metadata, group_by=group_by,
                              groups=groups, covariates=covariates, organs=organs, alpha=alpha, min_r=min_r,
                              permutations=permutations, bootstrap=bootstrap, null_splits=null_splits,
                              min_group=min_group, seed=seed, planted=planted, erode=erode)
    if settings.planted is not None and not Path(settings.planted).is_file():
        raise InputError(f"{settings.planted}: planted organ_covariance.json not found")
    ensure_output_dir(out, create=False)  # a bad output folder is refused before the work, created after it
    cohort = (from_dataset(settings.data, settings.erode, settings.model, device, progress) if settings.data
              else from_tables(settings.tables, settings.metadata))
    notes = list(cohort.notes)
    cols, keep = _select_organs(cohort, settings, notes)
    organ_names = [cohort.organs[j] for j in cols]
    covs = _covariates(cohort, settings, notes)
    labels = _group_labels(cohort, settings) if settings.group_by else [None] * len(cohort.case_ids)
    x, complete, cov_words = stats.design(cohort.meta, covs)
    if (keep & ~complete).any():
        notes.append(f"{int((keep & ~complete).sum())} case(s) with a missing covariate value left out")
    keep &= complete
    if settings.group_by and settings.groups is None:
        missing = keep & np.array([g is None for g in labels])
        if missing.any():
            notes.append(f"{int(missing.sum())} case(s) without a {settings.group_by} value left out")
        keep &= ~missing
    n = int(keep.sum())
    if n < MIN_CASES:
        raise InputError(f"{cohort.source}: {n} case(s) with every organ value and covariate; the network needs at "
                         f"least {MIN_CASES}")
    ids = [c for c, k in zip(cohort.case_ids, keep) if k]
    y = np.log(cohort.values[keep][:, cols])
    x = x[keep]
    lab = [g for g, k in zip(labels, keep) if k]
    group_names = sorted({g for g in lab if g is not None}, key=lambda g: (-lab.count(g), g))
    adjust = x
    if settings.group_by and len(group_names) > 1:  # pooled network and group tests: group means removed too
        dummies = np.array([[g == name for name in group_names[1:]] for g in lab], np.float64)
        adjust = np.concatenate([x, dummies], axis=1)
    resid = stats.residualize(y, adjust)
    z = stats.zscore(resid)
    rng = np.random.default_rng(settings.seed)
    pooled = _network(z, settings.alpha, settings.min_r)
    if settings.bootstrap:
        pooled.update(stats.bootstrap_stability(z, settings.bootstrap, settings.alpha, rng, min_r=settings.min_r))

    group_nets: dict[str, dict[str, np.ndarray]] = {}
    sizes = {g: lab.count(g) for g in group_names}
    for g in group_names:
        if sizes[g] < settings.min_group:
            if settings.groups is not None:
                raise InputError(f"{cohort.source}: group {g!r} has {sizes[g]} case(s); the comparison needs at "
                                 f"least min_group={settings.min_group}")
            notes.append(f"group {g!r}: {sizes[g]} case(s) < {settings.min_group}, no network")
            continue
        in_g = np.array([v == g for v in lab])
        group_nets[g] = _network(stats.zscore(resid[in_g]), settings.alpha, settings.min_r)
    diffs: list[dict[str, Any]] = []
    iu = np.triu_indices(len(organ_names), 1)
    for a, b in itertools.combinations(list(group_nets), 2):
        sel = np.array([v in (a, b) for v in lab])
        in_a = np.array([v == a for v in lab])[sel]
        res = stats.permutation_difference(resid[sel], in_a, settings.permutations, rng)
        q = stats.fdr(res["p"])
        for i, j in zip(*iu):
            diffs.append({"group_a": a, "group_b": b, "n_a": sizes[a], "n_b": sizes[b], "organ_a": organ_names[i],
                          "organ_b": organ_names[j], "r_a": float(res["r_a"][i, j]), "r_b": float(res["r_b"][i, j]),
                          "diff": float(res["diff"][i, j]), "p": float(res["p"][i, j]), "p_fdr": float(q[i, j]),
                          "significant": bool(q[i, j] < settings.alpha)})
    nulls = stats.null_splits(resid, settings.null_splits, settings.permutations, settings.alpha, rng) \
        if settings.null_splits else []
    truth = _planted(settings.planted, organ_names, pooled, diffs, settings.alpha, nulls) if settings.planted else None

    result = {"settings": settings, "command": command_line(settings, out), "source": cohort.source, "notes": notes,
              "case_ids": ids, "organs": organ_names, "uptake": cohort.values[keep][:, cols], "groups": lab,
              "covariates": cov_words, "pooled": pooled, "group_nets": group_nets, "group_sizes": sizes,
              "differences": diffs, "null_splits": nulls, "planted": truth, "data": settings.data}
    out = ensure_output_dir(out)
    result["command"] = command_line(settings, out)
    files = report.write_all(out, result)
    if settings.model:
        from petctfm.io.atomic import atomic_write_text
        from petctfm.io.tables import csv_text

        atomic_write_text(out / FAILED_CSV, csv_text(cohort.failed, ("case", "reason")))
        files["failed_csv"] = str(out / FAILED_CSV)
    n_edges = int(pooled["edge"][iu].sum())
    return {"out": str(out), **files, "n_cases": n, "organs": organ_names, "n_edges": n_edges, "planted": truth,
            "n_group_differences": sum(d["significant"] for d in diffs),
            "null_splits": [{k: v for k, v in x.items() if not k.startswith("_")} for x in nulls],
            "failed": list(cohort.failed)}


__all__ = ["run_metabolic_network"]
