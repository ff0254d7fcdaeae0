"""Writers of synthetic cases in the autoPET and nnU-Net v2 layouts, dataset.json and metadata.csv."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np

from petctfm.io.images import array_xyz, image_from_array, read_image
from petctfm.synth.layouts import (
    write_autopet_case,
    write_metadata_csv,
    write_nnunet_case,
    write_nnunet_dataset_json,
)
from petctfm.core.labels import METADATA_FIELDS
from petctfm.synth.case import SynthCase

RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)


def small_case(case_id: str, direction=RAS) -> SynthCase:
    rng = np.random.default_rng(len(case_id))
    ct = image_from_array(rng.integers(-1000, 1000, (9, 8, 7)).astype(np.int16), (1.2, 1.2, 2.0), (10, 20, -30),
                          direction)

    def pet_grid(a):
        return image_from_array(a, (3.0, 3.0, 4.0), (11, 21, -29), direction)

    pet = rng.random((4, 3, 3)).astype(np.float32) * 1e4
    seg = np.zeros((4, 3, 3), np.uint8)
    seg[1, 1, 1] = 1
    return SynthCase(case_id, ct, pet_grid(pet), pet_grid(pet / 5e3), pet_grid(pet * 0 - 50), pet_grid(seg),
                     pet_grid(seg * 3), {"site": "north_valley", "tracer": "fdg"})


def test_autopet_case_files_and_geometry(tmp_path):
    case = small_case("PETCT_0003")
    folder = write_autopet_case(case, tmp_path)
    assert folder == tmp_path / "PETCT_0003"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["CT.nii.gz", "CTres.nii.gz", "SUV.nii.gz", "PET.nii.gz", "SEG.nii.gz", "ORGANS.nii.gz"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["PETCT_0003"]  # no temporary leftovers
    for name, img in [("CT", case.ct), ("PET", case.pet), ("SUV", case.suv), ("SEG", case.seg)]:
        back = read_image(folder / f"{name}.nii.gz")
        assert back.GetSize() == img.GetSize()
        np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(array_xyz(back), array_xyz(img), rtol=1e-6)
    assert read_image(folder / "CT.nii.gz").GetSize() == (9, 8, 7)  # native CT grid, not the PET one
    # the site orientation is in the NIfTI header: LPS direction diag(-1,-1,1) is RAS+ identity for nibabel
    nii = nib.load(folder / "PET.nii.gz")
    assert nib.aff2axcodes(nii.affine) == ("R", "A", "S")
    np.testing.assert_allclose(nii.affine[:3, 3], [-11, -21, -29], atol=1e-4)


def test_autopet_rewrite_replaces_the_case_folder(tmp_path):
    write_autopet_case(small_case("PETCT_0001"), tmp_path)
    (tmp_path / "PETCT_0001" / "stale.txt").write_text("old")
    write_autopet_case(small_case("PETCT_0001"), tmp_path)
    assert not (tmp_path / "PETCT_0001" / "stale.txt").exists()
    assert len(list((tmp_path / "PETCT_0001").iterdir())) == 6


def test_nnunet_layout_and_dataset_json(tmp_path):
    cases = [small_case(f"PETCT_{i:04d}") for i in range(3)]
    for case in cases:
        write_nnunet_case(case, tmp_path)
    (tmp_path / "imagesTr" / "PETCT_0002_0001.nii.gz").unlink()  # an incomplete case is not counted
    write_nnunet_dataset_json(tmp_path)
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "CT", "1": "PET"}
    assert info["labels"] == {"background": 0, "lesion": 1}
    assert info["numTraining"] == 2 and info["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (tmp_path / "labelsTr").iterdir()) == [f"PETCT_{i:04d}.nii.gz" for i in range(3)]
    ct = read_image(tmp_path / "imagesTr" / "PETCT_0000_0000.nii.gz")
    suv = read_image(tmp_path / "imagesTr" / "PETCT_0000_0001.nii.gz")
    label = read_image(tmp_path / "labelsTr" / "PETCT_0000.nii.gz")
    # all channels and the label on the PET grid, CT channel = CTres, PET channel = SUV
    for img in (ct, suv, label):
        assert img.GetSize() == cases[0].pet.GetSize()
        np.testing.assert_allclose(img.GetOrigin(), cases[0].pet.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(array_xyz(ct), -50.0)
    np.testing.assert_allclose(array_xyz(suv), array_xyz(cases[0].suv), rtol=1e-6)
    np.testing.assert_array_equal(array_xyz(label), array_xyz(cases[0].seg))


def test_metadata_csv_columns_and_values(tmp_path):
    rows = [
        {"case_id": "PETCT_0001", "site": "a", "age": 61, "zeta": 1, "tags": [1, 2], "weight_kg": np.float32(70.5)},
        {"case_id": "PETCT_0000", "site": "b", "alpha": "x", "stage": None},
    ]
    path = write_metadata_csv(rows, tmp_path / "metadata.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == METADATA_FIELDS + ["alpha", "tags", "zeta"]
        got = list(reader)
    assert [r["case_id"] for r in got] == ["PETCT_0001", "PETCT_0000"]  # caller's order is kept
    assert got[0]["age"] == "61" and got[0]["tags"] == "[1, 2]" and got[0]["weight_kg"] == "70.5"
    assert got[1]["stage"] == "" and got[1]["alpha"] == "x" and got[1]["zeta"] == ""
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.csv"]


def test_dataset_json_with_no_cases_counts_zero(tmp_path):
    write_nnunet_dataset_json(tmp_path)
    assert json.loads((tmp_path / "dataset.json").read_text())["numTraining"] == 0
