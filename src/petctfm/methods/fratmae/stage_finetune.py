"""Ann Arbor staging as the paper trains it (Oh et al. 2025, Sec. 2.4, Stage 2): the pretrained encoder and an
MLP on the central whole-body stack, fine-tuned **end to end** with cross-entropy (AdamW, initial lr 5e-5,
batch 2, 500 epochs), trained on the cases of a stored label fraction (the paper: the segmentation's 20 %).
The frozen-encoder probe (:mod:`petctfm.methods.staging`, ``petctfm stage``) stays beside it.

Read top to bottom:

1. **Cases**: early (I-II) = 0 / advanced (III-IV) = 1 from ``manifest.csv`` (:func:`~petctfm.methods.staging.
   staged_cases`); train = the staged cases of the stored fraction (``fraction``; None: the whole train split),
   test = the staged test cases.
2. **Encoder**: a FratMAE pretraining run, or ``random:RUN`` (its architecture and stack geometry with random
   weights: the no-pretraining arm), loaded as the probe loads it
   (:func:`petctfm.methods.probe.load_frozen_encoders`: the run's normalization and stack geometry), then
   unfrozen.
3. **Input** (computed once per case, in memory): the case normalized with the encoder's statistics, resized to
   its pretraining grid, the centred ``k * depth`` block of the stack axis, every k-th slice
   (:func:`~petctfm.methods.fratmae.stacks.central_stack`: coronal, or axial for an axial run).
4. **Model** (:class:`StagingNet`): the encoder's two deepest taps, mean- and max-pooled over tokens, ->
   ``LayerNorm -> Linear(d, hidden) -> GELU -> Dropout -> Linear(hidden, 2)``.
5. **Training**: ``epochs`` passes over the train cases (shuffled per epoch with ``seed``), batches of
   ``batch_size``, AdamW with cosine decay from ``lr`` to 0, plain cross-entropy (the paper's; no class weights),
   bf16 autocast on CUDA; the last epoch's weights are used (the paper names no model selection).
6. **Metrics** on the test split: :func:`~petctfm.methods.staging.classification_metrics` (macro sensitivity,
   accuracy, AUC with bootstrap CIs) -> ``OUT/metrics.json``, ``OUT/predictions.csv`` (the columns of
   ``petctfm stage``), ``OUT/history.json`` (mean train loss per epoch).

A killed run restarts from the beginning (no checkpoints; the ablation's ``done.json`` skips finished runs).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from petctfm.core.errors import InputError


@dataclass
class StageFinetuneConfig:
    """The paper's staging fine-tuning (defaults = the paper's values where it gives one)."""

    lr: float = 5e-5  # paper
    batch_size: int = 2  # paper
    epochs: int = 500  # paper
    weight_decay: float = 0.05  # ours (AdamW, as pretraining)
    hidden: int = 256  # ours (the paper says "MLP")
    dropout: float = 0.1  # ours
    fraction: float | None = None  # stored label fraction (percent or ratio) whose staged cases train
    seed: int = 0
    n_resamples: int = 1000
    device: str = "auto"
    max_time_s: float | None = None  # stop after this wall time (then the current weights are evaluated)

    def __post_init__(self) -> None:  # a value out of range is a UsageError naming the field
        from petctfm.core.checks import check_float, check_int

        for name in ("batch_size", "epochs", "hidden"):
            setattr(self, name, check_int(name, getattr(self, name), lo=1))
        self.seed = check_int("seed", self.seed, lo=0)
        self.n_resamples = check_int("n_resamples", self.n_resamples, lo=0)
        self.lr = check_float("lr", self.lr, lo=0, lo_open=True)
        self.weight_decay = check_float("weight_decay", self.weight_decay, lo=0)
        self.dropout = check_float("dropout", self.dropout, lo=0, hi=1, hi_open=True)


def _pool(t: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) token map -> (B, 2C): mean and max over tokens."""
    f = t.flatten(2).float()
    return torch.cat([f.mean(-1), f.amax(-1)], 1)


class StagingNet(nn.Module):
    """``forward(x (B, 2, *stack)) -> (B, 2)`` logits [early, advanced]: the backbone's two deepest taps pooled
    (mean and max per channel), then the MLP."""

    def __init__(self, backbone: nn.Module, hidden: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        c = backbone.feature_channels()
        d = 2 * (c[-1] + c[-2])
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.features(x)
        return self.head(torch.cat([_pool(feats[-1]), _pool(feats[-2])], 1))


def subset_cases(data: str | os.PathLike, fraction: float | None) -> list[str]:
    """The train cases of the stored label fraction (percent or ratio); None: the whole train split."""
    from petctfm.data import format as fmt
    from petctfm.methods.segmentation.task import resolve_subset

    if fraction is None:
        return list(fmt.load_splits(data).get("train", []))
    return resolve_subset(data, fraction=float(fraction))[1]


@torch.no_grad()
def _inputs(enc: Any, data: str | os.PathLike, case_ids: Sequence[str]) -> torch.Tensor:
    """(n, C, *stack) central stacks of ``case_ids`` (normalized with the encoder's statistics)."""
    from petctfm.data import format as fmt
    from petctfm.methods.fratmae.stacks import StackConfig, central_stack

    if "stack" not in enc.geometry:
        raise InputError(f"{enc.source}: not a FratMAE run (no whole-body stack geometry)")
    cfg = StackConfig.from_dict(enc.geometry["stack"])
    out = []
    for cid in case_ids:
        raw = torch.from_numpy(np.array(fmt.load_case(data, cid, mmap=False)["image"], np.float32))[None]
        out.append(central_stack(enc.normalize(raw)[0], cfg))
    return torch.stack(out)


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train_staging(model: StagingNet, x: torch.Tensor, y: torch.Tensor, cfg: StageFinetuneConfig,
                  device: torch.device) -> dict[str, Any]:
    """End-to-end training (module docstring, step 5); returns the log."""
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total, step, history, t0 = cfg.epochs * steps_per_epoch, 0, [], time.perf_counter()
    stopped = "epochs"
    for epoch in range(cfg.epochs):
        order, losses = torch.randperm(len(x), generator=g), []
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _cosine(step, total)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(xb)
            loss = nn.functional.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses))})
        if cfg.max_time_s is not None and time.perf_counter() - t0 > cfg.max_time_s:
            stopped = "max_time"
            break
    return {"epochs_run": len(history), "steps": step, "stopped": stopped,
            "time_s": round(time.perf_counter() - t0, 1), "history": history}


@torch.no_grad()
def predict_staging(model: StagingNet, x: torch.Tensor, device: torch.device, batch: int = 2) -> np.ndarray:
    """P(advanced) per case, (n,)."""
    model.to(device).eval()
    out = []
    for i in range(0, len(x), batch):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x[i:i + batch].to(device))
        out.append(torch.softmax(logits.float(), 1)[:, 1].cpu())
    return torch.cat(out).numpy().astype(np.float64)


def run_stage_finetune(data: str | os.PathLike, encoder: str | os.PathLike, out: str | os.PathLike,
                       cfg: StageFinetuneConfig | None = None) -> dict[str, Any]:
    """Fine-tune ``encoder`` (a FratMAE run, or ``random:RUN``) + MLP for early vs advanced staging on
    ``data``; write ``out`` (module docstring); return the metrics."""
    from petctfm.core.device import resolve_device
    from petctfm.data import format as fmt
    from petctfm.io.atomic import atomic_write_json, atomic_write_text, json_safe
    from petctfm.io.tables import csv_text
    from petctfm.methods.probe import load_frozen_encoders
    from petctfm.methods.staging import classification_metrics, staged_cases

    cfg = cfg or StageFinetuneConfig()
    labels = staged_cases(data)
    splits = fmt.load_splits(data)
    train = [c for c in subset_cases(data, cfg.fraction) if c in labels]
    test = [c for c in splits.get("test", []) if c in labels]
    y_train = np.array([labels[c] for c in train], np.int64)
    if len(np.unique(y_train)) < 2:
        raise InputError(f"{data}: the staging training cases (fraction {cfg.fraction}) need early and advanced "
                         f"cases (have {int((y_train == 0).sum())} early, {int((y_train == 1).sum())} advanced)")
    if not test:
        raise InputError(f"{data}: no staged (early/advanced) case in the test split")
    info = fmt.load_dataset_info(data)
    torch.manual_seed(cfg.seed)
    enc = load_frozen_encoders([str(encoder)], info, seed=cfg.seed)[0]
    backbone = enc.backbone
    for p in backbone.parameters():
        p.requires_grad_(True)  # end to end
    x_train, x_test = _inputs(enc, data, train), _inputs(enc, data, test)
    torch.manual_seed(cfg.seed)
    model = StagingNet(backbone, cfg.hidden, cfg.dropout)
    device = resolve_device(cfg.device)
    log = train_staging(model, x_train, torch.from_numpy(y_train), cfg, device)
    prob = predict_staging(model, x_test, device, cfg.batch_size)
    y_test = np.array([labels[c] for c in test], np.int64)
    metrics = classification_metrics(y_test, prob, n_resamples=cfg.n_resamples, seed=cfg.seed)
    metrics.update({
        "task": "early (I-II) = 0 vs advanced (III-IV) = 1", "mode": "finetune (end to end, the paper's)",
        "n_train": len(train), "train_cases": train, "encoder": enc.source,
        "stack": enc.geometry["stack"], "training": {k: v for k, v in log.items() if k != "history"},
        "config": asdict(cfg),
    })
    out = Path(out)
    atomic_write_json(out / "metrics.json", json_safe(metrics))
    atomic_write_json(out / "history.json", json_safe(log["history"]))
    rows = [{"case_id": c, "stage": "advanced" if t else "early", "label": int(t), "prob_advanced": float(p),
             "pred": int(p >= 0.5)} for c, t, p in zip(test, y_test, prob)]
    atomic_write_text(out / "predictions.csv", csv_text(rows, ["case_id", "stage", "label", "prob_advanced", "pred"]))
    return metrics


__all__ = ["StageFinetuneConfig", "StagingNet", "subset_cases", "train_staging", "predict_staging",
           "run_stage_finetune"]
