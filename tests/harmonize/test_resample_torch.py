"""The torch resampler (``harmonize.resample_torch``) against the NumPy one (``harmonize.resample.resample_xyz``).

Run on the CPU here; the same code runs on CUDA. Linear must agree to 1e-5 (float32), nearest exactly, for
LPS-, RAS- and flip-stored sources, swapped axes, anisotropic spacings, partial overlap and half-voxel ties.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from petctfm.harmonize.pipeline import harmonize_images
from petctfm.harmonize.resample import axis_maps, ras_bounds, ras_grid, resample_xyz
from petctfm.harmonize.resample_torch import resample_xyz_torch, resample_zyx, torch_resampler

from harmonize_phantoms import grid, phantom_images

LPS = (1, 0, 0, 0, 1, 0, 0, 0, 1)
RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
FLIP_YZ = (1, 0, 0, 0, -1, 0, 0, 0, -1)
SWAP_XZ = (0, 0, 1, 0, -1, 0, 1, 0, 0)  # ITK axis 0 runs along world z, axis 2 along world x (flipped y)
DIRECTIONS = {"lps": LPS, "ras": RAS, "flip_yz": FLIP_YZ, "swap_xz": SWAP_XZ}


def _source(direction, pixel: str, seed: int = 0, size=(13, 11, 17), spacing=(2.7, 3.3, 4.1),
            center=(3.0, -2.0, 5.0)) -> sitk.Image:
    """A random image (``pixel``: float32 SUV-like, int16 CT-like, uint8/uint16 labels) on an anisotropic grid."""
    rng = np.random.default_rng(seed)
    g = grid(size, spacing, direction, center)
    shape = tuple(size[::-1])
    arr = {"float32": lambda: rng.gamma(2.0, 2.0, shape).astype(np.float32),
           "int16": lambda: rng.integers(-1000, 1500, shape).astype(np.int16),
           "uint8": lambda: rng.integers(0, 6, shape).astype(np.uint8),
           "uint16": lambda: rng.integers(0, 3000, shape).astype(np.uint16)}[pixel]()
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(g)
    return img


def _partial_ref(src: sitk.Image, spacing=(2.0, 2.0, 3.0)) -> sitk.Image:
    """A RAS grid over the source's FOV shifted by 40 % of its extent: part of it lies outside the source."""
    lo, hi = ras_bounds(src)
    shift = 0.4 * (hi - lo) * np.array([1.0, -1.0, 0.5])
    return ras_grid(lo + shift, hi + shift, spacing)


def _both(img, ref, linear, default, dtype=np.float32):
    return resample_xyz(img, ref, linear, default, dtype), resample_xyz_torch(img, ref, linear, default, dtype)


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_linear_matches_numpy_to_1e5(name):
    for pixel, default in (("float32", 0.0), ("int16", -1000.0)):
        img = _source(DIRECTIONS[name], pixel)
        ref = _partial_ref(img)
        assert axis_maps(img, ref) is not None  # the separable path, not the fallback
        a, b = _both(img, ref, True, default)
        assert a.shape == b.shape == ref.GetSize() and b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        outside = a == default
        assert 0.1 < outside.mean() < 0.9  # partial overlap really exercised, with the default outside
        assert (b[outside] == default).all()


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_nearest_matches_numpy_exactly(name):
    for pixel, dtype in (("uint8", np.uint8), ("uint8", np.float32), ("uint16", np.float32), ("int16", np.float32)):
        img = _source(DIRECTIONS[name], pixel, seed=1)
        ref = _partial_ref(img, spacing=(1.5, 2.5, 2.0))
        a, b = _both(img, ref, False, 0, dtype)
        assert b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(b, a)
        assert (a > 0).mean() > 0.1


def test_nearest_half_voxel_ties_follow_numpy():
    """Target centres exactly between two source centres: both resamplers pick the same (larger LPS) voxel,
    for LPS- and RAS-stored copies of the same labels."""
    src = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.uint8).reshape(6, 5, 4))
    src.SetSpacing((2.0, 2.0, 2.0))
    ref = sitk.Image([11, 12, 14], sitk.sitkUInt8)  # larger than the source: part of it is outside
    ref.SetSpacing((1.0, 1.0, 1.0))
    ref.SetOrigin((0.0, 0.0, 0.0))  # every other target centre is a tie (source centres at 0, 2, 4, ...)
    for direction in (LPS, RAS):
        s = sitk.Image(src)
        s.SetDirection(direction)
        r = sitk.Image(ref)
        r.SetDirection(direction)
        if direction == RAS:
            s.SetOrigin((6.0, 8.0, 0.0))
            r.SetOrigin((6.0, 8.0, 0.0))
        a, b = _both(s, r, False, 255, np.uint8)
        np.testing.assert_array_equal(b, a)
        assert (a == 255).any() and (a != 255).any()
        a, b = _both(s, r, True, 0.0)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_no_overlap_gives_default_and_oblique_falls_back():
    img = _source(LPS, "float32")
    lo, hi = ras_bounds(img)
    far = ras_grid(hi + 100.0, hi + 120.0, (2.0, 2.0, 2.0))
    np.testing.assert_array_equal(resample_xyz_torch(img, far, True, -7.0), np.full(far.GetSize(), -7.0, np.float32))
    oblique = _source(LPS, "float32")
    c, s = np.cos(0.3), np.sin(0.3)
    oblique.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    ref = _partial_ref(oblique)
    assert axis_maps(oblique, ref) is None
    a, b = _both(oblique, ref, True, 0.0)
    np.testing.assert_array_equal(b, a)  # the same SimpleITK code path


@pytest.mark.parametrize("name", ["lps", "swap_xz"])
def test_array_on_a_geometry_grid_and_tensor_input(name):
    """``array=``: the voxels given as [x, y, z] (NumPy or tensor) on an empty grid, as predict's probability."""
    img = _source(DIRECTIONS[name], "float32", seed=2)
    ref = _partial_ref(img)
    xyz = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    geometry = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    geometry.CopyInformation(img)
    want = resample_xyz(img, ref, True, 0.0)
    for arr in (xyz, torch.from_numpy(np.ascontiguousarray(xyz))):
        got = resample_xyz_torch(geometry, ref, True, 0.0, array=arr)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    t = resample_zyx(torch.from_numpy(sitk.GetArrayFromImage(img)), axis_maps(img, ref), ref.GetSize(), True, 0.0)
    assert torch.is_tensor(t) and t.is_contiguous() and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="not the grid's size"):
        resample_xyz_torch(geometry, ref, True, 0.0, array=xyz[1:])


def test_harmonize_images_with_the_torch_resampler_matches():
    """``harmonize_images(resampler=...)``: one code path, the same arrays (PET/CT linear, labels nearest)."""
    pet_grid = grid((40, 32, 48), (4.0, 3.5, 4.2), RAS)
    ct_grid = grid((70, 60, 64), (2.5, 2.5, 3.0), FLIP_YZ, center=(0.0, 0.0, 20.0))  # CT misses the bottom
    images = phantom_images(pet_grid, ct_grid)
    a = harmonize_images(images, (3.0, 3.0, 4.0))
    b = harmonize_images(images, (3.0, 3.0, 4.0), resampler=torch_resampler("cpu"))
    np.testing.assert_allclose(b["image"], a["image"], rtol=0, atol=1e-4)  # HU values ~1e3: 1e-5 relative
    np.testing.assert_array_equal(b["label"], a["label"])
    np.testing.assert_array_equal(b["organs"], a["organs"])
    np.testing.assert_array_equal(b["affine"], a["affine"])
    assert a["label"].any() and (a["image"][1] == -1000).any()
