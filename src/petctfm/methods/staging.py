"""Early (I-II) vs advanced (III-IV) stage classification from pooled whole-body encoder features
(``petctfm stage``).

Pipeline, top to bottom:

1. **Cases**: lesion-positive cases with ``manifest.csv`` column ``stage`` in {early, advanced}
   (label 1 = advanced); negatives (``none``) and unknown stages are left out. Train / val / test from
   ``splits.json``.
2. **One vector per case** (:func:`case_vector`). An encoder whose method reads a whole case its own way
   (:attr:`petctfm.core.registry.Method.case_features`, e.g. one centrally cropped whole-body stack) gives
   its maps of the case, pooled as below. Other encoders: the raw [SUV, HU] volume is padded with background
   to a
   multiple of the patch and cut into non-overlapping ``patch``^3 tiles; tiles holding no body (no CT voxel
   above -500 HU) are skipped (pure air would dilute the mean). For each tile the frozen encoder's deepest
   and second-deepest feature maps are pooled (global average and global max per channel); the tile
   vectors are aggregated over the body by mean and by max. Dimension: ``2 aggregations x 2 pools x
   (C_deepest + C_second)`` per encoder (several encoders: concatenated).
3. **Cache**: ``OUT/features.npz`` (atomic) holds the vectors with a fingerprint of the encoder weights and
   the settings; a re-run reuses every cached case and computes only new ones.
4. **MLP** (:func:`train_mlp`): features standardized with the training mean / std, ``Linear(d, hidden) ->
   ReLU -> Dropout -> Linear(hidden, 1)``, full-batch AdamW with weight decay, class-balanced BCE,
   early stopping on the validation loss (best epoch's weights restored) when the val split has cases of
   both classes; otherwise a fixed number of epochs.
5. **Metrics** on the test split: accuracy, macro sensitivity (balanced accuracy = mean of the two
   per-class recalls), ROC AUC (:func:`roc_auc`, Mann-Whitney U with ties counted 1/2), each with a
   percentile-bootstrap 95% CI over test cases (:func:`petctfm.evaluate.bootstrap.bootstrap_ci`) -> ``metrics.json``; ``predictions.csv``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from petctfm.data import format as fmt
from petctfm.core.errors import InputError
from petctfm.core.device import autocast_for, resolve_device
from petctfm.evaluate.bootstrap import bootstrap_ci
from petctfm.inference.sliding_window import pad_to
from petctfm.methods.probe import (
    FrozenEncoder,
    _progress,
    background,
    load_frozen_encoders,
)
from petctfm.io.tables import csv_text

STAGES = {"early": 0, "advanced": 1}
BODY_HU = -500.0  # a tile "holds body" when some CT voxel is above this


# ------------------------------------------------------------------------------------------------ metrics


def roc_auc(y: Sequence[int], score: Sequence[float]) -> float:
    """ROC AUC by the Mann-Whitney rank formula: P(score_pos > score_neg) + 0.5 P(tie). NaN if one class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(y: Sequence[int], pred: Sequence[int]) -> float:
    y, pred = np.asarray(y), np.asarray(pred)
    return float((y == pred).mean()) if len(y) else float("nan")


def balanced_accuracy(y: Sequence[int], pred: Sequence[int]) -> float:
    """Macro sensitivity: mean over the classes present of the recall of each class."""
    y, pred = np.asarray(y), np.asarray(pred)
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def classification_metrics(y: Sequence[int], prob: Sequence[float], threshold: float = 0.5,
                           n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """accuracy, balanced_accuracy (macro sensitivity), auc, per-class sensitivities, each with a CI."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    pred = (prob >= threshold).astype(np.int64)
    fns = {
        "accuracy": lambda i: accuracy(y[i], pred[i]),
        "balanced_accuracy": lambda i: balanced_accuracy(y[i], pred[i]),
        "auc": lambda i: roc_auc(y[i], prob[i]),
    }
    out: dict[str, Any] = {"n": int(len(y)), "n_advanced": int(y.sum()), "n_early": int((1 - y).sum()),
                           "threshold": threshold}
    full = np.arange(len(y))
    for k, (name, fn) in enumerate(fns.items()):
        lo, hi = bootstrap_ci(fn, len(y), n_resamples, seed + k)
        out[name] = {"value": fn(full) if len(y) else float("nan"), "ci_low": lo, "ci_high": hi}
    out["sensitivity_advanced"] = float((pred[y == 1] == 1).mean()) if (y == 1).any() else float("nan")
    out["sensitivity_early"] = float((pred[y == 0] == 0).mean()) if (y == 0).any() else float("nan")
    return out


# ------------------------------------------------------------------------------------------------ features


@torch.no_grad()
def case_vector(encoders: Sequence[FrozenEncoder], image: np.ndarray, patch: int, bg: np.ndarray,
                device: torch.device, scales: int = 2, batch: int = 2) -> np.ndarray:
    """(D,) float32 whole-body vector of a raw (2, X, Y, Z) volume (see module docstring)."""
    X, Y, Z = image.shape[1:]
    size = [int(np.ceil(s / patch) * patch) for s in (X, Y, Z)]
    img, _ = pad_to(np.asarray(image, np.float32), size, bg)
    tiles = []
    for i in range(0, size[0], patch):
        for j in range(0, size[1], patch):
            for k in range(0, size[2], patch):
                t = img[:, i:i + patch, j:j + patch, k:k + patch]
                tiles.append(t)
    body = [t for t in tiles if (t[1] > BODY_HU).any()]
    tiles = body or tiles
    per_encoder = []
    for enc in encoders:
        vecs = []
        if enc.read_case is not None:  # the method reads a whole case its own way, not by tiles
            vecs.append(_pooled(enc.read_case(enc, image, device), scales))
        for s in range(0, 0 if vecs else len(tiles), batch):
            x = torch.from_numpy(np.stack(tiles[s:s + batch])).to(device)
            with autocast_for(device):
                vecs.append(_pooled(enc.features(x), scales))
        v = torch.cat(vecs)  # (n_tiles, 2 * sum C)
        per_encoder.append(torch.cat([v.mean(0), v.amax(0)]))
    return torch.cat(per_encoder).numpy().astype(np.float32)


def _pooled(feats: Sequence[torch.Tensor], scales: int) -> torch.Tensor:
    """(B, 2 * sum C) global average and max of the ``scales`` deepest maps, deepest first."""
    return torch.cat([torch.cat([f.float().mean(dim=(2, 3, 4)), f.float().amax(dim=(2, 3, 4))], dim=1)
                      for f in reversed(list(feats)[-scales:])], dim=1).cpu()


def _fingerprint(encoders: Sequence[FrozenEncoder], patch: int, scales: int) -> str:
    h = hashlib.sha256()
    for enc in encoders:
        for k, v in sorted(enc.backbone.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
        h.update(enc.mode.encode())
        h.update(enc.norm.cpu().numpy().tobytes())
        h.update(repr(enc.record.get("geometry")).encode())
    h.update(f"patch={patch};scales={scales};body={BODY_HU}".encode())
    return h.hexdigest()[:32]


def case_features(data: str | os.PathLike, case_ids: Sequence[str], encoders: Sequence[FrozenEncoder],
                  patch: int, cache: Path, scales: int = 2, progress: bool = False) -> dict[str, np.ndarray]:
    """Vectors of ``case_ids``, from the ``cache`` npz where its fingerprint matches, computed otherwise.

    The cache is rewritten (atomically) with every vector it then holds. Returns {case_id: vector}.
    """
    from petctfm.io.atomic import atomic_path

    info = fmt.load_dataset_info(data)
    fp = _fingerprint(encoders, patch, scales)
    have: dict[str, np.ndarray] = {}
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fp:
                    have = {str(c): v for c, v in zip(z["case_ids"], z["features"])}
        except (OSError, ValueError, KeyError):
            have = {}  # unreadable or old cache: recompute
    todo = [c for c in case_ids if c not in have]
    if todo:
        device = resolve_device()
        for enc in encoders:
            enc.to(device)
        bg = background(info)
        with _progress(progress) as bar:
            task = bar.add_task("stage: encoder features", total=len(todo), info="")
            for cid in todo:
                case = fmt.load_case(data, cid, mmap=False)
                have[cid] = case_vector(encoders, case["image"], patch, bg, device, scales)
                bar.update(task, advance=1, info=cid)
        ids = sorted(have)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.savez(tmp, fingerprint=np.array(fp), case_ids=np.array(ids),
                     features=np.stack([have[c] for c in ids]))
    return {c: have[c] for c in case_ids}


# ------------------------------------------------------------------------------------------------ MLP


@dataclass
class StageConfig:
    hidden: int = 64
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-2
    max_epochs: int = 500
    patience: int = 50
    scales: int = 2  # deepest (1) or deepest + second deepest (2) feature maps
    patch: int | None = None  # default: the first encoder's pretraining patch
    seed: int = 0
    n_resamples: int = 1000

    def __post_init__(self) -> None:  # a value out of range is a UsageError naming the field
        from petctfm.core.checks import check_choice, check_float, check_int

        for name in ("hidden", "max_epochs", "patience"):
            setattr(self, name, check_int(name, getattr(self, name), lo=1))
        check_choice("scales", self.scales, (1, 2))
        if self.patch is not None:
            self.patch = check_int("patch", self.patch, lo=1)
        self.seed = check_int("seed", self.seed, lo=0)
        self.n_resamples = check_int("n_resamples", self.n_resamples, lo=0)
        self.dropout = check_float("dropout", self.dropout, lo=0, hi=1, hi_open=True)
        self.lr = check_float("lr", self.lr, lo=0, lo_open=True)
        self.weight_decay = check_float("weight_decay", self.weight_decay, lo=0)


def build_mlp(d: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


def train_mlp(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
              cfg: StageConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Train the MLP on standardized features; returns (model taking RAW features, training log).

    The returned module standardizes internally (train mean / std as buffers).
    """
    torch.manual_seed(cfg.seed)
    mean = x_train.mean(0)
    std = x_train.std(0) + 1e-6
    xt = torch.from_numpy((x_train - mean) / std).float()
    yt = torch.from_numpy(y_train.astype(np.float32))
    mlp = build_mlp(xt.shape[1], cfg.hidden, cfg.dropout)
    n_pos = float(yt.sum())
    pos_weight = torch.tensor((len(yt) - n_pos) / max(n_pos, 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(mlp.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_val = x_val is not None and len(x_val) > 0 and len(np.unique(y_val)) == 2
    if use_val:
        xv = torch.from_numpy((x_val - mean) / std).float()
        yv = torch.from_numpy(y_val.astype(np.float32))
    best, best_state, best_epoch, wait = float("inf"), copy.deepcopy(mlp.state_dict()), 0, 0
    history = []
    for epoch in range(cfg.max_epochs):
        mlp.train()
        loss = loss_fn(mlp(xt).squeeze(1), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if use_val:
            mlp.eval()
            with torch.no_grad():
                vloss = float(nn.functional.binary_cross_entropy_with_logits(mlp(xv).squeeze(1), yv))
            history.append({"epoch": epoch, "train_loss": float(loss.detach()), "val_loss": vloss})
            if vloss < best - 1e-6:
                best, best_state, best_epoch, wait = vloss, copy.deepcopy(mlp.state_dict()), epoch, 0
            else:
                wait += 1
                if wait >= cfg.patience:
                    break
        else:
            history.append({"epoch": epoch, "train_loss": float(loss.detach())})
            best_state, best_epoch = copy.deepcopy(mlp.state_dict()), epoch
    mlp.load_state_dict(best_state)
    model = _Standardized(mlp, mean, std).eval()
    return model, {"early_stopping": use_val, "best_epoch": best_epoch, "epochs_run": len(history),
                   "best_val_loss": best if use_val else None, "history": history}


class _Standardized(nn.Module):
    """``(x - mean) / std -> mlp -> P(advanced)``; input (N, D) raw features, output (N,) probabilities."""

    def __init__(self, mlp: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.mlp = mlp
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.from_numpy(np.asarray(std, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp((x - self.mean) / self.std).squeeze(1))


# ------------------------------------------------------------------------------------------------ the command


def staged_cases(data: str | os.PathLike) -> dict[str, int]:
    """{case_id: 0 early / 1 advanced} from manifest.csv (other stages left out)."""
    path = Path(data) / fmt.MANIFEST_CSV
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (it holds the 'stage' column)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "case_id" not in (reader.fieldnames or []) or "stage" not in (reader.fieldnames or []):
            raise InputError(f"{path}: needs columns 'case_id' and 'stage'")
        return {r["case_id"]: STAGES[r["stage"].strip().lower()] for r in reader
                if (r.get("stage") or "").strip().lower() in STAGES}


def run_stage(data: str | os.PathLike, encoders: Sequence[str | os.PathLike], out: str | os.PathLike,
              cfg: StageConfig, progress: bool = False) -> dict[str, Any]:
    """Features -> MLP on train (early stopping on val) -> metrics on test. Writes ``out``; returns metrics."""
    from petctfm.io.atomic import atomic_write_json, atomic_write_text, json_safe
    from petctfm.train.checkpoint import read_weights, save_weights

    info = fmt.load_dataset_info(data)
    labels = staged_cases(data)
    splits = fmt.load_splits(data)
    ids = {s: [c for c in splits.get(s, []) if c in labels] for s in ("train", "val", "test")}
    y_train = np.array([labels[c] for c in ids["train"]])
    if len(np.unique(y_train)) < 2:
        raise InputError(f"{data}: the train split needs early and advanced cases "
                         f"(has {int((y_train == 0).sum())} early, {int((y_train == 1).sum())} advanced)")
    if not ids["test"]:
        raise InputError(f"{data}: no staged (early/advanced) case in the test split")
    encs = load_frozen_encoders(encoders, info)
    first = read_weights(encs[0].source.removeprefix("random:"))[1]
    patch = cfg.patch or int((first["data"].get("patch_size") or [first["model"].get("patch", 32)])[0])
    cfg.patch = patch
    out = Path(out)
    feats = case_features(data, ids["train"] + ids["val"] + ids["test"], encs, patch, out / "features.npz",
                          cfg.scales, progress)
    stack = lambda s: np.stack([feats[c] for c in ids[s]]) if ids[s] else None  # noqa: E731
    yv = np.array([labels[c] for c in ids["val"]]) if ids["val"] else None
    model, log = train_mlp(stack("train"), y_train, stack("val"), yv, cfg)
    with torch.no_grad():
        prob = model(torch.from_numpy(stack("test"))).numpy()
    y_test = np.array([labels[c] for c in ids["test"]])
    metrics = classification_metrics(y_test, prob, n_resamples=cfg.n_resamples, seed=cfg.seed)
    metrics.update({
        "task": "early (I-II) = 0 vs advanced (III-IV) = 1", "n_train": len(ids["train"]), "n_val": len(ids["val"]),
        "feature_dim": int(stack("train").shape[1]), "training": {k: v for k, v in log.items() if k != "history"},
        "encoders": [{"source": e.source, "mode": e.mode, "backbone": e.backbone_name} for e in encs],
        "config": asdict(cfg),
    })
    atomic_write_json(out / "metrics.json", json_safe(metrics))
    atomic_write_json(out / "history.json", json_safe(log["history"]))
    rows = [{"case_id": c, "stage": "advanced" if t else "early", "label": int(t), "prob_advanced": float(p),
             "pred": int(p >= 0.5)} for c, t, p in zip(ids["test"], y_test, prob)]
    atomic_write_text(out / "predictions.csv", csv_text(rows, ["case_id", "stage", "label", "prob_advanced", "pred"]))
    save_weights(model, out / "mlp.safetensors", {"method": "stage_mlp", "feature_dim": metrics["feature_dim"],
                                                  **asdict(cfg), "encoders": metrics["encoders"]})
    return metrics


__all__ = ["STAGES", "roc_auc", "accuracy", "balanced_accuracy", "classification_metrics",
           "case_vector", "case_features", "StageConfig", "build_mlp", "train_mlp", "staged_cases", "run_stage"]
