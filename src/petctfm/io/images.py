"""Reading and writing medical images (NIfTI, MHA, NRRD) with SimpleITK.

SimpleITK keeps physical geometry (origin, spacing, direction cosines, in LPS world coordinates as ITK
does) and converts to/from the NIfTI RAS header itself, so an image written here and read by nibabel or
3D Slicer sits at the same place in the patient. All writes are atomic.
"""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def is_image_file(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D image; a missing, unreadable or non-3D file raises :class:`InputError` naming it.

    Floating-point NIfTI voxels are taken from nibabel, not from ITK: ITK 5's NIfTI reader silently turns
    every NaN and ±inf voxel into 0 (``nifti_read_buffer``; fixed only in ITK 6), which would hide a corrupt
    PET behind plausible zeros. Geometry and pixel type still come from ITK, so the image is the one ITK
    would have read, NaNs included, and QA can refuse it by name.

    A file name that is not UTF-8 (ITK takes C++ strings: such a name aborts the whole process) is read
    through a temporary symlink with a plain name; ``.mhd``/``.nhdr`` (whose data file is named inside the
    header) then raise :class:`InputError` asking to rename it.
    """
    from petctfm.io.walk import is_utf8_name, printable

    path = Path(path)
    check_readable_file(path)
    if not is_utf8_name(path):
        suffix = next((s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)), "")
        if suffix not in (".nii.gz", ".nii", ".mha", ".nrrd"):
            raise InputError(f"{printable(path)}: file name is not valid UTF-8; rename it")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="petctfm-name-") as tmp:
            link = Path(tmp) / f"image{suffix}"
            os.symlink(os.fsencode(path.resolve()), link)
            try:
                return read_image(link)
            except InputError as exc:  # name the real file, not the temporary link
                raise InputError(str(exc).replace(str(link), printable(path))) from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    check_nifti_pixdim(path)
    try:
        reader.ReadImageInformation()
        if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
            raise InputError(
                f"{path}: expected a 3D single-channel image, got {reader.GetDimension()}D with "
                f"{reader.GetNumberOfComponents()} component(s)"
            )
        img = _read_float_nifti(path, reader) if _is_float_nifti(path) else reader.Execute()
    except (RuntimeError, OSError, EOFError, ValueError, zlib.error) as exc:  # ITK, or inflating / nibabel
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read image ({first})") from None
    return img


def check_readable_file(path: str | os.PathLike) -> None:
    """One-line :class:`InputError` naming ``path`` with the true reason it cannot be read: it does not exist,
    is not a regular file (a FIFO, socket or device is never opened), or the permissions refuse it (a mode-000
    file used to be reported by ITK as "does not exist"). A FIFO is recognized by ``stat`` before any open."""
    from petctfm.io.walk import file_kind, printable

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{printable(path)}: file not found") from None
    except PermissionError:
        raise InputError(f"{printable(path)}: permission denied (a folder on its path cannot be entered)") from None
    except OSError as exc:
        raise InputError(f"{printable(path)}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{printable(path)}: not a regular file (a {file_kind(path)}; a pipe, socket or device is "
                         "never read)")
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except PermissionError:
        raise InputError(f"{printable(path)}: permission denied (the file cannot be read by this user)") from None
    except OSError as exc:
        raise InputError(f"{printable(path)}: cannot be read ({exc.strerror or exc})") from None


def image_notes(path: str | os.PathLike) -> str:
    """The free-text note an image file carries (NIfTI header ``descrip``; MetaImage ``ITK_FileNotes``), ``""``
    when none or unreadable. Reads only the header. :func:`write_image` ``notes=`` writes it."""
    import gzip

    name = str(path).lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as f:
                head = f.read(348)
            return head[148:228].split(b"\0", 1)[0].decode("utf-8", "replace").strip() if len(head) >= 348 else ""
        if name.endswith((".mha", ".mhd")):
            with open(path, "rb") as f:
                for line in f.read(8192).split(b"\n"):
                    key, _, value = line.partition(b"=")
                    if key.strip() == b"ITK_FileNotes":
                        return value.decode("utf-8", "replace").strip()
                    if key.strip() == b"ElementDataFile":
                        break
    except (OSError, EOFError, zlib.error):
        return ""
    return ""


def check_nifti_pixdim(path: Path) -> None:
    """Refuse a NIfTI whose stored voxel size ``pixdim[1:4]`` is 0, negative or not finite: ITK and nibabel
    silently read such an axis as 1 mm, which resamples the image to the wrong physical size. Reads only the
    raw header (NIfTI-1: 348 bytes, float32 pixdim at byte 76; NIfTI-2: 540 bytes, float64 at 104)."""
    import struct

    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as f:
                head = f.read(540)
        else:
            with open(path, "rb") as f:
                head = f.read(540)
    except (OSError, EOFError, zlib.error):
        return  # unreadable: the reader below says so, naming the file
    if len(head) < 348:
        return
    for order in ("<", ">"):
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348:
            pixdim = struct.unpack(order + "8f", head[76:108])
            break
        if size == 540 and len(head) >= 540:
            pixdim = struct.unpack(order + "8d", head[104:168])
            break
    else:
        return
    bad = [(i, v) for i, v in enumerate(pixdim[1:4], start=1) if not (np.isfinite(v) and v > 0)]
    if bad:
        shown = ", ".join(f"pixdim[{i}]={v:g}" for i, v in bad)
        raise InputError(f"{path}: voxel size unknown ({shown} in the NIfTI header; readers would silently use "
                         "1 mm)")


def _is_float_nifti(path: Path) -> bool:
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        return False
    import nibabel as nib

    try:  # reads (inflates) only the header
        return nib.load(str(path)).header.get_data_dtype().kind == "f"
    except Exception:  # nibabel cannot parse it: let ITK read it (or say why it cannot)
        return False


def _gunzip(data: bytes) -> bytes:
    """Inflate a whole gzip file in memory: ISA-L (``isal``, about twice zlib's speed, on par with the zlib-ng
    that ITK bundles) when installed, else the standard library. Both handle multi-member files."""
    try:
        from isal import igzip as gz
    except ImportError:  # pragma: no cover - isal is a dependency; a platform without its wheel falls back
        import gzip as gz
    return gz.decompress(data)


def _read_float_nifti(path: Path, reader: sitk.ImageFileReader) -> sitk.Image:
    """The voxels of a float NIfTI as stored (scl_slope/scl_inter applied, non-finite values kept), on the
    geometry ITK reads from its header. nibabel's array is indexed like ITK's: file order, no reorientation."""
    import nibabel as nib

    raw = path.read_bytes()
    if str(path).lower().endswith(".gz"):
        raw = _gunzip(raw)
    arr = np.asanyarray(nib.Nifti1Image.from_bytes(raw).dataobj)  # NIfTI-2: ITK's header reader refused it
    del raw
    size = tuple(reader.GetSize())
    if arr.shape[3:] and all(n == 1 for n in arr.shape[3:]):
        arr = arr.reshape(arr.shape[:3])
    if arr.shape != size:
        raise InputError(f"{path}: NIfTI data shape {arr.shape} does not match its header size {size}")
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)))
    if img.GetPixelID() != reader.GetPixelID():
        img = sitk.Cast(img, reader.GetPixelID())
    img.SetSpacing(reader.GetSpacing())
    img.SetOrigin(reader.GetOrigin())
    img.SetDirection(reader.GetDirection())
    return img


def write_image(img: sitk.Image, path: str | os.PathLike, compress: bool = True, notes: str | None = None) -> Path:
    """Write ``img`` atomically; the format follows the suffix (``.nii.gz``, ``.mha``, ``.nrrd``). ``notes``: a
    short text stored in the header (NIfTI ``descrip``, 79 characters at most; :func:`image_notes` reads it)."""
    if notes:
        img = sitk.Image(img)  # a copy: the caller's image keeps its metadata
        img.SetMetaData("ITK_FileNotes", notes[:79])
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


def image_from_ras(arr_xyz: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS geometry) of an array indexed ``[x, y, z]`` and its 4x4 voxel -> RAS mm ``affine``
    (what nibabel and a harmonized case's ``meta.json`` hold); the inverse of :func:`ras_affine`."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, np.float64)[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    return image_from_array(arr_xyz, tuple(spacing), tuple(lps[:, 3]), tuple((lps[:, :3] / spacing).ravel()))


def ras_affine(img: sitk.Image) -> np.ndarray:
    """4x4 voxel ``[x, y, z]`` index -> RAS mm of a SimpleITK image (its LPS geometry with x and y negated)."""
    d = np.asarray(img.GetDirection(), np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(img.GetSpacing(), np.float64)[None, :]
    lps[:3, 3] = img.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def array_xyz(img: sitk.Image) -> np.ndarray:
    """The voxel array of ``img`` indexed ``[x, y, z]`` (a copy; SimpleITK's own view is ``[z, y, x]``)."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))


def voxel_volume_ml(img: sitk.Image) -> float:
    sx, sy, sz = img.GetSpacing()
    return sx * sy * sz / 1000.0
