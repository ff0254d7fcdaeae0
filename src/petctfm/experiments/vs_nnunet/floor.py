"""The non-learned floor: a fixed SUV threshold (SUV >= t), keeping connected components of at least 1 ml.

Components are 18-connected (``cc3d``, the connectivity ``petctfm evaluate`` counts lesions with); the minimal
volume is converted to voxels from the case's spacing. SUV is channel 0 of the harmonized ``image.npy``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from petctfm.data import format as fmt
from petctfm.data.loader import list_cases
from petctfm.experiments.vs_nnunet.plan import FLOOR_MIN_ML
from petctfm.inference.postprocess import remove_small_components


def threshold_mask(suv: np.ndarray, spacing, threshold: float, min_ml: float = FLOOR_MIN_ML) -> np.ndarray:
    """uint8 mask of the 18-connected components of ``suv >= threshold`` with volume >= ``min_ml``
    (:func:`petctfm.inference.postprocess.remove_small_components`)."""
    return remove_small_components(np.asarray(suv) >= threshold, spacing, min_ml)


def predict_floor(dataset: str | Path, split: str, threshold: float, out_dir: str | Path) -> dict[str, float]:
    """Write ``out_dir/<case>.nii.gz`` for every case of ``split``; returns seconds per case."""
    from petctfm.predict.split import write_label_nifti

    seconds = {}
    for cid in list_cases(dataset, split):
        t0 = time.perf_counter()
        case = fmt.load_case(dataset, cid, mmap=True)
        mask = threshold_mask(np.asarray(case["image"][0]), fmt.case_spacing(case["meta"]), threshold)
        write_label_nifti(mask, np.asarray(case["meta"]["affine"]), Path(out_dir) / f"{cid}.nii.gz")
        seconds[cid] = time.perf_counter() - t0
    return seconds


__all__ = ["threshold_mask", "predict_floor"]
