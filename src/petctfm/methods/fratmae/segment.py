"""FratMAE downstream lesion segmentation: a UNETR decoder on the twin encoders, trained on stack-shaped crops
of the harmonized volume (the paper's) or on resized whole-body stacks, predicting on the harmonized grid.

1. **Network** (:class:`FratMAESegmenter`): the pretrained :class:`~.vit.TwinViT` (both encoders fully visible;
   no masking downstream) and a UNETR decoder built from MONAI's ``UnetrBasicBlock`` / ``UnetrPrUpBlock`` /
   ``UnetrUpBlock`` / ``UnetOutBlock`` (Hatamizadeh et al. 2022) on the PET and CT patch tokens of layers
   3/6/9/12 (every quarter of the depth), concatenated along channels (2D wide; D for the MAE arm). For a
   patch side ``p = 2^L`` the decoder has L levels: level 0 is a conv block on the input stack, level j =
   1..L-1 takes tap ``4 - L + j`` (1-based among the four) up-sampled ``L - j`` times by ``UnetrPrUpBlock``,
   the last tap is the bottleneck; channels ``feature_size * 2^j`` (UNETR's 16/32/64/128 for p = 16).
2. **Input** (``data.crop``). ``native`` (default; the paper: "3D input patches are randomly cropped from the
   original scans without resizing"): stack-shaped crops of the harmonized volume (contiguous slices, no
   resize, :class:`petctfm.data.loader.LabeledPatchDataset` with ``patch_size = stack_shape``), predicted by
   the sliding window of :mod:`petctfm.inference` with that window (``data.patch_size = stack_shape``).
   ``resized``: the pretraining geometry, below. ``model(stack, stacks=True)``: (B, 2, *stack_shape) ->
   logits (B, 2, *stack_shape), what training sees. ``model(volume)``: any (B, 2, X, Y, Z) normalized harmonized volume -> logits
   (B, 2, X, Y, Z): the volume is resized (trilinear) to the pretraining grid, cut into every stack that the
   grid holds along the stack axis (blocks of ``k * depth`` slices at starts ``0, kd, 2kd, ...`` plus one
   ending at the last slice, each at the ``k`` offsets, so every slice is in >= 1 stack), the stacks' logits
   are averaged back onto the grid and resized (trilinear) to (X, Y, Z). So the model is a plain
   whole-volume segmenter for :mod:`petctfm.inference` (``data.patch_size = [-1, -1, -1]``: MONAI's sliding
   window then uses one window, the whole volume), and validation, ``predict_split``, ``petctfm predict``
   and ``petctfm evaluate`` work unchanged.
3. **Training stacks** (``resized``, :class:`LabeledStackDataset`): the harmonized case normalized with the model's
   preprocessing table, resized to the grid (image trilinear, label nearest), then the stack of
   :mod:`.stacks` (``k * depth`` slices, every k-th kept); with probability ``fg_prob`` the block is placed
   so that a random lesion voxel's slice is one of the kept slices.

Shapes: stack (B, 2, sx, sy, sz) (coronal gpu preset 160 x 32 x 192), logits (B, 2, ...); label (B, 1, ...).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petctfm.core.errors import InputError
from petctfm.data.format import norm_table
from petctfm.methods.fratmae.stacks import STACK_AXES, StackConfig, StackDataset
from petctfm.methods.fratmae.vit import TwinViT, token_grid

METHOD = "fratmae_segmentation"
BACKBONE = "fratmae-unetr"
N_CLASSES = 2
WHOLE_VOLUME = [-1, -1, -1]  # data.patch_size: one inference window = the whole volume (MONAI fall-back)
CROPS = ("native", "resized")


@dataclass
class SegStackConfig(StackConfig):
    """The labeled stack stream: :class:`~.stacks.StackConfig` + foreground placement + the inference window."""

    crop: str = "native"  # native: stack-shaped crops of the harmonized grid | resized: whole-body stacks
    fg_prob: float = 0.5  # probability that the crop / block holds a random lesion voxel
    augment: bool = False  # native crops: the fine-tuning augmentation of petctfm.data.augment
    patch_size: tuple[int, int, int] = (-1, -1, -1)  # inference window (set from crop: stack shape or whole volume)
    pet_transform: str = "clip"  # as pretraining (FratMAE normalizes with the dataset's clip transform)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegStackConfig":
        cfg = super().from_dict(d)
        if cfg.crop not in CROPS:
            raise InputError(f"data.crop must be one of {', '.join(CROPS)}, got {cfg.crop!r}")
        # the inference window follows the crop: a stack-shaped sliding window, or the whole volume
        cfg.patch_size = cfg.stack_shape() if cfg.crop == "native" else tuple(WHOLE_VOLUME)  # type: ignore[assignment]
        if not 0.0 <= float(cfg.fg_prob) <= 1.0:
            raise InputError(f"data.fg_prob must be in [0, 1], got {cfg.fg_prob}")
        return cfg  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["patch_size"] = list(self.patch_size)
        return d


def unetr_taps(depth: int) -> list[int]:
    """The four tapped blocks (1-based), every quarter of the depth: 3/6/9/12 for 12 (repeats when depth < 4)."""
    return [max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)]


def decoder_levels(patch: int) -> int:
    """L with ``patch == 2^L``; 2 <= L <= 4 (the four taps feed at most three skip levels)."""
    L = int(round(math.log2(patch))) if patch > 0 else 0
    if 2 ** L != patch or not 2 <= L <= 4:
        raise InputError(f"FratMAE segmentation needs a patch side of 4, 8 or 16 voxels, got {patch}")
    return L


def stack_indices(length: int, depth: int, k: int) -> list[torch.Tensor]:
    """Slice indices (depth,) of every stack covering ``length`` slices: blocks of ``k * depth`` at starts
    ``0, kd, 2kd, ...`` and ``length - kd``, each at offsets ``0..k-1``; every slice is in at least one."""
    block = k * depth
    starts = list(range(0, length - block + 1, block))
    if starts[-1] != length - block:
        starts.append(length - block)
    return [torch.arange(s + r, s + r + block, k) for s in starts for r in range(k)]


class FratMAESegmenter(nn.Module):
    """Twin ViT + UNETR decoder (module docstring). ``forward(x, stacks=False)``."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock

        m = cfg["model"]
        self.data = SegStackConfig.from_dict(cfg["data"])
        self.patch, self.arch = int(m["patch"]), m["arch"]
        L = decoder_levels(self.patch)
        self.levels, self.taps = L, unetr_taps(int(m["depth"]))
        self.stack_batch = int((cfg.get("val") or {}).get("stack_batch", 4))
        self.backbone = TwinViT(self.arch, token_grid(self.data.stack_shape(), self.patch), self.patch,
                                int(m["dim"]), int(m["depth"]), int(m["heads"]))
        hidden = self.backbone.feature_channels()[0]
        fs, norm = int(m.get("feature_size", 16)), m.get("norm", "instance")
        self.encoder1 = UnetrBasicBlock(3, 2, fs, 3, 1, norm, res_block=True)
        self.skips = nn.ModuleList([
            UnetrPrUpBlock(3, hidden, fs * 2**j, num_layer=L - j - 1, kernel_size=3, stride=1, upsample_kernel_size=2,
                           norm_name=norm, conv_block=True, res_block=True) for j in range(1, L)])
        self.ups = nn.ModuleList([
            UnetrUpBlock(3, hidden if j == L - 1 else fs * 2 ** (j + 1), fs * 2**j, 3, 2, norm, res_block=True)
            for j in range(L)])  # ups[j]: output at stride 2^j
        self.out = UnetOutBlock(3, fs, N_CLASSES)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, *stack) -> logits (B, 2, *stack): all tokens of both encoders, UNETR decoder."""
        used = sorted(set(self.taps))
        maps = dict(zip(used, self.backbone.features(x, used)))
        h = [maps[t] for t in self.taps]  # (B, hidden, *token_grid) each
        L = self.levels
        skips = [self.encoder1(x)] + [self.skips[j - 1](h[4 - L + j - 1]) for j in range(1, L)]
        y = h[3]
        for j in reversed(range(L)):
            y = self.ups[j](y, skips[j])
        return self.out(y)

    def forward(self, x: torch.Tensor, stacks: bool = False) -> torch.Tensor:
        """Stack-shaped input (training; native crops: every sliding window) -> :meth:`decode`; otherwise the
        whole volume -> :meth:`whole_volume`."""
        return self.decode(x) if stacks or self.data.crop == "native" else self.whole_volume(x)

    def whole_volume(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, X, Y, Z) -> logits (B, 2, X, Y, Z) by stitching stacks on the resized grid (module docstring)."""
        size, d = tuple(x.shape[2:]), self.data
        ax = STACK_AXES[d.stack] + 2
        g = F.interpolate(x.float(), size=tuple(d.grid), mode="trilinear", align_corners=False).to(x.dtype)
        acc = x.new_zeros((x.shape[0], N_CLASSES, *d.grid), dtype=torch.float32)
        count = torch.zeros(d.grid[ax - 2], device=x.device)
        idx = [i.to(x.device) for i in stack_indices(d.grid[ax - 2], d.depth, d.k)]
        for c in range(0, len(idx), max(1, self.stack_batch)):
            chunk = idx[c:c + self.stack_batch]
            out = self.decode(torch.cat([g.index_select(ax, i) for i in chunk], 0)).float()
            for n, i in enumerate(out.split(x.shape[0], 0)):
                acc.index_add_(ax, chunk[n], i)
                count.index_add_(0, chunk[n], torch.ones_like(chunk[n], dtype=count.dtype))
        shape = [1] * acc.dim()
        shape[ax] = -1
        acc = acc / count.view(shape)
        return F.interpolate(acc, size=size, mode="trilinear", align_corners=False)


def build_model(cfg: dict[str, Any]) -> FratMAESegmenter:
    """The (untrained) segmenter a config describes; what ``load_model`` calls for a checkpoint."""
    return FratMAESegmenter(cfg)


class LabeledStackDataset(StackDataset):
    """Item ``i``: ``{"image": (2, *stack) float32, "label": (1, *stack) int64, "index": ()}``; a pure function of
    ``(seed, rank, i)``. Cases: ``case_ids``; normalization: ``normalization`` (the model's preprocessing)."""

    def __init__(self, root: str | os.PathLike, cfg: SegStackConfig, case_ids: Sequence[str],
                 normalization: dict[str, Any], seed: int, rank: int = 0):
        super().__init__(root, cfg, n_tokens=1, mask_ratio=0.5, vocab=None,  # type: ignore[arg-type]
                         seed=seed, rank=rank, table=norm_table(normalization))
        self.case_ids = list(case_ids)
        if not self.case_ids:
            raise InputError(f"{root}: no training cases")
        self._labels: dict[str, torch.Tensor] = {}

    def label(self, case_id: str) -> torch.Tensor:
        """(1, *grid) uint8 lesion label, nearest-neighbour resized (cached like the volumes)."""
        def make(lab: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy((np.asarray(lab) > 0).astype(np.float32))[None, None]
            return F.interpolate(t, size=tuple(self.cfg.grid), mode="nearest-exact")[0].to(torch.uint8)

        return self.cached(self._labels, case_id, "label.npy", make)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.rank, int(i)])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        axis, cfg = STACK_AXES[self.cfg.stack], self.cfg
        block, n = cfg.k * cfg.depth, cfg.grid[axis]
        label = self.label(case_id)
        start = int(rng.integers(0, n - block + 1))
        if rng.random() < float(cfg.fg_prob):  # type: ignore[attr-defined]
            fg = torch.nonzero(label[0].amax(dim=tuple(a for a in range(3) if a != axis)))[:, 0]
            if len(fg):
                pos = int(fg[int(rng.integers(len(fg)))])
                js = [j for j in range(cfg.depth) if 0 <= pos - cfg.k * j <= n - block]
                start = pos - cfg.k * js[int(rng.integers(len(js)))]
        idx = torch.arange(start, start + block, cfg.k)
        image = self.volume(case_id).index_select(axis + 1, idx).contiguous()
        return {"image": image, "label": label.index_select(axis + 1, idx).long().contiguous(),
                "index": torch.tensor(int(i))}


__all__ = ["METHOD", "BACKBONE", "N_CLASSES", "WHOLE_VOLUME", "CROPS", "SegStackConfig", "unetr_taps", "decoder_levels",
           "stack_indices", "FratMAESegmenter", "build_model", "LabeledStackDataset"]
