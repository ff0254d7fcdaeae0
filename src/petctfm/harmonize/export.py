"""Optional NIfTI copies of harmonized cases, for people to look at (ITK-SNAP, 3D Slicer, ``petctfm view``).

Training reads ``cases/<id>/*.npy``; these copies are not used by petctfm itself. Layout (autoPET-like, so
``petctfm view DATASET/nifti/<id>`` works)::

    DATASET/nifti/<case_id>/SUV.nii.gz      PET in SUV (float32)
    DATASET/nifti/<case_id>/CTres.nii.gz    CT in HU on the same grid (float32)
    DATASET/nifti/<case_id>/SEG.nii.gz      lesion mask (uint8)
    DATASET/nifti/<case_id>/ORGANS.nii.gz   organ labels, where the case has them (uint8)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_dir


def export_nifti(dataset: str | os.PathLike, case_id: str) -> Path:
    """Write the NIfTI copies of one harmonized case (atomically, as one folder); returns the folder."""
    import nibabel as nib

    case = fmt.load_case(dataset, case_id, mmap=True)
    affine = np.asarray(case["meta"]["affine"], dtype=np.float64)  # voxel -> RAS mm, as NIfTI wants
    arrays = {"SUV": np.asarray(case["image"][0], np.float32), "CTres": np.asarray(case["image"][1], np.float32),
              "SEG": np.asarray(case["label"], np.uint8)}
    if "organs" in case:
        arrays["ORGANS"] = np.asarray(case["organs"], np.uint8)
    out = Path(dataset) / "nifti" / case_id
    with atomic_dir(out) as tmp:
        for name, arr in arrays.items():
            img = nib.Nifti1Image(arr, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, tmp / f"{name}.nii.gz")
    return out
