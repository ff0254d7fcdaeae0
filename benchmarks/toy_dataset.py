"""A synthetic harmonized dataset for the benchmarks, which run from a checkout without ``tests/``.

Every case: a cylinder-shaped body (CT 40 HU +- noise in air at -1000 HU; PET SUV ~1) holding one to three
hot spheres (SUV 5-12, label 1). Dataset statistics are fixed; splits: the last case is val and test,
the others train. Only the content the benchmarks need (a loader to feed, hot foreground to centre on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_write_json

NORMALIZATION = {"PET": {"mean": 0.6, "std": 1.2, "clip": [0.0, 30.0]},
                 "CT": {"mean": -400.0, "std": 500.0, "clip": [-1000.0, 1500.0]}}


def write_bench_dataset(root: str | Path, n_cases: int, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """Write ``n_cases`` cases of ``shape`` (X, Y, Z) at 2 mm under ``root``; returns ``root``."""
    root, rng = Path(root), np.random.default_rng(seed)
    xyz = np.indices(shape, dtype=np.float32)
    side = np.array(shape, np.float32)
    body = ((xyz[0] / side[0] - 0.5) ** 2 + (xyz[1] / side[1] - 0.5) ** 2) <= 0.16
    names = [f"bench{k:03d}" for k in range(n_cases)]
    for name in names:
        pet = body * (1.0 + 0.1 * np.abs(rng.standard_normal(shape, np.float32)))
        ct = np.where(body, 40.0, -1000.0).astype(np.float32) + 10 * rng.standard_normal(shape, np.float32)
        label = np.zeros(shape, np.uint8)
        for centre, radius in zip(rng.uniform(0.3, 0.7, (rng.integers(1, 4), 3)) * side, rng.uniform(2, 4, 3)):
            sphere = ((xyz - centre[:, None, None, None]) ** 2).sum(0) <= radius**2
            pet[sphere], label[sphere] = rng.uniform(5, 12), 1
        fmt.write_case(root, name, np.stack([pet, ct]), label, np.diag([2.0, 2.0, 2.0, 1.0]), {"site": "bench"})
    fmt.write_dataset_info(root, {"spacing": [2.0] * 3, "orientation": "RAS", "normalization": NORMALIZATION})
    atomic_write_json(root / fmt.SPLITS_JSON, {"train": names[:-1] or names, "val": names[-1:], "test": names[-1:],
                                               "fractions": {}, "kshot": {}})
    return root
