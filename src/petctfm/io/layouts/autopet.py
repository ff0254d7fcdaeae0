"""The autoPET case folder: one folder per case, fixed file names.

::

    <case>/CT.nii.gz       CT in HU on its native grid
    <case>/CTres.nii.gz    CT resampled onto the PET grid (HU)
    <case>/PET.nii.gz      activity concentration, Bq/ml, decay-corrected to scan start
    <case>/SUV.nii.gz      body-weight SUV
    <case>/SEG.nii.gz      lesion mask (uint8, 1 = lesion)
    <case>/ORGANS.nii.gz   organ labels (values in ``core.labels.ORGAN_LABELS``; petctfm synth only)

Collections hold ``ROOT/<case>/`` or ``ROOT/<patient>/<study>/`` folders.
"""

from __future__ import annotations

from pathlib import Path

AUTOPET_FILES: dict[str, str] = {
    "SUV.nii.gz": "suv",
    "PET.nii.gz": "pet",
    "CT.nii.gz": "ct",
    "CTres.nii.gz": "ctres",
    "SEG.nii.gz": "seg",
    "ORGANS.nii.gz": "organs",
}
"""File name -> role (the role is also the :class:`~petctfm.synth.case.SynthCase` attribute written there)."""

PET_FILES = ("SUV.nii.gz", "PET.nii.gz")  # a folder holding one of these is an autoPET case folder


def is_autopet_case(folder: Path) -> bool:
    """True if ``folder`` holds ``SUV.nii.gz`` or ``PET.nii.gz``."""
    return any((folder / name).exists() for name in PET_FILES)


def autopet_case_folders(root: Path) -> list[Path]:
    """The autoPET case folders ``ROOT/<case>/`` and ``ROOT/<patient>/<study>/`` under ``root``, sorted."""
    return sorted({p.parent for name in PET_FILES for p in root.glob(f"*/{name}")}
                  | {p.parent for name in PET_FILES for p in root.glob(f"*/*/{name}")})


def autopet_files(folder: Path) -> dict[str, str]:
    """``{role: file name}`` of the autoPET files present in ``folder`` (order of :data:`AUTOPET_FILES`)."""
    return {role: name for name, role in AUTOPET_FILES.items() if (folder / name).exists()}
