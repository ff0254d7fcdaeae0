"""Predictions of a fine-tuned segmentation model on the cases of a harmonized dataset split, NIfTI out.

:func:`predict_split`: every case of a split -> ``OUT/<case_id>.nii.gz`` (uint8 label map, nibabel, the case's
RAS affine from ``meta.json``), so that ``petctfm evaluate --pred OUT --gt DATASET --split test`` scores them.
The model's own preprocessing (channels and normalization statistics saved in its config,
:func:`petctfm.inference.normalize.normalized_input`) is applied to the raw [SUV, HU] volumes, so a model can
predict on another harmonized dataset; inference is :func:`petctfm.inference.sliding_window.predict_case`
(the training patch, Gaussian blending, overlap from the config). A model trained on another grid than the
dataset's (``finetune --plan-spacing``) predicts as ``petctfm predict`` does: each case is resampled to the
model's spacing and the probability brought back onto the case's grid before the threshold
(:class:`petctfm.predict.predictor.Predictor`), so the masks are always on the dataset's voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from petctfm.core.device import resolve_device
from petctfm.data import format as fmt
from petctfm.data.loader import list_cases
from petctfm.inference.model import is_organ_model, load_segmenter, output_classes
from petctfm.inference.normalize import normalized_input
from petctfm.inference.sliding_window import predict_case, predict_labels


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


def case_label_map(model: torch.nn.Module, cfg: dict, image: np.ndarray, overlap: float,
                   device: torch.device | None = None, spacing=None) -> np.ndarray:
    """The predicted label map (X, Y, Z) uint8 of one harmonized case's raw [SUV, HU] ``image`` (2, X, Y, Z) on
    its own grid: the model's normalization (:func:`petctfm.inference.normalize.normalized_input`), then a lesion
    mask (:func:`petctfm.inference.sliding_window.predict_case`, with the config's organ suppression, and
    post-processed as the config says when
    ``spacing`` (mm) is given: :func:`petctfm.inference.postprocess.lesion_mask`) or, for an organ model, the
    organ label map in the organ values of its classes (:func:`petctfm.inference.sliding_window.predict_labels`);
    the training patch, ``overlap``, the config's ``val.sw_batch_size``. ``model`` from
    :func:`petctfm.inference.model.load_segmenter`, already on ``device`` (None: the model's)."""
    from petctfm.inference.postprocess import lesion_mask, min_lesion_ml, suppression

    x, bg = normalized_input(np.asarray(image), cfg)
    sw = int(cfg["val"].get("sw_batch_size", 2))
    if is_organ_model(cfg):
        return predict_labels(model, x, cfg["data"]["patch_size"], list(output_classes(cfg).values()), overlap,
                              device, bg=bg, sw_batch_size=sw)
    prob, mask = predict_case(model, x, cfg["data"]["patch_size"], overlap, device, bg=bg, sw_batch_size=sw,
                              suppress=suppression(cfg))
    return lesion_mask(prob, spacing, min_lesion_ml(cfg)) if spacing is not None else mask


def predict_split(run_or_ckpt: str | Path, dataset: str | Path, split: str = "test",
                  out_dir: str | Path = "predictions", overlap: float | None = None,
                  device: str | torch.device | None = None, progress: bool = False,
                  cases: list[str] | None = None) -> list[Path]:
    """Predict every case of ``split`` (or exactly ``cases``) and write ``out_dir/<case_id>.nii.gz``; returns
    the written paths.

    ``run_or_ckpt``: a fine-tuning run folder (its best checkpoint by val Dice, else the latest) or a
    ``.safetensors`` file. ``overlap`` defaults to the model config's ``val.overlap`` (0.5); ``device`` to
    CUDA when available.
    """
    from rich.progress import Progress

    from petctfm.predict.predictor import Predictor, harmonize_settings

    model, cfg, _ = load_segmenter(run_or_ckpt)
    dev = resolve_device(device)
    model = model.to(dev)
    ov = float(cfg["val"]["overlap"] if overlap is None else overlap)
    model_spacing, _, recorded = harmonize_settings(cfg)  # a model that records no grid predicts on the dataset's
    other_grid: Predictor | None = None  # built on the first case on another grid than the model's
    ids = list(cases) if cases is not None else list_cases(dataset, split)
    out: list[Path] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"predict {split}", total=len(ids))
        for cid in ids:
            case = fmt.load_case(dataset, cid, mmap=True)
            spacing, affine = fmt.case_spacing(case["meta"]), np.asarray(case["meta"]["affine"])
            if recorded != "checkpoint" or np.allclose(spacing, model_spacing, atol=1e-3):
                label = case_label_map(model, cfg, case["image"], ov, dev, spacing=spacing)
            else:  # the model's grid and back, as petctfm predict does
                other_grid = other_grid or Predictor.load(run_or_ckpt, dev, overlap=ov, suppress_organs=None)
                image = np.asarray(case["image"])
                res = other_grid.predict_all((image[0], affine), (image[1], affine), case_id=cid)
                label = res["organs"] if other_grid.organ_only else res["mask"]
            out.append(write_label_nifti(label, affine, Path(out_dir) / f"{cid}.nii.gz"))
            bar.advance(task)
    return out


__all__ = ["write_label_nifti", "case_label_map", "predict_split"]
