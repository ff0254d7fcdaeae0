"""Test fixture: a tiny synthetic dataset in the harmonized format, written in well under a second.

Tests import it as a top-level module (``from toy_data import write_toy_dataset``), like ``quick_train``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_write_json


def write_toy_dataset(root: str | os.PathLike, n_cases: int = 4, shape: tuple[int, int, int] = (48, 48, 64),
                      seed: int = 0, organs: bool = False) -> Path:
    """A tiny dataset in the harmonized format, for tests (synthetic only).

    ``organs``: also an ``organs.npy`` per case (values of ``ORGAN_LABELS``: the liver-like region = liver, the
    spine = bone, a small hot-free ellipsoid on the other side = spleen) and ``organ_labels`` in dataset.json;
    the images and lesions are the same as without (no extra random draws).

    Each case: an ellipsoidal "body" (CT soft tissue ~40 HU in air at -1000 HU, a denser "spine" cylinder
    of ~400 HU; PET background SUV ~1, liver-like region SUV ~2.5) with 1-3 spherical hot lesions
    (SUV 5-12, label 1). Splits: all but the last case train, last case val and test.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    gx, gy, gz = np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z), indexing="ij")
    ids = []
    for k in range(n_cases):
        cx, cy = X / 2 + rng.normal(0, 2), Y / 2 + rng.normal(0, 2)
        body = ((gx - cx) / (0.42 * X)) ** 2 + ((gy - cy) / (0.33 * Y)) ** 2 <= 1
        ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape)
        spine = ((gx - cx) ** 2 + (gy - cy + 0.2 * Y) ** 2 <= (0.06 * X) ** 2) & body
        ct[spine] = 400.0 + rng.normal(0, 20, int(spine.sum()))
        pet = np.where(body, 1.0, 0.0) + np.abs(rng.normal(0, 0.1, shape)) * body
        liver = body & (((gx - cx - 0.15 * X) / (0.15 * X)) ** 2 + ((gy - cy) / (0.15 * Y)) ** 2
                        + ((gz - 0.6 * Z) / (0.2 * Z)) ** 2 <= 1)
        pet[liver] = 2.5
        label = np.zeros(shape, np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c = np.array([rng.uniform(0.3, 0.7) * X, rng.uniform(0.3, 0.7) * Y, rng.uniform(0.2, 0.8) * Z])
            r = rng.uniform(2.0, 4.0)
            les = (gx - c[0]) ** 2 + (gy - c[1]) ** 2 + (gz - c[2]) ** 2 <= r * r
            pet[les] = rng.uniform(5, 12)
            label[les] = 1
        image = np.stack([pet, ct]).astype(np.float32)
        cid = f"toy{k:03d}"
        org = None
        if organs:
            from petctfm.core.labels import ORGAN_LABELS as OL

            org = np.zeros(shape, np.uint8)
            org[liver] = OL["liver"]
            org[spine] = OL["bone"]
            spleen = body & (((gx - cx + 0.2 * X) / (0.08 * X)) ** 2 + ((gy - cy) / (0.1 * Y)) ** 2
                             + ((gz - 0.6 * Z) / (0.12 * Z)) ** 2 <= 1)
            org[spleen & (org == 0)] = OL["spleen"]
            image[1][spleen] = 55.0  # a CT contrast for the spleen (the PET is unchanged)
        fmt.write_case(root, cid, image, label, np.diag([2.0, 2.0, 2.0, 1.0]), {"site": "toy", "tracer": "FDG"},
                       organs=org)
        ids.append(cid)
    extra = {}
    if organs:
        from petctfm.core.labels import ORGAN_LABELS as OL

        extra["organ_labels"] = dict(OL)
    fmt.write_dataset_info(root, {
        **extra,
        "spacing": [2.0, 2.0, 2.0], "orientation": "RAS",
        "provenance": {"data": "synthetic", "synthetic_cases": len(ids), "cases": len(ids)},  # random spheres
        "normalization": {"PET": {"mean": 0.6, "std": 1.2, "clip": [0.0, 30.0]},
                          "CT": {"mean": -400.0, "std": 500.0, "clip": [-1000.0, 1500.0]}},
    })
    atomic_write_json(root / fmt.SPLITS_JSON, {"train": ids[:-1] if len(ids) > 1 else ids, "val": ids[-1:],
                                               "test": ids[-1:], "fractions": {}, "kshot": {}})
    return root


def tiny_prompt_config(spacing: float = 2.0, patch: int | None = 16) -> dict:
    """The config of an untrained tiny PET-only promptable model for tests: the ``tiny`` preset, a ``patch``^3
    patch (None: the preset's), fixed PET/CT normalization and a ``spacing`` mm harmonization grid."""
    from petctfm.core.config import deep_merge
    from petctfm.methods.promptable.presets import get_preset
    from petctfm.methods.promptable.task import DEFAULT_CONFIG

    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    if patch is not None:
        cfg["data"]["patch_size"] = [patch] * 3
    cfg["preprocessing"] = {"channels": ["PET"], "normalization": {
        "PET": {"mean": 0.6, "std": 1.2, "clip": [0.0, 30.0]},
        "CT": {"mean": -400.0, "std": 500.0, "clip": [-1000.0, 1500.0]}},
        "harmonize": {"spacing": [float(spacing)] * 3}}
    return cfg
