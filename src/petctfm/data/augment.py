"""Training-patch augmentation (MONAI), the one pipeline of every patch dataset.

:func:`build_augment` returns MONAI dictionary transforms on ``{"image": (C, X, Y, Z)}`` or, with
``label=True``, ``{"image": (C, X, Y, Z), "label": (1, X, Y, Z)}``:

1. ``RandFlipd`` along each axis of ``flip_axes`` (default all three; probability ``flip_prob`` each);
2. ``RandAffined``: rotation up to ``rotate_deg`` per axis and isotropic zoom in [1 - s, 1 + s]
   (``scale_range``), probability ``affine_prob``; the image resampled bilinearly with border padding, the
   label nearest-neighbour with zero padding;
3. ``RandScaleIntensityd`` / ``RandShiftIntensityd`` per channel on the image only (multiply by
   1 + U(-s, s), add U(-o, o) in normalized units), probability ``intensity_prob`` each.

Spatial transforms move image and label together. The datasets seed the pipeline per item
(``set_random_state(seed=...)`` drawn from the item's own generator), so an augmented item is a pure
function of ``(seed, rank, index)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def build_augment(cfg: Any, label: bool = False):
    """The pipeline above; ``cfg`` is a :class:`petctfm.data.loader.PatchConfig` (its augmentation fields)."""
    from monai.transforms import Compose, RandAffined, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    keys = ["image", "label"] if label else ["image"]
    mode = ("bilinear", "nearest") if label else "bilinear"
    padding = ("border", "zeros") if label else "border"
    rot = np.deg2rad(cfg.rotate_deg)
    flips = [RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=a) for a in (0, 1, 2) if a in cfg.flip_axes]
    return Compose([
        *flips,
        RandAffined(keys, prob=cfg.affine_prob, rotate_range=(rot, rot, rot), scale_range=cfg.scale_range,
                    mode=mode, padding_mode=padding),
        RandScaleIntensityd("image", factors=cfg.intensity_scale, prob=cfg.intensity_prob, channel_wise=True),
        RandShiftIntensityd("image", offsets=cfg.intensity_shift, prob=cfg.intensity_prob, channel_wise=True),
    ])


__all__ = ["build_augment"]
