"""Linear probing of frozen pretrained encoders for lesion segmentation (``petctfm probe``).

The seed's 5-shot experiment (Liu et al. 2026): the pretrained encoder is frozen and only a voxel-wise
linear classifier is trained, on very few labeled cases, so the Dice measures how linearly separable
lesions are in the learned features. Joint (PET+CT) pretraining is compared with "separated" pretraining
(a PET-only and a CT-only encoder used side by side).

Pipeline, top to bottom:

1. **Encoders** (:func:`load_frozen_encoders`): each ``--encoder`` run is rebuilt with
   :func:`petctfm.train.checkpoint.load_model` (an ``EarlyFusionMAE``; its ``.backbone`` is used), put in
   eval mode with ``requires_grad = False``. The run's config says its mode (``joint`` -> [PET, CT],
   ``pet`` -> [PET], ``ct`` -> [CT]) and its normalization statistics; each encoder normalizes and selects
   its own channels from the raw [SUV, HU] input, so a PET-only and a CT-only encoder can share one input.
2. **Features**: :func:`petctfm.models.encoders.encoder_features` of every encoder (all scales, finest
   first), computed under ``torch.no_grad`` per patch on the fly (nothing precomputed).
3. **Head**: ONE ``Conv3d(C_total, 2, kernel_size=1)`` on the concatenation of all scales of all encoders
   upsampled (trilinear) to the patch resolution. Because trilinear upsampling and a 1x1x1 convolution are
   both linear, ``head(cat(up(f_s)))`` equals ``sum_s up(W_s * f_s) + b`` with ``W_s`` the columns of the
   head's weight that belong to scale ``s``; :meth:`LinearProbe.forward` computes the latter (the same
   numbers, checked in the tests, without materializing C_total channels at full resolution: with
   SwinUNETR-base that would be 1,536 channels at 96^3).
4. **Training**: Dice + cross-entropy (MONAI ``DiceCELoss``) on patches from EXACTLY the dataset's stored
   subset (``splits.json["kshot"][k]`` or ``["fractions"][percent]``), a patch centred on a lesion voxel
   with probability ``fg_prob`` (foreground oversampling), AdamW, a fixed number of steps, one seed for
   everything; bf16 autocast on CUDA.
5. **Evaluation**: sliding-window inference over every case of the test split
   (:func:`petctfm.inference.sliding_window.lesion_probability`: MONAI, Gaussian blending, volumes smaller
   than the patch padded with background), argmax, per-case
   metrics from :func:`petctfm.evaluate.metrics.case_metrics` plus the voxel-wise average precision of the
   lesion probability (``ap``, threshold-free: how well the frozen features rank lesion voxels, which a
   Dice at the 0.5 threshold can hide) -> ``per_case.csv``; mean Dice and mean AP with percentile-bootstrap
   95% CIs (:func:`petctfm.evaluate.bootstrap.mean_ci`) -> ``summary.json``; the head as
   ``head.safetensors`` (config in the metadata).

Shapes: raw input ``(B, 2, X, Y, Z)`` [SUV, HU]; encoder input ``(B, C_e, X, Y, Z)`` normalized; features
``(B, F_s, X / 2^s, ...)``; logits ``(B, 2, X, Y, Z)``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petctfm.data import format as fmt
from petctfm.data.loader import MODES, list_cases
from petctfm.core.errors import InputError
from petctfm.core.device import autocast_for, resolve_device
from petctfm.data.format import apply_normalization, norm_table
from petctfm.inference.sliding_window import lesion_probability
from petctfm.io.tables import csv_text
from petctfm.models.backbones import patch_divisor
from petctfm.models.encoders import encoder_features

METHOD = "linear_probe"


# ------------------------------------------------------------------------------------------------ encoders


class FrozenEncoder(nn.Module):
    """A pretrained backbone used as a frozen feature extractor on raw [SUV, HU] input.

    ``channels``: indices into the raw input (``MODES[mode]``); ``norm``: (C_e, 4) rows
    ``[clip_lo, clip_hi, mean, std]`` of the encoder's own pretraining normalization.
    """

    def __init__(self, backbone: nn.Module, mode: str, norm: torch.Tensor, source: str, backbone_name: str):
        super().__init__()
        self.backbone = backbone
        self.mode = mode
        self.channels = list(MODES[mode])
        self.register_buffer("norm", norm.float(), persistent=False)
        self.source = source
        self.backbone_name = backbone_name
        self.backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenEncoder":  # the encoder stays in eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, 2, ...) raw [SUV, HU] -> (B, C_e, ...) ``(clip(x) - mean) / std`` of this encoder's channels
        (:func:`petctfm.inference.normalize.normalize`, the one normalization)."""
        return apply_normalization(raw[:, self.channels], self.norm, channel_axis=1)

    @torch.no_grad()
    def features(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale encoder features of a raw (B, 2, X, Y, Z) input, finest first (no gradient)."""
        return encoder_features(self.backbone, self.normalize(raw))

    def feature_channels(self, patch: int) -> list[int]:
        """Channels of each scale (one dry run on a zero patch)."""
        dev = self.norm.device
        return [f.shape[1] for f in self.features(torch.zeros(1, 2, patch, patch, patch, device=dev))]


def _norm_table(cfg: dict[str, Any], info: dict[str, Any], mode: str) -> torch.Tensor:
    norm = ((cfg.get("preprocessing") or {}).get("normalization")) or info["normalization"]
    return torch.from_numpy(norm_table(norm, MODES[mode]))


def load_frozen_encoders(runs: Sequence[str | os.PathLike], info: dict[str, Any]) -> list[FrozenEncoder]:
    """Load each pretraining run (run folder, step folder or .safetensors) as a :class:`FrozenEncoder`."""
    from petctfm.train.checkpoint import load_model, resolve_weights

    if not runs:
        raise InputError("no --encoder given (a pretraining run folder or checkpoint)")
    out = []
    for run in runs:
        path = resolve_weights(run)  # one-line InputError for a missing run
        model, cfg = load_model(path)
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise InputError(f"{path}: not a pretrained MAE checkpoint (model has no .backbone)")
        mode = (cfg.get("data") or {}).get("mode", "joint")
        if mode not in MODES:
            raise InputError(f"{path}: unknown input mode {mode!r} in its config")
        out.append(FrozenEncoder(backbone, mode, _norm_table(cfg, info, mode), str(path),
                                 cfg["model"].get("backbone", cfg.get("method", "?"))))
    return out


# ------------------------------------------------------------------------------------------------ the probe


class LinearProbe(nn.Module):
    """Frozen encoders + one voxel-wise linear head (``Conv3d(C_total, n_classes, 1)``).

    ``forward(raw (B, 2, X, Y, Z)) -> logits (B, n_classes, X, Y, Z)``; X, Y, Z divisible by the backbones'
    patch divisor. ``scale_channels``: per encoder, the channels of each of its scales (the head's input
    channels are their concatenation, encoder by encoder, finest scale first).
    """

    def __init__(self, encoders: Sequence[FrozenEncoder], scale_channels: Sequence[Sequence[int]],
                 n_classes: int = 2):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.scale_channels = [list(map(int, c)) for c in scale_channels]
        self.in_channels = sum(sum(c) for c in self.scale_channels)
        self.head = nn.Conv3d(self.in_channels, n_classes, kernel_size=1)

    def features(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """All scales of all encoders (frozen, no grad), in the head's channel order."""
        return [f for enc in self.encoders for f in enc.features(raw)]

    def concat_features(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, C_total, X, Y, Z): every scale upsampled (trilinear) to the input size, concatenated.

        Memory-hungry at real sizes; :meth:`forward` gives the same logits without it (used in tests).
        """
        size = raw.shape[2:]
        return torch.cat([F.interpolate(f.float(), size=size, mode="trilinear", align_corners=False)
                          if f.shape[2:] != size else f.float() for f in self.features(raw)], dim=1)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        size = raw.shape[2:]
        feats = self.features(raw)
        widths = [f.shape[1] for f in feats]
        if sum(widths) != self.in_channels:
            raise RuntimeError(f"features have {sum(widths)} channels, the head expects {self.in_channels}")
        weights = torch.split(self.head.weight, widths, dim=1)
        out = None
        for f, w in zip(feats, weights):
            y = F.conv3d(f.to(w.dtype), w)  # the head's columns for this scale, at the scale's resolution
            if y.shape[2:] != size:
                y = F.interpolate(y, size=size, mode="trilinear", align_corners=False)
            out = y if out is None else out + y
        return out + self.head.bias.view(1, -1, 1, 1, 1)


# ------------------------------------------------------------------------------------------------ config / data


@dataclass
class ProbeConfig:
    kshot: int | None = 5  # use splits.json["kshot"][str(k)] ...
    fraction: float | None = None  # ... or splits.json["fractions"][percent] (then kshot is None)
    steps: int = 300
    batch_size: int = 2
    lr: float = 1e-2
    weight_decay: float = 1e-4
    patch: int | None = None  # default: the first encoder's pretraining patch size
    fg_prob: float = 0.5  # probability that a training patch is centred on a lesion voxel
    overlap: float = 0.25  # sliding-window overlap at evaluation
    sw_batch_size: int = 2
    seed: int = 0
    n_resamples: int = 1000  # bootstrap resamples for the CI of the mean Dice
    split: str = "test"


def subset_cases(root: str | os.PathLike, kshot: int | None, fraction: float | None) -> tuple[str, list[str]]:
    """(name, case ids) of the stored training subset: ``kshot`` cases or a label ``fraction`` in (0, 1]
    (:func:`petctfm.methods.segmentation.task.resolve_subset`; a probe needs one of the two, never the whole
    training split by default)."""
    from petctfm.methods.segmentation.task import resolve_subset

    if fraction is not None and not 0 < fraction <= 1:
        raise InputError(f"--fraction must be in (0, 1], got {fraction}")
    if kshot is None and fraction is None:
        raise InputError("give --kshot K or --fraction F")
    return resolve_subset(root, fraction, kshot)


def background(info: dict[str, Any]) -> np.ndarray:
    """(2,) raw background values [PET, CT] = each channel's lower clip (0 SUV, air)."""
    return np.array([info["normalization"][c]["clip"][0] for c in fmt.CHANNELS], np.float32)


class PatchSampler:
    """Batches of raw (image, label) patches from a fixed case list, a pure function of (seed, step).

    The patches are fine-tuning's (:class:`petctfm.data.loader.LabeledPatchDataset`: centred on a
    lesion voxel with probability ``fg_prob``, else uniform; image and label cut by the same box, padded
    centred with background / 0) without augmentation and without normalization: each frozen encoder
    normalizes and selects its own channels. ``batch(step)`` -> (raw (B, 2, p, p, p) float32 [SUV, HU],
    label (B, 1, p, p, p) int64).
    """

    def __init__(self, root: str | os.PathLike, case_ids: Sequence[str], patch: int, fg_prob: float, seed: int):
        from petctfm.data.loader import PatchConfig
        from petctfm.data.loader import LabeledPatchDataset

        self.seed = int(seed)
        cfg = PatchConfig(patch_size=(int(patch),) * 3, fg_prob=float(fg_prob), augment=False)
        self.dataset = LabeledPatchDataset(root, cfg, list(case_ids), seed=self.seed)

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(step)])
        ds = self.dataset
        pairs = [ds.read_pair(ds.case_ids[int(rng.integers(len(ds.case_ids)))], rng) for _ in range(batch_size)]
        return (torch.from_numpy(np.stack([x for x, _ in pairs])),
                torch.from_numpy(np.stack([y[None] for _, y in pairs]).astype(np.int64)))


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=True)


# ------------------------------------------------------------------------------------------------ train / eval


def build_probe(runs: Sequence[str | os.PathLike], info: dict[str, Any], patch: int | None) -> tuple[LinearProbe, int]:
    """(probe with a fresh head, patch side) for the given encoder runs."""
    from petctfm.train.checkpoint import read_weights

    encoders = load_frozen_encoders(runs, info)
    if patch is None:
        _, cfg, _ = read_weights(encoders[0].source)
        patch = int(cfg["data"]["patch_size"][0])
    for enc in encoders:
        div = patch_divisor(enc.backbone_name)
        if patch % div:
            raise InputError(f"--patch {patch} must be a multiple of {div} for backbone {enc.backbone_name} "
                             f"({enc.source})")
    return LinearProbe(encoders, [enc.feature_channels(patch) for enc in encoders]), int(patch)


def train_head(probe: LinearProbe, sampler: PatchSampler, cfg: ProbeConfig, device: torch.device,
               progress: bool = False) -> list[float]:
    """Train only ``probe.head`` for ``cfg.steps`` steps; returns the loss of every step."""
    from monai.losses import DiceCELoss

    torch.manual_seed(cfg.seed)
    probe.to(device).train()
    params = [p for p in probe.parameters() if p.requires_grad]
    assert all(p is probe.head.weight or p is probe.head.bias for p in params), "only the head may train"
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    losses = []
    with _progress(progress) as bar:
        task = bar.add_task("probe: training head", total=cfg.steps, info="")
        for step in range(cfg.steps):
            x, y = sampler.batch(step, cfg.batch_size)
            x, y = x.to(device), y.to(device)
            with autocast_for(device):
                logits = probe(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, info=f"loss {losses[-1]:.3f}")
    probe.eval()
    return losses


def run_probe(data: str | os.PathLike, encoders: Sequence[str | os.PathLike], out: str | os.PathLike,
              cfg: ProbeConfig, progress: bool = False) -> dict[str, Any]:
    """The whole probe: train the head on the stored subset, evaluate on ``cfg.split``, write ``out``.

    Files: ``per_case.csv``, ``summary.json``, ``head.safetensors`` (config in the metadata),
    ``config.json``, ``losses.json``. Returns the summary.
    """
    from petctfm.evaluate.bootstrap import mean_ci
    from petctfm.evaluate.metrics import CASE_METRICS, average_precision, case_metrics
    from petctfm.io.atomic import atomic_write_json, atomic_write_text, json_safe
    from petctfm.train.checkpoint import save_weights

    info = fmt.load_dataset_info(data, require_normalization=True)
    subset_name, train_ids = subset_cases(data, cfg.kshot, cfg.fraction)
    test_ids = list_cases(data, cfg.split)
    probe, patch = build_probe(encoders, info, cfg.patch)
    cfg.patch = patch
    bg = background(info)
    device = resolve_device()
    torch.manual_seed(cfg.seed)
    probe.head.reset_parameters()  # the head's initialization is part of the seeded run
    sampler = PatchSampler(data, train_ids, patch, cfg.fg_prob, cfg.seed)
    losses = train_head(probe, sampler, cfg, device, progress)

    rows = []
    with _progress(progress) as bar:
        task = bar.add_task(f"probe: {cfg.split} cases", total=len(test_ids), info="")
        for cid in test_ids:
            case = fmt.load_case(data, cid, mmap=False)
            prob = lesion_probability(probe, case["image"], patch, cfg.overlap, device, bg=bg,
                                      sw_batch_size=cfg.sw_batch_size)
            m = case_metrics((prob > 0.5).astype(np.uint8), case["label"], case["meta"]["spacing"],
                             suv=case["image"][0])
            rows.append({"case_id": cid, **m, "ap": average_precision(prob, case["label"])})
            bar.update(task, advance=1, info=f"{cid} dice {m['dice']:.3f}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "method": METHOD, "dataset": str(data), "subset": subset_name, "train_cases": train_ids,
        "encoders": [{"source": e.source, "mode": e.mode, "backbone": e.backbone_name,
                      "channels": [fmt.CHANNELS[i] for i in e.channels]} for e in probe.encoders],
        "scale_channels": probe.scale_channels, "head_in_channels": probe.in_channels, "n_classes": 2,
        "features": "all encoder scales, trilinear-upsampled to the patch, concatenated (encoder order)",
        "probe": asdict(cfg), "device": device.type,
    }
    config = json_safe(config)
    save_weights(probe.head, out / "head.safetensors", config, step=cfg.steps)
    atomic_write_json(out / "config.json", config)
    atomic_write_json(out / "losses.json", losses)
    atomic_write_text(out / "per_case.csv", csv_text(rows, ["case_id", *CASE_METRICS, "ap"]))
    dice = mean_ci([r["dice"] for r in rows], n_resamples=cfg.n_resamples, seed=cfg.seed)
    ap = mean_ci([r["ap"] for r in rows], n_resamples=cfg.n_resamples, seed=cfg.seed)
    summary = {
        "subset": subset_name, "n_train_cases": len(train_ids), "split": cfg.split, "n_cases": len(rows),
        "dice": dice, "ap": ap, "encoders": config["encoders"], "steps": cfg.steps,
        "loss_first10": float(np.mean(losses[:10])) if losses else None,
        "loss_last10": float(np.mean(losses[-10:])) if losses else None,
    }
    atomic_write_json(out / "summary.json", json_safe(summary))
    return summary


__all__ = ["METHOD", "FrozenEncoder", "load_frozen_encoders", "LinearProbe", "ProbeConfig", "subset_cases",
           "background", "PatchSampler", "build_probe", "train_head", "run_probe"]
