"""Tissue properties: CT attenuation (HU) and tracer uptake (SUV), with per-patient variation.

Each tissue of :class:`petctfm.synth.tissues.T` gets, per patient, a mean HU drawn from a range and a
texture amplitude (HU SD of a smooth random field), and per tracer a mean SUV drawn from a range and a
relative texture amplitude. Ranges follow typical clinical values (see docs/synthetic-data.md); e.g. FDG
myocardium is drawn from a three-way mixture (suppressed / partial / intense) because it varies that much
between patients, bladder SUV log-uniformly from 5 to 60.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petctfm.synth.anatomy import Anatomy
from petctfm.synth.canvas import smooth_noise
from petctfm.synth.tissues import TISSUE_NAMES, T

# tissue -> (HU low, HU high, texture SD in HU)
HU_TABLE: dict[int, tuple[float, float, float]] = {
    T.AIR: (-1000, -1000, 0),
    T.FAT: (-110, -85, 8),
    T.FAT_SC: (-115, -90, 6),
    T.MUSCLE: (40, 60, 6),
    T.SOFT: (30, 45, 6),
    T.LUNG_L: (-880, -820, 20),
    T.LUNG_R: (-880, -820, 20),
    T.AIRWAY: (-1000, -980, 5),
    T.LIVER: (50, 65, 5),
    T.SPLEEN: (40, 50, 4),
    T.KIDNEY_L: (28, 38, 4),
    T.KIDNEY_R: (28, 38, 4),
    T.PELVIS_L: (5, 12, 2),
    T.PELVIS_R: (5, 12, 2),
    T.MYOCARDIUM: (40, 50, 4),
    T.BLOOD: (35, 45, 3),
    T.AORTA: (35, 45, 3),
    T.VESSEL: (35, 45, 3),
    T.BLADDER: (4, 14, 2),
    T.BRAIN: (30, 40, 4),
    T.CSF: (2, 10, 2),
    T.CORTICAL: (1100, 1450, 60),
    T.MARROW: (250, 380, 35),
    T.MARROW_FAT: (-60, 20, 15),
    T.SALIVARY: (20, 35, 5),
    T.LACRIMAL: (30, 45, 4),
    T.BOWEL: (10, 40, 15),
    T.COLON: (-60, 20, 40),
    T.GAS: (-1000, -960, 10),
    T.STOMACH: (15, 30, 6),
    T.URETER: (5, 15, 2),
    T.EYE: (5, 15, 2),
    T.PROSTATE: (35, 45, 4),
    T.TABLE: (150, 300, 10),
    T.BROWN_FAT: (-100, -70, 8),  # fat on CT: hot on PET, that is the point
    T.INJECTION: (35, 55, 5),
    T.DISC: (70, 100, 8),
    T.CARTILAGE: (90, 160, 15),
    T.BILE: (5, 15, 2),
}

# tracer -> tissue -> (SUV low, SUV high, relative texture SD); tissues not listed take SOFT's value
SUV_TABLE: dict[str, dict[int, tuple[float, float, float]]] = {
    "fdg": {
        T.AIR: (0, 0, 0),
        T.FAT: (0.25, 0.4, 0.15),
        T.FAT_SC: (0.22, 0.35, 0.15),
        T.MUSCLE: (0.6, 0.85, 0.12),
        T.SOFT: (0.9, 1.3, 0.1),
        T.LUNG_L: (0.3, 0.5, 0.12),
        T.LUNG_R: (0.3, 0.5, 0.12),
        T.AIRWAY: (0.05, 0.1, 0.0),
        T.LIVER: (1.9, 2.7, 0.08),
        T.SPLEEN: (1.6, 2.3, 0.08),
        T.KIDNEY_L: (2.2, 3.5, 0.1),
        T.KIDNEY_R: (2.2, 3.5, 0.1),
        T.PELVIS_L: (6.0, 30.0, 0.2),
        T.PELVIS_R: (6.0, 30.0, 0.2),
        T.MYOCARDIUM: (1.0, 12.0, 0.15),  # drawn from a mixture, see draw_physiology
        T.BLOOD: (1.5, 2.2, 0.05),
        T.AORTA: (1.5, 2.2, 0.05),
        T.VESSEL: (1.5, 2.2, 0.05),
        T.BLADDER: (5.0, 60.0, 0.05),  # log-uniform
        T.BRAIN: (6.5, 11.5, 0.12),
        T.CSF: (0.5, 1.0, 0.1),
        T.CORTICAL: (0.3, 0.5, 0.1),
        T.MARROW: (1.2, 1.9, 0.12),
        T.MARROW_FAT: (0.4, 0.7, 0.1),
        T.SALIVARY: (1.5, 2.8, 0.1),
        T.LACRIMAL: (1.0, 1.6, 0.1),
        T.BOWEL: (1.0, 4.5, 0.45),
        T.COLON: (1.0, 5.0, 0.5),
        T.GAS: (0.0, 0.1, 0.0),
        T.STOMACH: (1.2, 3.5, 0.3),
        T.URETER: (3.0, 20.0, 0.7),
        T.EYE: (0.3, 0.6, 0.05),
        T.PROSTATE: (1.2, 2.0, 0.1),
        T.TABLE: (0, 0, 0),
        T.BROWN_FAT: (3.0, 12.0, 0.3),
        T.INJECTION: (5.0, 40.0, 0.3),
        T.DISC: (0.6, 1.0, 0.1),
        T.CARTILAGE: (0.5, 0.9, 0.1),
        T.BILE: (0.3, 0.6, 0.05),
    },
    "psma": {
        T.AIR: (0, 0, 0),
        T.FAT: (0.15, 0.3, 0.15),
        T.FAT_SC: (0.15, 0.25, 0.15),
        T.MUSCLE: (0.5, 0.8, 0.12),
        T.SOFT: (0.6, 1.0, 0.1),
        T.LUNG_L: (0.2, 0.4, 0.12),
        T.LUNG_R: (0.2, 0.4, 0.12),
        T.AIRWAY: (0.02, 0.05, 0.0),
        T.LIVER: (4.0, 7.5, 0.1),
        T.SPLEEN: (5.0, 10.0, 0.1),
        T.KIDNEY_L: (20.0, 50.0, 0.15),
        T.KIDNEY_R: (20.0, 50.0, 0.15),
        T.PELVIS_L: (10.0, 40.0, 0.2),
        T.PELVIS_R: (10.0, 40.0, 0.2),
        T.MYOCARDIUM: (1.0, 2.0, 0.1),
        T.BLOOD: (1.0, 2.0, 0.05),
        T.AORTA: (1.0, 2.0, 0.05),
        T.VESSEL: (1.0, 2.0, 0.05),
        T.BLADDER: (10.0, 60.0, 0.05),
        T.BRAIN: (0.1, 0.3, 0.1),
        T.CSF: (0.05, 0.1, 0.1),
        T.CORTICAL: (0.2, 0.4, 0.1),
        T.MARROW: (0.8, 1.5, 0.12),
        T.MARROW_FAT: (0.3, 0.5, 0.1),
        T.SALIVARY: (10.0, 25.0, 0.12),
        T.LACRIMAL: (5.0, 12.0, 0.12),
        T.BOWEL: (5.0, 15.0, 0.4),
        T.COLON: (1.5, 5.0, 0.4),
        T.GAS: (0.0, 0.05, 0.0),
        T.STOMACH: (2.0, 5.0, 0.3),
        T.URETER: (5.0, 30.0, 0.7),
        T.EYE: (0.2, 0.4, 0.05),
        T.PROSTATE: (2.0, 4.0, 0.15),
        T.TABLE: (0, 0, 0),
        T.BROWN_FAT: (0.15, 0.3, 0.1),
        T.INJECTION: (5.0, 40.0, 0.3),
        T.DISC: (0.4, 0.8, 0.1),
        T.CARTILAGE: (0.3, 0.6, 0.1),
        T.BILE: (2.0, 6.0, 0.1),
    },
}


@dataclass
class Physiology:
    """Per-patient tissue values, lookup tables indexed by tissue id (length ``T.N``)."""

    tracer: str
    hu_mean: np.ndarray
    hu_tex: np.ndarray
    suv_mean: np.ndarray
    suv_tex: np.ndarray

    def summary(self) -> dict[str, float]:
        """Mean SUV of the reference tissues (for the metadata)."""
        keys = ("brain", "myocardium", "blood", "liver", "spleen", "kidney_l", "bladder", "muscle", "fat",
                "lung_l", "marrow", "salivary", "bowel")
        inv = {v: k for k, v in TISSUE_NAMES.items()}
        return {f"suv_{k}": round(float(self.suv_mean[inv[k]]), 3) for k in keys}


def draw_physiology(tracer: str, rng: np.random.Generator) -> Physiology:
    """Draw this patient's HU and SUV per tissue for ``tracer`` (``"fdg"`` | ``"psma"``)."""
    hu_mean = np.zeros(T.N, np.float32)
    hu_tex = np.zeros(T.N, np.float32)
    suv_mean = np.zeros(T.N, np.float32)
    suv_tex = np.zeros(T.N, np.float32)
    table = SUV_TABLE[tracer]
    for t in range(T.N):
        lo, hi, tex = HU_TABLE.get(t, HU_TABLE[T.SOFT])
        hu_mean[t] = rng.uniform(lo, hi)
        hu_tex[t] = tex
        lo, hi, tex = table.get(t, table[T.SOFT])
        if t == T.BLADDER or t in (T.PELVIS_L, T.PELVIS_R):
            suv_mean[t] = np.exp(rng.uniform(np.log(lo), np.log(hi)))  # urine: log-uniform
        elif t == T.MYOCARDIUM and tracer == "fdg":
            mode = rng.choice(3, p=[0.35, 0.3, 0.35])
            suv_mean[t] = rng.uniform(*((1.0, 2.5), (2.5, 6.0), (6.0, 12.0))[mode])
        else:
            suv_mean[t] = rng.uniform(lo, hi)
        suv_tex[t] = tex
    # both kidneys / collecting systems / lungs share one physiology
    for a, b in ((T.KIDNEY_R, T.KIDNEY_L), (T.PELVIS_R, T.PELVIS_L), (T.LUNG_R, T.LUNG_L)):
        suv_mean[a] = suv_mean[b]
        hu_mean[a] = hu_mean[b]
    suv_mean[T.AORTA] = suv_mean[T.VESSEL] = suv_mean[T.BLOOD]
    hu_mean[T.AORTA] = hu_mean[T.VESSEL] = hu_mean[T.BLOOD]
    suv_mean[T.URETER] = min(suv_mean[T.URETER], suv_mean[T.BLADDER])
    return Physiology(tracer, hu_mean, hu_tex, suv_mean, suv_tex)


def render(anat: Anatomy, phys: Physiology, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """HU and SUV maps (float32, truth grid) of the anatomy: tissue value + smooth texture + lung vessels."""
    lab = anat.labels
    sp = float(np.mean(anat.spacing))
    f1 = smooth_noise(lab.shape, 5.0 / sp, rng)
    f2 = smooth_noise(lab.shape, 12.0 / sp, rng)
    hu = phys.hu_mean[lab] + phys.hu_tex[lab] * f1
    suv = phys.suv_mean[lab] * np.clip(1.0 + phys.suv_tex[lab] * f2, 0.05, None)
    v = anat.vessel
    if v.any():
        # lung vessels carry the vessel (blood-pool) value; equal to the cardiac blood's unless the metabolic
        # structure (synth.metabolic) gives the heart its own multiplier
        hu = hu * (1 - v) + float(phys.hu_mean[T.VESSEL]) * v
        suv = suv * (1 - v) + float(phys.suv_mean[T.VESSEL]) * v
    return hu.astype(np.float32), suv.astype(np.float32)
