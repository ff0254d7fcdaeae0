"""Predict-like folders from a phantom's truth (``--masks truth``): what ``petctfm predict --organs`` would write
if its lesion and organ models were perfect, so that ``petctfm response`` reads them unchanged.

For one study folder ``S`` (``SUV.nii.gz``, ``SEG.nii.gz``, ``ORGANS.nii.gz``, ``study.json``):

- ``lesions.nii.gz``: ``SEG.nii.gz`` (same grid, uint8);
- ``organs.csv``: :func:`petctfm.predict.organs.organ_table` (predict's own readout: organ SUVs, the PERCIST
  liver sphere and blood-pool cylinder, SUL from ``study.json``'s weight, height and sex) of ``ORGANS.nii.gz``
  with the lesions excluded, written by :func:`petctfm.predict.organs.organs_csv`;
- ``summary.json``: ``input.source`` = ``S`` (the PET is read from there; the study date from ``S/study.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any



def write_truth_prediction(study: Path, dest: Path) -> Path:
    """``dest`` (created whole, :func:`petctfm.io.atomic.atomic_dir`) as above; :class:`InputError` (exit 3)
    naming the file when the study lacks one."""
    from petctfm.core.errors import InputError
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.io.atomic import atomic_dir, atomic_write_json, atomic_write_text
    from petctfm.io.images import array_xyz, read_image, write_image
    from petctfm.predict.organs import organ_table, organs_csv
    from petctfm.synth.followup import STUDY_JSON

    files = {n: study / n for n in ("SUV.nii.gz", "SEG.nii.gz", "ORGANS.nii.gz", STUDY_JSON)}
    for p in files.values():
        if not p.is_file():
            raise InputError(f"{p}: missing (not a `petctfm synth --followup` study folder)")
    try:
        meta: dict[str, Any] = json.loads(files[STUDY_JSON].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{files[STUDY_JSON]}: unreadable ({type(exc).__name__})") from None
    suv = read_image(files["SUV.nii.gz"])
    seg = read_image(files["SEG.nii.gz"])
    organs = array_xyz(read_image(files["ORGANS.nii.gz"]))
    mask = array_xyz(seg) > 0
    if organs.shape != mask.shape or tuple(suv.GetSize()) != tuple(seg.GetSize()):
        raise InputError(f"{study}: SUV, SEG and ORGANS are not on one grid")
    patient = {k: meta.get(k) for k in ("weight_kg", "height_cm", "sex")}
    rows = organ_table(organs, mask, suv, ORGAN_LABELS, patient)
    summary = {"case": f"{study.parent.name}/{study.name}",
               "input": {"kind": "autopet", "source": str(study.resolve())},
               "patient": patient,
               "note": "built from the phantom's truth masks by petctfm experiment response --masks truth; "
                       "not a prediction"}
    with atomic_dir(dest) as tmp:
        write_image(seg, tmp / "lesions.nii.gz")
        atomic_write_text(tmp / "organs.csv", organs_csv(rows))
        atomic_write_json(tmp / "summary.json", summary)
    return dest
