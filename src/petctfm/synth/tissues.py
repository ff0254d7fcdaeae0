"""Internal tissue ids of the synthetic truth label map, and their mapping to the public organ labels.

``T`` numbers the 39 tissues the anatomy painter uses (uint8 values of ``Anatomy.labels``); physiology maps
each to an HU and SUV range; ``ORGAN_OF_TISSUE`` / :func:`organ_lut` map them to the public organ labels of
``petctfm.core.labels.ORGAN_LABELS`` written as the ORGANS image.
"""

from __future__ import annotations

import numpy as np

from petctfm.core.labels import ORGAN_LABELS


class T:
    """Internal tissue ids of the truth label map (uint8)."""

    AIR = 0
    FAT = 1  # visceral / mediastinal fat
    FAT_SC = 2  # subcutaneous fat
    MUSCLE = 3
    SOFT = 4  # generic soft tissue (thyroid, uterus, esophagus, spinal cord, nodes)
    LUNG_L = 5
    LUNG_R = 6
    AIRWAY = 7  # internal air: trachea, bronchi, sinuses, nasal cavity
    LIVER = 8
    SPLEEN = 9
    KIDNEY_L = 10
    KIDNEY_R = 11
    PELVIS_L = 12  # renal collecting system (urine)
    PELVIS_R = 13
    MYOCARDIUM = 14
    BLOOD = 15  # cardiac chambers
    AORTA = 16
    VESSEL = 17  # other large vessels (IVC, iliac, carotid, jugular)
    BLADDER = 18
    BRAIN = 19
    CSF = 20
    CORTICAL = 21
    MARROW = 22  # red (trabecular) marrow
    MARROW_FAT = 23  # yellow marrow of long-bone shafts
    SALIVARY = 24
    LACRIMAL = 25
    BOWEL = 26  # small bowel wall + contents
    COLON = 27
    GAS = 28  # bowel / stomach gas
    STOMACH = 29
    URETER = 30
    EYE = 31
    PROSTATE = 32
    TABLE = 33
    BROWN_FAT = 34
    INJECTION = 35
    DISC = 36
    CARTILAGE = 37
    BILE = 38
    N = 39


TISSUE_NAMES: dict[int, str] = {v: k.lower() for k, v in vars(T).items() if k.isupper() and k != "N"}

ORGAN_OF_TISSUE: dict[int, int] = {
    T.LIVER: ORGAN_LABELS["liver"],
    T.SPLEEN: ORGAN_LABELS["spleen"],
    T.KIDNEY_L: ORGAN_LABELS["kidney_left"],
    T.PELVIS_L: ORGAN_LABELS["kidney_left"],
    T.KIDNEY_R: ORGAN_LABELS["kidney_right"],
    T.PELVIS_R: ORGAN_LABELS["kidney_right"],
    T.MYOCARDIUM: ORGAN_LABELS["heart"],
    T.BLOOD: ORGAN_LABELS["heart"],
    T.LUNG_L: ORGAN_LABELS["lung_left"],
    T.LUNG_R: ORGAN_LABELS["lung_right"],
    T.BLADDER: ORGAN_LABELS["bladder"],
    T.BRAIN: ORGAN_LABELS["brain"],
    T.CSF: ORGAN_LABELS["brain"],
    T.AORTA: ORGAN_LABELS["aorta"],
    T.CORTICAL: ORGAN_LABELS["bone"],
    T.MARROW: ORGAN_LABELS["bone"],
    T.MARROW_FAT: ORGAN_LABELS["bone"],
    T.SALIVARY: ORGAN_LABELS["salivary_glands"],
}


def organ_lut() -> np.ndarray:
    """Lookup table tissue id -> organ label (uint8, length ``T.N``)."""
    lut = np.zeros(T.N, dtype=np.uint8)
    for t, o in ORGAN_OF_TISSUE.items():
        lut[t] = o
    return lut
