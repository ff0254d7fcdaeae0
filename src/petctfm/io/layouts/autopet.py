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

import os
from pathlib import Path
from typing import Iterable

from petctfm.io.walk import is_regular_file, walk_files

AUTOPET_FILES: dict[str, str] = {
    "SUV.nii.gz": "suv",
    "PET.nii.gz": "pet",
    "CT.nii.gz": "ct",
    "CTres.nii.gz": "ctres",
    "SEG.nii.gz": "seg",
    "ORGANS.nii.gz": "organs",
}
"""File name -> role (the role is also the :class:`~petctfm.synth.case.SynthCase` attribute written there)."""

#: A study folder's sidecar (``petctfm synth --followup`` writes one; ``petctfm response`` reads its ``study_date``).
STUDY_SIDECAR = "study.json"
PET_FILES = ("SUV.nii.gz", "PET.nii.gz")  # a folder holding one of these is an autoPET case folder


def is_autopet_case(folder: Path) -> bool:
    """True if ``folder`` holds ``SUV.nii.gz`` or ``PET.nii.gz`` (as regular files)."""
    return any(is_regular_file(folder / name) for name in PET_FILES)


def autopet_case_folders(root: Path, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The autoPET case folders ``ROOT/<case>/`` and ``ROOT/<patient>/<study>/`` under ``root``, sorted
    (walked by :func:`petctfm.io.walk.walk_files`: regular files, links into the tree not followed)."""
    return sorted({p.parent for p in walk_files(root, exclude)
                   if p.name in PET_FILES and len(p.relative_to(root).parts) in (2, 3)})


def autopet_files(folder: Path) -> dict[str, str]:
    """``{role: file name}`` of the autoPET files present in ``folder`` (order of :data:`AUTOPET_FILES`)."""
    return {role: name for name, role in AUTOPET_FILES.items() if is_regular_file(folder / name)}
