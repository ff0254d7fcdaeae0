"""Random 3D patches from a harmonized dataset, deterministic per ``(seed, rank, sample index)``.

:class:`PatchDataset` is a map-style torch ``Dataset`` of unbounded length: item ``i`` is a pure function
of ``(seed, rank, i)`` and the data on disk, whatever worker process computes it. That is what makes
resume exact (the trainer restarts the stream at ``start_sample``) and what gives each rank its own,
disjoint-in-distribution sample stream (the rank is part of the random seed).

One item, step by step:

1. ``rng = numpy.random.default_rng([seed, rank, i])``.
2. Choose a case uniformly from ``case_ids``.
3. Choose the patch corner: with probability ``fg_prob`` the patch is centred on a candidate voxel,
   otherwise uniform over the volume. **Candidates come from the image only** (self-supervised
   pretraining never reads ``label.npy``), by ``sampling``: ``"suv"`` (default) = body voxels with SUV >=
   ``hot_suv`` (or, when ``hot_quantile`` is set, >= that quantile of the case's body SUV), ``"body"`` =
   every body voxel (CT > ``body_hu``). Candidate coordinates are computed once per case and worker (a pure
   function of the case, sub-sampled to at most 4096 with a case-seeded generator). Only
   :class:`LabeledPatchDataset` (fine-tuning, probing) uses lesion voxels from ``label.npy``; it may also
   centre a patch, with probability ``hot_neg_prob``, on a hot body voxel *outside* the label (physiological
   uptake: brain, heart, kidneys, bladder), where lesion models make their false positives.
4. Read only that patch from ``image.npy`` opened with ``np.load(mmap_mode="r")``; where the volume is
   smaller than the patch, pad with each channel's lower clip value (PET 0 SUV, CT air), i.e. background.
   (:meth:`PatchDataset.cut`, the one crop routine: it cuts the label with the same box when asked.)
5. Normalize with :func:`petctfm.data.format.apply_normalization` (dataset statistics: zero = training mean;
   PET through ``pet_transform``, :func:`petctfm.data.format.select_pet_transform`).
6. Augment (:func:`petctfm.data.augment.build_augment`: flips, small rotations/scales, intensity
   scale/shift jitter) seeded from ``rng``.
7. Select channels by mode: ``joint`` -> [PET, CT], ``pet`` -> [PET], ``ct`` -> [CT].

Output item: ``{"image": float32 (C, px, py, pz), "index": int64 ()}``. An optional ``extra(rng, item)``
callable adds method-specific entries (the MAE adds its block mask) from the same generator.

:class:`LabeledPatchDataset` is the same stream over a fixed case list with the label: lesion-only
foreground, image and label cut with the same box and augmented jointly; items
``{"image": (C, px, py, pz) float32, "label": (1, px, py, pz) int64, "index": ()}``.
"""

from __future__ import annotations

import copy
import itertools
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from petctfm.data import format as fmt
from petctfm.data.augment import build_augment
from petctfm.core.config import TypedConfig, setting
from petctfm.core.errors import InputError

MODES = {"joint": (0, 1), "pet": (0,), "ct": (1,)}
#: Image-only patch-centre candidates of :class:`PatchDataset` (``PatchConfig.sampling``).
SAMPLING = ("suv", "body")


def preprocessing_record(info: dict[str, Any], mode: str, pet_transform: str = "clip") -> dict[str, Any]:
    """What a model trained in ``mode`` on the dataset described by ``info`` (its ``dataset.json``, read with
    ``load_dataset_info(root, require_normalization=True)``) needs to prepare new input like its training
    data: the input channels, the dataset's normalization statistics for ``pet_transform`` (each entry names its
    ``transform``) and its voxel spacing / CT window. Saved as the config's ``preprocessing``."""
    norm = fmt.select_pet_transform({k: info["normalization"][k] for k in fmt.CHANNELS}, pet_transform)
    return {"channels": [fmt.CHANNELS[i] for i in MODES[mode]], "normalization": norm,
            "harmonize": {"spacing": info.get("spacing"), "ct_window": info.get("ct_window")}}


def bind_dataset(config: dict[str, Any], dataset: str | os.PathLike | None,
                 validate: Callable[[dict[str, Any]], Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A task's config bound to its dataset: a deep copy of ``config`` with ``dataset`` set (when given),
    checked by ``validate`` (the method's ``validate_config``), and, when it names a dataset, that dataset's
    ``preprocessing_record`` under ``preprocessing``. Returns ``(config, dataset info or None)``; a wrong path
    or a dataset without statistics is a one-line InputError."""
    cfg = copy.deepcopy(config)
    if dataset is not None:
        cfg["dataset"] = str(dataset)
    validate(cfg)
    info = None
    if cfg.get("dataset"):
        info = fmt.load_dataset_info(cfg["dataset"], require_normalization=True)
        cfg["preprocessing"] = preprocessing_record(info, cfg["data"]["mode"],
                                                    cfg["data"].get("pet_transform", "clip"))
    return cfg, info


#: Bytes of a training step per input voxel of a patch and sample (input, activations, gradients), per backbone
#: family: a rough lower bound from the peak memory of fp32 forward + backward + AdamW steps on CPU (2026-12-05:
#: unet-resenc-tiny ~0.9 kB between 32^3 and 64^3 patches, unet-resenc ~2.4 kB between 64^3 and 96^3; SwinUNETR
#: not measured, taken as unet-resenc). Used only to refuse a patch / batch that cannot fit, so it errs low.
BYTES_PER_VOXEL = {"unet-resenc-tiny": 800, "unet-resenc": 2000, "swinunetr": 2000}


def train_bytes_per_voxel(backbone: str) -> int:
    """:data:`BYTES_PER_VOXEL` of ``backbone`` (by its family prefix; unknown: the largest)."""
    for name in sorted(BYTES_PER_VOXEL, key=len, reverse=True):
        if backbone.startswith(name):
            return BYTES_PER_VOXEL[name]
    return max(BYTES_PER_VOXEL.values())


@dataclass
class PatchConfig(TypedConfig):
    """Everything that defines the patch stream (saved in the run's config). The allowed values sit next to
    each field (:func:`petctfm.core.config.setting`); a wrong one is a one-line ConfigError (exit 2)."""

    patch_size: tuple[int, int, int] = setting((96, 96, 96), ge=1)  # a scalar p is read as (p, p, p)
    mode: str = setting("joint", choices=tuple(MODES))  # joint | pet | ct
    split: str = "train"  # which splits.json list to sample from ("all": every case folder)
    fg_prob: float = setting(0.33, ge=0, le=1)  # probability of centring the patch on a candidate voxel
    # labelled streams only: probability of centring the patch on a hot NON-lesion voxel (SUV >= hot_suv in the
    # body, outside the label): physiological uptake, where a lesion model makes its false positives
    hot_neg_prob: float = setting(0.0, ge=0, le=1)
    # labelled streams only: how a lesion-centred patch picks its centre. voxel: a random lesion voxel (nnU-Net;
    # a case's largest lesion gets most patches) | lesion: a random lesion (18-connected component), then a random
    # voxel of it, so every lesion of a case is seen equally often whatever its size
    fg_balance: str = setting("voxel", choices=("voxel", "lesion"))
    sampling: str = setting("suv", choices=SAMPLING)  # image-only candidates: suv (hot body voxels) | body
    hot_suv: float = 4.0  # SUV threshold of a "hot" voxel (sampling "suv")
    hot_quantile: float | None = setting(None, gt=0, lt=1)  # instead of hot_suv: this quantile of the body SUV
    body_hu: float = -500.0  # CT threshold of a body voxel
    pet_transform: str = setting("clip", choices=fmt.PET_TRANSFORMS)  # clip (SUV in [0, 20]) | log1p
    augment: bool = True
    flip_prob: float = setting(0.5, ge=0, le=1)  # per axis
    # the spatial axes flips may use: organ runs with left/right classes leave out axis 0 (x, left-right in the
    # harmonized RAS grid), where a flip would turn the left kidney into the right one without changing its label
    flip_axes: tuple[int, ...] = setting((0, 1, 2), ge=0, le=2)
    affine_prob: float = setting(0.2, ge=0, le=1)
    rotate_deg: float = setting(10.0, ge=0)  # max |rotation| per axis
    scale_range: float = setting(0.1, ge=0, lt=1)  # isotropic zoom in [1-s, 1+s]
    intensity_prob: float = setting(0.5, ge=0, le=1)
    intensity_scale: float = setting(0.1, ge=0)  # multiply by 1 + U(-s, s), per channel
    intensity_shift: float = setting(0.1, ge=0)  # add U(-o, o) (normalized units), per channel
    batch_size: int = setting(2, ge=1)
    num_workers: int = setting(0, ge=0)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        p = d.get("patch_size")
        if p is not None and not isinstance(p, (list, tuple, dict)):
            d = {**d, "patch_size": [p, p, p]}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, prefix: str = "data.") -> "PatchConfig":  # type: ignore[override]
        """A checked config; an unknown key or a wrong value is a one-line ConfigError naming ``data.<key>``."""
        return super().from_dict(d, prefix).check(prefix)

    def train_bytes(self, backbone: str, batch_size: int | None = None) -> int:
        """A rough lower bound of one training step's memory: bytes per voxel of ``backbone``
        (:func:`train_bytes_per_voxel`) x patch voxels x samples (``batch_size``, default this config's)."""
        n = int(self.patch_size[0]) * int(self.patch_size[1]) * int(self.patch_size[2])
        return train_bytes_per_voxel(backbone) * n * int(batch_size or self.batch_size)


def list_cases(root: str | os.PathLike, split: str) -> list[str]:
    """Case ids of ``split`` from ``splits.json`` (``"all"``: every folder under ``cases/``)."""
    root = Path(root)
    if split == "all":
        ids = sorted(p.name for p in (root / fmt.CASES_DIR).iterdir() if p.is_dir()) if (root / fmt.CASES_DIR).is_dir() else []
    else:
        splits = fmt.load_splits(root)
        if split not in splits:
            raise InputError(f"{root / fmt.SPLITS_JSON}: no split {split!r} (has {', '.join(splits)})")
        ids = list(splits[split])
    if not ids:
        raise InputError(f"{root}: no cases in split {split!r}")
    return ids


def _candidates(mask: np.ndarray, case_id: str, limit: int = 4096) -> np.ndarray:
    """(N, 3) int coordinates of ``mask`` (X, Y, Z), sub-sampled to ``limit`` with a case-seeded generator."""
    coords = np.argwhere(mask)
    if len(coords) > limit:
        sub = np.random.default_rng(zlib.crc32(case_id.encode()))
        coords = coords[np.sort(sub.choice(len(coords), limit, replace=False))]
    return coords


def _pick(cand: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """One row (3,) of the candidates ``cand`` (N, 3), uniformly; None (and no draw) when N = 0."""
    return cand[rng.integers(len(cand))] if len(cand) else None


class PatchDataset(Dataset):
    """Item ``i`` = the i-th patch of rank ``rank``'s stream (see module docstring). Length is unbounded."""

    def __init__(self, root: str | os.PathLike, cfg: PatchConfig, seed: int, rank: int = 0,
                 extra: Callable[[np.random.Generator, dict[str, Any]], None] | None = None):
        self.root = Path(root)
        self.info = fmt.load_dataset_info(self.root, require_normalization=True)
        self.cfg = cfg
        self.seed, self.rank = int(seed), int(rank)
        self.case_ids = list_cases(self.root, cfg.split)
        self.extra = extra
        self._fg: dict[str, np.ndarray] = {}
        self._augment = build_augment(cfg) if cfg.augment else None
        self._pad = np.array([self.info["normalization"][c]["clip"][0] for c in fmt.CHANNELS], np.float32)
        self.norm = fmt.norm_table(fmt.select_pet_transform(self.info["normalization"], cfg.pet_transform,
                                                            self.root / fmt.DATASET_JSON))  # (2, 5)

    def __len__(self) -> int:  # unbounded stream; samplers give the indices
        return 2**62

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.rank, int(i)])

    def read_image(self, case_id: str) -> np.ndarray:
        """(2, X, Y, Z) raw [SUV, HU] memory map of ``image.npy`` (nothing else of the case is opened)."""
        return fmt.load_array(fmt.case_dir(self.root, case_id) / "image.npy")

    def foreground_mask(self, case_id: str) -> np.ndarray:
        """(X, Y, Z) bool patch-centre candidates of a case, from its image only (``sampling``): body voxels
        (CT > ``body_hu``) that are hot (``"suv"``: SUV >= ``hot_suv``, or >= the ``hot_quantile`` of the
        body's SUV) or all of them (``"body"``). Never reads the label."""
        img = self.read_image(case_id)
        body = np.asarray(img[1]) > self.cfg.body_hu
        if self.cfg.sampling == "body":
            return body
        suv = np.asarray(img[0])
        thr = self.cfg.hot_suv
        if self.cfg.hot_quantile is not None and body.any():
            thr = float(np.quantile(suv[body], float(self.cfg.hot_quantile)))
        return body & (suv >= thr)

    def foreground(self, case_id: str) -> np.ndarray:
        """(N, 3) int voxel coordinates of :meth:`foreground_mask` (N <= 4096, a case-seeded sub-sample; may be
        empty), computed once per case and worker."""
        if case_id not in self._fg:
            self._fg[case_id] = _candidates(self.foreground_mask(case_id), case_id)
        return self._fg[case_id]

    def foreground_centre(self, case_id: str, rng: np.random.Generator) -> np.ndarray | None:
        """The centre (3,) of a foreground-centred patch: a voxel of :meth:`foreground`, uniformly; None when the
        case has none."""
        return _pick(self.foreground(case_id), rng)

    #: Share of patches centred on a hot voxel outside the label: none without labels (see LabeledPatchDataset).
    hot_neg_prob = 0.0

    def crop(self, case_id: str, shape: Sequence[int], rng: np.random.Generator) -> tuple[slice, slice, slice]:
        """The patch box in a volume of ``shape`` (X, Y, Z): with probability ``fg_prob`` centred on a random
        foreground voxel of the case (when it has one), else uniform; clipped to the volume (a volume smaller
        than the patch gives the whole axis)."""
        shape_a, p = np.array(shape), np.array(self.cfg.patch_size)
        centre = None
        hot_neg = self.hot_neg_prob
        if self.cfg.fg_prob > 0 or hot_neg > 0:
            r = rng.random()
            if r < self.cfg.fg_prob:
                centre = self.foreground_centre(case_id, rng)
            elif r < self.cfg.fg_prob + hot_neg:
                centre = _pick(self.hot_negatives(case_id), rng)
        if centre is None:
            start = np.array([rng.integers(0, max(int(s - q), 0) + 1) for s, q in zip(shape_a, p)])
        else:
            start = np.clip(centre - p // 2, 0, np.maximum(shape_a - p, 0))
        stop = np.minimum(start + p, shape_a)
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]

    def pad_centred(self, arr: np.ndarray, fill: Sequence[float]) -> np.ndarray:
        """(C, x, y, z) cut from a volume smaller than the patch -> (C, *patch_size), the cut centred and the
        rest filled with ``fill`` (C,) per channel. Unchanged when it already has the patch size."""
        p = np.array(self.cfg.patch_size)
        if arr.shape[1:] == tuple(p):
            return arr
        out = np.empty((arr.shape[0], *p), arr.dtype)
        out[:] = np.asarray(fill, arr.dtype)[:, None, None, None]
        off = (p - np.array(arr.shape[1:])) // 2
        out[(slice(None), *(slice(int(o), int(o) + n) for o, n in zip(off, arr.shape[1:])))] = arr
        return out

    def cut(self, case_id: str, rng: np.random.Generator, label: bool,
            box: tuple[slice, ...] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The one crop routine: draw the box (:meth:`crop`; or use the given ``box``, e.g. one centred on a
        prompt target), read it from ``image.npy`` (and ``label.npy`` when ``label``) through the memory map,
        pad centred to the patch size. Returns raw [SUV, HU] (2, px, py, pz) float32 padded with background and
        label (px, py, pz) uint8 padded with 0 (or None)."""
        d = fmt.case_dir(self.root, case_id)
        img = fmt.load_array(d / "image.npy")
        lab = fmt.load_array(d / self.label_file, shape=img.shape[1:]) if label else None
        box = self.crop(case_id, img.shape[1:], rng) if box is None else box
        x = self.pad_centred(np.asarray(img[(slice(None), *box)], dtype=np.float32), self._pad)
        y = None if lab is None else self.with_aux(case_id, self.classes_of(lab[box]), box, img.shape[1:])
        return x, None if y is None else self.pad_centred(y[None], [0])[0]

    #: Auxiliary classes of a lesion stream (:class:`LabeledPatchDataset` with ``aux_values``): stored value of
    #: :attr:`AUX_FILE` -> training class (256,) uint8 (0 or ``i + 2``), or None (no auxiliary classes).
    aux_lut: np.ndarray | None = None
    AUX_FILE = "organs.npy"

    def with_aux(self, case_id: str, lab: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
        """``lab`` (the lesion classes of ``box`` of a case whose image is ``shape`` (X, Y, Z)) with the auxiliary organ classes written where it is 0
        (lesion voxels stay lesion); unchanged without :attr:`aux_lut`."""
        if self.aux_lut is None:
            return lab
        path = fmt.case_dir(self.root, case_id) / self.AUX_FILE
        if not path.is_file():
            raise InputError(f"{path}: missing: task.aux_classes trains organs as extra classes and needs every "
                             "training case's organ map")
        organs = self.aux_lut[np.asarray(fmt.load_array(path, shape=shape)[box], dtype=np.uint8)]
        return np.where(lab > 0, lab, organs).astype(np.uint8)

    #: The label map :meth:`cut` reads (``label.npy``: lesions; a labelled stream may read ``organs.npy``).
    label_file = "label.npy"
    #: Stored label value -> training class (256,) uint8, or None to keep the values (lesions: 0 / 1).
    label_lut: np.ndarray | None = None

    def classes_of(self, lab: np.ndarray) -> np.ndarray:
        """Stored label values (any shape) -> training classes uint8 (:attr:`label_lut`; None: unchanged)."""
        lab = np.asarray(lab, dtype=np.uint8)
        return lab if self.label_lut is None else self.label_lut[lab]

    def read_patch(self, case_id: str, rng: np.random.Generator) -> np.ndarray:
        """Raw [SUV, HU] patch (2, px, py, pz) float32 read through the memory map, padded with background."""
        return self.cut(case_id, rng, label=False)[0]

    def read_pair(self, case_id: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Raw [SUV, HU] patch (2, px, py, pz) float32 and its label (px, py, pz) uint8, the same crop."""
        x, y = self.cut(case_id, rng, label=True)
        assert y is not None
        return x, y

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = self.rng(i)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        patch = fmt.apply_normalization(self.read_patch(case_id, rng), self.norm)
        x = torch.from_numpy(patch)
        if self._augment is not None:
            self._augment.set_random_state(seed=int(rng.integers(2**31)))
            x = torch.as_tensor(np.asarray(self._augment({"image": x})["image"]), dtype=torch.float32)
        x = x[list(MODES[self.cfg.mode])].contiguous()
        item: dict[str, Any] = {"image": x, "index": torch.tensor(int(i))}
        if self.extra is not None:
            self.extra(rng, item)
        return item


class LabeledPatchDataset(PatchDataset):
    """:class:`PatchDataset` over a fixed case list that returns ``{"image", "label", "index"}`` (fine-tuning,
    probing).

    Item ``i``: ``rng = default_rng([seed, rank, i])`` -> case (uniform over ``case_ids``) -> patch centred on
    a *lesion* voxel with probability ``fg_prob`` (hot non-lesion voxels are not foreground here), otherwise
    uniform -> image and label cropped identically (:meth:`read_pair`, padded with background / 0) ->
    normalized -> joint augmentation (:func:`petctfm.data.augment.build_augment` with ``label=True``) seeded
    from ``rng`` -> channels by mode. image (C, px, py, pz) float32, label (1, px, py, pz) int64 in {0, 1}.

    Organs (``label_file="organs.npy"``, ``label_values`` the organ label values in class order): the label is
    the class index (0 background, ``i + 1`` for ``label_values[i]``, other values background), in
    {0..len(label_values)}; foreground patches are class-balanced (:meth:`foreground`).

    Lesions with auxiliary organs (``aux_values``, the organ values of ``organs.npy`` in class order): the label
    is 1 on lesion voxels, else ``i + 2`` on ``aux_values[i]``, else 0, in {0..len(aux_values) + 1}; patch
    centres, oversampling and balance stay the lesions' (:meth:`with_aux` changes only the cut label).
    """

    #: Multi-class streams: patch-centre candidates kept per class (classes drawn with equal weight).
    PER_CLASS = 1024

    def __init__(self, root: str | os.PathLike, cfg: PatchConfig, case_ids: Sequence[str], seed: int, rank: int = 0,
                 label_file: str = "label.npy", label_values: Sequence[int] | None = None,
                 aux_values: Sequence[int] | None = None):
        super().__init__(root, cfg, seed=seed, rank=rank)
        self._augment = build_augment(cfg, label=True) if cfg.augment else None
        if not case_ids:
            raise InputError(f"{root}: empty training subset")
        self.case_ids = list(case_ids)
        self._hot: dict[str, np.ndarray] = {}
        self._groups: dict[str, list[np.ndarray]] = {}
        self.label_file = label_file
        self.n_classes = 2
        if label_values is not None:  # organs: stored value label_values[i] -> class i + 1, anything else 0
            self.label_lut = np.zeros(256, np.uint8)
            for i, v in enumerate(label_values):
                self.label_lut[int(v)] = i + 1
            self.n_classes = len(label_values) + 1
        if aux_values:  # lesions + organs of organs.npy as classes 2.. (aux_values[i] -> class i + 2)
            if label_values is not None:
                raise ValueError("aux_values is for a lesion stream (label_values None)")
            self.aux_lut = np.zeros(256, np.uint8)
            for i, v in enumerate(aux_values):
                self.aux_lut[int(v)] = i + 2
            self.n_classes = len(aux_values) + 2

    def case_label(self, case_id: str) -> np.ndarray:
        """(X, Y, Z) uint8 training classes of a case (:attr:`label_file` through :meth:`classes_of`)."""
        d = fmt.case_dir(self.root, case_id)
        shape = fmt.load_array(d / "image.npy").shape[1:]
        return self.classes_of(fmt.load_array(d / self.label_file, shape=shape))

    def foreground_mask(self, case_id: str) -> np.ndarray:
        """(X, Y, Z) bool: labelled voxels only (lesions of ``label.npy``, or any organ class; supervised use
        only)."""
        return self.case_label(case_id) > 0

    def foreground(self, case_id: str) -> np.ndarray:
        """Patch-centre candidates (N, 3). Lesions: :meth:`PatchDataset.foreground`. Several classes (organs):
        up to :data:`PER_CLASS` voxels of each class present, each class's list repeated to exactly that length,
        so a foreground patch is centred on every present class equally often (nnU-Net's class-balanced
        oversampling), small organs included."""
        if self.label_lut is None:
            return super().foreground(case_id)
        if case_id not in self._fg:
            lab = self.case_label(case_id)
            per = [_candidates(lab == c, f"{case_id}:{c}", self.PER_CLASS) for c in range(1, self.n_classes)]
            per = [np.resize(p, (self.PER_CLASS, 3)) for p in per if len(p)]
            self._fg[case_id] = np.concatenate(per) if per else np.zeros((0, 3), np.int64)
        return self._fg[case_id]

    @property
    def hot_neg_prob(self) -> float:  # type: ignore[override]
        return float(self.cfg.hot_neg_prob)

    def hot_negatives(self, case_id: str) -> np.ndarray:
        """(N, 3) int coordinates of hot body voxels outside the label (the image-only candidates of
        :meth:`PatchDataset.foreground_mask` minus the lesions; N <= 4096, case-seeded), once per case and
        worker: the patch centres of ``hot_neg_prob``."""
        if case_id not in self._hot:
            hot = PatchDataset.foreground_mask(self, case_id) & ~self.foreground_mask(case_id)
            self._hot[case_id] = _candidates(hot, case_id)
        return self._hot[case_id]

    def foreground_centre(self, case_id: str, rng: np.random.Generator) -> np.ndarray | None:
        """With ``fg_balance="lesion"`` (lesion streams): a lesion (18-connected component of the label, cc3d)
        uniformly, then one of its voxels uniformly (:meth:`lesions`; small lesions are never lost to the
        sub-sampling of :meth:`foreground`); else a voxel of :meth:`foreground` uniformly (voxel balance; organs
        are already class-balanced there). None when the case has no foreground."""
        if self.cfg.fg_balance != "lesion" or self.label_lut is not None:
            return super().foreground_centre(case_id, rng)
        groups = self.lesions(case_id)
        return _pick(groups[rng.integers(len(groups))], rng) if groups else None

    def lesions(self, case_id: str, limit: int = 512) -> list[np.ndarray]:
        """(n_i, 3) int voxel coordinates of each lesion of a case (18-connected components of the label, each
        sub-sampled to ``limit`` with a case-seeded generator), once per case and worker."""
        if case_id not in self._groups:
            import cc3d

            comp = cc3d.connected_components(self.foreground_mask(case_id), connectivity=18)
            self._groups[case_id] = [_candidates(comp == k, f"{case_id}/{k}", limit)
                                     for k in range(1, int(comp.max()) + 1)]
        return self._groups[case_id]

    def case_of(self, i: int) -> str:
        """The case item ``i`` is drawn from (the first draw of its generator)."""
        return self.case_ids[int(self.rng(i).integers(len(self.case_ids)))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = self.rng(i)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]  # == self.case_of(i)
        raw, lab = self.read_pair(case_id, rng)
        x = torch.from_numpy(fmt.apply_normalization(raw, self.norm))
        y = torch.from_numpy(lab[None].astype(np.float32))
        if self._augment is not None:
            self._augment.set_random_state(seed=int(rng.integers(2**31)))
            out = self._augment({"image": x, "label": y})
            x = torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32)
            y = torch.as_tensor(np.asarray(out["label"]))
        x = x[list(MODES[self.cfg.mode])].contiguous()
        # augmentation moves labels nearest-neighbour
        y = (y > 0.5) if self.label_lut is None and self.aux_lut is None else torch.round(y)
        return {"image": x, "label": y.to(torch.int64), "index": torch.tensor(int(i))}


class StreamSampler(Sampler[int]):
    """Yields ``start, start + 1, ...`` forever: the per-rank sample indices from ``start_sample``."""

    def __init__(self, start: int = 0):
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


def patch_loader(dataset: PatchDataset, start_sample: int = 0, batch_size: int | None = None,
                 num_workers: int | None = None) -> DataLoader:
    """An endless DataLoader of batches ``{"image": (B, C, px, py, pz), ...}`` from sample ``start_sample``.

    Workers (persistent), pinned memory when CUDA is available, prefetching; batch ``k`` holds samples
    ``start_sample + k*B ... + B - 1`` of this rank's stream regardless of the number of workers.
    """
    bs = batch_size or dataset.cfg.batch_size
    nw = dataset.cfg.num_workers if num_workers is None else num_workers
    return DataLoader(
        dataset, batch_size=bs, sampler=StreamSampler(start_sample), num_workers=nw,
        pin_memory=torch.cuda.is_available(), persistent_workers=nw > 0,
        prefetch_factor=4 if nw > 0 else None, drop_last=True,
    )


__all__ = ["MODES", "SAMPLING", "PatchConfig", "preprocessing_record", "list_cases", "PatchDataset", "LabeledPatchDataset",
           "StreamSampler", "patch_loader"]
