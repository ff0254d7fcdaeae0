"""The role of an image file from its name, and the case key left when the role word is removed.

Role words (case-insensitive, whole words between ``_``, ``-`` and ``.``): ``seg``/``label``/``labels``/
``mask``/``lesion``/``lesions``/``gt`` -> ``seg`` (lesion mask), ``organ``/``organs`` -> ``organs``,
``pet``/``suv``/``pt`` -> ``suv`` (PET in SUV), ``ct``/``ctres`` -> ``ct``; checked in that order. E.g.
``p1_suv.nii.gz`` -> (``suv``, ``p1``), ``case7/CT.nrrd`` -> (``ct``, ``""``), ``p1_seg.nrrd`` -> (``seg``, ``p1``).
"""

from __future__ import annotations

import re
from pathlib import Path

from petctfm.io.images import IMAGE_SUFFIXES

ROLE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("seg", ("seg", "label", "labels", "mask", "lesion", "lesions", "gt")),
    ("organs", ("organ", "organs")),
    ("suv", ("pet", "suv", "pt")),
    ("ct", ("ct", "ctres")),
)


def image_stem(path: Path) -> str:
    """File name without its image suffix (``.nii.gz``, ``.mha``, ...; else without the last suffix)."""
    name = path.name
    for s in IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return path.stem


def role_of(path: Path) -> tuple[str | None, str]:
    """(role, case key) of an image file by its name (see the module doc); role None when no word matches."""
    words = re.split(r"([_\-.])", image_stem(path))
    for role, names in ROLE_WORDS:
        for i, w in enumerate(words):
            if w.lower() in names:
                rest = words[:i] + words[i + 1:]
                return role, re.sub(r"^[_\-.]+|[_\-.]+$", "", "".join(rest)).replace("__", "_")
    return None, image_stem(path)
