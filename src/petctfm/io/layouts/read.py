"""The images of one case, given as a case folder or as image files (what ``petctfm view`` takes).

Accepted inputs (:func:`read_case_images`):

- an autoPET case folder: ``SUV.nii.gz``, ``CTres.nii.gz`` (or ``CT.nii.gz``), optional ``SEG.nii.gz`` and
  ``ORGANS.nii.gz``;
- an nnU-Net v2 raw dataset folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``; the first case) or one of
  its channel files ``imagesTr/<id>_0000.nii.gz`` (that case); channels from ``dataset.json``
  (:func:`~petctfm.io.layouts.nnunet.nnunet_channels`; without it 0000 = CT, 0001 = PET in SUV);
- explicit image files (NIfTI/MHA/NRRD): the role comes from the name (:func:`~petctfm.io.layouts.names.role_of`:
  ``SUV``/``PET``/``PT`` -> pet, ``CT`` -> ct, ``SEG``/``label``/``mask``/``lesion`` -> seg, ``ORGANS`` ->
  organs); unnamed files fill pet then ct in the order given.

PET must be in SUV: values above :data:`MAX_PLAUSIBLE_SUV` are taken for Bq/ml and refused.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.io.images import IMAGE_SUFFIXES, is_image_file, read_image
from petctfm.io.layouts.autopet import autopet_files
from petctfm.io.layouts.names import image_stem, role_of
from petctfm.io.layouts.nnunet import (NNUNET_FILE, find_nnunet_dataset, nnunet_case_files, nnunet_case_ids,
                                       nnunet_channels)

log = logging.getLogger(__name__)

# Largest plausible SUV; above this a "PET" is taken to be activity concentration (Bq/ml), not SUV.
MAX_PLAUSIBLE_SUV = 1000.0
_VIEW_ROLE = {"suv": "pet", "ct": "ct", "seg": "seg", "organs": "organs"}  # role_of's names -> the keys returned


def _check_suv(img: sitk.Image, path: Path) -> sitk.Image:
    mx = float(np.max(sitk.GetArrayViewFromImage(img)))
    if mx > MAX_PLAUSIBLE_SUV:
        raise InputError(
            f"{path}: values up to {mx:.0f} look like activity concentration (Bq/ml), not SUV; "
            "view needs SUV (e.g. SUV.nii.gz from petctfm synth/harmonize)"
        )
    return img


def _read_autopet(folder: Path) -> dict[str, sitk.Image]:
    files = autopet_files(folder)
    if "suv" not in files:
        if "pet" in files:
            raise InputError(
                f"{folder}: has PET.nii.gz (activity, Bq/ml) but no SUV.nii.gz; view needs SUV "
                "(convert with the patient weight and decayed dose, e.g. petctfm harmonize)"
            )
        raise InputError(f"{folder}: no SUV.nii.gz (autoPET case folder) and no nnU-Net dataset.json found")
    ct = files.get("ctres") or files.get("ct")
    if ct is None:
        raise InputError(f"{folder}: no CTres.nii.gz or CT.nii.gz next to SUV.nii.gz")
    suv = folder / files["suv"]
    out = {"pet": _check_suv(read_image(suv), suv), "ct": read_image(folder / ct)}
    for key in ("seg", "organs"):
        if key in files:
            out[key] = read_image(folder / files[key])
    return out


def _read_nnunet(dataset_dir: Path, case_id: str | None, images: str = "imagesTr") -> dict[str, sitk.Image]:
    channels = nnunet_channels(dataset_dir, required=False)
    if case_id is None:
        cases = nnunet_case_ids(dataset_dir, images, channels.ending)
        if not cases:
            raise InputError(f"{dataset_dir / images}: no *{channels.ending} images")
        case_id = cases[0]
        log.info("nnU-Net dataset %s: showing the first case, %s", dataset_dir, case_id)
    files = nnunet_case_files(dataset_dir, images, case_id, channels)
    pet_path = dataset_dir / files["suv"]
    out = {"pet": _check_suv(read_image(pet_path), pet_path), "ct": read_image(dataset_dir / files["ct"])}
    if "seg" in files:
        out["seg"] = read_image(dataset_dir / files["seg"])
    return out


def read_case_images(paths: list[str | os.PathLike]) -> dict[str, sitk.Image]:
    """The images of one case (see the module doc): keys ``"pet"`` (SUV), ``"ct"``, and ``"seg"``,
    ``"organs"`` when present; SimpleITK images, each on its own grid.

    Raises:
        InputError: a path is missing, PET is in Bq/ml instead of SUV, or no PET is found.
    """
    if not paths:
        raise InputError("no input given: pass a case folder or PET and CT image files")
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: not found")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if autopet_files(folder).keys() & {"suv", "pet"}:
            return _read_autopet(folder)
        dataset = find_nnunet_dataset(folder)
        if dataset is not None:
            return _read_nnunet(dataset, None)
        return _read_autopet(folder)  # raises the clear "no SUV.nii.gz" error
    for p in paths:
        if p.is_dir():
            raise InputError(f"{p}: a folder cannot be combined with other inputs; give one case folder or files")
        if not is_image_file(p):
            raise InputError(f"{p}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    if len(paths) == 1:
        m = NNUNET_FILE.match(image_stem(paths[0]))
        if m and paths[0].parent.name in ("imagesTr", "imagesTs"):
            return _read_nnunet(paths[0].parent.parent, m.group("case"), paths[0].parent.name)
        raise InputError(f"{paths[0]}: a single file is not a case; give PET (SUV) and CT files, or a case folder")

    roles: dict[str, Path] = {}
    unnamed: list[Path] = []
    for p in paths:
        role = _VIEW_ROLE.get(role_of(p)[0] or "")
        if role is None or role in roles:
            unnamed.append(p)
        else:
            roles[role] = p
    for role in ("pet", "ct"):
        if role not in roles and unnamed:
            roles[role] = unnamed.pop(0)
    if unnamed:
        raise InputError(f"{unnamed[0]}: cannot tell which image this is (name it SUV/PET, CT, SEG or ORGANS)")
    if "pet" not in roles:
        raise InputError("no PET (SUV) image among the inputs")
    out = {role: read_image(p) for role, p in roles.items()}
    _check_suv(out["pet"], roles["pet"])
    return out


def describe_case(paths: list[str | os.PathLike]) -> str:
    """A title for the picture: case id, plus site/tracer/diagnosis from a nearby ``metadata.csv``."""
    if not paths:
        return ""
    first = Path(paths[0])
    m = NNUNET_FILE.match(image_stem(first)) if first.is_file() else None
    case_id = m.group("case") if m else (first.name if first.is_dir() else image_stem(first))
    for parent in list(first.resolve().parents)[:4]:
        meta = parent / "metadata.csv"
        if meta.is_file():
            try:
                with open(meta, newline="") as f:
                    for row in csv.DictReader(f):
                        if row.get("case_id") == case_id:
                            parts = [case_id] + [
                                f"{k}: {row[k]}" for k in ("site", "tracer", "diagnosis") if row.get(k)
                            ]
                            return "  |  ".join(parts)
            except (OSError, csv.Error):
                pass
            break
    return case_id
