"""Readers of the on-disk layouts: detection, role words, nnU-Net channels, one case from folder or files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from petctfm.core.errors import InputError
from petctfm.io.images import array_xyz, image_from_array, write_image
from petctfm.io.layouts.autopet import autopet_case_folders, autopet_files
from petctfm.io.layouts.detect import detect_format
from petctfm.io.layouts.names import role_of
from petctfm.io.layouts.nnunet import NnunetChannels, nnunet_case_files, nnunet_case_ids, nnunet_channels
from petctfm.io.layouts.read import describe_case, read_case_images


def _img(value: float, dtype=np.float32):
    return image_from_array(np.full((4, 3, 2), value, dtype), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))


@pytest.mark.parametrize("name, expected", [
    ("p1_suv.nii.gz", ("suv", "p1")), ("p1-CT.mha", ("ct", "p1")), ("p1_seg.nrrd", ("seg", "p1")),
    ("PET.nii.gz", ("suv", "")), ("case_7_lesion_mask.nii", ("seg", "case_7_mask")),
    ("organs.nii.gz", ("organs", "")), ("CTres.nii.gz", ("ct", "")), ("scan.nii.gz", (None, "scan")),
])
def test_role_of(name, expected):
    assert role_of(Path(name)) == expected


def _dataset_json(root: Path, names: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": names, "file_ending": ".nii.gz"}))


def test_nnunet_channels_by_name_not_order(tmp_path):
    _dataset_json(tmp_path / "a", {"0": "PET", "1": "CT"})
    assert nnunet_channels(tmp_path / "a") == NnunetChannels(pet=0, ct=1, ending=".nii.gz")
    _dataset_json(tmp_path / "b", {"0": "CTres", "1": "SUV"})
    assert nnunet_channels(tmp_path / "b") == (1, 0, ".nii.gz")
    _dataset_json(tmp_path / "c", {"0": "CT", "1": "MR"})
    with pytest.raises(InputError, match="exactly one PET/SUV and one CT"):
        nnunet_channels(tmp_path / "c")
    with pytest.raises(InputError, match="channel_names"):
        nnunet_channels(tmp_path / "missing")
    assert nnunet_channels(tmp_path / "missing", required=False) == (1, 0, ".nii.gz")


def test_nnunet_case_ids_and_files(tmp_path):
    _dataset_json(tmp_path, {"0": "CT", "1": "PET"})
    for cid in ("b", "a"):
        for ch in (0, 1):
            write_image(_img(ch), tmp_path / "imagesTr" / f"{cid}_{ch:04d}.nii.gz")
    write_image(_img(1, np.uint8), tmp_path / "labelsTr" / "a.nii.gz")
    channels = nnunet_channels(tmp_path)
    assert nnunet_case_ids(tmp_path, "imagesTr", channels.ending) == ["a", "b"]
    assert nnunet_case_files(tmp_path, "imagesTr", "a", channels) == {
        "suv": "imagesTr/a_0001.nii.gz", "ct": "imagesTr/a_0000.nii.gz", "seg": "labelsTr/a.nii.gz"}
    assert "seg" not in nnunet_case_files(tmp_path, "imagesTr", "b", channels)
    assert detect_format(tmp_path) == "nnunet"


def test_autopet_folders_and_detection(tmp_path):
    for rel in ("c1", "p2/study1"):
        write_image(_img(1.0), tmp_path / rel / "SUV.nii.gz")
        write_image(_img(0.0), tmp_path / rel / "CTres.nii.gz")
    assert autopet_case_folders(tmp_path) == [tmp_path / "c1", tmp_path / "p2" / "study1"]
    assert autopet_files(tmp_path / "c1") == {"suv": "SUV.nii.gz", "ctres": "CTres.nii.gz"}
    assert detect_format(tmp_path) == "autopet"
    pairs = tmp_path.parent / "pairs"
    write_image(_img(1.0), pairs / "p1_suv.nii.gz")
    assert detect_format(pairs) == "pairs"


def test_read_case_images_from_folder_files_and_nnunet(tmp_path):
    case = tmp_path / "PETCT_0001"
    write_image(_img(2.0), case / "SUV.nii.gz")
    write_image(_img(-100.0), case / "CTres.nii.gz")
    write_image(_img(1, np.uint8), case / "SEG.nii.gz")
    images = read_case_images([case])
    assert set(images) == {"pet", "ct", "seg"}
    assert float(array_xyz(images["ct"]).max()) == -100.0
    by_name = read_case_images([case / "CTres.nii.gz", case / "SUV.nii.gz", case / "SEG.nii.gz"])
    assert float(array_xyz(by_name["pet"]).max()) == 2.0 and set(by_name) == {"pet", "ct", "seg"}
    nn = tmp_path / "nn" / "Dataset001"
    write_image(_img(-50.0), nn / "imagesTs" / "x_0000.nii.gz")
    write_image(_img(3.0), nn / "imagesTs" / "x_0001.nii.gz")
    got = read_case_images([nn / "imagesTs" / "x_0000.nii.gz"])  # no dataset.json: 0000 CT, 0001 PET
    assert float(array_xyz(got["pet"]).max()) == 3.0 and set(got) == {"pet", "ct"}
    write_image(_img(5000.0), tmp_path / "bq" / "PET.nii.gz")
    write_image(_img(0.0), tmp_path / "bq" / "CT.nii.gz")
    with pytest.raises(InputError, match="SUV"):
        read_case_images([tmp_path / "bq"])
    (tmp_path / "metadata.csv").write_text("case_id,site,tracer\nPETCT_0001,a,fdg\n")
    assert describe_case([case]) == "PETCT_0001  |  site: a  |  tracer: fdg"
