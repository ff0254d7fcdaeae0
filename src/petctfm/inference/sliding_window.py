"""Sliding-window inference of a fine-tuned segmentation model on dataset cases, NIfTI predictions out.

- :func:`predict_case`: one normalized volume (C, X, Y, Z) -> lesion probability and label map (X, Y, Z),
  with MONAI ``sliding_window_inference`` (patch = the training patch, Gaussian blending, overlap 0.5).
- :func:`predict_split`: every case of a split of a harmonized dataset -> ``OUT/<case_id>.nii.gz`` (uint8
  label map, nibabel, the case's RAS affine from ``meta.json``), so that
  ``petctfm evaluate --pred OUT --gt DATASET --split test`` scores them.

The model's own preprocessing (channels and normalization statistics saved in its config) is applied to the
raw [SUV, HU] volumes, so a model can predict on another harmonized dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from petctfm.data import format as fmt
from petctfm.data.loader import MODES, list_cases
from petctfm.core.device import autocast_for, resolve_device
from petctfm.core.errors import InputError


def normalized_input(raw: np.ndarray, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Raw [SUV, HU] (2, X, Y, Z) -> (network input (C, X, Y, Z) float32, background (C,) normalized).

    Uses the model config's ``preprocessing.normalization`` and ``data.mode``; background = each channel's
    lower clip value (0 SUV, air) after normalization, used to pad volumes smaller than the patch.
    """
    pre = cfg.get("preprocessing") or {}
    if "normalization" not in pre:
        raise InputError("model config has no preprocessing.normalization (trained without a dataset?)")
    info = {"normalization": pre["normalization"]}
    chans = list(MODES[cfg["data"]["mode"]])
    x = fmt.normalize(np.asarray(raw, dtype=np.float32), info)[chans]
    lo = np.array([[pre["normalization"][c]["clip"][0]] for c in fmt.CHANNELS], np.float32)[:, :, None, None]
    bg = fmt.normalize(lo, info)[chans].reshape(-1)
    return np.ascontiguousarray(x), bg


@torch.no_grad()
def predict_case(model: nn.Module, image: np.ndarray | torch.Tensor, patch: Sequence[int] | int, overlap: float = 0.5,
                 device: torch.device | str | None = None, bg: np.ndarray | None = None,
                 sw_batch_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Lesion probability (X, Y, Z) float32 and label map (X, Y, Z) uint8 of one normalized volume.

    ``image`` (C, X, Y, Z) normalized (:func:`normalized_input`); ``patch`` the training patch (int or 3);
    volumes smaller than the patch are padded at the end with ``bg`` (C,) (default 0 = the mean) and the
    padding cropped off again. Label = argmax of the softmax (= probability > 0.5 with two classes).
    """
    from monai.inferers import sliding_window_inference

    patch = tuple(int(p) for p in (patch if isinstance(patch, (list, tuple)) else (patch,) * 3))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    # a torch tensor is used as is (a pinned CPU tensor is then copied to the GPU asynchronously)
    x = image.float() if torch.is_tensor(image) else torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if x.dim() != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got {tuple(x.shape)}")
    shape = tuple(x.shape[1:])
    full = tuple(max(s, p) for s, p in zip(shape, patch))
    if full != shape:
        pad = torch.zeros((x.shape[0], *full), dtype=torch.float32)
        if bg is not None:
            pad += torch.as_tensor(np.asarray(bg, np.float32)).view(-1, 1, 1, 1)
        pad[:, :shape[0], :shape[1], :shape[2]] = x
        x = pad
    was_training = model.training
    model.eval()
    try:
        with autocast_for(device):
            logits = sliding_window_inference(x[None].to(device, non_blocking=x.is_pinned()), patch, sw_batch_size,
                                              model, overlap=overlap, mode="gaussian")
    finally:
        model.train(was_training)
    prob = torch.softmax(logits.float(), dim=1)[0, 1, :shape[0], :shape[1], :shape[2]]
    prob_np = np.ascontiguousarray(prob.cpu().numpy())  # float32; one copy of the cropped view, not two
    return prob_np, (prob_np > 0.5).astype(np.uint8)


def load_segmenter(run_or_ckpt: str | Path) -> tuple[nn.Module, dict[str, Any], Path]:
    """(model in eval mode on CPU, config, weights file). A run folder gives its best checkpoint by val Dice
    (``RUN/best/model.safetensors``) when there is one, else its latest checkpoint."""
    from petctfm.methods.segmentation.segmenter import BEST_DIR, METHOD
    from petctfm.train.checkpoint import load_model, resolve_weights

    src = Path(run_or_ckpt)
    best = src / BEST_DIR / "model.safetensors"
    path = best if best.is_file() else resolve_weights(src)
    model, cfg = load_model(path)
    if cfg.get("method") != METHOD:
        raise InputError(f"{path}: not a fine-tuned segmentation model (method {cfg.get('method')!r})")
    return model, cfg, path


def write_label_nifti(label: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (X, Y, Z) label map with a 4x4 RAS affine as NIfTI (nibabel, atomic)."""
    import nibabel as nib

    from petctfm.io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(label, np.uint8), np.asarray(affine, np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def predict_split(run_or_ckpt: str | Path, dataset: str | Path, split: str = "test",
                  out_dir: str | Path = "predictions", overlap: float | None = None,
                  device: str | torch.device | None = None, progress: bool = False) -> list[Path]:
    """Predict every case of ``split`` and write ``out_dir/<case_id>.nii.gz``; returns the written paths.

    ``overlap`` defaults to the model config's ``val.overlap`` (0.5); ``device`` to CUDA when available.
    """
    model, cfg, _ = load_segmenter(run_or_ckpt)
    dev = resolve_device(device)
    model = model.to(dev)
    ov = float(cfg["val"]["overlap"] if overlap is None else overlap)
    ids = list_cases(dataset, split)
    out: list[Path] = []
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"predict {split}", total=len(ids))
        for cid in ids:
            case = fmt.load_case(dataset, cid, mmap=True)
            x, bg = normalized_input(np.asarray(case["image"]), cfg)
            _, label = predict_case(model, x, cfg["data"]["patch_size"], ov, dev, bg=bg,
                                    sw_batch_size=int(cfg["val"].get("sw_batch_size", 2)))
            out.append(write_label_nifti(label, np.asarray(case["meta"]["affine"]), Path(out_dir) / f"{cid}.nii.gz"))
            bar.advance(task)
    return out


__all__ = ["normalized_input", "predict_case", "load_segmenter", "write_label_nifti", "predict_split"]
