"""Organ labels at harmonize time from an nnU-Net multi-label dataset and from a DICOM-SEG with organ segments
(issue 24): organs -> organs.npy (ORGAN_LABELS values, the grid of the lesion label), lesions -> label.npy;
unknown nnU-Net labels refused (exit 3) unless --label-roles names them; unknown SEG segments ignored with a
QA flag; lesion-only inputs harmonize as before."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data import format as fmt
from petctfm.io.images import write_image
from petctfm.synth.generator import generate_case
from petctfm.synth.layouts import write_metadata_csv, write_nnunet_dataset_json
from petctfm.synth.writers import write_case

SPACING = ["--spacing", "4", "4", "4", "--no-thumbnails"]
# a foreign nnU-Net numbering and spelling of some of petctfm's organs; the others are background there
NNUNET_ORGANS = {"Liver": "liver", "left kidney": "kidney_left", "Kidney_Right": "kidney_right", "spleen": "spleen",
                 "urinary_bladder": "bladder", "heart": "heart"}
LESION_VALUE = 20  # after the organs (1..6)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """One tiny phantom with lesions (seed 1, case 0) in the nnU-Net and DICOM layouts, plus its arrays."""
    root = tmp_path_factory.mktemp("organsrc")
    case = generate_case(0, seed=1, size="tiny")
    write_metadata_csv([write_case(case, root, formats=["nnunet", "dicom"])], root / "metadata.csv")
    write_nnunet_dataset_json(root / "nnunet")
    return root, case


def _one_case(out: Path) -> dict:
    (row,) = list(csv.DictReader(open(out / "manifest.csv")))
    return {**fmt.load_case(out, row["case_id"], mmap=False), "row": row,
            "has_organs_file": (fmt.case_dir(out, row["case_id"]) / "organs.npy").is_file()}


def _expected_organs(case, names) -> np.ndarray:
    """The phantom's organ map (SimpleITK array order) with only ``names`` kept and the lesion voxels cleared."""
    organs = sitk.GetArrayFromImage(case.organs)
    keep = np.isin(organs, [ORGAN_LABELS[n] for n in names]) & (sitk.GetArrayFromImage(case.seg) == 0)
    return np.where(keep, organs, 0).astype(np.uint8)


def _multilabel_nnunet(src: Path, dst: Path, case, table: dict[str, str], extra: dict[str, int] | None = None) -> Path:
    """A copy of the nnU-Net dataset whose label is a multi-label map: the organs of ``table`` (foreign name ->
    petctfm organ) numbered 1.., the lesion LESION_VALUE (over the organs), ``extra`` {name: petctfm organ value}
    written under their own names after the lesion."""
    shutil.copytree(src, dst)
    organs, seg = sitk.GetArrayFromImage(case.organs), sitk.GetArrayFromImage(case.seg)
    lab = np.zeros(organs.shape, np.uint8)
    labels = {"background": 0}
    for i, (name, organ) in enumerate(table.items(), start=1):
        lab[organs == ORGAN_LABELS[organ]] = i
        labels[name] = i
    for j, (name, value) in enumerate((extra or {}).items(), start=LESION_VALUE + 1):
        lab[organs == value] = j
        labels[name] = j
    lab[seg > 0] = LESION_VALUE
    labels["lesion"] = LESION_VALUE
    img = sitk.GetImageFromArray(lab)
    img.CopyInformation(case.seg)
    (label_file,) = (dst / "labelsTr").iterdir()
    write_image(img, label_file)
    info = json.loads((dst / "dataset.json").read_text())
    info["labels"] = labels
    (dst / "dataset.json").write_text(json.dumps(info))
    return dst


def _pairs(src: Path, dst: Path, case, organs: np.ndarray | None) -> Path:
    """The same PET, CT (CTres) and lesion mask as pairs files (the layout whose organ file is read as is), with
    an organ map ``organs`` (array order) as ``p1_organs``."""
    dst.mkdir()
    cid = case.case_id
    shutil.copy(src / "imagesTr" / f"{cid}_0001.nii.gz", dst / "p1_suv.nii.gz")
    shutil.copy(src / "imagesTr" / f"{cid}_0000.nii.gz", dst / "p1_ct.nii.gz")
    shutil.copy(src / "labelsTr" / f"{cid}.nii.gz", dst / "p1_seg.nii.gz")
    if organs is not None:
        img = sitk.GetImageFromArray(organs)
        img.CopyInformation(case.seg)
        write_image(img, dst / "p1_organs.nii.gz")
    return dst


def test_nnunet_multilabel_organs_and_lesion_equal_the_organ_file_path(synth, tmp_path, capsys):
    root, case = synth
    data = _multilabel_nnunet(root / "nnunet", tmp_path / "nn_organs", case, NNUNET_ORGANS)
    pairs = _pairs(root / "nnunet", tmp_path / "pairs", case, _expected_organs(case, NNUNET_ORGANS.values()))
    assert main(["harmonize", "--in", str(data), "--out", str(tmp_path / "a"), *SPACING]) == 0, capsys.readouterr().err
    assert main(["harmonize", "--in", str(pairs), "--out", str(tmp_path / "b"), *SPACING]) == 0
    a, b = _one_case(tmp_path / "a"), _one_case(tmp_path / "b")
    assert a["has_organs_file"] and a["meta"]["has_organs"]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])  # the lesion value alone is the lesion mask
    np.testing.assert_array_equal(a["organs"], b["organs"])  # the organs, renumbered to petctfm's values
    assert a["label"].sum() > 0
    got = set(np.unique(a["organs"]).tolist())
    assert got == {0} | {ORGAN_LABELS[n] for n in NNUNET_ORGANS.values()}
    assert not (a["organs"][a["label"] > 0]).any()  # one value per voxel in nnU-Net: a lesion voxel is no organ
    info = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert info["organ_labels"] == ORGAN_LABELS
    assert "binarized" not in a["row"]["qa_flags"] and float(a["row"]["liver_suv_mean"]) > 0


@pytest.mark.slow
def test_organ_finetune_trains_on_an_nnunet_organ_dataset(synth, tmp_path, capsys):
    """``finetune --task organs`` takes the harmonized nnU-Net organ maps as they are (one tiny step)."""
    import yaml

    root, case = synth
    data = _multilabel_nnunet(root / "nnunet", tmp_path / "nn_organs", case, NNUNET_ORGANS)
    assert main(["harmonize", "--in", str(data), "--out", str(tmp_path / "ds"), *SPACING]) == 0
    run = tmp_path / "run"
    rc = main(["finetune", "--data", str(tmp_path / "ds"), "--out", str(run), "--init", "scratch", "--task", "organs",
               "--max-steps", "1", "--figure-every", "0", "--checkpoint-every", "1", "--preset", "tiny", "--patch",
               "16", "--no-progress", "--seed", "1"])
    assert rc == 0, capsys.readouterr().err
    task = yaml.safe_load((run / "config.yaml").read_text())["task"]["task"]
    assert task["name"] == "organs" and task["classes"]["liver"] == ORGAN_LABELS["liver"]


def test_unknown_nnunet_label_is_one_line_exit_3_unless_mapped(synth, tmp_path, capsys):
    root, case = synth
    # the phantom's bone under a name petctfm does not know
    data = _multilabel_nnunet(root / "nnunet", tmp_path / "nn_unknown", case, NNUNET_ORGANS,
                              extra={"pancreas": ORGAN_LABELS["bone"]})
    capsys.readouterr()
    assert main(["harmonize", "--in", str(data), "--out", str(tmp_path / "x"), *SPACING]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.json" in err[0] and "'pancreas'" in err[0] and "--label-roles" in err[0]
    assert not (tmp_path / "x" / "cases").exists()  # refused before any case
    roles = tmp_path / "roles.json"
    roles.write_text(json.dumps({"pancreas": "ignore"}))
    assert main(["harmonize", "--in", str(data), "--out", str(tmp_path / "y"), *SPACING, "--label-roles",
                 str(roles)]) == 0
    y = _one_case(tmp_path / "y")
    assert ORGAN_LABELS["bone"] not in np.unique(y["organs"]).tolist()
    # ... or as an organ: the bone voxels of the phantom (those not under a lesion) become petctfm's bone
    roles.write_text(json.dumps({"pancreas": "Bone"}))
    assert main(["harmonize", "--in", str(data), "--out", str(tmp_path / "z"), *SPACING, "--label-roles",
                 str(roles)]) == 0
    z = _one_case(tmp_path / "z")
    assert (z["organs"] == ORGAN_LABELS["bone"]).sum() > 0
    np.testing.assert_array_equal(z["label"], y["label"])
    for bad, needle in (({"pancreas": "pancreas"}, "role 'pancreas'"), ([], "JSON object")):
        roles.write_text(json.dumps(bad))
        capsys.readouterr()
        assert main(["harmonize", "--in", str(data), "--out", str(tmp_path / "w"), *SPACING, "--label-roles",
                     str(roles)]) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "roles.json" in err[0] and needle in err[0]


def test_lesion_only_nnunet_harmonizes_as_before(synth, tmp_path):
    """The synth lesion-only dataset (labels {background, lesion}) and a two-lesion-label table give the lesion
    mask of the pairs layout (which never reads a label table), and no organ map."""
    root, case = synth
    pairs = _pairs(root / "nnunet", tmp_path / "pairs", case, None)
    two = tmp_path / "nn_two"
    shutil.copytree(root / "nnunet", two)
    (label_file,) = (two / "labelsTr").iterdir()
    seg = sitk.GetArrayFromImage(case.seg)
    middle = np.median(np.nonzero(seg)[0])  # lesion voxels below / above their median slice: GTVp / GTVn
    split = np.where(seg > 0, np.where(np.arange(seg.shape[0])[:, None, None] < middle, 1, 2), 0)
    img = sitk.GetImageFromArray(split.astype(np.uint8))
    img.CopyInformation(case.seg)
    write_image(img, label_file)
    info = json.loads((two / "dataset.json").read_text())
    info["labels"] = {"background": 0, "GTVp": 1, "GTVn": 2}
    (two / "dataset.json").write_text(json.dumps(info))
    for name, src in (("lesion", root / "nnunet"), ("pairs", pairs), ("two", two)):
        assert main(["harmonize", "--in", str(src), "--out", str(tmp_path / name), *SPACING]) == 0
    ref, one, both = (_one_case(tmp_path / n) for n in ("pairs", "lesion", "two"))
    assert ref["label"].sum() > 0 and len(np.unique(split)) == 3
    for got in (one, both):
        np.testing.assert_array_equal(got["image"], ref["image"])
        np.testing.assert_array_equal(got["label"], ref["label"])
        assert not got["has_organs_file"] and not got["meta"]["has_organs"]
    assert "binarized" in both["row"]["qa_flags"]  # values 1 and 2 are both the lesion, flagged as before
    assert "organ_labels" not in json.loads((tmp_path / "lesion" / "dataset.json").read_text())


# ----------------------------------------------------------------------------------------------- DICOM-SEG


def _organ_seg_study(src: Path, dst: Path, case) -> dict[str, int]:
    """A copy of the DICOM study whose SEG holds the lesion, six organ segments and one segment of unknown codes
    (the phantom's bone as a generic "Organ" labelled "Vertebra"); returns {segment label: map value}."""
    from petctfm.io.dicom_read import read_volume
    from petctfm.io.dicom_seg import SegmentSpec, build_seg, save_seg

    shutil.copytree(src, dst)
    pt_files = sorted(str(p.relative_to(dst)) for p in (dst / "PT").iterdir())
    suv, pts = read_volume(dst, pt_files)

    def on_pt(img):  # the phantom's PET-grid map on the PT series' frames [slice, rows, cols]
        return sitk.GetArrayFromImage(sitk.Resample(img, suv, sitk.Transform(), sitk.sitkNearestNeighbor, 0))

    organs, seg = on_pt(case.organs), on_pt(case.seg)
    specs = [SegmentSpec(ORGAN_LABELS[k], label, "organ") for k, label in
             (("liver", "Liver"), ("spleen", "Spleen"), ("kidney_left", "Kidney left"),
              ("kidney_right", "Kidney right"), ("lung_left", "Lung left"), ("heart", "Heart"))]
    specs.append(SegmentSpec(ORGAN_LABELS["bone"], "Vertebra", "organ"))  # no code in the table: generic Organ
    frames = np.where(np.isin(organs, [s.value for s in specs]), organs, 0).astype(np.uint8)
    frames[seg > 0] = 200
    specs.insert(0, SegmentSpec(200, "Lesion", "lesion"))
    (seg_file,) = (dst / "SEG").iterdir()
    seg_file.unlink()
    save_seg(build_seg(frames, pts, series_number=4, series_description="organs and lesions",
                       content_description="t", manufacturer_model_name="test", software_versions="0",
                       segments=specs), dst / "SEG" / "seg.dcm")
    return {s.label: s.value for s in specs}


def test_dicom_seg_organ_and_lesion_segments(synth, tmp_path, capsys):
    from petctfm.harmonize.discover import discover
    from petctfm.harmonize.load import load_case_images
    from petctfm.harmonize.pipeline import harmonize_images

    root, case = synth
    plain = tmp_path / "plain"
    shutil.copytree(root / "dicom", plain)
    organ = tmp_path / "organ" / "dicom"
    values = _organ_seg_study(root / "dicom" / case.case_id, organ / case.case_id, case)
    for name, src in (("before", plain), ("after", organ)):
        assert main(["harmonize", "--in", str(src), "--out", str(tmp_path / name), *SPACING]) == 0, \
            capsys.readouterr().err
    before, after = _one_case(tmp_path / "before"), _one_case(tmp_path / "after")
    assert before["has_organs_file"] and after["has_organs_file"]  # petctfm synth's SEG holds every organ too
    np.testing.assert_array_equal(after["image"], before["image"])
    np.testing.assert_array_equal(after["label"], before["label"])  # the lesion segment is the lesion mask
    # the organ map is the phantom's organs (known segments only, lesion voxels cleared), through the
    # ORGANS path of the pipeline: the same images with that map given as the organ image
    (src_case,) = discover([str(plain)])
    images, _ = load_case_images(src_case)
    kept = [ORGAN_LABELS[k] for k in ("liver", "spleen", "kidney_left", "kidney_right", "lung_left", "heart")]
    truth = sitk.Resample(case.organs, images["suv"], sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    lesion = sitk.GetArrayFromImage(images["seg"])
    arr = sitk.GetArrayFromImage(truth)
    expected = sitk.GetImageFromArray(np.where(np.isin(arr, kept) & (lesion == 0), arr, 0).astype(np.uint8))
    expected.CopyInformation(images["suv"])
    h = harmonize_images({**images, "organs": expected}, (4.0, 4.0, 4.0))
    np.testing.assert_array_equal(after["organs"], h["organs"])
    # the synthetic SEG's organ segments are the phantom's whole organ map (lesions overlap their organ)
    np.testing.assert_array_equal(before["organs"], harmonize_images({**images, "organs": truth},
                                                                     (4.0, 4.0, 4.0))["organs"])
    assert set(np.unique(after["organs"]).tolist()) == {0, *kept}
    assert values["Vertebra"] == ORGAN_LABELS["bone"] and ORGAN_LABELS["bone"] not in after["organs"]
    flags = after["row"]["qa_flags"]
    assert "'Vertebra'" in flags and "ignored" in flags and after["row"]["qa_status"] == "warn"


def test_segment_roles_from_codes_laterality_and_labels():
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    from petctfm.io.dicom_seg import segment_role

    def item(label, category, kind, modifier=None):
        ds = Dataset()
        ds.SegmentLabel = label
        for attr, code in (("SegmentedPropertyCategoryCodeSequence", category),
                           ("SegmentedPropertyTypeCodeSequence", kind),
                           ("SegmentedPropertyTypeModifierCodeSequence", modifier)):
            if code is not None:
                c = Dataset()
                c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = str(code.value), code.scheme_designator, code.meaning
                setattr(ds, attr, [c])
        return ds

    anat, abnormal = codes.SCT.AnatomicalStructure, codes.SCT.MorphologicallyAbnormalStructure
    assert segment_role(item("x", abnormal, codes.SCT.Neoplasm)) == "lesion"
    assert segment_role(item("node 3", anat, codes.SCT.LymphNode)) == "lesion"
    assert segment_role(item("Liver", anat, codes.SCT.Liver)) == "liver"
    assert segment_role(item("seg 2", anat, codes.SCT.Kidney, codes.SCT.Right)) == "kidney_right"  # DICOM modifier
    assert segment_role(item("Lung left", anat, codes.SCT.Lung)) == "lung_left"  # petctfm writer: side in label
    assert segment_role(item("Kidney", anat, codes.SCT.Kidney)) is None  # no side: unknown
    assert segment_role(item("Vertebra", anat, codes.SCT.Organ)) is None
    assert segment_role(item("liver", anat, codes.SCT.Organ)) == "liver"  # generic code: the label decides
    assert segment_role(item("Vertebra", anat, codes.SCT.Organ), {"vertebra": "bone"}) == "bone"
    assert segment_role(item("Liver", anat, codes.SCT.Liver), {"Liver": "ignore"}) == "ignore"


def test_predict_organ_seg_reads_back_as_the_organ_map(synth, tmp_path):
    """The organ DICOM-SEG petctfm writes (predict's organs.seg.dcm, all 12 organs) reads back to the same map:
    one SNOMED CT code table for writing and reading."""
    from petctfm.io.dicom_read import read_seg_on, read_volume
    from petctfm.io.images import array_xyz
    from petctfm.predict.organs import write_organ_seg

    root, case = synth
    study = root / "dicom" / case.case_id
    pt_files = sorted(str(p.relative_to(study)) for p in (study / "PT").iterdir())
    suv, pts = read_volume(study, pt_files)
    organs = sitk.Resample(case.organs, suv, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    classes = {k: v for k, v in ORGAN_LABELS.items() if v}
    write_organ_seg(array_xyz(organs), classes, pts, tmp_path / "organs.seg.dcm", "test")
    back = read_seg_on(tmp_path, "organs.seg.dcm", pts, suv)
    assert back.ignored == [] and not sitk.GetArrayFromImage(back.lesion).any()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.organs), sitk.GetArrayFromImage(organs))
    assert len(np.unique(sitk.GetArrayFromImage(organs))) == 13
