"""End-to-end harmonization of tiny analytic phantoms: geometry, volumes, layouts, bad input, privacy, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.data import format as fmt
from petctfm.harmonize.discover import discover, shard
from petctfm.harmonize.pipeline import process_case
from petctfm.synth.dicom import write_dicom_case
from petctfm.io.images import write_image
from petctfm.synth.layouts import write_autopet_case

from harmonize_phantoms import IDENTIFIERS, LESION_R, synth_case, write_meta_csv

OPTS = {"spacing": (4.0, 4.0, 4.0), "thumbnails": False}
LPS_FLIPPED = (1, 0, 0, 0, -1, 0, 0, 0, -1)  # y and z axes reversed (left-handed storage)
RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)


def _run_one(root: Path, out: Path, opts=OPTS, fmt_name="auto"):
    cases = discover([str(root)], fmt_name)
    results = [process_case(c, str(out), opts) for c in cases]
    return cases, results


def _load(out: Path, case_id: str):
    return fmt.load_case(out, case_id, mmap=False)


def test_lps_and_ras_storage_harmonize_identically(tmp_path):
    for name, direction in (("lps", (1, 0, 0, 0, 1, 0, 0, 0, 1)), ("ras", RAS), ("flip", LPS_FLIPPED)):
        write_autopet_case(synth_case("P0", pet_direction=direction), tmp_path / name)
    arrays = {}
    for name in ("lps", "ras", "flip"):
        cases, res = _run_one(tmp_path / name, tmp_path / f"out_{name}")
        assert res[0]["status"] == "done", res
        arrays[name] = _load(tmp_path / f"out_{name}", cases[0].case_id)
    ref = arrays["lps"]
    for name in ("ras", "flip"):
        np.testing.assert_allclose(arrays[name]["image"], ref["image"], atol=1e-4)
        np.testing.assert_array_equal(arrays[name]["label"], ref["label"])
        np.testing.assert_allclose(arrays[name]["meta"]["affine"], ref["meta"]["affine"], atol=1e-6)
    # RAS: the lesion (LPS x = -20 mm, i.e. patient's right) lies at RAS x = +20 mm
    aff = np.asarray(ref["meta"]["affine"])
    idx = np.argwhere(ref["label"] > 0).mean(axis=0)
    ras = aff[:3, :3] @ idx + aff[:3, 3]
    np.testing.assert_allclose(ras, [20.0, -5.0, -10.0], atol=2.0)
    assert ref["image"].dtype == np.float32 and ref["image"].shape[0] == 2
    assert ref["image"][1].min() >= -1000 and ref["image"][1].max() <= 1000


@pytest.mark.parametrize("pet_spacing", [(4.0, 4.0, 4.0), (2.7, 2.7, 3.3)])
def test_lesion_volume_preserved(tmp_path, pet_spacing):
    case = synth_case("P1", pet_spacing=pet_spacing)
    write_autopet_case(case, tmp_path / "in")
    cases, res = _run_one(tmp_path / "in", tmp_path / "out", {"spacing": (2.0, 2.0, 3.0), "thumbnails": False})
    meta = _load(tmp_path / "out", cases[0].case_id)["meta"]
    src_ml = float(sitk.GetArrayViewFromImage(case.seg).sum()) * np.prod(pet_spacing) / 1000
    sphere_ml = 4 / 3 * np.pi * LESION_R**3 / 1000
    assert meta["stats"]["lesion_volume_ml"] == pytest.approx(src_ml, rel=0.05)
    assert meta["stats"]["lesion_volume_ml"] == pytest.approx(sphere_ml, rel=0.10)
    assert meta["stats"]["lesion_count"] == 1
    assert meta["stats"]["liver_suv_mean"] == pytest.approx(2.2, abs=0.15)


def test_dicom_autopet_nnunet_same_arrays(tmp_path):
    case = synth_case("P2", pet_direction=LPS_FLIPPED)
    write_autopet_case(case, tmp_path / "autopet")
    write_dicom_case(case, tmp_path / "dicom", seed=0)
    nn = tmp_path / "nnunet"  # channel order reversed on purpose: names decide
    write_image(case.suv, nn / "imagesTr" / "P2_0000.nii.gz")
    write_image(case.ctres, nn / "imagesTr" / "P2_0001.nii.gz")
    write_image(case.seg, nn / "labelsTr" / "P2.nii.gz")
    (nn / "dataset.json").write_text(json.dumps({"channel_names": {"0": "PET", "1": "CT"}, "labels": {},
                                                 "file_ending": ".nii.gz"}))
    out = {}
    for name in ("autopet", "dicom", "nnunet"):
        cases, res = _run_one(tmp_path / name, tmp_path / f"o_{name}")
        assert cases[0].fmt == name and res[0]["status"] == "done", res
        out[name] = _load(tmp_path / f"o_{name}", cases[0].case_id)
    a, d = out["autopet"], out["dicom"]
    assert a["image"].shape == d["image"].shape
    np.testing.assert_allclose(d["image"][0], a["image"][0], atol=0.01 * a["image"][0].max())  # SUV from tags
    np.testing.assert_allclose(d["image"][1], a["image"][1], atol=1.0)
    assert (d["label"] != a["label"]).mean() < 1e-3 and d["label"].sum() > 0
    assert d["meta"]["tracer"] == "fdg" and d["meta"]["sex"] == "F" and d["meta"]["weight_kg"] == 80.0
    n = out["nnunet"]  # CT came resampled to the PET grid: same physical content, crop may differ slightly
    assert n["meta"]["stats"]["suv_max"] == pytest.approx(a["meta"]["stats"]["suv_max"], rel=0.02)
    assert n["meta"]["stats"]["lesion_volume_ml"] == pytest.approx(a["meta"]["stats"]["lesion_volume_ml"], rel=0.05)


def _bad_autopet_root(root: Path) -> dict[str, str]:
    """One good case and one case per bad-input kind; returns folder -> expected reason fragment."""
    good = synth_case("GOOD_A")
    write_autopet_case(good, root)
    expected = {}
    c = synth_case("CORRUPT")
    write_autopet_case(c, root)
    data = (root / "CORRUPT" / "SUV.nii.gz").read_bytes()
    (root / "CORRUPT" / "SUV.nii.gz").write_bytes(data[: len(data) // 2])
    expected["CORRUPT"] = "cannot read image"
    write_autopet_case(synth_case("NOCT"), root)
    (root / "NOCT" / "CT.nii.gz").unlink()
    (root / "NOCT" / "CTres.nii.gz").unlink()
    expected["NOCT"] = "missing modality"
    write_autopet_case(synth_case("NOSUV"), root)
    (root / "NOSUV" / "SUV.nii.gz").unlink()
    expected["NOSUV"] = "missing SUV tags"
    far = synth_case("NOOVERLAP", ct_center=(0.0, 0.0, 900.0))
    write_autopet_case(far, root)
    (root / "NOOVERLAP" / "CTres.nii.gz").unlink()
    expected["NOOVERLAP"] = "no PET/CT overlap"
    return expected


def _pairs_root(root: Path) -> dict[str, str]:
    """Plain pairs (naming heuristic): a good MHA/NRRD pair and a NIfTI pair with NaN in the PET (read by
    nibabel: ITK 5's NIfTI reader alone would have turned the NaN into 0)."""
    good = synth_case("GOOD_P")
    write_image(good.suv, root / "p1_suv.mha")
    write_image(good.ct, root / "p1_ct.nrrd")
    write_image(good.seg, root / "p1_seg.mha")
    nan = synth_case("NANPET")
    arr = sitk.GetArrayFromImage(nan.suv)
    arr[3, 4, 5] = np.nan
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(nan.suv)
    write_image(img, root / "nanpet" / "x_suv.nii.gz")
    write_image(nan.ct, root / "nanpet" / "x_ct.nii.gz")
    return {"nanpet/x": "NaN"}


def _bad_dicom_root(root: Path) -> dict[str, str]:
    write_dicom_case(synth_case("GOOD_D"), root, seed=1)
    write_dicom_case(synth_case("NOWEIGHT"), root, seed=2)
    for p in sorted((root / "NOWEIGHT" / "PT").iterdir()):
        ds = pydicom.dcmread(p)
        del ds.PatientWeight
        ds.save_as(p)
    write_dicom_case(synth_case("TRUNC"), root, seed=3)
    victim = sorted((root / "TRUNC" / "PT").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:2000])
    return {"NOWEIGHT": "missing DICOM tag PatientWeight", "TRUNC": "PT"}


def test_bad_inputs_quarantined_good_cases_complete_and_no_identifiers(tmp_path, capsys):
    ap, dc, pp = tmp_path / "autopet_site", tmp_path / "dicom_site", tmp_path / "pairs_site"
    expected = {**_bad_autopet_root(ap), **_bad_dicom_root(dc), **_pairs_root(pp)}
    out = tmp_path / "ds"
    mapping = tmp_path / "private" / "map.csv"
    rc = main(["harmonize", "--in", str(ap), "--in", str(dc), "--in", str(pp), "--out", str(out), "--spacing", "4", "4", "4",
               "--workers", "1", "--write-mapping", str(mapping)])
    assert rc == 5  # ExitCode.PARTIAL: good cases done, the bad ones quarantined
    rows = list(csv.DictReader(open(out / "quarantine.csv")))
    reasons = {r["source_path"]: r["reason"] for r in rows}
    assert set(reasons) == set(expected)
    for folder, fragment in expected.items():
        assert fragment in reasons[folder], (folder, reasons[folder])
        assert "\n" not in reasons[folder] and str(tmp_path) not in reasons[folder]
    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(r["source_path"] for r in manifest) == ["GOOD_A", "GOOD_D", "p1"]
    for r in manifest:
        case = fmt.load_case(out, r["case_id"])
        assert case["image"].shape[0] == 2 and case["label"].sum() > 0 and r["lesion_count"] == "1"
        assert r["case_id"].startswith("hc_") and (out / "qa" / "thumbs" / f"{r['case_id']}.png").is_file()
    info = fmt.load_dataset_info(out)
    assert info["num_cases"] == 3 and info["orientation"] == "RAS" and info["spacing"] == [4.0, 4.0, 4.0]
    assert set(info["normalization"]) == {"PET", "CT"} and info["normalization"]["CT"]["clip"] == [-1000.0, 1000.0]
    assert (out / "qa" / "qa.csv").is_file() and (out / "qa" / "site_histograms.png").is_file()
    # mapping only where asked, outside the dataset
    assert mapping.is_file() and "GOOD_D" in mapping.read_text()
    # no identifier from the DICOM headers / metadata anywhere in the output bytes
    needles = [v.encode() for v in IDENTIFIERS.values()] + [b"ZZTESTNAME", b"QWERTY", b"1944-08-17"]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle.lower() not in data.lower(), (path, needle)
    # resume: a second run skips the finished cases and rewrites nothing
    stamp = {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("image.npy")}
    capsys.readouterr()
    rc2 = main(["harmonize", "--in", str(ap), "--in", str(dc), "--in", str(pp), "--out", str(out), "--spacing", "4", "4", "4",
                "--no-thumbnails"])
    assert rc2 == 5  # ExitCode.PARTIAL again: the quarantined cases are retried and fail again
    assert "3 already done" in capsys.readouterr().out
    assert stamp == {p: p.stat().st_mtime_ns for p in (out / "cases").rglob("image.npy")}


def test_mapping_inside_dataset_refused(tmp_path):
    write_autopet_case(synth_case("M0"), tmp_path / "in")
    assert main(["harmonize", "--in", str(tmp_path / "in"), "--out", str(tmp_path / "ds"),
                 "--write-mapping", str(tmp_path / "ds" / "map.csv")]) == 3
    assert not (tmp_path / "ds" / "cases").exists()


def test_shards_partition_and_finalize(tmp_path):
    root = tmp_path / "in"
    cases = [synth_case(f"S{i}", lesion=i % 2 == 0) for i in range(4)]
    for i, c in enumerate(cases):
        c.meta["patient_id"] = "PAT0" if i < 2 else f"PAT{i}"  # S0 and S1: two studies of one patient
        write_autopet_case(c, root)
    write_meta_csv(cases, tmp_path / "metadata.csv")
    found = discover([str(root)])
    parts = [shard(found, f"{i}/3") for i in range(3)]
    ids = [c.case_id for p in parts for c in p]
    assert sorted(ids) == sorted(c.case_id for c in found) and len(set(ids)) == len(found)
    out = tmp_path / "ds"
    for i in range(2):
        assert main(["harmonize", "--in", str(root), "--out", str(out), "--shard", f"{i}/2", "--spacing", "6", "6", "6",
                     "--no-thumbnails"]) == 0
    assert not (out / "splits.json").exists()
    assert main(["harmonize", "--finalize", str(out)]) == 0
    splits = fmt.load_splits(out)
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(c.case_id for c in found)
    metas = {m["source_path"]: m for m in (json.loads(p.read_text()) for p in out.rglob("meta.json"))}
    assert metas["S0"]["patient"] == metas["S1"]["patient"] != metas["S2"]["patient"]
    split_of = {cid: s for s in ("train", "val", "test") for cid in splits[s]}
    assert split_of[metas["S0"]["case_id"]] == split_of[metas["S1"]["case_id"]]
    assert metas["S0"]["site"] == "phantom_site" and metas["S0"]["diagnosis"] == "lymphoma"
    assert "patient_id" not in metas["S0"] and "PAT0" not in json.dumps(metas)
    with pytest.raises(Exception, match="shard='3/3': must be i/n"):
        shard(found, "3/3")


def test_several_studies_per_patient_grouped(tmp_path):
    # autoPET nested layout ROOT/<patient>/<study>/
    for study in ("s1", "s2"):
        write_autopet_case(synth_case(study), tmp_path / "nested" / "PATIENT_A")
    write_autopet_case(synth_case("s3"), tmp_path / "nested" / "PATIENT_B")
    found = discover([str(tmp_path / "nested")])
    assert [c.fmt for c in found] == ["autopet"] * 3
    patients = {c.rel: c.patient for c in found}
    assert patients["PATIENT_A/s1"] == patients["PATIENT_A/s2"] != patients["PATIENT_B/s3"]
    # DICOM: two studies (different StudyInstanceUID) with one PatientID, one in a folder of its own
    for cid in ("st1", "st2"):
        write_dicom_case(synth_case(cid), tmp_path / "dcm", seed=0)
    found = discover([str(tmp_path / "dcm")])
    assert len(found) == 2 and found[0].patient == found[1].patient and found[0].case_id != found[1].case_id
    assert all(c.error is None and len(c.files["PT"]) == 54 for c in found)


def test_suv_from_pet_bqml_and_metadata(tmp_path):
    case = synth_case("BQ0")
    write_autopet_case(case, tmp_path / "ap")
    (tmp_path / "ap" / "BQ0" / "SUV.nii.gz").unlink()
    write_meta_csv([case], tmp_path / "metadata.csv")  # weight, injected activity, uptake -> SUV
    from petctfm.harmonize.load import load_case_images

    images, _ = load_case_images(discover([str(tmp_path / "ap")])[0])
    np.testing.assert_allclose(sitk.GetArrayFromImage(images["suv"]), sitk.GetArrayFromImage(case.suv), rtol=1e-4,
                               atol=1e-4)


def test_worker_pool_writes_all_cases(tmp_path):
    for i in range(2):
        write_autopet_case(synth_case(f"W{i}"), tmp_path / "in")
    out = tmp_path / "ds"
    assert main(["harmonize", "--in", str(tmp_path / "in"), "--out", str(out), "--workers", "2",
                 "--spacing", "6", "6", "6", "--no-thumbnails"]) == 0
    assert fmt.load_dataset_info(out)["num_cases"] == 2 and len(list((out / "cases").iterdir())) == 2


def test_nifti_copies_match_arrays_and_affine(tmp_path):
    import nibabel as nib

    write_autopet_case(synth_case("N0"), tmp_path / "in")
    out = tmp_path / "ds"
    assert main(["harmonize", "--in", str(tmp_path / "in"), "--out", str(out), "--spacing", "6", "6", "6",
                 "--no-thumbnails", "--nifti"]) == 0
    (case_id,) = [p.name for p in (out / "cases").iterdir()]
    case = _load(out, case_id)
    folder = out / "nifti" / case_id
    suv, ct, seg = (nib.load(folder / f"{n}.nii.gz") for n in ("SUV", "CTres", "SEG"))
    np.testing.assert_array_equal(np.asarray(suv.dataobj), case["image"][0])
    np.testing.assert_array_equal(np.asarray(ct.dataobj), case["image"][1])
    np.testing.assert_array_equal(np.asarray(seg.dataobj), case["label"])
    np.testing.assert_allclose(suv.affine, np.asarray(case["meta"]["affine"]), atol=1e-4)
    assert nib.aff2axcodes(seg.affine) == ("R", "A", "S")
    # the copy is an autoPET-like case folder that `petctfm view` reads
    assert main(["view", str(folder), "--out", str(tmp_path / "v.png")]) == 0
