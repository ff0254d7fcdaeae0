"""``petctfm predict``: output geometry (LPS- and RAS-stored input), lesion table vs hand computations,
DICOM in -> DICOM-SEG out, folder mode with a corrupt case, resumability, one-line errors, CLI."""

from __future__ import annotations

import csv
import json
import os
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.core.errors import InputError, UsageError
from petctfm.predict import predictor as pipeline
from petctfm.predict.outputs import quantify
from petctfm.predict.predictor import Predictor, predict_one
from petctfm.predict.sources import source_from_files

MODEL_SPACING = [8.0, 8.0, 8.0]  # the harmonize spacing recorded by the tiny_model fixture (conftest.py)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.load(tiny_model, device="cpu", overlap=0.25)


# ------------------------------------------------------------------------------------------------ geometry


def test_mask_has_input_pet_geometry_lps_and_ras(synth_tiny, predictor, tmp_path):
    case = synth_tiny / "autopet" / "PETCT_0000"
    lps_pet, ct = case / "SUV.nii.gz", case / "CT.nii.gz"
    ras = nib.as_closest_canonical(nib.load(lps_pet))  # same image stored in RAS+ voxel order
    ras_pet = tmp_path / "ras_SUV.nii.gz"
    nib.save(ras, ras_pet)
    lps_aff = nib.load(lps_pet).affine
    assert np.sign(lps_aff[0, 0]) == -1 and np.sign(ras.affine[0, 0]) == 1  # really two storage orders
    masks = {}
    for name, pet in (("lps", lps_pet), ("ras", ras_pet)):
        summary = predict_one(source_from_files(pet, ct), predictor, tmp_path / name, report=False)
        out = nib.load(tmp_path / name / "lesions.nii.gz")
        src = nib.load(pet)
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
        assert out.get_data_dtype() == np.uint8
        masks[name] = nib.as_closest_canonical(out).get_fdata()
        assert summary["input"]["pet_shape"] == list(src.shape)
        assert set(summary["timings_s"]) >= {"read", "preprocess", "inference", "postprocess", "write", "total"}
        assert summary["preprocessing"]["spacing_mm"] == MODEL_SPACING
        assert summary["preprocessing"]["settings_from"] == "checkpoint"
    # both storage orders harmonize to the same RAS grid: the same lesions come back
    assert masks["lps"].sum() > 0
    assert np.mean(masks["lps"] == masks["ras"]) > 0.999


# ------------------------------------------------------------------------------------------------ lesion table


def _kernel_count(spacing, radius):
    """Voxels of a sphere of ``radius`` mm (centre inside) on ``spacing``, by brute-force enumeration."""
    n = 0
    for i in range(-5, 6):
        for j in range(-5, 6):
            for k in range(-5, 6):
                if (i * spacing[0]) ** 2 + (j * spacing[1]) ** 2 + (k * spacing[2]) ** 2 <= radius ** 2 * (1 + 1e-9):
                    n += 1
    return n


def test_lesion_table_against_hand_computations():
    sp = (2.0, 2.0, 3.0)
    shape = (40, 40, 30)
    suv = np.full(shape, 1.0, np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[10:20, 10:20, 5:15] = 1  # lesion A: 10 x 10 x 10 voxels, SUV 6 with one hot voxel of 30
    suv[10:20, 10:20, 5:15] = 6.0
    suv[15, 15, 10] = 30.0
    mask[30:32, 30:33, 20:22] = 1  # lesion B: 2 x 3 x 2 voxels, SUV 4
    suv[30:32, 30:33, 20:22] = 4.0
    pet = sitk.GetImageFromArray(np.transpose(suv, (2, 1, 0)).copy())
    pet.SetSpacing(sp)
    pet.SetOrigin((100.0, -50.0, 20.0))
    pet.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS-ordered storage: LPS x = origin - 2 * i
    harmonized = {"image": np.full((2, 8, 8, 8), -1000.0, np.float32), "affine": np.diag([4.0, 4.0, 4.0, 1.0])}
    res = quantify(mask, pet, None, harmonized)
    a, b = res["table"]
    vox = 2 * 2 * 3 / 1000.0
    assert a["n_voxels"] == 1000 and math.isclose(a["volume_ml"], 1000 * vox)
    assert b["n_voxels"] == 12 and math.isclose(b["volume_ml"], 12 * vox)
    assert a["suv_max"] == 30.0 and b["suv_max"] == 4.0
    mean_a = (999 * 6.0 + 30.0) / 1000
    assert math.isclose(a["suv_mean"], mean_a, rel_tol=1e-6)
    assert math.isclose(a["tlg"], mean_a * 1000 * vox, rel_tol=1e-6)
    assert math.isclose(b["tlg"], 4.0 * 12 * vox, rel_tol=1e-6)
    n = _kernel_count(sp, (3 * 1000 / (4 * math.pi)) ** (1 / 3))  # 1 ml sphere, r = 6.2035 mm
    assert math.isclose(a["suv_peak"], (6.0 * (n - 1) + 30.0) / n, rel_tol=1e-6)  # sphere inside lesion
    # lesion B (2x3x2) is smaller than the sphere: its best centre still sees background voxels
    assert 1.0 < b["suv_peak"] < 4.0
    assert math.isclose(a["centroid_x_mm"], 100.0 - 2.0 * 14.5) and math.isclose(a["centroid_y_mm"], -50.0 - 2.0 * 14.5)
    assert math.isclose(a["centroid_z_mm"], 20.0 + 3.0 * 9.5)
    totals = res["totals"]
    assert totals["lesion_count"] == 2 and math.isclose(totals["tmtv_ml"], 1012 * vox)
    assert math.isclose(totals["total_tlg"], a["tlg"] + b["tlg"]) and totals["suv_max"] == 30.0
    assert a["region"] == "unknown"  # no lungs in this CT: the body-region model abstains


def test_end_to_end_table_with_known_lesions(predictor, tmp_path, monkeypatch):
    """A phantom on the model's 8 mm lattice (resampling to and from the harmonized grid is exact) and a
    stand-in network that marks SUV > 3: the written mask and table must be exactly the known lesions."""
    shape = (30, 24, 40)
    g = np.indices(shape).astype(float)
    body = ((g[0] - 15) / 12) ** 2 + ((g[1] - 12) / 9) ** 2 <= 1
    suv = np.where(body, 1.0, 0.0).astype(np.float32)
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    truth[10:13, 10:13, 10:13] = 1
    suv[10:13, 10:13, 10:13] = 8.0
    truth[20, 12, 30] = 1
    suv[20, 12, 30] = 5.0
    paths = {}
    for name, arr in (("SUV", suv), ("CT", ct)):
        img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)).copy())
        img.SetSpacing(MODEL_SPACING)
        img.SetOrigin((-116.0, -92.0, -4.0))  # voxel faces on multiples of 8 mm
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(img, str(paths[name]))
    norm = predictor.config["preprocessing"]["normalization"]["PET"]
    cut = (3.0 - norm["mean"]) / norm["std"]
    monkeypatch.setattr(pipeline, "infer", lambda x, bg, p: (x[0] > cut).astype(np.float32))
    s = predict_one(source_from_files(paths["SUV"], paths["CT"]), predictor, tmp_path / "out", report=False)
    mask = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "lesions.nii.gz"))), (2, 1, 0))
    np.testing.assert_array_equal(mask, truth)
    rows = _read_csv(tmp_path / "out" / "lesions.csv")
    vox = 0.512
    assert [int(r["n_voxels"]) for r in rows] == [27, 1]
    assert math.isclose(float(rows[0]["volume_ml"]), 27 * vox, rel_tol=1e-4)
    assert float(rows[0]["suv_max"]) == 8.0 and float(rows[1]["suv_max"]) == 5.0
    assert math.isclose(float(rows[0]["tlg"]), 8.0 * 27 * vox, rel_tol=1e-4)
    assert math.isclose(float(rows[0]["centroid_z_mm"]), -4.0 + 8.0 * 11, abs_tol=1e-3)
    assert s["lesion_count"] == 2 and math.isclose(s["tmtv_ml"], 28 * vox, rel_tol=1e-4)
    assert math.isclose(s["total_tlg"], (8.0 * 27 + 5.0) * vox, rel_tol=1e-4)


# ------------------------------------------------------------------------------------------------ DICOM


def test_cli_dicom_in_dicom_seg_out(synth_tiny, tiny_model, tmp_path):
    import highdicom as hd
    import pydicom

    from petctfm.io.dicom_read import read_seg_on, read_volume

    study = synth_tiny / "dicom" / "PETCT_0001"
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model), "--pet", str(study / "PT"), "--ct", str(study / "CT"),
               "--out", str(out), "--overlap", "0.25", "--fast", "--device", "cpu"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {"lesions.nii.gz", "lesions.seg.dcm", "lesions.csv", "summary.json",
                                              "report.png"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["kind"] == "dicom" and summary["preprocessing"]["fast"] is True
    assert summary["preprocessing"]["spacing_mm"] == [16.0, 16.0, 8.0]
    pt_files = sorted(str(p.relative_to(study)) for p in (study / "PT").iterdir())
    pt_series = pydicom.dcmread(study / pt_files[0], stop_before_pixels=True)
    seg = hd.seg.segread(out / "lesions.seg.dcm")
    assert {str(s) for _, s, _ in seg.get_source_image_uids()} == {str(pt_series.SeriesInstanceUID)}
    assert seg.FrameOfReferenceUID == pt_series.FrameOfReferenceUID
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    # the SEG decodes, on the PT frames, to exactly lesions.nii.gz
    suv, pt = read_volume(study, pt_files)
    back = sitk.GetArrayFromImage(read_seg_on(out, "lesions.seg.dcm", pt, suv).lesion)
    nii = sitk.ReadImage(str(out / "lesions.nii.gz"))
    np.testing.assert_array_equal(back, sitk.GetArrayFromImage(nii))
    assert nii.GetSize() == suv.GetSize()
    np.testing.assert_allclose(nii.GetDirection(), suv.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(nii.GetOrigin(), suv.GetOrigin(), atol=1e-3)


# ------------------------------------------------------------------------------------------------ folder


def test_folder_mode_corrupt_case_listed_others_complete_and_resume(synth_tiny, tiny_model, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(synth_tiny / "autopet", src)
    bad = src / "PETCT_BAD"
    bad.mkdir()
    data = (src / "PETCT_0000" / "SUV.nii.gz").read_bytes()
    (bad / "SUV.nii.gz").write_bytes(data[: len(data) // 3])  # truncated gzip
    shutil.copy(src / "PETCT_0000" / "CT.nii.gz", bad / "CT.nii.gz")
    out = tmp_path / "out"
    argv = ["predict", "--model", str(tiny_model), "--in", str(src), "--out", str(out), "--overlap", "0",
            "--no-progress", "--no-report", "--device", "cpu"]
    assert main(argv) == 5  # ExitCode.PARTIAL
    failed = _read_csv(out / "failed.csv")
    assert [r["case"] for r in failed] == ["PETCT_BAD"]
    assert "SUV.nii.gz" in failed[0]["reason"] and "\n" not in failed[0]["reason"]
    for cid in ("PETCT_0000", "PETCT_0001"):
        s = json.loads((out / cid / "summary.json").read_text())
        assert s["case"] == cid and (out / cid / "lesions.nii.gz").is_file()
        assert nib.load(out / cid / "lesions.nii.gz").shape == nib.load(src / cid / "SUV.nii.gz").shape
        # organ labels in the autoPET layout name the region of lesions inside an organ
        rows = _read_csv(out / cid / "lesions.csv")
        assert all(r["region"] for r in rows)
    assert {r["case"] for r in _read_csv(out / "cases.csv")} == {"PETCT_0000", "PETCT_0001"}
    stamp = (out / "PETCT_0000" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 5  # resumed: finished cases are skipped, the bad one fails again
    assert "2 already done" in capsys.readouterr().out
    assert (out / "PETCT_0000" / "summary.json").stat().st_mtime_ns == stamp
    only_bad = tmp_path / "only_bad"
    (only_bad / "PETCT_BAD").mkdir(parents=True)
    for f in bad.iterdir():
        shutil.copy(f, only_bad / "PETCT_BAD" / f.name)
    assert main([*argv[:4], str(only_bad), "--out", str(tmp_path / "out2"), *argv[7:]]) == 3  # all failed: ExitCode.INPUT


def test_batch_list_mixes_nifti_and_dicom_and_quarantines_a_bad_row(synth_tiny, tiny_model, tmp_path):
    """--batch LIST.csv: paths relative to the list, DICOM folders and NIfTI files, a missing file fails alone."""
    lst = tmp_path / "lists" / "cases.csv"
    lst.parent.mkdir()
    rel = os.path.relpath(synth_tiny, lst.parent)
    lst.write_text("case_id,pet,ct\n"
                   f"nifti_case,{rel}/autopet/PETCT_0000/SUV.nii.gz,{rel}/autopet/PETCT_0000/CT.nii.gz\n"
                   f"dicom case,{rel}/dicom/PETCT_0001/PT,{rel}/dicom/PETCT_0001/CT\n"
                   ",,\n"
                   f"missing,{rel}/autopet/PETCT_0000/nope.nii.gz,{rel}/autopet/PETCT_0000/CT.nii.gz\n")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model), "--batch", str(lst), "--out", str(out), "--overlap", "0",
                 "--no-progress", "--no-report", "--device", "cpu"]) == 5  # ExitCode.PARTIAL
    assert [r["case"] for r in _read_csv(out / "failed.csv")] == ["missing"]
    assert "nope.nii.gz" in _read_csv(out / "failed.csv")[0]["reason"]
    assert nib.load(out / "nifti_case" / "lesions.nii.gz").shape == \
        nib.load(synth_tiny / "autopet" / "PETCT_0000" / "SUV.nii.gz").shape
    assert (out / "dicom_case" / "lesions.seg.dcm").is_file()  # DICOM in -> DICOM-SEG out
    assert {r["case"] for r in _read_csv(out / "cases.csv")} == {"nifti_case", "dicom_case"}


def test_batch_list_errors_name_the_list(tmp_path, tiny_model, capsys):
    from petctfm.predict.sources import sources_from_list

    with pytest.raises(InputError, match=r"nolist\.csv: batch list not found"):
        sources_from_list(tmp_path / "nolist.csv")
    (tmp_path / "bad.csv").write_text("suv,ctres\na,b\n")
    with pytest.raises(InputError, match=r"bad\.csv: batch list needs a header row with columns pet and ct"):
        sources_from_list(tmp_path / "bad.csv")
    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "dup.csv").write_text("case_id,pet,ct\nx,a.nii.gz,a.nii.gz\nx,a.nii.gz,a.nii.gz\n")
    with pytest.raises(InputError, match=r"dup\.csv:3: case_id 'x' is used twice"):
        sources_from_list(tmp_path / "dup.csv")
    err = _one_line_error(capsys, ["predict", "--model", str(tiny_model), "--batch", "x.csv", "--in", "y",
                                   "--out", str(tmp_path)], code=2)  # a usage error
    assert "give one input: --in or --batch" in err


# ------------------------------------------------------------------------------------------------ errors


def _one_line_error(capsys, argv, code: int = 3) -> str:
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_one_line_errors(synth_tiny, tiny_model, tmp_path, capsys):
    case = synth_tiny / "autopet" / "PETCT_0000"
    pet, ct = str(case / "SUV.nii.gz"), str(case / "CT.nii.gz")
    base = ["predict", "--out", str(tmp_path / "o"), "--device", "cpu", "--no-report"]
    err = _one_line_error(capsys, [*base, "--model", str(tiny_model), "--pet", str(tmp_path / "nope.nii.gz"), "--ct", ct])
    assert "nope.nii.gz" in err and "not found" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    err = _one_line_error(capsys, [*base, "--model", str(junk), "--pet", pet, "--ct", ct])
    assert "junk.safetensors" in err and "safetensors" in err
    from safetensors.torch import save_file
    import torch

    foreign = tmp_path / "foreign.safetensors"  # a valid safetensors file that is no petctfm model
    save_file({"w": torch.zeros(2)}, str(foreign))
    err = _one_line_error(capsys, [*base, "--model", str(foreign), "--pet", pet, "--ct", ct])
    assert "foreign.safetensors" in err and "petctfm" in err
    # NaN in the PET, a 4D image, PET and CT without overlap
    img = sitk.ReadImage(pet)
    arr = sitk.GetArrayFromImage(img)
    arr[5, 5, 5] = np.nan
    nan_img = sitk.GetImageFromArray(arr)
    nan_img.CopyInformation(img)
    sitk.WriteImage(nan_img, str(tmp_path / "nan_pet.nii.gz"))  # NIfTI: ITK 5's own reader would read a 0
    err = _one_line_error(capsys, [*base, "--model", str(tiny_model), "--pet", str(tmp_path / "nan_pet.nii.gz"),
                                   "--ct", ct])
    assert "nan_pet.nii.gz" in err and "NaN" in err
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "pet4d.nii.gz")
    err = _one_line_error(capsys, [*base, "--model", str(tiny_model), "--pet", str(tmp_path / "pet4d.nii.gz"),
                                   "--ct", ct])
    assert "pet4d.nii.gz" in err and "3D" in err
    far = sitk.ReadImage(ct)
    far.SetOrigin(tuple(o + 5000.0 for o in far.GetOrigin()))
    sitk.WriteImage(far, str(tmp_path / "far_ct.nii.gz"))
    err = _one_line_error(capsys, [*base, "--model", str(tiny_model), "--pet", pet, "--ct", str(tmp_path / "far_ct.nii.gz")])
    assert "SUV.nii.gz" in err and "overlap" in err
    with pytest.raises(UsageError, match=r"^tta=3: must be one of 0, 4, 8$"):  # before the model is read
        Predictor.load(tmp_path / "no_model", device="cpu", tta=3)


def test_flip_tta_makes_the_prediction_flip_equivariant(predictor):
    """One window (volume = patch): the 8-flip average is exactly equivariant to flips, one pass is not."""
    from dataclasses import replace

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (2, 16, 16, 16)).astype(np.float32)
    bg = np.zeros(2, np.float32)
    flipped = np.ascontiguousarray(np.flip(x, (1, 3)))
    plain = replace(predictor, tta=0)
    a, b = pipeline.infer(x, bg, plain), pipeline.infer(flipped, bg, plain)
    assert np.abs(np.flip(b, (0, 2)) - a).max() > 1e-4  # the network alone is not flip-equivariant
    tta = replace(predictor, tta=8)
    a, b = pipeline.infer(x, bg, tta), pipeline.infer(flipped, bg, tta)
    np.testing.assert_allclose(np.flip(b, (0, 2)), a, atol=1e-5)
    assert a.shape == (16, 16, 16) and 0.0 <= a.min() and a.max() <= 1.0


def test_folder_layouts_give_readable_case_names(synth_tiny):
    from petctfm.predict.sources import sources_from_folder

    for layout in ("autopet", "nnunet", "dicom"):
        cases = sources_from_folder(synth_tiny / layout)
        assert sorted(c.case_id for c in cases) == ["PETCT_0000", "PETCT_0001"], layout
        assert all(not c.error for c in cases)
    with pytest.raises(InputError, match="not found"):
        sources_from_folder(synth_tiny / "nope")


def test_regions_from_organ_labels_and_lung_landmarks():
    from petctfm.predict.outputs import body_region, lung_span
    from petctfm.core.labels import ORGAN_LABELS

    # harmonized CT (X, Y, Z) at 4 mm, z from 0 to 396 mm: body cylinder, air-filled lungs for z in [200, 300]
    shape = (40, 30, 100)
    g = np.indices(shape)
    body = ((g[0] - 20) / 18.0) ** 2 + ((g[1] - 15) / 13.0) ** 2 <= 1
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    lungs = body & (np.abs(g[0] - 20) > 3) & (np.abs(g[0] - 20) < 14) & (np.abs(g[1] - 15) < 8)
    lungs &= (g[2] >= 50) & (g[2] <= 75)
    ct[lungs] = -850.0
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    assert lung_span(ct, affine) == (200.0, 300.0)
    span = (200.0, 300.0)  # L = 100 mm
    assert [body_region(z, span) for z in (350, 250, 150, 100, 30)] == [
        "head/neck", "thorax", "abdomen", "pelvis", "lower limbs"]
    assert lung_span(np.where(body, 40.0, -1000.0).astype(np.float32), affine) is None  # no lungs: abstain
    # organ labels win when an organ holds >= half of the lesion; otherwise the body-region model
    pet = sitk.GetImageFromArray(np.ones(shape[::-1], np.float32))
    pet.SetSpacing((4.0, 4.0, 4.0))
    mask = np.zeros(shape, np.uint8)
    mask[10:14, 10:14, 60:64] = 1  # in the liver block below
    mask[30:32, 20:22, 20:22] = 1  # outside every organ, z ~ 82 mm: pelvis by the lung model
    organs = np.zeros(shape, np.uint8)
    organs[8:16, 8:16, 55:70] = ORGAN_LABELS["liver"]
    org = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(organs, (2, 1, 0))))
    org.CopyInformation(pet)
    res = quantify(mask, pet, org, {"image": np.stack([ct, ct]), "affine": affine})
    a, b = res["table"]
    assert (a["region"], a["region_source"]) == ("liver", "organ labels")
    assert (b["region"], b["region_source"]) == ("pelvis", "body model")
    assert res["lungs_z_mm"] == (200.0, 300.0)
