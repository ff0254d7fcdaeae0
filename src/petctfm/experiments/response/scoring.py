"""One pair's result (``response.json`` + ``lesions.csv`` of :func:`petctfm.response.api.assess_response`)
against its ``response_truth.json``.

**Labels -> truth ids.** ``petctfm response`` numbers each study's lesions as 18-connected components of its
mask (:func:`petctfm.evaluate.lesions.label_lesions`, the function it uses); each component is given the truth
lesion id (``LESIONS.nii.gz`` of the study) that covers most of its voxels, or none (a false-positive lesion).

**Correspondence F1.** The truth is a set of items: ``("matched", id)`` per lesion present in both studies,
``("disappeared", id)`` and ``("new", id)``. The prediction's items: for a group with both sides, ``("matched",
a)`` for every baseline component mapped to ``a`` and follow-up component mapped to ``a`` (a pair of components
of two different truth lesions, or of none, is a wrong item); a disappeared group gives ``("disappeared", a)``
per baseline component, a new group ``("new", a)`` per follow-up component. TP, FP and FN are counted on the two
sets; the experiment sums them over pairs (micro F1).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

NE = "NE"  # not evaluable (response.json's category None)


def component_ids(mask: np.ndarray, instances: np.ndarray) -> dict[int, int | None]:
    """Component label (1.., as ``petctfm response`` numbers them) -> the truth id covering most of it, or None.
    ``mask`` (bool) and ``instances`` (int truth ids, 0 = none): (X, Y, Z) on one grid."""
    from petctfm.evaluate.lesions import label_lesions

    labels, n = label_lesions(mask, 18)
    out: dict[int, int | None] = {}
    for k in range(1, n + 1):
        ids = instances[labels == k]
        ids = ids[ids > 0]
        out[k] = int(np.bincount(ids).argmax()) if ids.size else None
    return out


def _labels(text: str) -> list[int]:
    return [int(t) for t in str(text or "").split(";") if t.strip()]


def read_groups(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def correspondence(groups: list[dict[str, Any]], ids_b: dict[int, int | None], ids_f: dict[int, int | None],
                   truth: dict[str, Any]) -> dict[str, Any]:
    """TP / FP / FN of the correspondence items (module docstring) and per-lesion SULpeak change pairs."""
    true_items = {(les["status"], les["id"]) for les in truth["lesions"]}
    pred: set[tuple] = set()
    changes = []  # (truth planted SULmean change %, measured SULpeak change %) of 1:1 groups on one truth lesion
    by_id = {les["id"]: les for les in truth["lesions"]}
    wrong = 0
    for g in groups:
        b, f = _labels(g["baseline_labels"]), _labels(g["followup_labels"])
        tb, tf = [ids_b.get(k) for k in b], [ids_f.get(k) for k in f]
        if b and f:
            for x in tb:
                for y in tf:
                    if x is not None and x == y:
                        pred.add(("matched", x))
                    else:
                        wrong += 1
            if len(b) == 1 == len(f) and tb[0] is not None and tb[0] == tf[0] and g["sulpeak_change_percent"]:
                t = by_id[tb[0]].get("sul_change_percent")
                if t is not None:
                    changes.append((float(t), float(g["sulpeak_change_percent"])))
        elif b:
            for x in tb:
                if x is None:
                    wrong += 1
                else:
                    pred.add(("disappeared", x))
        else:
            for y in tf:
                if y is None:
                    wrong += 1
                else:
                    pred.add(("new", y))
    tp = len(pred & true_items)
    return {"tp": tp, "fp": len(pred - true_items) + wrong, "fn": len(true_items - pred), "lesion_changes": changes}


def f1(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else math.nan
    r = tp / (tp + fn) if tp + fn else math.nan
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return {"precision": p, "recall": r, "f1": f}


def score_pair(pair: Path, truth: dict[str, Any], result: dict[str, Any], out: Path) -> dict[str, Any]:
    """One row of ``pairs.csv``: truth and predicted category, correctness, the hottest lesion's change (truth
    planted SULmean vs measured SULpeak), correspondence counts and per-lesion changes."""
    from petctfm.io.images import array_xyz, read_image
    from petctfm.synth.followup import INSTANCES

    ids = []
    for role in ("baseline", "followup"):
        mask = array_xyz(read_image(Path(result[role]["folder"]) / "lesions.nii.gz")) > 0
        inst = array_xyz(read_image(pair / role / INSTANCES))
        ids.append(component_ids(mask, inst))
    corr = correspondence(read_groups(out / "lesions.csv"), ids[0], ids[1], truth)
    pc = result["percist"]
    got = pc["category"] or NE
    return {"pair": pair.name, "truth": truth["category"], "predicted": got, "correct": int(got == truth["category"]),
            "reason": pc["reason"], "truth_change_percent": truth["hottest"]["change_percent"],
            "measured_change_percent": pc["change_percent"], "baseline_sulpeak": pc["baseline_sulpeak"],
            "followup_sulpeak": pc["followup_sulpeak"], "baseline_threshold": pc["baseline_threshold"],
            "shift_mm": truth["followup"]["pose"]["shift_mm"], "same_site": truth["followup"]["same_site"],
            "tp": corr["tp"], "fp": corr["fp"], "fn": corr["fn"], "lesion_changes": corr["lesion_changes"]}
