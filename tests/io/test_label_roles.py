"""What a foreign label is at harmonize time: organ / lesion names (core.labels), ``--label-roles`` tables
(io.label_table), an nnU-Net ``dataset.json`` labels table (io.layouts.nnunet), and the split of a multi-label
map into the lesion mask and the organ map (harmonize.load)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS, is_lesion_name, organ_key
from petctfm.harmonize.load import split_label_map
from petctfm.io.label_table import label_role, read_label_roles
from petctfm.io.layouts.nnunet import nnunet_label_roles


@pytest.mark.parametrize("name, key", [
    ("liver", "liver"), ("Liver", "liver"), ("Kidney left", "kidney_left"), ("left kidney", "kidney_left"),
    ("kidney-right", "kidney_right"), ("Lung_Left", "lung_left"), ("urinary bladder", "bladder"),
    ("salivary gland", "salivary_glands"), ("kidney", None), ("lungs", None), ("left right kidney", None),
    ("background", None), ("pancreas", None), ("liver tumor", None),
])
def test_organ_key(name, key):
    assert organ_key(name) == key


def test_lesion_names_and_roles():
    assert all(is_lesion_name(n) for n in ("lesion", "GTVp", "Tumour", "cancer", "lymph node", "Neoplasm"))
    assert not any(is_lesion_name(n) for n in ("liver", "pancreas", "foreground", "background"))
    assert label_role("liver tumor") == "lesion" and label_role("Liver") == "liver"  # organs first, exact
    assert label_role("pancreas") is None
    roles = {"Pancreas": "ignore", "GTV_all": "lesion"}
    assert label_role("pancreas", roles) == "ignore"  # case-insensitive
    assert label_role("gtv all", roles) == "lesion"  # _ and spaces alike
    assert label_role("liver", {"liver": "ignore"}) == "ignore"  # the table beats the name
    assert label_role("liver", roles, infer=False) is None


def test_read_label_roles(tmp_path):
    p = tmp_path / "roles.json"
    p.write_text(json.dumps({"Leber": "Liver", "GTVn": "LESION", "pancreas": "ignore", "LK": "left kidney"}))
    assert read_label_roles(p) == {"Leber": "liver", "GTVn": "lesion", "pancreas": "ignore", "LK": "kidney_left"}
    for doc, needle in (({"x": "pancreas"}, "role 'pancreas'"), ({"x": 3}, "role 3"), ({}, "JSON object"),
                        (["liver"], "JSON object")):
        p.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=needle) as err:
            read_label_roles(p)
        assert str(p) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError):
        read_label_roles(tmp_path / "missing.json")


def _dataset(tmp_path, labels):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"}, "labels": labels}))
    return tmp_path


def test_nnunet_tables_lesion_only_stay_lesion_masks(tmp_path):
    for labels in ({"background": 0, "lesion": 1}, {"background": 0, "foreground": 1}, {"background": 0, "1": 1},
                   {"background": 0, "GTVp": 1, "GTVn": 2}, {"0": "background", "1": "tumor", "2": "metastasis"}):
        assert nnunet_label_roles(_dataset(tmp_path, labels)) is None, labels
    assert nnunet_label_roles(tmp_path / "nowhere") is None  # no dataset.json: as before


def test_nnunet_tables_with_organs(tmp_path):
    got = nnunet_label_roles(_dataset(tmp_path, {"background": 0, "Liver": 1, "left kidney": 2, "tumor": 3}))
    assert got == {1: ["liver"], 2: ["kidney_left"], 3: ["lesion"]}
    # nnU-Net v1 / MSD form {"value": "name"}; a lone organ label is an organ
    assert nnunet_label_roles(_dataset(tmp_path, {"0": "background", "1": "liver", "2": "cancer"})) == \
        {1: ["liver"], 2: ["lesion"]}
    assert nnunet_label_roles(_dataset(tmp_path, {"background": 0, "spleen": 1})) == {1: ["spleen"]}
    # regions: a value in the liver region and the tumor region is both
    assert nnunet_label_roles(_dataset(tmp_path, {"background": 0, "liver": [1, 2], "tumor": [2]})) == \
        {1: ["liver"], 2: ["liver", "lesion"]}
    # explicit roles: ignore a label, name an unknown one
    assert nnunet_label_roles(_dataset(tmp_path, {"background": 0, "liver": 1, "pancreas": 2, "GTV": 3}),
                              {"pancreas": "ignore"}) == {1: ["liver"], 2: [], 3: ["lesion"]}
    assert nnunet_label_roles(_dataset(tmp_path, {"background": 0, "Leber": 1}), {"Leber": "liver"}) == {1: ["liver"]}


@pytest.mark.parametrize("labels, needle", [
    ({"background": 0, "liver": 1, "pancreas": 2, "duodenum": 3}, "label 'pancreas' (value 2) is neither"),
    ({"background": 0, "liver": 1, "kidney": 2}, "label 'kidney'"),  # a paired organ without its side
    ({"background": 0, "liver": [1, 2], "spleen": [2]}, "value 2 is named as two organs"),
    ({"background": 0, "liver": "one"}, "has value 'one'"),
])
def test_nnunet_table_errors_are_one_line(tmp_path, labels, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")) as err:
        nnunet_label_roles(_dataset(tmp_path, labels))
    assert "dataset.json" in str(err.value) and "\n" not in str(err.value)


def test_split_label_map():
    arr = np.array([[[0, 1, 2, 3, 4]]], np.uint8)  # 1 liver, 2 liver + lesion (region), 3 lesion, 4 ignored
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.0, 3.0, 4.0))
    roles = {1: ["liver"], 2: ["liver", "lesion"], 3: ["lesion"], 4: []}
    lesion, organs = split_label_map(img, roles, "labelsTr/a.nii.gz")
    assert sitk.GetArrayFromImage(lesion).tolist() == [[[0, 0, 1, 1, 0]]]
    liver = ORGAN_LABELS["liver"]
    assert sitk.GetArrayFromImage(organs).tolist() == [[[0, liver, liver, 0, 0]]]
    assert organs.GetSpacing() == lesion.GetSpacing() == (2.0, 3.0, 4.0)
    assert split_label_map(img, {1: ["lesion"], 2: [], 3: [], 4: []}, "x")[1] is None  # no organ named
    with pytest.raises(InputError, match=r"labelsTr/a.nii.gz: label value 4 is not in dataset.json"):
        split_label_map(img, {1: ["liver"], 2: ["lesion"], 3: []}, "labelsTr/a.nii.gz")
