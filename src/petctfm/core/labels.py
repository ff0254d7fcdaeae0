"""Label values and channel names shared by every layer: organ label values of ORGANS.nii.gz and the
metadata columns of ``metadata.csv``. Imports nothing."""

from __future__ import annotations


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
