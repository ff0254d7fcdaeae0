"""Write a :class:`~petctfm.synth.case.SynthCase` in the autoPET and nnU-Net v2 raw layouts, and metadata.csv.

autoPET layout (one folder per case, written at once; file names in :data:`petctfm.io.layouts.autopet.AUTOPET_FILES`)::

    root/<case_id>/CT.nii.gz       CT in HU on its native grid
    root/<case_id>/CTres.nii.gz    CT resampled onto the PET grid (HU)
    root/<case_id>/PET.nii.gz      activity concentration, Bq/ml, decay-corrected to scan start
    root/<case_id>/SUV.nii.gz      body-weight SUV
    root/<case_id>/SEG.nii.gz      lesion mask (uint8, 1 = lesion)
    root/<case_id>/ORGANS.nii.gz   organ labels (values in ``core.labels.ORGAN_LABELS``)

nnU-Net v2 raw layout (the autoPET challenge convention: channel 0 = CT on the PET grid, 1 = SUV)::

    root/imagesTr/<case_id>_0000.nii.gz   CTres
    root/imagesTr/<case_id>_0001.nii.gz   SUV
    root/labelsTr/<case_id>.nii.gz        SEG
    root/dataset.json                     channel_names, labels, numTraining, file_ending

NIfTI files are written by SimpleITK (``io.images.write_image``), which stores each site's direction
cosines in the header (qform/sform), so the orientation a site uses survives in the file. Reading these
layouts is :mod:`petctfm.io.layouts`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from petctfm.core.provenance import SYNTH_MARK as SYNTH_NOTES
from petctfm.io.atomic import atomic_dir, atomic_write_json, atomic_write_text
from petctfm.io.images import write_image
from petctfm.io.layouts.autopet import AUTOPET_FILES
from petctfm.io.layouts.nnunet import NNUNET_CHANNELS
from petctfm.io.tables import csv_text

if TYPE_CHECKING:
    from petctfm.synth.case import SynthCase

NNUNET_LABELS: dict[str, int] = {"background": 0, "lesion": 1}


def write_autopet_case(case: SynthCase, root: str | os.PathLike, name: str | None = None) -> Path:
    """Write ``root/<case_id>/`` (or ``root/<name>/``) with the six autoPET files; the folder appears whole or
    not at all."""
    target = Path(root) / (name or case.case_id)
    with atomic_dir(target) as tmp:
        for name, attr in AUTOPET_FILES.items():
            write_image(getattr(case, attr), tmp / name, notes=SYNTH_NOTES)
    return target


def write_nnunet_case(case: SynthCase, root: str | os.PathLike) -> list[Path]:
    """Write one training case into an nnU-Net v2 raw dataset folder ``root`` (each file atomic).

    Channels follow autoPET's nnU-Net setup: ``_0000`` is the CT resampled to the PET grid, ``_0001`` the
    SUV; both share the label's geometry, as nnU-Net requires.
    """
    root = Path(root)
    return [
        write_image(case.ctres, root / "imagesTr" / f"{case.case_id}_0000.nii.gz", notes=SYNTH_NOTES),
        write_image(case.suv, root / "imagesTr" / f"{case.case_id}_0001.nii.gz", notes=SYNTH_NOTES),
        write_image(case.seg, root / "labelsTr" / f"{case.case_id}.nii.gz", notes=SYNTH_NOTES),
    ]


def write_nnunet_dataset_json(root: str | os.PathLike, name: str = "petctfm_synth", description: str = "") -> Path:
    """(Re)write ``root/dataset.json`` for the cases present in ``root/labelsTr`` (call after all cases).

    ``numTraining`` counts the label files whose two image channels are both present, so a refresh after
    an interrupted run stays consistent with what nnU-Net will find.
    """
    root = Path(root)
    labels = sorted((root / "labelsTr").glob("*.nii.gz"))
    complete = [
        p for p in labels
        if all((root / "imagesTr" / f"{p.name[:-7]}_{c:04d}.nii.gz").exists() for c in range(len(NNUNET_CHANNELS)))
    ]
    info = {
        "name": name,
        "description": description or "Synthetic whole-body PET/CT (petctfm synth); NOT clinical data.",
        "channel_names": dict(NNUNET_CHANNELS),
        "labels": dict(NNUNET_LABELS),
        "numTraining": len(complete),
        "file_ending": ".nii.gz",
        "reference": "petctfm synth; channel convention of the autoPET nnU-Net baseline (CTres, SUV)",
        "licence": "synthetic data, CC0",
    }
    return atomic_write_json(root / "dataset.json", info)


def write_metadata_csv(rows: Iterable[dict[str, Any]], path: str | os.PathLike,
                       fields: list[str] | None = None) -> Path:
    """Write ``rows`` (one dict per case) as CSV, atomically.

    Columns: ``fields`` (default ``synth.case.METADATA_FIELDS``) first, in that order, then every other key
    found in the rows, sorted. Missing values are empty; lists/dicts are stored as JSON.
    """
    if fields is None:
        from petctfm.core.labels import METADATA_FIELDS

        fields = list(METADATA_FIELDS)
    rows = list(rows)
    extras = sorted({k for row in rows for k in row} - set(fields))
    columns = list(fields) + extras
    return atomic_write_text(path, csv_text(rows, columns))
