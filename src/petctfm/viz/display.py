"""The display frame of ``petctfm view``: every input on one canonical grid, and where the slices cut.

Every input is first brought into one canonical frame: the PET image is reoriented with
``sitk.DICOMOrient(pet, "LPS")`` (a pure axis permutation/flip, no interpolation, so voxel values are
unchanged), giving arrays indexed ``[x, y, z]`` with x: patient right -> left, y: anterior -> posterior,
z: inferior -> superior. The CT is resampled onto that grid (linear), labels with nearest neighbour. An
LPS file, an RAS file and a z-flipped file of the same patient therefore yield the same arrays and the
same picture (:func:`to_display`). :func:`select_focus` picks the voxel the fused slices pass through;
:func:`body_view_limits` the part of the field of view the patient fills. Drawing is :mod:`petctfm.viz.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from petctfm.io.images import array_xyz


@dataclass
class DisplayVolumes:
    """All inputs on one canonical grid; arrays indexed ``[x, y, z]`` (x: R->L, y: A->P, z: I->S).

    Attributes:
        pet: (X, Y, Z) float32 SUV.
        ct: (X, Y, Z) float32 HU, or None.
        seg, pred, organs: (X, Y, Z) uint8/uint16 label maps, or None.
        origin: physical position (LPS mm) of voxel [0, 0, 0]'s centre.
        spacing: voxel size (mm) along x, y, z.
    """

    pet: np.ndarray
    ct: np.ndarray | None
    seg: np.ndarray | None
    pred: np.ndarray | None
    organs: np.ndarray | None
    origin: np.ndarray
    spacing: np.ndarray

    def centers(self, axis: int) -> np.ndarray:
        """Physical coordinates (mm) of the voxel centres along ``axis``."""
        return self.origin[axis] + self.spacing[axis] * np.arange(self.pet.shape[axis])

    def edges(self, axis: int) -> tuple[float, float]:
        """Physical coordinates (mm) of the outer voxel edges along ``axis`` (for ``imshow`` extents)."""
        c = self.centers(axis)
        half = self.spacing[axis] / 2.0
        return float(c[0] - half), float(c[-1] + half)


def _canonical_reference(pet: sitk.Image) -> sitk.Image:
    """PET reoriented to the LPS-identity frame, origin snapped to 1e-4 mm (removes float jitter)."""
    ref = sitk.DICOMOrient(pet, "LPS")
    if not np.allclose(ref.GetDirection(), np.eye(3).ravel(), atol=1e-6):
        # Oblique acquisition: DICOMOrient only permutes/flips, so resample onto an axis-aligned grid
        # covering the same physical box.
        size = np.array(ref.GetSize())
        corners = [
            ref.TransformContinuousIndexToPhysicalPoint([float(c) for c in idx])
            for idx in np.array(np.meshgrid(*[[0, n - 1] for n in size], indexing="ij")).reshape(3, -1).T
        ]
        lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
        spacing = np.array(ref.GetSpacing())
        new_size = [int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1]
        ref = sitk.Resample(
            ref, new_size, sitk.Transform(), sitk.sitkLinear, lo.tolist(), spacing.tolist(),
            np.eye(3).ravel().tolist(), 0.0, sitk.sitkFloat32,
        )
    ref.SetOrigin(tuple(round(o, 4) for o in ref.GetOrigin()))
    ref.SetSpacing(tuple(round(s, 6) for s in ref.GetSpacing()))
    ref.SetDirection(np.eye(3).ravel().tolist())
    return ref


def _onto(img: sitk.Image, ref: sitk.Image, label: bool, default: float) -> np.ndarray:
    """Resample ``img`` onto ``ref`` (nearest for labels, linear otherwise); returns an [x, y, z] array."""
    # Reorient first (exact), so the interpolation sees the same array whatever the stored orientation.
    img = sitk.DICOMOrient(img, "LPS")
    img.SetOrigin(tuple(round(o, 4) for o in img.GetOrigin()))
    img.SetSpacing(tuple(round(s, 6) for s in img.GetSpacing()))
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out_type = sitk.sitkUInt16 if label else sitk.sitkFloat32
    out = sitk.Resample(img, ref, sitk.Transform(), interp, default, out_type)
    arr = array_xyz(out)
    return arr if label else np.nan_to_num(np.round(arr, 3), nan=default).astype(np.float32)


def to_display(
    pet_suv: sitk.Image,
    ct: sitk.Image | None = None,
    seg: sitk.Image | None = None,
    organs: sitk.Image | None = None,
    pred: sitk.Image | None = None,
) -> DisplayVolumes:
    """Bring all inputs onto the canonical display grid (the PET grid, reoriented to LPS)."""
    ref = _canonical_reference(sitk.Cast(pet_suv, sitk.sitkFloat32))
    pet = np.nan_to_num(np.round(array_xyz(ref), 4)).astype(np.float32)

    def label(img):
        return None if img is None else _onto(img, ref, label=True, default=0)

    return DisplayVolumes(
        pet=pet,
        ct=None if ct is None else _onto(sitk.Cast(ct, sitk.sitkFloat32), ref, label=False, default=-1000.0),
        seg=label(seg),
        pred=label(pred),
        organs=label(organs),
        origin=np.array(ref.GetOrigin()),
        spacing=np.array(ref.GetSpacing()),
    )


def select_focus(
    pet: np.ndarray,
    seg: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    ct: np.ndarray | None = None,
    focus: str = "hottest",
) -> tuple[tuple[int, int, int], str]:
    """The voxel the fused slices pass through, and why.

    ``focus="hottest"``: the SUVmax voxel of the hottest lesion (inside ``seg``), else of the hottest
    predicted lesion (inside ``pred``). ``focus="largest"``: the SUVmax voxel of the largest lesion
    (18-connected component by voxel count, the autoPET connectivity), same order. Without any lesion: the
    body centre (centre of mass of CT > -500 HU, or of PET above 10% of its 99.9th percentile when there is
    no CT). All arrays are (X, Y, Z) on the same grid.

    Returns:
        ((i, j, k), reason) with reason e.g. ``"hottest lesion"``, ``"largest predicted lesion"``,
        ``"body centre"``.
    """
    if focus not in ("hottest", "largest"):
        raise ValueError(f"focus must be 'hottest' or 'largest', got {focus!r}")
    for mask, what in ((seg, "lesion"), (pred, "predicted lesion")):
        if mask is not None and np.any(mask > 0):
            inside = mask > 0
            if focus == "largest":
                from petctfm.evaluate.lesions import label_lesions

                cc, n = label_lesions(inside, connectivity=18)
                sizes = np.bincount(cc.ravel(), minlength=n + 1)
                sizes[0] = 0
                inside = cc == int(np.argmax(sizes))
            masked = np.where(inside, pet, -np.inf)
            return tuple(int(v) for v in np.unravel_index(int(np.argmax(masked)), pet.shape)), f"{focus} {what}"
    if ct is not None and np.any(ct > -500):
        body = ct > -500
    else:
        body = pet > 0.1 * float(np.percentile(pet, 99.9))
    if not np.any(body):
        return tuple(int(n // 2) for n in pet.shape), "body centre"
    com = np.array(np.nonzero(body)).mean(axis=1)
    return tuple(int(round(c)) for c in com), "body centre"


def body_view_limits(vol: DisplayVolumes, margin_mm: float = 15.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """Physical x and y limits (mm) of the body (CT > -500 HU, else SUV > 0.15) plus a margin.

    Scanner fields of view are wider than the patient; cropping the empty air makes the patient large
    enough to read. Falls back to the whole grid when no body is found.
    """
    body = vol.ct > -500 if vol.ct is not None else vol.pet > 0.15
    lims = []
    for axis in (0, 1):
        lo, hi = vol.edges(axis)
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(body.any(axis=other))
        if idx.size:
            c = vol.centers(axis)
            lo = max(lo, float(c[idx[0]]) - margin_mm)
            hi = min(hi, float(c[idx[-1]]) + margin_mm)
        lims.append((lo, hi))
    return lims[0], lims[1]
