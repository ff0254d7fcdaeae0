"""Opt-in metabolic structure of the phantoms (``petctfm synth --metabolic-structure``, model version 1).

Without it, every tissue's SUV is drawn independently per patient (``physiology.draw_physiology``), so the
organ-to-organ correlation across patients is zero by construction. With it, the organ uptake follows a few
patient-level latent factors, so a whole-body metabolic covariance network (SegAnyPET Fig. 4c) has a known
answer: :func:`planted` gives the correlation matrix and the group differences the factors imply, and
``synthesize`` writes them to ``OUT/organ_covariance.json``.

The model, per patient, in log-SUV (``docs/synthetic-data.md``, "Metabolic structure"):

    f_k ~ N(mu[g]_k, 1)  (factor k, group g)        e_o ~ N(0, 1)  (organ-specific)
    z_o = sd_o * (sum_k L[g]_ok f_k + sqrt(1 - sum_k L[g]_ok^2) e_o) + age_o * (age - 60)
    SUV of every tissue t of organ o = centre_t * exp(z_o),  centre_t = geometric mean of t's SUV range

so within a group and at a fixed age ``corr(z_a, z_b) = sum_k L[g]_ak L[g]_bk`` and the group's mean shift of
``z_o`` is ``sd_o * sum_k L[g]_ok mu[g]_k``. The group is ``lymphoma`` (the drawn diagnosis) or ``reference``
(every other diagnosis, negatives included): in lymphoma the inflammation factor is stronger and shifted up.

Its random numbers come from a separate stream, ``default_rng([seed, index, METABOLIC_STREAM])``, drawn after
the case's own physiology: the main stream is untouched, so a case with the structure has the same patient,
anatomy, lesions and noise draws as without it, and cases without it stay bit-identical to earlier versions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from petctfm.synth.physiology import SUV_TABLE, Physiology
from petctfm.synth.tissues import T

#: The model version recorded in ``metadata.csv`` (``metabolic_structure``) and ``organ_covariance.json``.
VERSION = 1
#: Third element of the metabolic random stream's seed: ``default_rng([seed, index, METABOLIC_STREAM])``.
METABOLIC_STREAM = 24
#: The metadata column the groups are read from (the drawn diagnosis), and the group names.
GROUP_COLUMN = "diagnosis"
GROUPS = ("reference", "lymphoma")

FACTORS = ("hepatic_blood_pool", "inflammation", "muscle_activation", "renal", "lung")

#: The organs of the planted matrix (``core.labels.ORGAN_LABELS`` names, measurable from ORGANS), then the
#: compartments the factors drive that have no organ label (their SUV changes, no organ map measures them).
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "heart", "lung_left", "lung_right", "bladder", "brain",
          "aorta", "bone", "salivary_glands")
UNMEASURED = ("skeletal_muscle", "brown_fat")
COMPARTMENTS = ORGANS + UNMEASURED

#: The tissues (``tissues.T``) whose SUV each compartment's multiplier scales.
TISSUES: dict[str, tuple[int, ...]] = {
    "liver": (T.LIVER,), "spleen": (T.SPLEEN,), "kidney_left": (T.KIDNEY_L, T.PELVIS_L),
    "kidney_right": (T.KIDNEY_R, T.PELVIS_R), "heart": (T.MYOCARDIUM, T.BLOOD), "lung_left": (T.LUNG_L,),
    "lung_right": (T.LUNG_R,), "bladder": (T.BLADDER,), "brain": (T.BRAIN, T.CSF), "aorta": (T.AORTA, T.VESSEL),
    "bone": (T.CORTICAL, T.MARROW, T.MARROW_FAT), "salivary_glands": (T.SALIVARY,),
    "skeletal_muscle": (T.MUSCLE,), "brown_fat": (T.BROWN_FAT,),
}

#: Total SD of each compartment's log-SUV within a group (between-patient spread).
LOG_SD: dict[str, float] = {
    "liver": 0.15, "spleen": 0.18, "kidney_left": 0.2, "kidney_right": 0.2, "heart": 0.5, "lung_left": 0.2,
    "lung_right": 0.2, "bladder": 0.5, "brain": 0.15, "aorta": 0.15, "bone": 0.2, "salivary_glands": 0.2,
    "skeletal_muscle": 0.15, "brown_fat": 0.3,
}

#: Loadings of the reference group: compartment -> {factor: loading}; unlisted = 0.
LOADINGS: dict[str, dict[str, dict[str, float]]] = {
    "reference": {
        "liver": {"hepatic_blood_pool": 0.75},
        "aorta": {"hepatic_blood_pool": 0.75},
        "brain": {"hepatic_blood_pool": -0.5},
        "spleen": {"inflammation": 0.6},
        "bone": {"inflammation": 0.6},
        "heart": {"muscle_activation": 0.8},
        "skeletal_muscle": {"muscle_activation": 0.8},
        "brown_fat": {"muscle_activation": 0.6},
        "kidney_left": {"renal": 0.75},
        "kidney_right": {"renal": 0.75},
        "bladder": {"renal": 0.6},
        "lung_left": {"lung": 0.9},
        "lung_right": {"lung": 0.9},
    },
}
#: Lymphoma: systemic inflammation couples spleen and marrow more strongly, and raises both.
LOADINGS["lymphoma"] = {**LOADINGS["reference"], "spleen": {"inflammation": 0.92}, "bone": {"inflammation": 0.92}}
#: Factor means per group (unlisted = 0).
FACTOR_MEAN: dict[str, dict[str, float]] = {"reference": {}, "lymphoma": {"inflammation": 1.0}}
#: Log-SUV change per year of age above 60 (FDG brain uptake falls with age).
AGE_SLOPE: dict[str, float] = {"brain": -0.003}
AGE_CENTRE = 60.0


def group_of(diagnosis: str) -> str:
    """The metabolic group of a drawn diagnosis."""
    return "lymphoma" if diagnosis == "lymphoma" else "reference"


def loading_matrix(group: str, compartments: tuple[str, ...] = COMPARTMENTS) -> np.ndarray:
    """(len(compartments), len(FACTORS)) loadings of ``group``."""
    table = LOADINGS[group]
    return np.array([[table.get(c, {}).get(f, 0.0) for f in FACTORS] for c in compartments], np.float64)


def correlation(group: str, compartments: tuple[str, ...] = ORGANS) -> np.ndarray:
    """The planted correlation of the compartments' log-SUV within ``group`` at a fixed age."""
    lam = loading_matrix(group, compartments)
    r = lam @ lam.T
    np.fill_diagonal(r, 1.0)
    return r


def mean_shift(group: str, compartments: tuple[str, ...] = ORGANS) -> np.ndarray:
    """The mean of each compartment's log-SUV in ``group`` (0 in the reference group, age 60)."""
    lam = loading_matrix(group, compartments)
    mu = np.array([FACTOR_MEAN[group].get(f, 0.0) for f in FACTORS])
    return np.array([LOG_SD[c] for c in compartments]) * (lam @ mu)


def draw(rng: np.random.Generator, group: str, age: float) -> dict[str, float]:
    """One patient's log-SUV multipliers ``z`` of every compartment (:data:`COMPARTMENTS`)."""
    lam = loading_matrix(group)
    mu = np.array([FACTOR_MEAN[group].get(f, 0.0) for f in FACTORS])
    f = mu + rng.standard_normal(len(FACTORS))
    e = rng.standard_normal(len(COMPARTMENTS))
    unique = np.sqrt(np.clip(1.0 - (lam ** 2).sum(1), 0.0, None))
    sd = np.array([LOG_SD[c] for c in COMPARTMENTS])
    z = sd * (lam @ f + unique * e)
    z += np.array([AGE_SLOPE.get(c, 0.0) for c in COMPARTMENTS]) * (float(age) - AGE_CENTRE)
    return {c: float(v) for c, v in zip(COMPARTMENTS, z)}


def apply(phys: Physiology, z: dict[str, float]) -> Physiology:
    """``phys`` with the SUV of every compartment's tissues set to ``centre * exp(z)`` (a new Physiology; the
    ureter stays no hotter than the bladder, as in ``draw_physiology``)."""
    table = SUV_TABLE[phys.tracer]
    suv = phys.suv_mean.copy()
    for comp, tissues in TISSUES.items():
        for t in tissues:
            lo, hi, _ = table.get(t, table[T.SOFT])
            suv[t] = np.sqrt(lo * hi) * np.exp(z[comp])
    suv[T.URETER] = min(float(phys.suv_mean[T.URETER]), float(suv[T.BLADDER]))
    return Physiology(phys.tracer, phys.hu_mean, phys.hu_tex, suv.astype(np.float32), phys.suv_tex)


def case_meta(group: str, z: dict[str, float]) -> dict[str, Any]:
    """The fields a case with the structure adds to its metadata (``metadata.csv`` columns): the model version,
    the group and the drawn log multipliers of :data:`ORGANS`, in that order (a JSON list)."""
    return {"metabolic_structure": VERSION, "metabolic_group": group,
            "metabolic_log_uptake": [round(z[o], 4) for o in ORGANS]}


def planted(rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The content of ``organ_covariance.json``: the organs, the planted correlation (reference group), per group
    its correlation and mean shift, the edges that differ between the groups, and (with ``rows``, the
    metadata rows of a cohort) how many cases each group has."""
    def mat(a: np.ndarray) -> list[list[float]]:
        return [[round(float(v), 4) for v in row] for row in a]

    ref, lym = correlation("reference"), correlation("lymphoma")
    diffs = [{"organ_a": ORGANS[i], "organ_b": ORGANS[j], "r_reference": round(float(ref[i, j]), 4),
              "r_lymphoma": round(float(lym[i, j]), 4)}
             for i in range(len(ORGANS)) for j in range(i + 1, len(ORGANS)) if abs(ref[i, j] - lym[i, j]) > 1e-9]
    groups: dict[str, Any] = {
        g: {"correlation": mat(correlation(g)),
            "mean_shift_log": {o: round(float(v), 4) for o, v in zip(ORGANS, mean_shift(g))}}
        for g in GROUPS}
    if rows is not None:
        for g in GROUPS:
            groups[g]["cases"] = sum(1 for r in rows if r.get("metabolic_group") == g)
            groups[g]["written_diagnoses"] = sorted({str(r.get(GROUP_COLUMN)) for r in rows
                                                    if r.get("metabolic_group") == g})
    return {
        "version": VERSION,
        "space": "log SUV; correlation within a group at a fixed age (residualize on age before comparing)",
        "organs": list(ORGANS),
        "correlation": mat(ref),
        "log_sd": {o: LOG_SD[o] for o in ORGANS},
        "factors": list(FACTORS),
        "loadings": {g: {c: dict(v) for c, v in LOADINGS[g].items()} for g in GROUPS},
        "factor_mean": {g: dict(FACTOR_MEAN[g]) for g in GROUPS},
        "age_slope_log_per_year": dict(AGE_SLOPE),
        "unmeasured": {c: {"log_sd": LOG_SD[c], "tissues": "skeletal muscle" if c == "skeletal_muscle" else
                           "brown fat (FDG hot spots)"} for c in UNMEASURED},
        "groups": {
            "column": GROUP_COLUMN,
            "rule": "lymphoma: the drawn diagnosis is lymphoma; reference: every other diagnosis (negatives too). "
                    "The group is drawn before lesions are placed: a lymphoma case whose lesions all fall outside "
                    "the field of view is written as negative but keeps the lymphoma structure (metadata.csv "
                    "column metabolic_group says which).",
            **groups,
            "differences": diffs,
        },
    }


__all__ = ["VERSION", "METABOLIC_STREAM", "ORGANS", "FACTORS", "GROUPS", "GROUP_COLUMN", "group_of", "correlation",
           "mean_shift", "draw", "apply", "case_meta", "planted", "loading_matrix"]
