"""Optional NIfTI copies of harmonized cases, for people to look at (ITK-SNAP, 3D Slicer, ``petctfm view``).

Training reads ``cases/<id>/*.npy``; these copies are not used by petctfm itself. Layout (autoPET-like, so
``petctfm view DATASET/nifti/<id>`` works)::

    DATASET/nifti/<case_id>/SUV.nii.gz      PET in SUV (float32)
    DATASET/nifti/<case_id>/CTres.nii.gz    CT in HU on the same grid (float32)
    DATASET/nifti/<case_id>/SEG.nii.gz      lesion mask (uint8)
    DATASET/nifti/<case_id>/ORGANS.nii.gz   organ labels, where the case has them (uint8)

Each file's NIfTI header ``descrip`` reads ``petctfm export <case_id>`` (:data:`EXPORT_MARKER`): fed back to
``harmonize`` (the export copied next to its source study), the duplicate check
(:func:`petctfm.harmonize.duplicates.drop_duplicates`) recognizes it as the study ``<case_id>`` and does not
harmonize it again (:func:`export_marker`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_dir

#: Start of the NIfTI ``descrip`` of every exported file; the case id follows.
EXPORT_MARKER = "petctfm export "


def export_marker(path: str | os.PathLike) -> str | None:
    """The case id an exported NIfTI (:func:`export_nifti`) was made from, or None (not a NIfTI, not an
    export, unreadable). Reads only the header (:func:`petctfm.io.images.image_notes`)."""
    from petctfm.io.images import image_notes

    notes = image_notes(path)
    return (notes[len(EXPORT_MARKER):].strip() or None) if notes.startswith(EXPORT_MARKER) else None


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
            img.header["descrip"] = (EXPORT_MARKER + case_id).encode("ascii", "replace")[:79]
            nib.save(img, tmp / f"{name}.nii.gz")
    return out
