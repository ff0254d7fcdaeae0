"""Validation of a segmentation model during fine-tuning: sliding-window predictions on a split of the
harmonized dataset, per-case metrics, their means.

Per case: the [SUV, HU] volume (2, X, Y, Z) is normalized like the training data
(:func:`petctfm.inference.normalize.normalized_input`), predicted patch by patch
(:func:`petctfm.inference.sliding_window.predict_case`: Gaussian-weighted overlap, background padding) into a
label (X, Y, Z) and scored by :func:`petctfm.evaluate.metrics.case_metrics` (autoPET convention: Dice
undefined on cases without lesions, false-positive volume counted).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from petctfm.data import format as fmt


def _each_case(model: nn.Module, cfg: dict[str, Any], dataset: str | Path, ids: Sequence[str],
               score: Callable[[dict[str, Any], np.ndarray, np.ndarray, Any], Any]) -> dict[str, Any] | None:
    """``{case_id: score(case, x, bg, device)}`` over ``ids`` in eval mode (the model's mode restored after):
    ``case`` from :func:`petctfm.data.format.load_case`, ``x`` (C, X, Y, Z) / ``bg`` its normalized input
    (:func:`petctfm.inference.normalize.normalized_input`). None when a stop is requested meanwhile (SIGTERM /
    Ctrl-C, checked before each case) or ``ids`` is empty."""
    from petctfm.inference.normalize import normalized_input
    from petctfm.train.progress import stop_requested

    if not ids:
        return None
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = {}
    try:
        for cid in ids:
            if stop_requested():
                return None
            case = fmt.load_case(dataset, cid, mmap=True)
            x, bg = normalized_input(np.asarray(case["image"]), cfg)
            rows[cid] = score(case, x, bg, device)
    finally:
        model.train(was_training)
    return rows


def validate(model: nn.Module, cfg: dict[str, Any], dataset: str | Path, split: str = "val",
             ids: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Mean per-case metrics of sliding-window predictions on ``split`` (or on the cases ``ids`` of ``dataset``,
    e.g. every case of a separate development cohort); None if there is no case, or if the run is asked to stop
    meanwhile (SIGTERM / Ctrl-C, :func:`petctfm.train.progress.stop_requested`, checked before each case: the
    trainer then checkpoints at once instead of after the whole split).

    The masks are post-processed as the config says (:mod:`petctfm.inference.postprocess`: the organ suppression
    of ``postprocess.suppress_organs``, then the minimum lesion volume): with candidates in
    ``postprocess.choose_min_lesion_ml``, each is scored on the same predictions and the best one (highest mean
    Dice, ties: the smallest) is reported.

    Returns ``{"dice": mean Dice over cases with lesions (NaN if none), "n_cases", "n_dice",
    "fp_volume_ml": mean, "fn_volume_ml": mean, "cases": {case_id: dice}}``, with candidates also
    ``"min_lesion_ml"`` (the chosen one) and ``"dice_by_min_lesion_ml": {candidate: mean Dice}``.
    """
    from petctfm.evaluate.metrics import case_metrics
    from petctfm.inference.postprocess import choose_min_ml, lesion_mask, min_lesion_ml, suppression
    from petctfm.inference.sliding_window import predict_case

    candidates = sorted({float(v) for v in (cfg.get("postprocess") or {}).get("choose_min_lesion_ml") or []})
    volumes = candidates or [min_lesion_ml(cfg)]
    sup = suppression(cfg)

    def score(case, x, bg, device):
        prob, _ = predict_case(model, x, cfg["data"]["patch_size"], float(cfg["val"]["overlap"]), device,
                               bg=bg, sw_batch_size=int(cfg["val"]["sw_batch_size"]), suppress=sup)
        truth, spacing = np.asarray(case["label"]), case["meta"]["spacing"]
        return {v: case_metrics(lesion_mask(prob, spacing, v), truth, spacing) for v in volumes}

    ids = list(ids) if ids is not None else (fmt.load_splits(dataset).get(split) or [])
    rows = _each_case(model, cfg, dataset, ids, score)
    if not rows:
        return None
    by_volume = {v: summarize_cases({cid: r[v] for cid, r in rows.items()}) for v in volumes}
    if not candidates:
        return by_volume[volumes[0]]
    chosen = choose_min_ml({v: s["dice"] for v, s in by_volume.items()})
    return {**by_volume[chosen], "min_lesion_ml": chosen,
            "dice_by_min_lesion_ml": {v: s["dice"] for v, s in by_volume.items()}}


def summarize_cases(rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """:func:`validate`'s summary of per-case :func:`petctfm.evaluate.metrics.case_metrics` rows
    ``{case_id: metrics}`` (at least one): Dice averaged over the cases with lesions (finite Dice), FP / FN
    volume over every case, and each case's Dice."""
    dices = [r["dice"] for r in rows.values() if math.isfinite(r["dice"])]
    return {"dice": float(np.mean(dices)) if dices else float("nan"), "n_cases": len(rows), "n_dice": len(dices),
            "fp_volume_ml": float(np.mean([r["fp_volume_ml"] for r in rows.values()])),
            "fn_volume_ml": float(np.mean([r["fn_volume_ml"] for r in rows.values()])),
            "cases": {k: r["dice"] for k, r in rows.items()}}


def validate_organs(model: nn.Module, cfg: dict[str, Any], dataset: str | Path, split: str = "val",
                    ids: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Validation of an organ model (task ``organs``) on the cases of ``split`` (or ``ids``) that have
    ``organs.npy``: sliding-window label maps (:func:`petctfm.inference.sliding_window.predict_labels`, written
    in the organ values of ``task.classes``), per-organ Dice (:func:`petctfm.evaluate.organs.organ_case_metrics`
    without the surface distance; an organ absent from both prediction and truth is left out). None if there
    is no such case or a stop was requested.

    Returns ``{"dice": mean over organs of the organ's mean Dice over cases, "organs": {organ: mean Dice},
    "n_cases", "cases": {case_id: mean Dice over its organs}}``.
    """
    from petctfm.evaluate.organs import organ_case_metrics
    from petctfm.inference.model import output_classes
    from petctfm.inference.sliding_window import predict_labels

    classes = output_classes(cfg)

    def score(case, x, bg, device):
        pred = predict_labels(model, x, cfg["data"]["patch_size"], list(classes.values()),
                              float(cfg["val"]["overlap"]), device, bg=bg,
                              sw_batch_size=int(cfg["val"]["sw_batch_size"]))
        return organ_case_metrics(pred, np.asarray(case["organs"]), classes, case["meta"]["spacing"], nsd=False)

    ids = list(ids) if ids is not None else (fmt.load_splits(dataset).get(split) or [])
    ids = [c for c in ids if (fmt.case_dir(dataset, c) / "organs.npy").is_file()]
    per_case: dict[str, dict[str, dict[str, float]]] | None = _each_case(model, cfg, dataset, ids, score)
    if not per_case:
        return None
    organs = {}
    for name in classes:
        if name == "background":
            continue
        vals = [m[name]["dice"] for m in per_case.values() if math.isfinite(m[name]["dice"])]
        organs[name] = float(np.mean(vals)) if vals else float("nan")
    defined = [v for v in organs.values() if math.isfinite(v)]
    cases = {}
    for cid, m in per_case.items():
        vals = [r["dice"] for r in m.values() if math.isfinite(r["dice"])]
        cases[cid] = float(np.mean(vals)) if vals else float("nan")
    return {"dice": float(np.mean(defined)) if defined else float("nan"), "organs": organs, "n_cases": len(per_case),
            "cases": cases}


__all__ = ["validate", "validate_organs"]
