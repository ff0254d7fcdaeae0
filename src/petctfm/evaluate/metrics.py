"""Per-case segmentation metrics: voxel overlap, autoPET false-positive / false-negative volumes,
lesion-wise detection, and TMTV / TLG errors.

Conventions (see docs/evaluate.md for the reasons):

- Foreground is ``array > 0`` for both prediction and ground truth.
- **Voxel metrics** (Dice, IoU, sensitivity, precision): exact voxel counts (numpy) fed to MONAI's
  ``compute_confusion_matrix_metric`` ("f1 score" = Dice, "threat score" = IoU).
  autoPET convention: on a **negative case** (empty ground truth) Dice, IoU and sensitivity are undefined
  (NaN) and left out of means; precision is NaN whenever the prediction is empty.
- **autoPET FP volume**: total volume (ml) of predicted connected components that share no voxel with the
  ground truth; **FN volume**: total volume of ground-truth components that share no voxel with the
  prediction. 18-connectivity, as in the autoPET challenge's ``compute_metrics`` (``cc3d``). The FP volume
  counts on negative cases too.
- **Lesion-wise detection**: a ground-truth component is *detected* when the predicted components touching
  it cover it with IoU > ``detection_iou`` (IoU of the lesion with the union of the predicted components
  that overlap it). Default ``detection_iou=0``: any overlap, the same rule that defines the autoPET FN
  volume, so "lesion recall" and "FN volume" never disagree about which lesion was missed. Symmetrically a
  predicted component is a true positive when it meets the same rule against the ground-truth components it
  touches. recall = detected / n_gt (NaN if n_gt = 0), precision = true-positive predictions / n_pred (NaN
  if n_pred = 0), F1 = 2PR/(P+R) (0 when lesions exist but none is found; NaN on negative cases).
- **TMTV** = lesion volume in ml; **TLG** = sum over lesion voxels of SUV x voxel volume (= SUVmean x volume).
  Errors are prediction minus truth: ``*_error`` signed, ``*_abs_error`` absolute, ``*_rel_error`` signed
  relative to the truth (a fraction; NaN when the truth is 0).
"""

from __future__ import annotations

import numpy as np

from petctfm.evaluate.lesions import check_connectivity

NAN = float("nan")

# Columns of a per-case result, in report order (``case_id`` and manifest columns are added by the report).
CASE_METRICS = [
    "dice", "iou", "sensitivity", "precision",
    "fp_volume_ml", "fn_volume_ml",
    "lesion_recall", "lesion_precision", "lesion_f1",
    "n_gt_lesions", "n_pred_lesions", "n_detected", "n_fp_lesions",
    "gt_tmtv_ml", "pred_tmtv_ml", "tmtv_error_ml", "tmtv_abs_error_ml", "tmtv_rel_error",
    "gt_tlg", "pred_tlg", "tlg_error", "tlg_abs_error", "tlg_rel_error",
    "negative", "voxel_volume_ml",
]


def voxel_overlap(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice, IoU, sensitivity and precision of two (X, Y, Z) masks with MONAI's confusion-matrix metrics.

    Dice/IoU/sensitivity are NaN when ``gt`` is empty (autoPET convention); precision is NaN when ``pred``
    is empty.
    """
    import torch
    from monai.metrics import compute_confusion_matrix_metric

    pred, gt = np.asarray(pred) > 0, np.asarray(gt) > 0
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    tn = int(pred.size) - tp - fp - fn
    # Counts in numpy (exact int64; MONAI's get_confusion_matrix casts them to float32, which rounds above
    # 2^24 voxels, and treats bool masks wrongly), the metric formulas from MONAI, in float64.
    cm = torch.tensor([[[tp, fp, tn, fn]]], dtype=torch.float64)  # (B=1, C=1, 4) as MONAI lays it out
    out = {name: float(compute_confusion_matrix_metric(monai_name, cm).item())
           for name, monai_name in (("dice", "f1 score"), ("iou", "threat score"),
                                    ("sensitivity", "sensitivity"), ("precision", "precision"))}
    if tp + fn == 0:
        out["dice"] = out["iou"] = out["sensitivity"] = NAN
    return out


def component_overlap(pred_labels: np.ndarray, n_pred: int, gt_labels: np.ndarray, n_gt: int) -> np.ndarray:
    """(n_gt + 1, n_pred + 1) voxel counts: ``M[g, p]`` = voxels in GT component g and predicted component p.

    Row 0 / column 0 are background, so ``M[g].sum()`` is the size of g and ``M[:, p].sum()`` that of p.
    """
    fg = (pred_labels > 0) | (gt_labels > 0)
    pair = gt_labels[fg].astype(np.int64) * (n_pred + 1) + pred_labels[fg].astype(np.int64)
    return np.bincount(pair, minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)


def _matched(m: np.ndarray, iou_threshold: float) -> np.ndarray:
    """For each row component (rows 1..), whether the column components touching it give IoU > threshold.

    ``m`` is an overlap matrix as from :func:`component_overlap` (rows = the components being matched).
    """
    sizes_row = m[1:].sum(axis=1)
    sizes_col = m.sum(axis=0)[1:]
    touch = m[1:, 1:] > 0
    inter = m[1:, 1:].sum(axis=1)
    union = sizes_row + (touch * sizes_col).sum(axis=1) - inter
    iou = np.divide(inter, union, out=np.zeros(len(inter)), where=union > 0)
    return (inter > 0) & (iou > iou_threshold)


def _rel(err: float, truth: float) -> float:
    return err / truth if truth != 0 else NAN


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing, suv: np.ndarray | None = None,
                 connectivity: int = 18, detection_iou: float = 0.0) -> dict:
    """All per-case metrics (keys :data:`CASE_METRICS`) for one prediction against its ground truth.

    Args:
        pred, gt: (X, Y, Z) masks on the same grid; nonzero = lesion.
        spacing: (3,) voxel size in mm (from the image header), used for all volumes.
        suv: (X, Y, Z) SUV on the same grid for TLG; None gives NaN TLG columns.
        connectivity: 6, 18 (autoPET) or 26, for the component-based metrics.
        detection_iou: lesion-detection rule, IoU strictly above this (0 = any overlap).
    """
    import cc3d

    pred = np.asarray(pred) > 0
    gt = np.asarray(gt) > 0
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if suv is not None and tuple(np.shape(suv)) != gt.shape:
        raise ValueError(f"SUV shape {np.shape(suv)} != ground-truth shape {gt.shape}")
    check_connectivity(connectivity)
    vox_ml = float(np.prod(np.asarray(spacing, dtype=np.float64)) / 1000.0)

    out: dict = dict(voxel_overlap(pred, gt))

    pred_lab, n_pred = cc3d.connected_components(pred, connectivity=connectivity, return_N=True)
    gt_lab, n_gt = cc3d.connected_components(gt, connectivity=connectivity, return_N=True)
    m = component_overlap(pred_lab, n_pred, gt_lab, n_gt)
    gt_sizes, pred_sizes = m[1:].sum(axis=1), m.sum(axis=0)[1:]
    gt_touched = (m[1:, 1:] > 0).any(axis=1)
    pred_touched = (m[1:, 1:] > 0).any(axis=0)
    out["fp_volume_ml"] = float(pred_sizes[~pred_touched].sum() * vox_ml)
    out["fn_volume_ml"] = float(gt_sizes[~gt_touched].sum() * vox_ml)

    detected = _matched(m, detection_iou)
    pred_tp = _matched(m.T, detection_iou)
    recall = detected.sum() / n_gt if n_gt else NAN
    precision = pred_tp.sum() / n_pred if n_pred else NAN
    if n_gt == 0:
        f1 = NAN
    elif n_pred == 0 or recall + precision == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    out.update(lesion_recall=float(recall), lesion_precision=float(precision), lesion_f1=float(f1),
               n_gt_lesions=int(n_gt), n_pred_lesions=int(n_pred), n_detected=int(detected.sum()),
               n_fp_lesions=int(n_pred - pred_tp.sum()))

    gt_v, pred_v = float(gt.sum() * vox_ml), float(pred.sum() * vox_ml)
    out.update(gt_tmtv_ml=gt_v, pred_tmtv_ml=pred_v, tmtv_error_ml=pred_v - gt_v,
               tmtv_abs_error_ml=abs(pred_v - gt_v), tmtv_rel_error=_rel(pred_v - gt_v, gt_v))
    if suv is not None:
        suv = np.asarray(suv, dtype=np.float64)
        gt_t, pred_t = float(suv[gt].sum() * vox_ml), float(suv[pred].sum() * vox_ml)
        out.update(gt_tlg=gt_t, pred_tlg=pred_t, tlg_error=pred_t - gt_t, tlg_abs_error=abs(pred_t - gt_t),
                   tlg_rel_error=_rel(pred_t - gt_t, gt_t))
    else:
        out.update(gt_tlg=NAN, pred_tlg=NAN, tlg_error=NAN, tlg_abs_error=NAN, tlg_rel_error=NAN)
    out["negative"] = bool(n_gt == 0)
    out["voxel_volume_ml"] = vox_ml
    return {k: out[k] for k in CASE_METRICS}


def average_precision(scores: np.ndarray, target: np.ndarray) -> float:
    """Voxel-wise average precision of lesion ``scores`` (any shape, e.g. a probability map) against the
    boolean ``target``: the area under the precision-recall curve as a step sum, ``sum_n (R_n - R_{n-1}) P_n``
    over the distinct score thresholds taken from high to low (tied scores enter together), the definition
    of scikit-learn's ``average_precision_score``. Threshold-free: it says how well the scores rank lesion
    voxels above the rest, where a Dice at one fixed threshold can be 0 for a usable ranking. The chance level
    is the lesion prevalence. NaN when ``target`` is empty (negative case)."""
    y = np.asarray(target).ravel() > 0
    n_pos = int(y.sum())
    if n_pos == 0:
        return NAN
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {np.shape(scores)} and target {np.shape(target)} differ in size")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of tied scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


__all__ = ["CASE_METRICS", "case_metrics", "voxel_overlap", "component_overlap", "average_precision"]
