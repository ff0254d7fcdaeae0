"""Linear probing of frozen pretrained networks for lesion segmentation (``petctfm probe``).

The seed's 5-shot experiment (Liu et al. 2026): the pretrained network is frozen and only a voxel-wise linear
classifier is trained on very few labeled cases, so the score measures how linearly decodable lesions are in
the learned features. Joint (PET+CT) pretraining is compared with "separated" pretraining (a PET-only and a
CT-only network side by side), against a random-init control, at matched feature width when asked.

Protocol (issue 15; every choice and its reason in ``docs/probe-and-staging.md``), top to bottom:

1. **Encoders** (:func:`load_frozen_encoders`): each ``--encoder RUN`` is rebuilt with
   :func:`petctfm.train.checkpoint.load_model` (its ``.backbone``), frozen, eval mode; ``random:RUN`` builds
   the same architecture untrained (seeded), the control. Each normalizes and selects its own channels of the
   raw [SUV, HU] input with its run's statistics. :func:`check_compatible` refuses encoders that differ in
   patch size, voxel spacing or normalization statistics.
2. **Probe points** (``points``): encoder scales (``enc`` = all, ``enc0``, ``enc2``... finest first,
   :func:`petctfm.models.encoders.encoder_features`) and/or ``dec``, the network's last decoder features (the
   input of its output layer, :func:`petctfm.models.encoders.decoder_features`): the UNet-shaped MAE's
   reconstruction is a linear function of ``dec``, so that is where a linearly decodable intensity signal sits.
3. **Training voxels**: ``steps`` batches of ``batch_size`` patches from EXACTLY the stored k-shot subset /
   label fraction (centred on a lesion voxel with probability ``fg_prob``, else uniform); per patch up to
   ``voxels_per_patch`` lesion and as many background voxels; their features are read at those voxels with
   trilinear sampling (``grid_sample``, the same numbers as upsampling the map to the patch).
4. **Head**: per-channel standardization (mean / std of the training voxels' features), then an
   L2-regularized, class-balanced logistic regression (each class carries half the weight) solved to
   convergence by full-batch L-BFGS: convex, deterministic, no learning rate or step count to tune. The
   operating threshold maximizes the Dice estimated at the training cases' true lesion prevalence. All of it
   is folded into ONE ``Conv3d(C_total, 2, 1)`` (class 1 logit = ``w/sigma . f + b - w.mu/sigma - logit(t)``),
   so the saved head is self-contained and argmax = the chosen threshold.
5. **Evaluation**: sliding-window lesion probability over every test case (Gaussian blending), per-case Dice
   and voxel-wise average precision (AP, chance = prevalence), means with bootstrap 95% CIs, and the pooled
   ("batch") Dice over all test voxels.

The file is one method read top to bottom (encoders, probe, head fit, the command), hence its length.

Shapes: raw input ``(B, 2, X, Y, Z)``; encoder input ``(B, C_e, X, Y, Z)`` normalized; probe-point maps
``(B, F_p, X / 2^s, ...)``; voxel features ``(N, C_total)``; logits ``(B, 2, X, Y, Z)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petctfm.core.device import autocast_for
from petctfm.core.checks import check_float, check_int, fail
from petctfm.core.errors import InputError, UsageError
from petctfm.data import format as fmt
from petctfm.data.format import apply_normalization, norm_table
from petctfm.data.loader import MODES
from petctfm.models.backbones import patch_divisor
from petctfm.models.encoders import decoder_features, encoder_features, get_encoder, has_output_layer

METHOD = "linear_probe"
RANDOM_PREFIX = "random:"


# ------------------------------------------------------------------------------------------------ encoders


def parse_points(spec: str | Sequence[str], n_scales: int, has_decoder: bool = True) -> list[int | str]:
    """Probe points from ``"all"`` | ``"enc"`` | ``"dec"`` | ``"enc0,enc3,dec"``: encoder scale indices (ints,
    finest = 0) and ``"dec"``, in the given order. ``"all"`` of a backbone without a decoder (``has_decoder``
    False, e.g. a ViT) is its encoder scales; asking such a backbone for ``"dec"`` is an error."""
    items = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    out: list[int | str] = []
    for t in items:
        if t in ("all", "enc"):
            out += list(range(n_scales))
        if t == "dec" and not has_decoder:
            raise InputError("probe point 'dec': this encoder has no decoder (use enc or encK)")
        if t == "dec" or (t == "all" and has_decoder):
            out.append("dec")
        if t.startswith("enc") and t != "enc":
            try:
                k = int(t[3:])
            except ValueError:
                k = -1
            if not 0 <= k < n_scales:
                raise InputError(f"probe point {t!r}: the encoder has scales enc0..enc{n_scales - 1}")
            out.append(k)
        elif t not in ("all", "enc", "dec"):
            raise InputError(f"unknown probe point {t!r}; use all, enc, dec or encK (K = 0..{n_scales - 1})")
    if not out:
        raise InputError("no probe points given")
    return list(dict.fromkeys(out))


class FrozenEncoder(nn.Module):
    """A pretrained backbone used as a frozen feature extractor on raw [SUV, HU] input.

    ``channels``: indices into the raw input (``MODES[mode]``); ``norm``: (C_e, 4) rows
    ``[clip_lo, clip_hi, mean, std]`` of the encoder's own pretraining normalization; ``points``: probe points
    (:func:`parse_points`; default all encoder scales); ``record``: patch size, spacing, normalization and the
    method's own pretraining ``geometry`` of its run (:func:`check_compatible`); ``read_case``: the method's
    whole-case reader for staging (:attr:`petctfm.core.registry.Method.case_features`), or None (tiles).
    """

    def __init__(self, backbone: nn.Module, mode: str, norm: torch.Tensor, source: str, backbone_name: str,
                 points: str | Sequence[str] = "enc", record: dict[str, Any] | None = None,
                 read_case: Callable[..., list[torch.Tensor]] | None = None):
        super().__init__()
        self.backbone = backbone
        self.mode = mode
        self.channels = list(MODES[mode])
        self.register_buffer("norm", norm.float(), persistent=False)
        self.source = source
        self.backbone_name = backbone_name
        self.record = record or {}
        self.read_case = read_case
        self.backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.points = parse_points(points, len(get_encoder(backbone).channels()), has_output_layer(backbone))

    @property
    def geometry(self) -> dict[str, Any]:
        """The method's own pretraining geometry (:attr:`petctfm.core.registry.Method.encoder_record`), or {}."""
        return self.record.get("geometry") or {}

    def train(self, mode: bool = True) -> "FrozenEncoder":  # the encoder stays in eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, 2, ...) raw [SUV, HU] -> (B, C_e, ...) ``(clip(x) - mean) / std`` of this encoder's channels."""
        return apply_normalization(raw[:, self.channels], self.norm, channel_axis=1)

    @torch.no_grad()
    def scale_features(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """All encoder scales of a raw (B, 2, X, Y, Z) input, finest first (staging uses these)."""
        return encoder_features(self.backbone, self.normalize(raw.to(self.norm.device)))

    @torch.no_grad()
    def features(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """The maps of this encoder's probe points, in :attr:`points` order (no gradient)."""
        x = self.normalize(raw.to(self.norm.device))
        scales = encoder_features(self.backbone, x) if any(p != "dec" for p in self.points) else []
        dec = decoder_features(self.backbone, x) if "dec" in self.points else None
        return [dec if p == "dec" else scales[p] for p in self.points]  # type: ignore[index]

    def feature_channels(self, patch: int) -> list[int]:
        """Channels of each probe point (one dry run on a zero patch)."""
        return [f.shape[1] for f in self.features(torch.zeros(1, 2, patch, patch, patch))]


def _run_record(cfg: dict[str, Any], info: dict[str, Any], geometry: dict[str, Any]) -> dict[str, Any]:
    """What must agree between encoders probed together: patch size, spacing, normalization statistics and the
    method's own pretraining ``geometry``."""
    pre = cfg.get("preprocessing") or {}
    spacing = (pre.get("harmonize") or {}).get("spacing")
    if spacing is None and cfg.get("dataset"):  # runs from before the spacing was recorded: their dataset
        try:
            spacing = fmt.load_dataset_info(cfg["dataset"]).get("spacing")
        except InputError:
            spacing = None
    data = cfg.get("data") or {}
    return {"geometry": geometry or None,  # e.g. the whole-body stack a ViT encoder was pretrained on
            "patch_size": [int(v) for v in data.get("patch_size", [])],
            "spacing": [round(float(v), 4) for v in spacing] if spacing else None,
            "normalization": pre.get("normalization") or info["normalization"]}


def load_frozen_encoders(runs: Sequence[str | os.PathLike], info: dict[str, Any], points: str = "enc",
                         seed: int = 0) -> list[FrozenEncoder]:
    """Each pretraining run (run folder, step folder or .safetensors) as a :class:`FrozenEncoder`;
    ``random:RUN`` = RUN's architecture, mode and normalization with untrained weights (``torch`` seeded with
    ``seed`` + its position, the random-init control)."""
    from petctfm.core.registry import owner_of
    from petctfm.train.checkpoint import build_from_config, load_model, read_weights, resolve_weights

    if not runs:
        raise InputError("no --encoder given (a pretraining run folder or checkpoint)")
    out = []
    for k, run in enumerate(runs):
        spec = str(run)
        random = spec.startswith(RANDOM_PREFIX)
        path = resolve_weights(spec[len(RANDOM_PREFIX):] if random else spec)  # one-line error for a missing run
        if random:
            _, cfg, _ = read_weights(path)
            torch.manual_seed(int(seed) + k)
            model = build_from_config(cfg, path).eval()
        else:
            model, cfg = load_model(path)
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise InputError(f"{path}: not a pretrained encoder checkpoint (model has no .backbone)")
        mode = (cfg.get("data") or {}).get("mode", "joint")
        if mode not in MODES:
            raise InputError(f"{path}: unknown input mode {mode!r} in its config")
        method = owner_of(cfg.get("method"), path)
        rec = _run_record(cfg, info, method.encoder_record(cfg) if method.encoder_record else {})
        norm = torch.from_numpy(norm_table(rec["normalization"], MODES[mode]))
        out.append(FrozenEncoder(backbone, mode, norm, (RANDOM_PREFIX if random else "") + str(path),
                                 cfg["model"].get("backbone", cfg.get("method", "?")), points, rec,
                                 method.case_features))
    return out


def check_compatible(encoders: Sequence[FrozenEncoder]) -> None:
    """One-line InputError when encoders probed together were pretrained on different patch sizes, voxel
    spacings or normalization statistics (their features would not describe the same voxels the same way)."""
    ref = encoders[0]
    for enc in encoders[1:]:
        for key, what in (("patch_size", "patch size"), ("spacing", "voxel spacing"),
                          ("normalization", "normalization statistics"), ("geometry", "pretraining geometry")):
            a, b = ref.record.get(key), enc.record.get(key)
            if a is not None and b is not None and a != b:
                raise InputError(f"encoders differ in {what}: {ref.source} has {_short(a)}, {enc.source} has "
                                 f"{_short(b)}; probe encoders pretrained on the same harmonized dataset and patch")


def _short(v: Any) -> str:
    return str(v) if len(str(v)) < 80 else str(v)[:77] + "..."


# ------------------------------------------------------------------------------------------------ the probe


class LinearProbe(nn.Module):
    """Frozen encoders + one voxel-wise linear head (``Conv3d(C_total, n_classes, 1)``).

    ``forward(raw (B, 2, X, Y, Z)) -> logits (B, n_classes, X, Y, Z)``; X, Y, Z divisible by the backbones'
    patch divisor. ``scale_channels``: per encoder, the channels of each of its probe points (the head's input
    channels are their concatenation, encoder by encoder, in point order).
    """

    def __init__(self, encoders: Sequence[FrozenEncoder], scale_channels: Sequence[Sequence[int]],
                 n_classes: int = 2):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.scale_channels = [list(map(int, c)) for c in scale_channels]
        self.in_channels = sum(sum(c) for c in self.scale_channels)
        self.head = nn.Conv3d(self.in_channels, n_classes, kernel_size=1)

    def features(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """All probe points of all encoders (frozen, no grad), in the head's channel order."""
        return [f for enc in self.encoders for f in enc.features(raw)]

    def concat_features(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, C_total, X, Y, Z): every map upsampled (trilinear) to the input size, concatenated (tests)."""
        size = raw.shape[2:]
        return torch.cat([F.interpolate(f.float(), size=size, mode="trilinear", align_corners=False)
                          if f.shape[2:] != size else f.float() for f in self.features(raw)], dim=1)

    def sample_features(self, raw: torch.Tensor, coords: Sequence[torch.Tensor]) -> torch.Tensor:
        """(sum N_b, C_total) features at voxels ``coords[b]`` ((N_b, 3) int, [x, y, z]) of each patch ``b`` of
        ``raw`` (B, 2, X, Y, Z): trilinear ``grid_sample`` at the voxel centres, equal to
        :meth:`concat_features` at those voxels without upsampling any map."""
        size = torch.tensor(raw.shape[2:], dtype=torch.float32)
        rows, feats = [], self.features(raw)
        for b, c in enumerate(coords):
            g = (2 * c.float() + 1) / size - 1  # voxel centre -> [-1, 1] (align_corners=False)
            grid = g.flip(-1).view(1, 1, 1, -1, 3)  # grid_sample wants (z, y, x) order for (X, Y, Z) maps
            per = [F.grid_sample(f[b:b + 1].float(), grid.to(f.device), mode="bilinear", padding_mode="border",
                                 align_corners=False).view(f.shape[1], -1) for f in feats]
            rows.append(torch.cat(per).T.cpu())
        return torch.cat(rows)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        size = raw.shape[2:]
        feats = self.features(raw)
        widths = [f.shape[1] for f in feats]
        if sum(widths) != self.in_channels:
            raise RuntimeError(f"features have {sum(widths)} channels, the head expects {self.in_channels}")
        out = None
        for f, w in zip(feats, torch.split(self.head.weight, widths, dim=1)):
            y = F.conv3d(f.to(w.dtype), w)  # the head's columns for this map, at the map's resolution
            if y.shape[2:] != size:
                y = F.interpolate(y, size=size, mode="trilinear", align_corners=False)
            out = y if out is None else out + y
        return out + self.head.bias.view(1, -1, 1, 1, 1)


# ------------------------------------------------------------------------------------------------ the head fit


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 500) -> dict[str, Any]:
    """Class-balanced, L2-regularized logistic regression on standardized features, by full-batch L-BFGS.

    x: (N, C) features; y: (N,) {0, 1}. Standardization: ``mu``, ``sigma`` (C,) of ``x`` (sigma floored at
    1e-6). Loss: ``sum_i a_i BCE(w.z_i + b, y_i) + l2/2 |w|^2`` with ``a_i = 0.5 / n_{y_i}`` (each class half
    the weight). Returns ``{"w", "b", "mu", "sigma", "loss", "iterations"}`` (w in standardized units).
    """
    y = np.asarray(y).astype(np.float64).ravel()
    if y.min() == y.max():
        raise InputError("the probe's training voxels hold only one class (no lesion voxels in the subset?)")
    xt = torch.as_tensor(np.asarray(x, np.float64))
    mu, sigma = xt.mean(0), xt.std(0).clamp_min(1e-6)
    z = (xt - mu) / sigma
    yt = torch.as_tensor(y)
    a = torch.where(yt > 0, 0.5 / yt.sum(), 0.5 / (1 - yt).sum())
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=int(max_iter), history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (a * F.binary_cross_entropy_with_logits(z @ w + b, yt, reduction="none")).sum() + 0.5 * l2 * w.dot(w)
        loss.backward()
        return loss

    opt.step(closure)
    loss = float(closure().detach())
    its = int(opt.state[opt._params[0]].get("n_iter", 0))
    return {"w": w.detach().numpy(), "b": float(b.detach()), "mu": mu.numpy(), "sigma": sigma.numpy(),
            "loss": loss, "iterations": its}


def decision_scores(fit: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """(N,) logits of the fitted head for features x (N, C)."""
    return ((np.asarray(x, np.float64) - fit["mu"]) / fit["sigma"]) @ fit["w"] + fit["b"]


def dice_threshold(scores: np.ndarray, y: np.ndarray, prevalence: float) -> tuple[float, float]:
    """(logit threshold, estimated Dice) maximizing the Dice a threshold would give on volumes with lesion
    ``prevalence``: with TPR(t), FPR(t) from the sampled positives / negatives,
    ``Dice = 2 p TPR / (p + p TPR + (1 - p) FPR)``."""
    s, y = np.asarray(scores, np.float64), np.asarray(y).astype(bool)
    cand = np.unique(np.quantile(s, np.linspace(0, 1, 401)))
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tpr = 1 - np.searchsorted(pos, cand, side="left") / max(len(pos), 1)
    fpr = 1 - np.searchsorted(neg, cand, side="left") / max(len(neg), 1)
    p = float(np.clip(prevalence, 1e-9, 1))
    dice = 2 * p * tpr / np.maximum(p + p * tpr + (1 - p) * fpr, 1e-12)
    k = int(np.argmax(dice))
    return float(cand[k]), float(dice[k])


def fold_head(probe: LinearProbe, fit: dict[str, Any], threshold: float) -> None:
    """Write the fitted standardized logistic regression into ``probe.head`` (class 0 logit 0, class 1 logit
    ``sum_c w_c (f_c - mu_c) / sigma_c + b - threshold``): softmax class 1 = sigmoid of the shifted logit, so
    argmax (p > 0.5) applies the chosen threshold."""
    w = fit["w"] / fit["sigma"]
    bias = fit["b"] - float(np.dot(fit["w"], fit["mu"] / fit["sigma"])) - threshold
    with torch.no_grad():
        probe.head.weight.zero_()
        probe.head.bias.zero_()
        probe.head.weight[1, :, 0, 0, 0] = torch.as_tensor(w, dtype=probe.head.weight.dtype)
        probe.head.bias[1] = float(bias)


# ------------------------------------------------------------------------------------------------ building


def build_probe(runs: Sequence[str | os.PathLike], info: dict[str, Any], patch: int | None,
                points: str = "all", seed: int = 0) -> tuple[LinearProbe, int]:
    """(probe with a fresh head, patch side) for the given encoder runs (``random:RUN`` allowed), after
    :func:`check_compatible`."""
    encoders = load_frozen_encoders(runs, info, points, seed)
    check_compatible(encoders)
    if patch is None:
        patch = int(encoders[0].record["patch_size"][0])
    for enc in encoders:
        div = patch_divisor(enc.backbone_name)
        if patch % div:
            raise InputError(f"--patch {patch} must be a multiple of {div} for backbone {enc.backbone_name} "
                             f"({enc.source})")
    return LinearProbe(encoders, [enc.feature_channels(patch) for enc in encoders]), int(patch)


#: The k of the k-shot subset when neither ``kshot`` nor ``fraction`` is given (the seed's 5-shot probe).
DEFAULT_KSHOT = 5
_POINT = re.compile(r"all|enc|dec|enc\d+")


@dataclass
class ProbeConfig:
    """The probe's settings; checked when made (a value out of range is a UsageError naming the field)."""

    kshot: int | None = None  # use splits.json["kshot"][str(k)] (default DEFAULT_KSHOT unless fraction is given) ...
    fraction: float | None = None  # ... or splits.json["fractions"][percent] (then kshot is None)
    steps: int = 100  # batches of training patches whose voxels the head is fitted on
    batch_size: int = 2
    voxels_per_patch: int = 256  # at most this many lesion voxels and this many background voxels per patch
    points: str = "all"  # probe points: all | enc | dec | encK,... (parse_points)
    l2: float = 1e-3  # ridge penalty on the standardized weights
    max_iter: int = 500  # L-BFGS iterations (it stops earlier at convergence)
    patch: int | None = None  # default: the first encoder's pretraining patch size
    fg_prob: float = 0.5  # probability that a training patch is centred on a lesion voxel
    overlap: float = 0.25  # sliding-window overlap at evaluation
    sw_batch_size: int = 2
    seed: int = 0
    n_resamples: int = 1000  # bootstrap resamples of the CIs
    split: str = "test"

    def __post_init__(self) -> None:
        if self.kshot is not None and self.fraction is not None:
            raise UsageError(f"kshot={self.kshot} and fraction={self.fraction}: give one of them, not both")
        if self.kshot is None and self.fraction is None:
            self.kshot = DEFAULT_KSHOT
        if self.kshot is not None:
            self.kshot = check_int("kshot", self.kshot, lo=1)
        if self.fraction is not None:
            self.fraction = check_float("fraction", self.fraction, lo=0, hi=1, lo_open=True)
        for name in ("steps", "batch_size", "voxels_per_patch", "max_iter", "sw_batch_size"):
            setattr(self, name, check_int(name, getattr(self, name), lo=1))
        if self.patch is not None:
            self.patch = check_int("patch", self.patch, lo=1)
        self.seed = check_int("seed", self.seed, lo=0)
        self.n_resamples = check_int("n_resamples", self.n_resamples, lo=0)
        self.l2 = check_float("l2", self.l2, lo=0)
        self.fg_prob = check_float("fg_prob", self.fg_prob, lo=0, hi=1)
        self.overlap = check_float("overlap", self.overlap, lo=0, hi=1, hi_open=True)
        items = [t.strip() for t in (self.points.split(",") if isinstance(self.points, str) else self.points)]
        bad = [t for t in items if not _POINT.fullmatch(t)]
        if bad or not any(items):
            raise fail("points", self.points, f"{', '.join(map(repr, bad)) or 'nothing'} is not a probe point; "
                       "must be all, enc, dec or encK (K = 0, 1, ...), comma-separated")
        if not isinstance(self.split, str) or not self.split:
            raise fail("split", self.split, "must be the name of a dataset split (e.g. test)")


def subset_cases(root: str | os.PathLike, kshot: int | None, fraction: float | None) -> tuple[str, list[str]]:
    """(name, case ids) of the stored training subset: ``kshot`` cases or a label ``fraction`` in (0, 1]
    (:func:`petctfm.methods.segmentation.task.resolve_subset`; never the whole training split by default)."""
    from petctfm.methods.segmentation.task import resolve_subset

    if fraction is not None:
        check_float("fraction", fraction, lo=0, hi=1, lo_open=True)
    elif kshot is None:
        raise UsageError("give kshot (k-shot subset) or fraction (label fraction)", arg="kshot")
    else:
        check_int("kshot", kshot, lo=1)
    return resolve_subset(root, fraction, kshot)


def background(info: dict[str, Any]) -> np.ndarray:
    """(2,) raw background values [PET, CT] = each channel's lower clip (0 SUV, air)."""
    return np.array([info["normalization"][c]["clip"][0] for c in fmt.CHANNELS], np.float32)


class PatchSampler:
    """Batches of raw (image, label) patches from a fixed case list, a pure function of (seed, step).

    The patches are fine-tuning's (:class:`petctfm.data.loader.LabeledPatchDataset`: centred on a lesion
    voxel with probability ``fg_prob``, else uniform; image and label cut by the same box, padded centred with
    background / 0) without augmentation and without normalization: each frozen encoder normalizes and
    selects its own channels. ``batch(step)`` -> (raw (B, 2, p, p, p) float32 [SUV, HU], label (B, 1, p, p, p)
    int64).
    """

    def __init__(self, root: str | os.PathLike, case_ids: Sequence[str], patch: int, fg_prob: float, seed: int):
        from petctfm.data.loader import LabeledPatchDataset, PatchConfig

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
    """A rich progress bar (disabled: a no-op), shared with staging."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=True)


def sample_voxels(label: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(M, 3) voxel coordinates of one patch's label (X, Y, Z): up to ``n`` lesion and ``n`` background voxels."""
    out = []
    for cls in (True, False):
        c = np.argwhere((label > 0) == cls)
        if len(c) > n:
            c = c[np.sort(rng.choice(len(c), n, replace=False))]
        out.append(c)
    return np.concatenate(out)


def collect_voxels(probe: LinearProbe, sampler: PatchSampler, cfg: ProbeConfig,
                   device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, C_total) float32, labels (N,) int8) of the training voxels (module docstring, step 3)."""
    probe.to(device).eval()
    xs, ys = [], []
    for step in range(cfg.steps):
        raw, lab = sampler.batch(step, cfg.batch_size)
        rng = np.random.default_rng([cfg.seed, step, 1])
        coords = [sample_voxels(lab[b, 0].numpy(), cfg.voxels_per_patch, rng) for b in range(len(lab))]
        with autocast_for(device):
            xs.append(probe.sample_features(raw.to(device), [torch.from_numpy(c) for c in coords]).float().numpy())
        ys.append(np.concatenate([lab[b, 0].numpy()[tuple(c.T)] for b, c in enumerate(coords)]).astype(np.int8))
    return np.concatenate(xs), np.concatenate(ys)


def lesion_prevalence(root: str | os.PathLike, case_ids: Sequence[str]) -> float:
    """Fraction of lesion voxels over the whole volumes of ``case_ids`` (labels: supervised use)."""
    pos = tot = 0
    for cid in case_ids:
        lab = np.asarray(fmt.load_case(root, cid)["label"])
        pos, tot = pos + int((lab > 0).sum()), tot + lab.size
    return pos / max(tot, 1)


def train_head(probe: LinearProbe, sampler: PatchSampler, cfg: ProbeConfig, device: torch.device,
               prevalence: float) -> dict[str, Any]:
    """Fit the head (module docstring, steps 3-4) and fold it into ``probe.head``; returns the fit record
    (voxel counts, loss, L-BFGS iterations, threshold, estimated training Dice and AP)."""
    from petctfm.evaluate.metrics import average_precision

    x, y = collect_voxels(probe, sampler, cfg, device)
    fit = fit_logistic(x, y, cfg.l2, cfg.max_iter)
    scores = decision_scores(fit, x)
    thr, dice_est = dice_threshold(scores, y, prevalence)
    fold_head(probe, fit, thr)
    return {"n_voxels": int(len(y)), "n_lesion_voxels": int(y.sum()), "loss": fit["loss"],
            "iterations": fit["iterations"], "threshold_logit": thr, "train_dice_estimate": dice_est,
            "train_ap_sampled": average_precision(scores, y), "prevalence": prevalence}


# ------------------------------------------------------------------------------------------------ the command


def run_probe(data: str | os.PathLike, encoders: Sequence[str | os.PathLike], out: str | os.PathLike,
              cfg: ProbeConfig, progress: bool = False) -> dict[str, Any]:
    """The whole probe: fit the head on the stored subset, evaluate on ``cfg.split``, write ``out``.

    Files: ``per_case.csv`` (case metrics + ``ap``), ``summary.json`` (mean Dice and AP with 95% CIs, pooled
    Dice, the fit record), ``head.safetensors`` (config in the metadata), ``config.json``. Returns the summary.
    """
    from pathlib import Path

    from petctfm.core.device import resolve_device
    from petctfm.data.loader import list_cases
    from petctfm.evaluate.bootstrap import mean_ci
    from petctfm.evaluate.metrics import CASE_METRICS, average_precision, case_metrics
    from petctfm.inference.sliding_window import lesion_probability
    from petctfm.io.atomic import atomic_write_json, atomic_write_text, json_safe
    from petctfm.io.tables import csv_text
    from petctfm.train.checkpoint import save_weights

    info = fmt.load_dataset_info(data, require_normalization=True)
    subset_name, train_ids = subset_cases(data, cfg.kshot, cfg.fraction)
    test_ids = list_cases(data, cfg.split)
    probe, patch = build_probe(encoders, info, cfg.patch, cfg.points, cfg.seed)
    cfg.patch = patch
    device = resolve_device()
    sampler = PatchSampler(data, train_ids, patch, cfg.fg_prob, cfg.seed)
    fit = train_head(probe, sampler, cfg, device, lesion_prevalence(data, train_ids))

    rows, tp, fp, fn = [], 0, 0, 0
    bar = _progress(progress)
    bar.start()
    task = bar.add_task(f"probe: {cfg.split} cases", total=len(test_ids), info="")
    for cid in test_ids:
        case = fmt.load_case(data, cid, mmap=False)
        prob = lesion_probability(probe, case["image"], patch, cfg.overlap, device, bg=background(info),
                                  sw_batch_size=cfg.sw_batch_size)
        pred, gt = prob > 0.5, np.asarray(case["label"]) > 0
        tp, fp, fn = tp + int((pred & gt).sum()), fp + int((pred & ~gt).sum()), fn + int((~pred & gt).sum())
        m = case_metrics(pred.astype(np.uint8), case["label"], case["meta"]["spacing"], suv=case["image"][0])
        rows.append({"case_id": cid, **m, "ap": average_precision(prob, case["label"]),
                     "prevalence": float(gt.mean())})
        bar.update(task, advance=1, info=f"{cid} dice {m['dice']:.3f} ap {rows[-1]['ap']:.4f}")
    bar.stop()

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = json_safe({
        "method": METHOD, "dataset": str(data), "subset": subset_name, "train_cases": train_ids,
        "encoders": [{"source": e.source, "mode": e.mode, "backbone": e.backbone_name, "points": e.points,
                      "channels": [fmt.CHANNELS[i] for i in e.channels], "patch_size": e.record["patch_size"],
                      "spacing": e.record["spacing"]} for e in probe.encoders],
        "scale_channels": probe.scale_channels, "head_in_channels": probe.in_channels, "n_classes": 2,
        "head": "standardized class-balanced L2 logistic regression (L-BFGS), threshold folded into the bias",
        "probe": asdict(cfg), "fit": fit, "device": device.type,
    })
    save_weights(probe.head, out / "head.safetensors", config, step=cfg.steps)
    atomic_write_json(out / "config.json", config)
    atomic_write_text(out / "per_case.csv", csv_text(rows, ["case_id", *CASE_METRICS, "ap", "prevalence"]))
    ci = {k: mean_ci([r[k] for r in rows], n_resamples=cfg.n_resamples, seed=cfg.seed)
          for k in ("dice", "ap", "prevalence")}
    summary = {
        "subset": subset_name, "n_train_cases": len(train_ids), "split": cfg.split, "n_cases": len(rows),
        **ci, "dice_pooled": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
        "encoders": config["encoders"], "points": cfg.points, "head_in_channels": probe.in_channels,
        "steps": cfg.steps, "fit": fit,
    }
    atomic_write_json(out / "summary.json", json_safe(summary))
    return summary


__all__ = ["METHOD", "RANDOM_PREFIX", "parse_points", "FrozenEncoder", "load_frozen_encoders", "check_compatible",
           "LinearProbe", "fit_logistic", "decision_scores", "dice_threshold", "fold_head", "build_probe",
           "ProbeConfig", "subset_cases", "background", "PatchSampler", "sample_voxels", "collect_voxels",
           "lesion_prevalence", "train_head", "run_probe"]

