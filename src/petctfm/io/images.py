"""Reading and writing medical images (NIfTI, MHA, NRRD) with SimpleITK.

SimpleITK keeps physical geometry (origin, spacing, direction cosines, in LPS world coordinates as ITK
does) and converts to/from the NIfTI RAS header itself, so an image written here and read by nibabel or
3D Slicer sits at the same place in the patient. All writes are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petctfm.errors import InputError
from petctfm.io.atomic import atomic_path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def is_image_file(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D image; a missing, unreadable or non-3D file raises :class:`InputError` naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"{path}: cannot read image ({first})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: expected a 3D single-channel image, got {img.GetDimension()}D with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s)"
        )
    return img


def write_image(img: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``img`` atomically; the format follows the suffix (``.nii.gz``, ``.mha``, ``.nrrd``)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress)
    return Path(path)


def image_from_array(
    arr_xyz: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> sitk.Image:
    """Build a SimpleITK image from an array indexed ``[x, y, z]`` (ITK index order).

    SimpleITK's ``GetImageFromArray`` expects ``[z, y, x]``; this wrapper takes the ``[x, y, z]`` order
    used everywhere else in petctfm (same as nibabel and MONAI) and transposes.
    """
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr_xyz, (2, 1, 0))))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection(tuple(float(d) for d in direction))
    return img


def array_xyz(img: sitk.Image) -> np.ndarray:
    """The voxel array of ``img`` indexed ``[x, y, z]`` (a copy; SimpleITK's own view is ``[z, y, x]``)."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))


def voxel_volume_ml(img: sitk.Image) -> float:
    sx, sy, sz = img.GetSpacing()
    return sx * sy * sz / 1000.0
