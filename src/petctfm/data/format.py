"""The harmonized dataset format: what ``petctfm harmonize`` writes and every trainer reads.

Layout (see ``docs/data-format.md``)::

    DATASET/
      dataset.json          format version, channels, spacing, orientation, normalization statistics
      manifest.csv          one row per case (pseudonymous id, site, tracer, diagnosis, stage, SUV stats, ...)
      splits.json           patient-level train/val/test, nested label fractions, k-shot subsets
      quarantine.csv        cases that failed, one-line reason each
      cases/<case_id>/
        image.npy           float32 (2, X, Y, Z): channel 0 PET in SUV, channel 1 CT in HU (clipped)
        label.npy           uint8 (X, Y, Z): 1 = lesion
        organs.npy          uint8 (X, Y, Z), optional: organ labels (petctfm.core.labels.ORGAN_LABELS)
        meta.json           affine (4x4, RAS, mm), spacing, shape, case metadata (no identifiers)

Arrays are indexed ``[x, y, z]`` in RAS voxel order (x: left->right, y: posterior->anterior,
z: inferior->superior), exactly what ``nibabel`` gives for an image with the stored affine, and what MONAI
expects (channel first). Raw physical units are stored (SUV, HU), so quantitative measures (SUVmax, TLG)
stay available; the normalization in ``dataset.json`` is applied on load by :func:`normalize`, so that
zero after normalization is the training-split mean of each modality (the early-fusion MAE fills masked
voxels with zero).

Uncompressed ``.npy`` is chosen so a loader can ``np.load(mmap_mode="r")`` and read a random 3D patch
without decompressing the volume (measured in ``benchmarks/``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_dir, atomic_path, atomic_write_json
from petctfm.io.walk import file_kind

FORMAT_VERSION = 1
CHANNELS = ("PET", "CT")
DATASET_JSON = "dataset.json"
MANIFEST_CSV = "manifest.csv"
SPLITS_JSON = "splits.json"
QUARANTINE_CSV = "quarantine.csv"
CASES_DIR = "cases"


def case_dir(root: str | os.PathLike, case_id: str) -> Path:
    return Path(root) / CASES_DIR / case_id


def write_case(
    root: str | os.PathLike,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    meta: dict[str, Any],
    organs: np.ndarray | None = None,
) -> Path:
    """Write one harmonized case atomically (the folder appears complete or not at all).

    Args:
        image: float32 (2, X, Y, Z), [PET SUV, CT HU].
        label: (X, Y, Z) lesion mask, stored as uint8.
        affine: 4x4 voxel->RAS-mm matrix.
        meta: JSON-serializable case metadata (must not contain identifiers).
        organs: optional (X, Y, Z) organ label map.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[0] != len(CHANNELS):
        raise ValueError(f"image must be (2, X, Y, Z), got {image.shape}")
    if label.shape != image.shape[1:]:
        raise ValueError(f"label shape {label.shape} != image spatial shape {image.shape[1:]}")
    if organs is not None and organs.shape != image.shape[1:]:
        raise ValueError(f"organs shape {organs.shape} != image spatial shape {image.shape[1:]}")
    affine = np.asarray(affine, dtype=np.float64)
    spacing = [float(np.linalg.norm(affine[:3, i])) for i in range(3)]
    with atomic_dir(case_dir(root, case_id)) as tmp:
        np.save(tmp / "image.npy", np.ascontiguousarray(image))
        np.save(tmp / "label.npy", np.ascontiguousarray(label.astype(np.uint8)))
        if organs is not None:
            np.save(tmp / "organs.npy", np.ascontiguousarray(organs.astype(np.uint8)))
        atomic_write_json(
            tmp / "meta.json",
            {"case_id": case_id, "shape": list(image.shape[1:]), "spacing": spacing,
             "affine": affine.tolist(), **meta},
        )
    return case_dir(root, case_id)


def load_dataset_info(root: str | os.PathLike, require_normalization: bool = False) -> dict[str, Any]:
    """Read ``dataset.json``; a wrong path gives a one-line :class:`InputError`, and so does a dataset
    without normalization statistics when ``require_normalization`` (what training needs)."""
    root = Path(root)
    path = root / DATASET_JSON
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    if not path.is_file():
        if os.path.lexists(path):  # a FIFO, socket, device or folder: say so, never open it (a FIFO would hang)
            raise InputError(f"{path}: not a regular file (a {file_kind(path)}); a petctfm dataset needs "
                             f"{DATASET_JSON} as a plain JSON file")
        raise InputError(f"{root}: not a harmonized petctfm dataset (no {DATASET_JSON}; run 'petctfm harmonize')")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from None
    if info.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: format_version {info.get('format_version')!r}, expected {FORMAT_VERSION}")
    if require_normalization and "normalization" not in info:
        raise InputError(f"{path}: no 'normalization' statistics")
    return info


def load_splits(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / SPLITS_JSON
    if not path.is_file():
        raise InputError(f"{path}: splits not found")
    return json.loads(path.read_text())


def load_array(path: str | os.PathLike, mmap: bool = True, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One ``.npy`` of a case: ``image.npy`` must be (2, X, Y, Z) (``shape=None``), a label / organ map the
    image's spatial ``shape`` (X, Y, Z). A missing, unreadable or wrongly shaped file is a one-line
    :class:`InputError` naming it (a 3-D image.npy would otherwise fail deep inside a crop or a network)."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({' '.join(str(exc).split())[:200]})") from None
    if shape is None and (arr.ndim != 4 or arr.shape[0] != len(CHANNELS)):
        raise InputError(f"{path}: expected a (2, X, Y, Z) [PET, CT] array, got shape {tuple(arr.shape)}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputError(f"{path}: shape {tuple(arr.shape)} does not match the image's {tuple(shape)}")
    return arr


def load_case(root: str | os.PathLike, case_id: str, mmap: bool = True) -> dict[str, Any]:
    """Open one case: ``image`` (2,X,Y,Z) float32, ``label`` (X,Y,Z) uint8, optional ``organs``, ``meta``.

    With ``mmap=True`` the arrays are read-only memory maps: slicing a patch reads only that patch.
    """
    d = case_dir(root, case_id)
    if not d.is_dir():
        raise InputError(f"{d}: case not found in dataset")
    image = load_array(d / "image.npy", mmap)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{d / 'meta.json'}: cannot read ({' '.join(str(exc).split())[:200]})") from None
    out: dict[str, Any] = {"image": image, "label": load_array(d / "label.npy", mmap, image.shape[1:]),
                           "meta": meta}
    if (d / "organs.npy").exists():
        out["organs"] = load_array(d / "organs.npy", mmap, image.shape[1:])
    return out


#: PET intensity transforms before the z-score (``data.pet_transform``): ``clip`` = SUV clipped to [0, 20]
#: (the original, and what a normalization entry without a ``transform`` field means, so old checkpoints keep
#: their input), ``log1p`` = ``log(1 + clipped SUV)``, which shrinks the bladder / brain tail (docs/pretrain.md).
PET_TRANSFORMS = ("clip", "log1p")


def case_spacing(meta: dict[str, Any]) -> list[float]:
    """A harmonized case's voxel spacing (mm, X, Y, Z): ``meta.json``'s ``spacing``, else the affine's column
    norms."""
    return meta.get("spacing") or [float(np.linalg.norm(np.asarray(meta["affine"])[:3, i])) for i in range(3)]


def select_pet_transform(normalization: dict[str, Any], transform: str = "clip",
                         where: str | os.PathLike = "dataset.json") -> dict[str, Any]:
    """The ``{name: {clip, mean, std, transform}}`` normalization for PET intensity ``transform`` from a
    dataset's statistics (``dataset.json["normalization"]``: PET carries its ``log1p`` mean/std beside the
    clipped-SUV ones). One-line InputError for an unknown transform or a dataset finalized before the
    statistics existed (``where`` names it)."""
    if transform not in PET_TRANSFORMS:
        raise InputError(f"unknown data.pet_transform {transform!r} (choose {', '.join(PET_TRANSFORMS)})")
    out = {k: {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)} for k, v in normalization.items()}
    for k in out:
        out[k]["transform"] = "clip"
    if transform != "clip":
        stats = normalization["PET"].get(transform)
        if not stats:
            raise InputError(f"{where}: no PET {transform} statistics (finalized by an older petctfm; rerun "
                             "'petctfm harmonize --finalize DATASET')")
        out["PET"].update(mean=stats["mean"], std=stats["std"], transform=transform)
    return out


def norm_table(normalization: dict[str, Any], channels: Sequence[int | str] = CHANNELS) -> np.ndarray:
    """(C, 5) float32 rows ``[clip_lo, clip_hi, mean, std, log1p]`` for ``channels`` (names of :data:`CHANNELS`
    or indices into it) from a ``normalization`` dict ``{name: {clip, mean, std[, transform]}}``
    (``dataset.json``, a model config's ``preprocessing.normalization``, or :func:`select_pet_transform`);
    ``log1p`` is 1.0 where ``transform == "log1p"`` (absent: ``clip``, the original transform)."""
    rows = []
    for c in channels:
        p = normalization[CHANNELS[c] if isinstance(c, (int, np.integer)) else c]
        transform = p.get("transform", "clip")
        if transform not in PET_TRANSFORMS:
            raise InputError(f"unknown intensity transform {transform!r} in the normalization record")
        rows.append([float(p["clip"][0]), float(p["clip"][1]), float(p["mean"]), float(p["std"]),
                     float(transform == "log1p")])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def apply_normalization(x, table, channel_axis: int = 0):
    """``(f(clip(x, lo, hi)) - mean) / std`` per channel in float32, ``f`` = ``log1p`` on the rows flagged so
    (column 4 of the table) and the identity elsewhere: the one implementation of petctfm's input
    normalization. NumPy in -> NumPy out (training patches, fine-tuned models), torch in -> torch out on the
    tensor's device (frozen encoders of the probe and staging).

    ``x``: (C, ...) with ``channel_axis=0`` or (B, C, ...) with ``channel_axis=1``, the channels of ``table``'s
    rows (:func:`norm_table`, (C, 5); a legacy (C, 4) table means no log rows). After this, zero is each
    modality's training mean.
    """
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    logs = [i for i, r in enumerate(np.asarray(table)) if len(r) > 4 and r[4] > 0.5]
    if not isinstance(x, np.ndarray) and hasattr(x, "dim"):  # a torch tensor (torch not imported here)
        import torch

        x = x.float()
        t = torch.as_tensor(table, dtype=torch.float32, device=x.device)
        lo, hi, mean, std = (t[:, i].view(shape) for i in range(4))
        y = torch.minimum(torch.maximum(x, lo), hi)
        if logs:
            y = y.clone()
            idx = [slice(None)] * x.ndim
            for i in logs:
                idx[channel_axis] = i
                y[tuple(idx)] = torch.log1p(y[tuple(idx)])
        return (y - mean) / std
    x = np.asarray(x, dtype=np.float32)
    t = np.asarray(table, dtype=np.float32)
    lo, hi, mean, std = (t[:, i].reshape(shape) for i in range(4))
    y = np.minimum(np.maximum(x, lo), hi)
    for i in logs:
        idx = [slice(None)] * x.ndim
        idx[channel_axis] = i
        y[tuple(idx)] = np.log1p(y[tuple(idx)])
    return (y - mean) / std


def normalize(image: np.ndarray, info: dict[str, Any], channels: tuple[str, ...] = CHANNELS) -> np.ndarray:
    """Map raw [SUV, HU] channels (C, ...) named by ``channels`` to the training scale with the dataset's
    statistics ``info["normalization"]`` (computed over the training split by harmonize):
    :func:`apply_normalization` with :func:`norm_table`. After this, zero is each modality's training mean.
    """
    return apply_normalization(image, norm_table(info["normalization"], channels))


def write_dataset_info(root: str | os.PathLike, info: dict[str, Any]) -> Path:
    info = {"format_version": FORMAT_VERSION, "channels": list(CHANNELS), **info}
    return atomic_write_json(Path(root) / DATASET_JSON, info)


__all__ = [
    "case_spacing",
    "FORMAT_VERSION", "CHANNELS", "case_dir", "write_case", "load_dataset_info", "load_splits", "load_case",
    "load_array",
    "normalize", "norm_table", "apply_normalization", "PET_TRANSFORMS", "select_pet_transform",
    "write_dataset_info", "atomic_path",
]
