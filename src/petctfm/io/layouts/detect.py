"""Which layout a collection folder holds: ``nnunet``, ``dicom``, ``autopet`` or ``pairs`` (checked in that order).

* ``nnunet``: ``ROOT/dataset.json`` next to ``imagesTr/`` or ``imagesTs/``;
* ``autopet``: a ``SUV.nii.gz`` or ``PET.nii.gz`` at ``ROOT/<case>/`` or ``ROOT/<patient>/<study>/``;
* ``dicom``: a file with the DICOM Part-10 preamble (any name);
* ``pairs``: anything else (image files grouped by name, :mod:`petctfm.io.layouts.names`).

Only the first ~2000 regular files are looked at (in walk order), so a huge tree is sniffed quickly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from petctfm.io.images import is_image_file
from petctfm.io.layouts.autopet import PET_FILES
from petctfm.io.walk import walk_files

LAYOUTS = ("autopet", "nnunet", "dicom", "pairs")


def detect_format(root: Path, exclude: Iterable[str | os.PathLike] = ()) -> str:
    """The layout of the collection folder ``root`` (see the module doc); ``exclude``: folders not looked at
    (regular files only, :func:`petctfm.io.walk.walk_files`)."""
    if (root / "dataset.json").is_file() and ((root / "imagesTr").is_dir() or (root / "imagesTs").is_dir()):
        return "nnunet"
    for i, path in enumerate(walk_files(root, exclude, max_files=2002)):
        if path.name in PET_FILES and len(path.relative_to(root).parts) in (2, 3):
            return "autopet"
        if not is_image_file(path):  # DICOM files may have any name (e.g. "1.2.840....320")
            from petctfm.io.dicom_read import is_dicom_file

            if is_dicom_file(path):
                return "dicom"
        if i > 2000:
            break
    return "pairs"
