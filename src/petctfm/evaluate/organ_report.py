"""``petctfm evaluate --organs``: predicted organ label maps against ground-truth organ maps, per organ Dice and
normalized surface distance (:func:`petctfm.evaluate.organs.organ_case_metrics`) with bootstrap CIs over cases
(:func:`petctfm.evaluate.organs.organ_summary`).

Ground truth (``--gt``): a harmonized dataset (``cases/<id>/organs.npy``, grid from ``meta.json``; ``split``
picks a split; cases without an organ map are skipped), a folder of autoPET case folders
(``<id>/ORGANS.nii.gz``), or a folder of label maps ``<id>.nii.gz`` (e.g. an nnU-Net ``labelsTr`` of a
multi-label dataset, with its ``dataset.json`` as ``--labels``). Predictions (``--pred``): ``<id>.<ext>``
(``petctfm finetune --predict``) or ``<id>/organs.<ext>`` (``petctfm predict --organs``), on the ground
truth's grid. Organ names and values: ``labels`` (name -> value), default the dataset's ``organ_labels``, else
:data:`petctfm.core.labels.ORGAN_LABELS`.

SUVmean agreement (:func:`petctfm.evaluate.organs.organ_suv_agreement`) when the ground truth comes with its SUV:
a harmonized dataset (``image.npy`` channel 0; lesions: ``label.npy``) or an autoPET case folder
(``<id>/SUV.nii.gz``; lesions: ``<id>/SEG.nii.gz`` when present, else none excluded). A folder of plain label
maps has no SUV: the SUV columns stay empty (NaN).

Writes ``organs_per_case.csv`` (case, organ, dice, nsd, then suv_mean_true, suv_mean_pred, suv_mean_rel_err),
``organs_summary.csv`` (one row per organ: means, CIs, cases where defined, then the SUV agreement columns;
a last row ``target_organs_pooled``: the SUV agreement pooled over the target organs, Dice/NSD empty) and
``organs_summary.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.evaluate.cases import image_in, case_images, find_predictions, read_mask, read_suv
from petctfm.evaluate.geometry import Grid, grid_mismatch, grid_of
from petctfm.evaluate.organs import (DEFAULT_NSD_TOLERANCE_MM, SUV_CASE_KEYS, SUV_SUMMARY_KEYS, SUV_TOLERANCE,
                                     organ_case_metrics, organ_suv_agreement, organ_suv_pooled, organ_summary)
from petctfm.io.images import array_xyz, read_image

PER_CASE_CSV = "organs_per_case.csv"
SUMMARY_CSV = "organs_summary.csv"
SUMMARY_MD = "organs_summary.md"
#: The ``organ`` of the summary's pooled row (:func:`petctfm.evaluate.organs.organ_suv_pooled`).
POOLED_ROW = "target_organs_pooled"


def _label_map(path: Path) -> tuple[np.ndarray, Grid]:
    img = read_image(path)
    arr = array_xyz(img)
    if np.issubdtype(arr.dtype, np.floating) and np.any(arr != np.round(arr)):
        raise InputError(f"{path}: label map has non-integer values")
    return arr.astype(np.int64), grid_of(img)


def find_organ_ground_truth(gt: str | Path, split: str | None = None) -> dict[str, Any]:
    """``{case_id: ("dataset", root) | ("file", path)}`` of the organ ground truth under ``gt``."""
    gt = Path(gt)
    if not gt.is_dir():
        raise InputError(f"{gt}: ground-truth folder not found")
    out: dict[str, Any] = {}
    if (gt / "dataset.json").is_file() and (gt / "cases").is_dir():
        from petctfm.data.format import load_splits

        ids = sorted(p.name for p in (gt / "cases").iterdir() if (p / "organs.npy").is_file())
        if split is not None:
            chosen = load_splits(gt).get(split)
            if not isinstance(chosen, list):
                raise InputError(f"{gt}/splits.json: no split named {split!r}")
            ids = [c for c in ids if c in set(chosen)]
        out = {c: ("dataset", gt) for c in ids}
    else:
        if split is not None:
            raise InputError(f"{gt}: --split needs a harmonized dataset as --gt")
        out = {c: ("file", p) for c, p in case_images(gt, "ORGANS").items()}
    if not out:
        raise InputError(f"{gt}: no organ ground truth found (expected a harmonized dataset with organs.npy, "
                         "<case>/ORGANS.nii.gz or <case>.nii.gz label maps)")
    return out


def find_organ_predictions(pred: str | Path) -> dict[str, Path]:
    """Organ predictions under ``pred`` by case id: ``<id>.<ext>`` or ``<id>/organs.<ext>``."""
    return find_predictions(pred, "organs")


def default_labels(gt: str | Path) -> dict[str, int]:
    """The dataset's ``organ_labels`` (a harmonized dataset), else ORGAN_LABELS; background left out."""
    table = ORGAN_LABELS
    info = Path(gt) / "dataset.json"
    if info.is_file():
        try:
            table = json.loads(info.read_text()).get("organ_labels") or ORGAN_LABELS
        except (OSError, ValueError):
            table = ORGAN_LABELS
    return {str(k): int(v) for k, v in table.items() if int(v) != 0 and k != "background"}


def _case_suv(gt: Path, cid: str, path: Path, grid: Grid) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(suv, lesions)`` (X, Y, Z) of an organ ground-truth file ``path``: ``SUV`` and ``SEG`` beside it in an
    autoPET case folder ``<gt>/<id>/ORGANS.<ext>`` (SUV None elsewhere; lesions None without ``SEG``)."""
    folder = path.parent
    if folder.resolve() == gt.resolve():
        return None, None
    suv_path = image_in(folder, "SUV")
    if suv_path is None:
        return None, None
    suv = read_suv(suv_path, grid, path)
    seg_path = image_in(folder, "SEG")
    lesions = None
    if seg_path is not None:
        lesions, seg_grid = read_mask(seg_path)
        problem = grid_mismatch(grid, seg_grid)
        if problem:
            raise InputError(f"mismatched geometry: lesion mask {seg_path} vs organ ground truth {path}: {problem}")
    return suv, lesions


def evaluate_organs_folder(pred: str | Path, gt: str | Path, labels: Mapping[str, int] | None = None,
                           split: str | None = None, nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
                           n_resamples: int = 1000, seed: int = 0, allow_missing: bool = False) -> dict[str, Any]:
    """Score every ground-truth organ map against its prediction; ``{"per_case": {case: {organ: {"dice",
    "nsd"[, "suv_mean_true", "suv_mean_pred", "suv_mean_rel_err"]}}}, "summary": organ rows, "suv_pooled":
    :func:`petctfm.evaluate.organs.organ_suv_pooled`, "info"}``; the SUV keys for the cases whose ground truth
    has an SUV image (module docstring). A case without prediction is an error listing them unless
    ``allow_missing`` (then an empty prediction: every organ in the truth scores 0)."""
    if not nsd_tolerance_mm > 0:
        from petctfm.core.errors import UsageError

        raise UsageError(f"--nsd-tolerance {nsd_tolerance_mm}: must be > 0 mm", arg="nsd_tolerance_mm")
    classes = dict(labels) if labels is not None else default_labels(gt)
    truth = find_organ_ground_truth(gt, split)
    preds = find_organ_predictions(pred)
    missing = sorted(set(truth) - set(preds))
    if missing and not allow_missing:
        raise InputError(f"{pred}: no organ prediction for {len(missing)} ground-truth case(s): "
                         f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''} "
                         "(use --allow-missing to count them as empty predictions)")
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    with_suv: list[str] = []
    for cid, (kind, where) in truth.items():
        if kind == "dataset":
            from petctfm.data.format import load_case

            c = load_case(where, cid, mmap=True)
            g = np.asarray(c["organs"]).astype(np.int64)
            grid = grid_of(np.asarray(c["meta"]["affine"]), g.shape)
            name = f"{where}/cases/{cid}/organs.npy"
            suv, lesions = np.asarray(c["image"][0], np.float32), np.asarray(c["label"]) > 0
        else:
            g, grid = _label_map(where)
            name = str(where)
            suv, lesions = _case_suv(Path(gt), cid, Path(where), grid)
        if cid in preds:
            p, pgrid = _label_map(preds[cid])
            problem = grid_mismatch(grid, pgrid)
            if problem:
                raise InputError(f"mismatched geometry: prediction {preds[cid]} vs ground truth {name}: {problem}")
        else:
            p = np.zeros_like(g)
        per_case[cid] = organ_case_metrics(p, g, classes, grid.spacing, nsd_tolerance_mm)
        if suv is not None:
            with_suv.append(cid)
            for organ, m in organ_suv_agreement(suv, p, g, lesions, classes, grid.spacing).items():
                per_case[cid][organ].update(m)
    return {"per_case": per_case, "summary": organ_summary(per_case, n_resamples, seed),
            "suv_pooled": organ_suv_pooled(per_case, n_resamples, seed),
            "info": {"pred": str(pred), "gt": str(gt), "split": split, "nsd_tolerance_mm": nsd_tolerance_mm,
                     "classes": classes, "missing_predictions": missing, "n_resamples": n_resamples,
                     "cases_with_suv": with_suv}}


def _f(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def write_organ_report(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """``organs_per_case.csv``, ``organs_summary.csv``, ``organs_summary.md`` into ``out`` (created)."""
    from petctfm.io.atomic import atomic_write_text
    from petctfm.io.tables import csv_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nan = float("nan")
    case_cols = ["case_id", "organ", "dice", "nsd", *SUV_CASE_KEYS]
    rows = [{"case_id": c, "organ": o, "dice": m["dice"], "nsd": m["nsd"], **{k: m.get(k, nan) for k in SUV_CASE_KEYS}}
            for c, organs in result["per_case"].items() for o, m in organs.items()]
    paths = {"per_case": out / PER_CASE_CSV, "summary": out / SUMMARY_CSV, "markdown": out / SUMMARY_MD}
    clean = lambda v: "" if isinstance(v, float) and v != v else (round(v, 4) if isinstance(v, float) else v)  # noqa: E731
    atomic_write_text(paths["per_case"], csv_text([{k: clean(v) for k, v in r.items()} for r in rows], case_cols))
    cols = ["organ", "n_dice", "dice_mean", "dice_ci_low", "dice_ci_high", "n_nsd", "nsd_mean", "nsd_ci_low",
            "nsd_ci_high", *SUV_SUMMARY_KEYS]
    pooled = result.get("suv_pooled")
    table = [{k: clean(r.get(k, nan)) for k in cols} for r in result["summary"]]
    if pooled is not None:
        table.append({"organ": POOLED_ROW, **{k: clean(pooled.get(k, "")) for k in cols[1:]}})
    atomic_write_text(paths["summary"], csv_text(table, cols))
    info = result["info"]
    lines = [f"# Organ segmentation: {len(result['per_case'])} cases", "",
             f"Predictions `{info['pred']}` vs ground truth `{info['gt']}`"
             + (f" (split {info['split']})" if info["split"] else "") + ". Dice and normalized surface distance "
             f"(tolerance {info['nsd_tolerance_mm']:g} mm) per organ; mean over the cases where the organ is in the "
             "prediction or the truth (absent from both: left out, as nnU-Net), 95% percentile-bootstrap CI "
             f"({info['n_resamples']} resamples of cases).", "",
             "| organ | n | Dice | 95% CI | NSD | 95% CI |", "| --- | --- | --- | --- | --- | --- |"]
    for r in result["summary"]:
        lines.append(f"| {r['organ']} | {r['n_dice']} | {_f(r['dice_mean'])} | [{_f(r['dice_ci_low'])}, "
                     f"{_f(r['dice_ci_high'])}] | {_f(r['nsd_mean'])} | [{_f(r['nsd_ci_low'])}, {_f(r['nsd_ci_high'])}] |")
    lines += ["", "## SUVmean from the predicted organs", ""]
    if info.get("cases_with_suv"):
        pct = f"{SUV_TOLERANCE:.0%}"
        lines += [f"{len(info['cases_with_suv'])} of {len(result['per_case'])} cases have the SUV image. Per case "
                  "and organ the SUVmean over the predicted organ against the SUVmean over the true organ (the "
                  "readout's `suv_mean`, ground-truth lesion voxels excluded from both), relative error "
                  "(pred - true) / true. Median |rel err| over the cases where both are defined, 95% percentile-"
                  f"bootstrap CI; within {pct}: fraction of the cases with the organ in the truth (a missed organ "
                  "counts as outside).", "",
                  f"| organ | n | missed | median abs rel err | 95% CI | within {pct} |",
                  "| --- | --- | --- | --- | --- | --- |"]
        shown = [r for r in result["summary"] if r.get("n_suv")]
        if pooled is not None and pooled.get("n_suv"):
            shown = shown + [{"organ": f"**pooled: {', '.join(pooled['organs'])}**", **pooled}]
        for r in shown:
            lines.append(f"| {r['organ']} | {r['n_suv']} | {r['n_suv_missed']} | {_f(r['suv_abs_rel_err_median'])} | "
                         f"[{_f(r['suv_abs_rel_err_ci_low'])}, {_f(r['suv_abs_rel_err_ci_high'])}] | "
                         f"{_f(r['suv_within_5pct'])} |")
    else:
        lines.append("The ground truth has no SUV image (a folder of label maps): not computed.")
    if info["missing_predictions"]:
        lines += ["", f"Cases without prediction (scored as empty): {', '.join(info['missing_predictions'])}"]
    atomic_write_text(paths["markdown"], "\n".join(lines) + "\n")
    return paths


__all__ = ["PER_CASE_CSV", "SUMMARY_CSV", "SUMMARY_MD", "POOLED_ROW", "find_organ_ground_truth", "find_organ_predictions",
           "default_labels", "evaluate_organs_folder", "write_organ_report"]
