"""Label values and channel names shared by every layer: organ label values of ORGANS.nii.gz and the
metadata columns of ``metadata.csv``; organ and lesion names of foreign label tables (:func:`organ_key`,
:func:`is_lesion_name`). Imports nothing."""

from __future__ import annotations

import re


# Organ label values in ORGANS.nii.gz; shared by synth, harmonize (liver SUV) and the promptable models.
ORGAN_LABELS: dict[str, int] = {
    "background": 0,
    "liver": 1,
    "spleen": 2,
    "kidney_left": 3,
    "kidney_right": 4,
    "heart": 5,
    "lung_left": 6,
    "lung_right": 7,
    "bladder": 8,
    "brain": 9,
    "aorta": 10,
    "bone": 11,
    "salivary_glands": 12,
}

# Metadata columns of ``metadata.csv`` (one row per case), in this order.
METADATA_FIELDS: list[str] = [
    "case_id",
    "site",
    "tracer",
    "diagnosis",
    "stage",
    "age",
    "sex",
    "weight_kg",
    "height_cm",
    "injected_activity_bq",
    "injection_time",
    "acquisition_time",
    "uptake_min",
    "n_lesions",
    "lesion_volume_ml",
    "lesion_volumes_ml",  # JSON list: SEG volume (ml) of each lesion, in the order of meta["lesions"]
    "arms",
    "patient_name",
    "patient_id",
    "birth_date",
]

#: Other names of petctfm's organs in label tables (nnU-Net ``dataset.json``, DICOM-SEG segment labels), after
#: :func:`organ_key`'s normalization (lowercase, words joined by ``_``): TotalSegmentator's ``urinary_bladder``,
#: singular / plural forms.
ORGAN_ALIASES: dict[str, str] = {
    "urinary_bladder": "bladder",
    "salivary_gland": "salivary_glands",
    "bones": "bone",
    "skeleton": "bone",
}

_SIDES = ("left", "right")


def organ_key(name: str) -> str | None:
    """The :data:`ORGAN_LABELS` name of a label or segment name, or None (background included).

    Case, spaces, hyphens and word order of the side do not matter: ``"Kidney left"``, ``"kidney-left"``,
    ``"left kidney"`` -> ``"kidney_left"``; :data:`ORGAN_ALIASES` too (``"urinary bladder"`` -> ``"bladder"``).
    A paired organ without a side (``"kidney"``, ``"lungs"``) is None: it cannot say which label it is.
    """
    words = str(name).strip().lower().replace("-", " ").replace("_", " ").split()
    sides = [w for w in words if w in _SIDES]
    rest = [w for w in words if w not in _SIDES]
    candidates = ["_".join(words)]
    if len(sides) == 1 and rest:
        candidates.append("_".join(rest + sides))
    for key in candidates:
        key = ORGAN_ALIASES.get(key, key)
        if key in ORGAN_LABELS and key != "background":
            return key
    return None


#: Names that denote a lesion (substring, case-insensitive): RTSTRUCT ROI names, nnU-Net label names and
#: DICOM-SEG segment labels without known codes. ``meta`` covers metastasis, ``node``/``lymph`` involved nodes.
LESION_NAME = r"(gtv|lesion|tumou?r|cancer|carcinom|neoplas|meta|node|lymph|malig|suspic|hot)"


def is_lesion_name(name: str) -> bool:
    """True when ``name`` names a lesion (:data:`LESION_NAME`), e.g. ``"lesion"``, ``"GTVp"``, ``"Liver tumor"``."""
    return re.search(LESION_NAME, str(name), re.IGNORECASE) is not None
