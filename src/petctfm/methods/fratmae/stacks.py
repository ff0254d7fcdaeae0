"""Whole-body stacks for FratMAE, built by the data loader from the harmonized dataset (no preprocessing copy).

One item ``i`` (a pure function of ``(seed, rank, i)`` and the data, like :mod:`petctfm.data.loader`):

1. ``rng = default_rng([seed, rank, i])``; a case uniformly from the split.
2. The case's ``image.npy`` [SUV, HU] is normalized with the dataset statistics
   (:func:`petctfm.data.format.normalize`) and resized (trilinear) to the fixed grid ``grid`` (X, Y, Z)
   (paper: 160 x 160 x 192, z the body axis). The resized volume is cached per worker (``cache_cases``).
3. **Stack** along ``axis`` (``stack="coronal"``: y, the anterior-posterior axis, so every slice is a
   whole-body coronal plane; ``"axial"``: z, the baseline of the paper's Table 2): a block of ``k * depth``
   contiguous slices starting uniformly at random, keeping every ``k``-th slice -> ``depth`` slices
   (paper: k = 2, depth 32 -> (160, 32, 192) for coronal stacks).
4. Masking draws for the model (``fratmae.py``): ``target`` (0 = PET, 1 = CT; the modality S that is
   masked) and ``perm`` (N,) a random permutation of the N tokens (the first ``N - round(ratio * N)`` stay
   visible, MAE's shuffle).
5. ``text`` (TEXT_LEN,) int64 token ids of the case's metadata (:mod:`.context`), computed once per case.

Item: ``{"image": (2, *stack_shape) float32 [PET, CT], "target": () int64, "perm": (N,) int64,
"text": (TEXT_LEN,) int64, "index": () int64}``. No label is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.data.loader import list_cases
from petctfm.methods.fratmae.context import Vocabulary, metadata_tokens

STACK_AXES = {"coronal": 1, "axial": 2}


@dataclass
class StackConfig:
    """The stack stream's settings (saved in the run's config under ``data``)."""

    grid: tuple[int, int, int] = (160, 160, 192)  # resize target (X, Y, Z)
    stack: str = "coronal"  # coronal (slices along y) | axial (slices along z)
    depth: int = 32  # slices kept along the stack axis
    k: int = 2  # keep every k-th slice of a k * depth block
    mode: str = "joint"  # always both channels (the preprocessing record needs it)
    split: str = "train"
    cache_cases: int = 4  # resized volumes kept per worker
    batch_size: int = 4
    num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StackConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown data option(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if "grid" in d:
            d["grid"] = tuple(int(v) for v in d["grid"])
        cfg = cls(**d)
        if cfg.stack not in STACK_AXES:
            raise InputError(f"unknown stack {cfg.stack!r}; choose coronal or axial")
        if len(cfg.grid) != 3 or min(cfg.grid) < 1 or cfg.depth < 1 or cfg.k < 1:
            raise InputError(f"grid {cfg.grid}, depth {cfg.depth}, k {cfg.k}: all must be positive")
        if cfg.k * cfg.depth > cfg.grid[STACK_AXES[cfg.stack]]:
            raise InputError(f"k * depth = {cfg.k * cfg.depth} slices do not fit the grid's "
                             f"{cfg.stack} axis ({cfg.grid[STACK_AXES[cfg.stack]]})")
        if cfg.mode != "joint":
            raise InputError("FratMAE reads both PET and CT (data.mode must be joint)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d

    def stack_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of one stack: the grid with the stack axis replaced by ``depth``."""
        s = list(self.grid)
        s[STACK_AXES[self.stack]] = self.depth
        return tuple(s)  # type: ignore[return-value]


def resize(volume: np.ndarray | torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(C, X, Y, Z) -> (C, *grid) float32, trilinear (``align_corners=False``)."""
    x = torch.as_tensor(np.asarray(volume, dtype=np.float32))[None]
    return F.interpolate(x, size=tuple(int(g) for g in grid), mode="trilinear", align_corners=False)[0]


def cut_stack(volume: torch.Tensor, axis: int, depth: int, k: int, start: int) -> torch.Tensor:
    """(C, X, Y, Z) -> the slices ``start, start + k, ..., start + k * (depth - 1)`` along spatial ``axis``."""
    idx = torch.arange(start, start + k * depth, k)
    return volume.index_select(axis + 1, idx)


def central_stack(volume: torch.Tensor, cfg: StackConfig) -> torch.Tensor:
    """(C, X, Y, Z) normalized volume -> (C, *stack_shape): resized to the grid, the centred ``k * depth``
    block of the stack axis, every k-th slice (staging's whole-body input; the paper's central crop)."""
    axis = STACK_AXES[cfg.stack]
    g = F.interpolate(volume.float()[None], size=tuple(cfg.grid), mode="trilinear", align_corners=False)[0]
    return cut_stack(g, axis, cfg.depth, cfg.k, (cfg.grid[axis] - cfg.k * cfg.depth) // 2)


def case_text(root: str | os.PathLike, case_id: str, vocab: Vocabulary, tokenizer: str = "field") -> torch.Tensor:
    """(text length,) token ids of one case's ``meta.json`` under ``tokenizer`` (one-line InputError when it is
    unreadable)."""
    path = fmt.case_dir(root, case_id) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: not a JSON object")
    return metadata_tokens(meta, vocab, str(path), tokenizer)


class StackDataset(Dataset):
    """Item ``i`` of rank ``rank``'s stack stream (module docstring). Length is unbounded.

    ``n_tokens`` (N) and ``mask_ratio`` size the masking draws; ``vocab`` and ``tokenizer`` turn the metadata into tokens; ``table``
    (:func:`petctfm.data.format.norm_table`) replaces the dataset's normalization (fine-tuning: the model's).
    """

    def __init__(self, root: str | os.PathLike, cfg: StackConfig, n_tokens: int, mask_ratio: float,
                 vocab: Vocabulary, seed: int, rank: int = 0, table: np.ndarray | None = None,
                 tokenizer: str = "field"):
        self.root = Path(root)
        self.info = fmt.load_dataset_info(self.root, require_normalization=True)
        self.cfg, self.n_tokens, self.mask_ratio, self.vocab = cfg, int(n_tokens), float(mask_ratio), vocab
        self.seed, self.rank, self.tokenizer = int(seed), int(rank), tokenizer
        self.table = table  # normalization rows (fmt.norm_table); None: the dataset's statistics
        self.case_ids = list_cases(self.root, cfg.split)
        self._volumes: dict[str, torch.Tensor] = {}
        self._texts: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return 2**62

    def cached(self, cache: dict[str, torch.Tensor], case_id: str, name: str, make) -> torch.Tensor:
        """``make(array)`` of the case's ``name`` (``image.npy`` / ``label.npy``, memory-mapped), kept in ``cache``
        (at most ``cache_cases`` per worker, oldest dropped); an unreadable file is a one-line InputError."""
        if case_id not in cache:
            path = fmt.case_dir(self.root, case_id) / name
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read ({exc})") from None
            if len(cache) >= max(1, self.cfg.cache_cases):
                cache.pop(next(iter(cache)))
            cache[case_id] = make(arr)
        return cache[case_id]

    def volume(self, case_id: str) -> torch.Tensor:
        """(2, *grid) normalized, resized [PET, CT] of a case (cached, at most ``cache_cases`` per worker)."""
        def make(img: np.ndarray) -> torch.Tensor:
            img = np.asarray(img, np.float32)
            norm = fmt.normalize(img, self.info) if self.table is None else fmt.apply_normalization(img, self.table)
            return resize(norm, self.cfg.grid)

        return self.cached(self._volumes, case_id, "image.npy", make)

    def text(self, case_id: str) -> torch.Tensor:
        if case_id not in self._texts:
            self._texts[case_id] = case_text(self.root, case_id, self.vocab, self.tokenizer)
        return self._texts[case_id]

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.rank, int(i)])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        axis = STACK_AXES[self.cfg.stack]
        start = int(rng.integers(0, self.cfg.grid[axis] - self.cfg.k * self.cfg.depth + 1))
        image = cut_stack(self.volume(case_id), axis, self.cfg.depth, self.cfg.k, start).contiguous()
        return {"image": image, "target": torch.tensor(int(rng.integers(2))),
                "perm": torch.from_numpy(rng.permutation(self.n_tokens).astype(np.int64)),
                "text": self.text(case_id), "index": torch.tensor(int(i))}


__all__ = ["STACK_AXES", "StackConfig", "resize", "cut_stack", "central_stack", "case_text", "StackDataset"]
