"""The in-memory synthetic case: what the generator produces and the layout writers consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import SimpleITK as sitk


@dataclass
class SynthCase:
    """One synthetic PET/CT study.

    All images are SimpleITK images carrying their own physical geometry (origin, spacing, direction in
    ITK's LPS world frame). PET-grid images (``pet``, ``suv``, ``ctres``, ``seg``, ``organs``) share one
    geometry; ``ct`` has the site's native CT grid, finer and usually larger than the PET one.

    Attributes:
        case_id: pseudonymous id, e.g. ``"PETCT_0007"``; also the file stem in the nnU-Net layout.
        ct: CT in Hounsfield units on the native CT grid (int16).
        pet: PET activity concentration in Bq/ml on the PET grid, decay-corrected to scan start (float32).
        suv: body-weight SUV on the PET grid (float32) = pet * weight_g / decayed dose.
        ctres: CT resampled onto the PET grid, HU (float32).
        seg: lesion mask on the PET grid (uint8, 1 = lesion).
        organs: organ label map on the PET grid (uint8, values in ``ORGAN_LABELS``).
        meta: everything else: site, scanner profile, tracer, diagnosis, stage, patient demographics,
            dose and times (see ``docs/synthetic-data.md``). Contains fake identifiers (``patient_name``,
            ``patient_id``, ``birth_date``) on purpose: harmonization must strip them.
    """

    case_id: str
    ct: sitk.Image
    pet: sitk.Image
    suv: sitk.Image
    ctres: sitk.Image
    seg: sitk.Image
    organs: sitk.Image
    meta: dict[str, Any] = field(default_factory=dict)


# ORGAN_LABELS / METADATA_FIELDS live in petctfm.core.labels (used by io, harmonize, viz, predict too).
from petctfm.core.labels import METADATA_FIELDS, ORGAN_LABELS  # noqa: E402,F401
