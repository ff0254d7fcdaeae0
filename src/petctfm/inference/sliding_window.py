"""The one sliding-window inference path: padding to the patch, MONAI Gaussian blending, flip TTA.

Used by segmentation validation and ``predict_split`` (:mod:`petctfm.predict.split`), the linear probe
(:mod:`petctfm.methods.probe`) and ``petctfm predict`` (:mod:`petctfm.predict`).

- :func:`pad_to`: a (C, X, Y, Z) volume padded at the end of each axis to at least a size with a background
  value per channel (volumes smaller than the window; staging's tiling).
- :func:`lesion_probability`: one (C, X, Y, Z) network input -> lesion probability (X, Y, Z) float32: the
  softmax of class 1 of MONAI ``sliding_window_inference`` (patch-sized windows, ``overlap``, Gaussian
  blending, bf16 autocast on CUDA), volumes smaller than the patch padded with ``bg`` and cropped back;
  ``tta`` 4 or 8 averages the probabilities over flips of the spatial axes (:func:`flip_sets`).
- :func:`predict_case`: the probability and its label map (``prob > 0.5`` = argmax of two classes).
- :func:`predict_labels`: a multi-class (organ) model: argmax of every class's (TTA-averaged) probability,
  written in the classes' label values.

The network input is whatever the model takes (normalized channels for a fine-tuned segmenter,
:func:`petctfm.inference.normalize.normalized_input`; raw [SUV, HU] for the probe, whose frozen encoders
normalize themselves).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from petctfm.core.device import autocast_for

TTA_CHOICES = (0, 4, 8)


def pad_to(image: np.ndarray | torch.Tensor, size: Sequence[int], bg: np.ndarray | None = None
           ) -> tuple[np.ndarray | torch.Tensor, tuple[int, ...]]:
    """Pad a (C, X, Y, Z) volume at the end of each spatial axis to at least ``size`` with ``bg`` (C,)
    (default 0). NumPy in -> float32 NumPy out, torch in -> float32 torch out (the input itself when no
    padding is needed). Returns (volume, original spatial shape)."""
    shape = tuple(int(n) for n in image.shape[1:])
    full = tuple(max(n, int(s)) for n, s in zip(shape, size))
    if full == shape:
        return image, shape
    fill = np.zeros(image.shape[0], np.float32) if bg is None else np.asarray(bg, np.float32).reshape(-1)
    if torch.is_tensor(image):
        out = torch.empty((image.shape[0], *full), dtype=torch.float32)
        out[:] = torch.from_numpy(fill).view(-1, 1, 1, 1)
    else:
        out = np.empty((image.shape[0], *full), np.float32)
        out[:] = fill[:, None, None, None]
    out[:, :shape[0], :shape[1], :shape[2]] = image
    return out, shape


def flip_sets(n: int) -> list[tuple[int, ...]]:
    """Spatial axes flipped in each TTA pass: 1 pass (identity), 4 (+ single-axis flips) or 8 (all: the full
    flip group, as nnU-Net's mirroring)."""
    if n in (0, 1):
        return [()]
    if n == 4:
        return [(), (0,), (1,), (2,)]
    return [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


@torch.no_grad()
def _window_probability(model: nn.Module, image: np.ndarray | torch.Tensor, patch: tuple[int, int, int],
                        overlap: float, device: torch.device, bg: np.ndarray | None,
                        sw_batch_size: int, channel: int | None = 1) -> np.ndarray:
    """One sliding-window pass: the probability of class ``channel`` (X, Y, Z) float32 of a (C, X, Y, Z)
    input (``channel`` 1: the lesion), or of every class (K, X, Y, Z) with ``channel=None``."""
    from monai.inferers import sliding_window_inference

    # a torch tensor is used as is (a pinned CPU tensor is then copied to the GPU asynchronously)
    x = image.float() if torch.is_tensor(image) else torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if x.dim() != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got {tuple(x.shape)}")
    x, shape = pad_to(x, patch, bg)
    with autocast_for(device):
        logits = sliding_window_inference(x[None].to(device, non_blocking=x.is_pinned()), patch, sw_batch_size,
                                          model, overlap=overlap, mode="gaussian")
    sel = slice(None) if channel is None else channel
    prob = torch.softmax(logits.float(), dim=1)[0, sel, :shape[0], :shape[1], :shape[2]]
    return np.ascontiguousarray(prob.cpu().numpy())  # float32; one copy of the cropped view, not two


def lesion_probability(model: nn.Module, image: np.ndarray | torch.Tensor, patch: Sequence[int] | int,
                       overlap: float = 0.5, device: torch.device | str | None = None, bg: np.ndarray | None = None,
                       sw_batch_size: int = 2, tta: int = 0, channel: int | None = 1,
                       flip_axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Lesion probability (X, Y, Z) float32 of one (C, X, Y, Z) network input (see the module docstring);
    ``channel=None``: the probabilities of every output class (K, X, Y, Z) (a multi-class organ model).

    ``patch``: the window (int or 3 ints, the training patch); ``device``: default the model's; ``bg`` (C,):
    padding value per channel (default 0); ``tta``: 0 (one pass), 4 or 8 flips, probabilities averaged, only
    the flips within ``flip_axes`` (the axes the model was trained to be symmetric in: an organ model with
    left/right classes leaves out axis 0). The model runs in eval mode (its train/eval state is restored afterwards).
    """
    patch = tuple(int(p) for p in (patch if isinstance(patch, (list, tuple)) else (patch,) * 3))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    flips = [f for f in flip_sets(tta) if set(f) <= set(flip_axes)]
    was_training = model.training
    model.eval()
    acc = None
    try:
        for axes in flips:
            if axes:
                # (not pinned: one host->GPU copy per pass; pinning a whole volume costs more than it saves)
                x = np.asarray(image.cpu() if torch.is_tensor(image) else image)
                xin = torch.from_numpy(np.ascontiguousarray(np.flip(x, [a + 1 for a in axes])))
            else:
                xin = image
            prob = _window_probability(model, xin, patch, overlap, device, bg, sw_batch_size, channel)
            if axes:
                prob = np.flip(prob, [a + (channel is None) for a in axes])
            acc = prob if acc is None else acc + prob  # (float32; a new array, never written in place)
    finally:
        model.train(was_training)
    return np.ascontiguousarray(acc / len(flips)) if len(flips) > 1 else acc


def predict_case(model: nn.Module, image: np.ndarray | torch.Tensor, patch: Sequence[int] | int, overlap: float = 0.5,
                 device: torch.device | str | None = None, bg: np.ndarray | None = None,
                 sw_batch_size: int = 2, tta: int = 0, suppress: Mapping[str, Any] | None = None,
                 threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Lesion probability (X, Y, Z) float32 and label map (X, Y, Z) uint8 (``prob > 0.5``, the argmax of two
    classes) of one (C, X, Y, Z) input; arguments as :func:`lesion_probability`. ``suppress`` (from
    :func:`petctfm.inference.postprocess.suppression`; None: off): lesion components (``prob > threshold``)
    lying in the network's own predicted organs are removed from the probability
    (:func:`petctfm.inference.postprocess.suppress_in_organs`)."""
    if suppress:
        from petctfm.inference.postprocess import suppress_in_organs

        probs = lesion_probability(model, image, patch, overlap, device, bg, sw_batch_size, tta, channel=None)
        prob = suppress_in_organs(probs, suppress, threshold)
    else:
        prob = lesion_probability(model, image, patch, overlap, device, bg, sw_batch_size, tta)
    return prob, (prob > 0.5).astype(np.uint8)


def predict_labels(model: nn.Module, image: np.ndarray | torch.Tensor, patch: Sequence[int] | int,
                   values: Sequence[int], overlap: float = 0.5, device: torch.device | str | None = None,
                   bg: np.ndarray | None = None, sw_batch_size: int = 2, tta: int = 0,
                   flip_axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Label map (X, Y, Z) uint8 of a multi-class model: the argmax over the (TTA-averaged) class probabilities,
    class ``i`` written as ``values[i]`` (``values[0]`` = 0, background; e.g. the organ label values of
    :func:`petctfm.inference.model.output_classes`). Other arguments as :func:`lesion_probability`."""
    prob = lesion_probability(model, image, patch, overlap, device, bg, sw_batch_size, tta, channel=None,
                              flip_axes=flip_axes)
    lut = np.asarray(list(values), np.uint8)
    if prob.shape[0] != len(lut):
        raise ValueError(f"the model outputs {prob.shape[0]} classes, {len(lut)} label values given")
    return lut[np.argmax(prob, axis=0)]


__all__ = ["TTA_CHOICES", "pad_to", "flip_sets", "lesion_probability", "predict_case", "predict_labels"]
