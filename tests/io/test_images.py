"""read_image: the image ITK would read, except that NIfTI NaN/inf voxels survive (ITK 5 zeroes them)."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.io.images import read_image

OBLIQUE = np.array([[0.0, 0.0, 3.0, 5.0], [2.0, 0.0, 0.0, -3.0], [0.0, -2.0, 0.0, 7.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.diag([2.0, 2.0, 3.0, 1.0]), np.diag([-2.0, -2.0, 3.0, 1.0]), OBLIQUE])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_nifti_reads_like_itk_and_keeps_non_finite_voxels(tmp_path, affine, dtype):
    rng = np.random.default_rng(0)
    data = rng.random((4, 5, 6)).astype(dtype)
    data[1, 2, 3], data[3, 4, 5] = np.nan, np.inf
    path = tmp_path / "pet.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    ours, itk = read_image(path), sitk.ReadImage(str(path))
    assert ours.GetPixelID() == itk.GetPixelID()
    assert ours.GetSize() == itk.GetSize() == (4, 5, 6)
    np.testing.assert_allclose(ours.GetOrigin(), itk.GetOrigin())
    np.testing.assert_allclose(ours.GetSpacing(), itk.GetSpacing())
    np.testing.assert_allclose(ours.GetDirection(), itk.GetDirection())
    a = sitk.GetArrayFromImage(ours).transpose(2, 1, 0)  # [x, y, z] = nibabel's index order
    assert np.isnan(a[1, 2, 3]) and np.isposinf(a[3, 4, 5])
    assert sitk.GetArrayFromImage(itk).transpose(2, 1, 0)[1, 2, 3] == 0  # the ITK 5 behaviour worked around
    finite = np.isfinite(data)
    np.testing.assert_array_equal(a[finite], data[finite])


def test_scaled_and_integer_nifti_match_itk(tmp_path):
    rng = np.random.default_rng(1)
    img = nib.Nifti1Image(rng.random((4, 5, 6)).astype(np.float32), OBLIQUE)
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, tmp_path / "scaled.nii")
    lab = nib.Nifti1Image((rng.random((4, 5, 6)) > 0.5).astype(np.uint8), OBLIQUE)
    nib.save(lab, tmp_path / "label.nii.gz")
    for name in ("scaled.nii", "label.nii.gz"):
        ours, itk = read_image(tmp_path / name), sitk.ReadImage(str(tmp_path / name))
        assert ours.GetPixelID() == itk.GetPixelID()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(itk))
        np.testing.assert_allclose(ours.GetDirection(), itk.GetDirection())


def test_bad_files_are_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: file not found"):
        read_image(tmp_path / "nope.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match=r"junk\.nii\.gz: cannot read image"):
        read_image(tmp_path / "junk.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match=r"4d\.nii\.gz: expected a 3D single-channel image, got 4D"):
        read_image(tmp_path / "4d.nii.gz")


def test_multi_member_gzip_truncated_and_nifti2_float_files(tmp_path):
    import gzip

    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    data[0, 1, 2] = np.nan
    nib.save(nib.Nifti2Image(data, np.eye(4)), tmp_path / "n2.nii.gz")
    with pytest.raises(InputError, match=r"n2\.nii\.gz: cannot read image"):  # ITK 5 reads no NIfTI-2
        read_image(tmp_path / "n2.nii.gz")
    # a gzip file of two members (as bgzip or concatenated streams write): the whole image is read
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "plain.nii")
    raw = (tmp_path / "plain.nii").read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:]))
    b = sitk.GetArrayFromImage(read_image(tmp_path / "two.nii.gz")).transpose(2, 1, 0)
    np.testing.assert_array_equal(np.isnan(b), np.isnan(data))
    np.testing.assert_array_equal(b[~np.isnan(b)], data[~np.isnan(data)])
    whole = gzip.compress(raw)
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"cut\.nii\.gz: cannot read image"):
        read_image(tmp_path / "cut.nii.gz")
