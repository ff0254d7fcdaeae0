"""Right reasons (issue 28, item 6): each refusal says what is really wrong, and harmonize and predict accept the
same studies.

- a 1x1x1 image was refused as "no PET/CT overlap" (with a 1x1x1 CT) or predicted (with a real CT);
- a 0.5 x 0.5 x 20 mm study with a small field of view was kept by harmonize (2 mm) and refused by predict (an
  8 mm model) with "empty body mask": the coarse body pass at 4x the target spacing fell between its voxels;
- a file with mode 000 was reported as "does not exist";
- ``harmonize --spacing 0.05`` was accepted.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import SimpleITK as sitk

from test_values_and_outputs import one_error_line, run_cli


def _image(arr: np.ndarray, spacing, path) -> None:
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr.astype(np.float32), (2, 1, 0))))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(-(n - 1) / 2 * s for n, s in zip(arr.shape, spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def _thin_study(folder, size=(96, 96, 8), spacing=(0.5, 0.5, 20.0)):
    """A 48 x 48 x 160 mm study at 0.5 x 0.5 x 20 mm: a body cylinder (SUV 1, 40 HU) with a hot voxel."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size, spacing)]
    x, y, _ = np.meshgrid(*axes, indexing="ij")
    body = x**2 + y**2 < 19.0**2
    pet = np.where(body, 1.0, 0.0)
    pet[48, 48, 4] = 6.0
    _image(pet, spacing, folder / "SUV.nii.gz")
    _image(np.where(body, 40.0, -1000.0), spacing, folder / "CT.nii.gz")
    return folder


def test_one_voxel_image_is_refused_as_not_3d(template, tiny_model, tmp_path, capsys):
    one = tmp_path / "one.nii.gz"
    _image(np.ones((1, 1, 1)), (4.0, 4.0, 4.0), one)
    ct = template / "autopet" / "A" / "CT.nii.gz"
    rc, _, err = run_cli(["predict", "--model", tiny_model, "--pet", one, "--ct", ct, "--out", tmp_path / "p",
                          "--no-report"], capsys)
    assert rc == 3
    line = one_error_line(err, "1 x 1 x 1 voxels is not a 3D study")
    assert "overlap" not in line
    # harmonize: the same reason, in quarantine.csv (with a 1x1x1 CT too, it said "no PET/CT overlap")
    src = tmp_path / "in" / "c1"
    _image(np.ones((1, 1, 1)), (4.0, 4.0, 4.0), src / "SUV.nii.gz")
    _image(np.full((1, 1, 1), -1000.0), (4.0, 4.0, 4.0), src / "CT.nii.gz")
    rc, _, err = run_cli(["harmonize", "--in", tmp_path / "in", "--out", tmp_path / "ds", "--format", "autopet",
                          "--no-thumbnails"], capsys)
    assert rc == 3, err
    (row,) = csv.DictReader(open(tmp_path / "ds" / "quarantine.csv", encoding="utf-8"))
    assert "1 x 1 x 1 voxels is not a 3D study" in row["reason"] and "overlap" not in row["reason"]


def test_thin_small_fov_study_accepted_by_harmonize_and_predict(tiny_model, tmp_path, capsys):
    study = _thin_study(tmp_path / "in" / "thin")
    for spacing in (["2", "2", "3"], ["8", "8", "8"]):  # 8 mm: the tiny model's spacing
        out = tmp_path / f"ds{spacing[0]}"
        rc, _, err = run_cli(["harmonize", "--in", tmp_path / "in", "--out", out, "--format", "autopet",
                              "--spacing", *spacing, "--no-thumbnails"], capsys)
        assert rc == 0, err
        assert len(list((out / "cases").iterdir())) == 1
    rc, _, err = run_cli(["predict", "--model", tiny_model, "--pet", study / "SUV.nii.gz", "--ct",
                          study / "CT.nii.gz", "--out", tmp_path / "p", "--no-report"], capsys)
    assert rc == 0, err
    assert (tmp_path / "p" / "summary.json").is_file()


def test_unreadable_file_is_permission_denied_not_missing(template, tiny_model, tmp_path, monkeypatch, capsys):
    """Mode 000. As root (CI containers) the kernel lets root read it, so the refusal a normal user gets from
    open(2) is reproduced by ``os.open``; as a normal user the mode alone does it."""
    import shutil

    d = tmp_path / "A"
    shutil.copytree(template / "autopet" / "A", d)
    pet = d / "SUV.nii.gz"
    os.chmod(pet, 0)
    if os.geteuid() == 0:
        real_open = os.open

        def open_as_user(path, flags, *a, **k):
            if os.fspath(path) == os.fspath(pet):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", open_as_user)
    try:
        rc, _, err = run_cli(["predict", "--model", tiny_model, "--pet", pet, "--ct", d / "CT.nii.gz", "--out",
                              tmp_path / "p", "--no-report"], capsys)
    finally:
        os.chmod(pet, 0o644)
    assert rc == 3
    line = one_error_line(err, str(pet), "permission denied")
    assert "not found" not in line and "exist" not in line


@pytest.mark.parametrize("value", ["0.05", "0.49"])
def test_harmonize_spacing_below_the_minimum_is_a_usage_error(value, tmp_path, capsys):
    rc, _, err = run_cli(["harmonize", "--in", tmp_path / "nowhere", "--out", tmp_path / "ds", "--spacing", value,
                          "2", "2"], capsys)
    assert rc == 2
    one_error_line(err, "--spacing", value, "[0.5, 20] mm")
    assert not (tmp_path / "ds").exists()
