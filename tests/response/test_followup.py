"""Follow-up phantoms (``petctfm synth --followup``), ``petctfm experiment response`` and the study-date check of
``petctfm response`` (docs/response.md). One cohort of 4 tiny pairs (CMR, PMR, SMD, PMD once each)
is shared by the module; the experiment on it registers 4 pairs (5-15 s each on this VM)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.synth.followup import CATEGORIES, INSTANCES, STUDY_JSON, TRUTH_JSON

N_PAIRS = 4


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from petctfm.cli.main import main

    out = tmp_path_factory.mktemp("fu")
    assert main(["synth", "--out", str(out), "--cases", str(N_PAIRS), "--seed", "0", "--size", "tiny",
                 "--followup", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def truth_experiment(pairs, tmp_path_factory):
    from petctfm.experiments.response.run import run_response_experiment

    out = tmp_path_factory.mktemp("exp")
    return out, run_response_experiment(out, pairs, masks="truth", bootstrap=200)


def test_synth_followup_writes_pairs_and_truth(pairs):
    from petctfm.synth.generator import generate_case

    root = pairs / "pairs"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(folders) == N_PAIRS
    with open(root / "pairs.csv", newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert {r["pair_id"] for r in listed} == {p.name for p in folders}
    assert [r["category"] for r in listed] == [CATEGORIES[k % 4] for k in range(N_PAIRS)]  # by pair number
    cats = []
    for pair in folders:
        t = json.loads((pair / TRUTH_JSON).read_text())
        cats.append(t["category"])
        for role in ("baseline", "followup"):
            for name in ("SUV.nii.gz", "CT.nii.gz", "CTres.nii.gz", "PET.nii.gz", "SEG.nii.gz", "ORGANS.nii.gz",
                         INSTANCES, STUDY_JSON):
                assert (pair / role / name).is_file(), (pair.name, role, name)
        b, f = t["baseline"], t["followup"]
        assert f["study_date"] > b["study_date"] and f["interval_days"] >= 42
        assert json.loads((pair / "followup" / STUDY_JSON).read_text())["study_date"] == f["study_date"]
        assert f["weight_kg"] != b["weight_kg"] and f["height_cm"] == b["height_cm"]
        assert 10.0 <= f["pose"]["shift_mm"] <= 60.0
        # the instance maps hold exactly the truth ids, inside SEG
        ids_b = {les["id"] for les in t["lesions"] if les["status"] in ("matched", "disappeared")}
        ids_f = {les["id"] for les in t["lesions"] if les["status"] in ("matched", "new")}
        for role, ids in (("baseline", ids_b), ("followup", ids_f)):
            inst, seg = _arr(pair / role / INSTANCES), _arr(pair / role / "SEG.nii.gz")
            assert set(np.unique(inst[inst > 0]).tolist()) == ids
            assert np.array_equal(inst > 0, seg > 0)
        # the drawn category with its margin on the planted values
        h = t["hottest"]
        if t["category"] == "CMR":
            assert not ids_f and h["change_percent"] == -100.0
        elif t["category"] == "PMR":
            assert h["change_percent"] <= -50.0 and h["change_absolute"] <= -1.5
        elif t["category"] == "SMD":
            assert abs(h["change_percent"]) <= 10.0 and t["counts"]["new"] == 0
        else:
            assert t["counts"]["new"] >= 1 or h["change_percent"] >= 60.0
        # ... and on what the images show: PERCIST on the measured SULpeaks reads the category, with margins
        mb, mf = t["measured"]["baseline"], t["measured"]["followup"]
        assert set(mb["sul_peak"]) == {str(i) for i in ids_b} and set(mf["sul_peak"]) == {str(i) for i in ids_f}
        hb = max(mb["sul_peak"].values())
        assert hb >= 1.2 * mb["threshold"]
        hf = max(mf["sul_peak"].values()) if mf["sul_peak"] else None
        if t["category"] == "PMR":
            assert 100 * (hf - hb) / hb <= -40.0 and hf - hb <= -1.0
        elif t["category"] == "SMD":
            assert abs(100 * (hf - hb) / hb) <= 20.0
        elif t["category"] == "PMD" and not t["counts"]["new"]:
            assert 100 * (hf - hb) / hb >= 40.0 and hf - hb >= 1.0
        if t["category"] != "CMR":
            assert hf >= 1.5 * mf["liver_sul_mean"]
    assert sorted(cats) == sorted(CATEGORIES * (N_PAIRS // 4))
    # the baseline is the normal case of its index (same voxels as generate_case)
    first = json.loads((folders[0] / TRUTH_JSON).read_text())
    case = generate_case(int(first["baseline"]["case_id"].split("_")[1]), 0, size="tiny")
    assert np.array_equal(_arr(folders[0] / "baseline" / "SEG.nii.gz"), sitk.GetArrayFromImage(case.seg))
    assert np.allclose(_arr(folders[0] / "baseline" / "SUV.nii.gz"), sitk.GetArrayFromImage(case.suv))


def test_synth_followup_refuses_formats(tmp_path, capsys):
    from petctfm.cli.main import main

    rc = main(["synth", "--out", str(tmp_path / "x"), "--cases", "1", "--seed", "0", "--followup",
               "--formats", "dicom"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--formats" in err[0]


def test_experiment_with_truth_masks_is_exact(truth_experiment, pairs):
    out, s = truth_experiment
    assert s["n_pairs"] == N_PAIRS and not s["quarantined"]
    assert s["category_accuracy"] == 1.0
    assert np.array_equal(np.array(s["confusion"]["counts"])[:, :4], np.eye(4, dtype=int) * (N_PAIRS // 4))
    assert s["matching_f1"] >= 0.9 and s["matching"]["fn"] <= 1
    assert s["matching"]["shift_at_least_30mm"]["n_pairs"] >= 1
    saved = json.loads((out / "summary.json").read_text())
    assert saved["category_accuracy"] == 1.0 and saved["n_pairs"] == N_PAIRS
    for name in ("pairs.csv", "results.md", "response_experiment.png", "quarantine.csv"):
        assert (out / name).is_file()
    assert (out / "response_experiment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the generator measured what response reads with the truth masks: the same SULpeaks and thresholds
    for pair in sorted((out / "pairs").iterdir()):
        got = json.loads((pair / "response.json").read_text())["percist"]
        truth = json.loads((pairs / "pairs" / pair.name / TRUTH_JSON).read_text())
        mb, mf = truth["measured"]["baseline"], truth["measured"]["followup"]
        assert got["baseline_sulpeak"] == pytest.approx(max(mb["sul_peak"].values()), abs=2e-3)
        assert got["baseline_threshold"] == pytest.approx(mb["threshold"], abs=2e-3)
        assert got["followup_threshold"] == pytest.approx(mf["threshold"], abs=2e-3)
        if mf["sul_peak"]:
            assert got["followup_sulpeak"] == pytest.approx(max(mf["sul_peak"].values()), abs=2e-3)
    # the per-lesion change is measured on matched lesions and near the planted change for most of them
    err = s["sulpeak_change_error_percent_points"]["per_matched_lesion"]
    assert err["n"] >= N_PAIRS and err["median_abs"] < 15.0


def test_experiment_quarantines_a_bad_pair_and_goes_on(pairs, tmp_path, capsys):
    from petctfm.cli.main import main

    data = tmp_path / "data"
    good, bad = sorted(p for p in (pairs / "pairs").iterdir() if p.is_dir())[:2]
    shutil.copytree(good, data / good.name)
    shutil.copytree(bad, data / bad.name)
    (data / bad.name / "followup" / "SUV.nii.gz").unlink()
    rc = main(["experiment", "response", "--data", str(data), "--masks", "truth", "--out", str(tmp_path / "e"),
               "--bootstrap", "0"])
    assert rc == 5
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert s["n_pairs"] == 1 and [q["pair"] for q in s["quarantined"]] == [bad.name]
    assert "SUV.nii.gz" in s["quarantined"][0]["reason"] and "\n" not in s["quarantined"][0]["reason"]
    with open(tmp_path / "e" / "quarantine.csv", newline="") as fh:
        assert [r["pair"] for r in csv.DictReader(fh)] == [bad.name]


@pytest.mark.parametrize("args, flag", [(["--masks", "truth", "--model", "x"], "--masks"), ([], "--masks"),
                                        (["--masks", "gt"], "--masks"),
                                        (["--masks", "truth", "--organs", "r"], "--organs")])
def test_experiment_usage_errors(tmp_path, capsys, args, flag):
    from petctfm.cli.main import main

    rc = main(["experiment", "response", "--data", str(tmp_path), "--out", str(tmp_path / "e"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and flag in err[0]
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------------------- study dates


def _study(root, name, date):
    d = root / name
    d.mkdir()
    (d / STUDY_JSON).write_text(json.dumps({"study_date": date}))
    return d


def test_study_dates_from_sidecars_and_summary(tmp_path):
    from petctfm.response.api import check_dates
    from petctfm.response.inputs import study_date

    a, b = _study(tmp_path, "a", "20200105"), _study(tmp_path, "b", "2020-03-01")
    assert check_dates(a, b)["interval_days"] == 56
    (b / "SUV.nii.gz").write_bytes(b"")  # only its folder is looked at
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "summary.json").write_text(json.dumps({"input": {"kind": "nifti", "source": str(b / "SUV.nii.gz")}}))
    day, where = study_date(pred)  # predict records none: the sidecar beside the source PET
    assert day.isoformat() == "2020-03-01" and where.endswith(STUDY_JSON)
    (pred / "summary.json").write_text(json.dumps({"input": {"source": "nowhere", "study_date": "20210101"}}))
    assert study_date(pred)[0].isoformat() == "2021-01-01"
    unknown = tmp_path / "u"
    unknown.mkdir()
    assert check_dates(a, unknown) == {"baseline": "2020-01-05", "followup": None, "interval_days": None,
                                       "sources": {"baseline": str(a / STUDY_JSON), "followup": None}}
    same = _study(tmp_path, "same", "20200105")
    assert check_dates(a, same)["interval_days"] == 0  # same day: allowed


def test_response_refuses_swapped_dates(truth_experiment, tmp_path, capsys):
    from petctfm.cli.main import main

    out, s = truth_experiment
    pair = sorted((out / "inputs").iterdir())[0]
    rc = main(["response", "--baseline", str(pair / "followup"), "--followup", str(pair / "baseline"),
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "before the baseline" in err[0] and "swapped" in err[0]
    assert not (tmp_path / "r" / "response.json").exists()
    # the right order is accepted and the dates are recorded
    assert main(["response", "--baseline", str(pair / "baseline"), "--followup", str(pair / "followup"),
                 "--out", str(tmp_path / "ok"), "--no-report"]) == 0
    r = json.loads((tmp_path / "ok" / "response.json").read_text())
    assert r["study_dates"]["interval_days"] > 0


def test_response_refuses_swapped_dicom_study_dates(tmp_path, capsys):
    """DICOM sources: the StudyDate of their files."""
    import pydicom
    from pydicom.dataset import FileMetaDataset

    from petctfm.response.api import check_dates

    preds = []
    for name, date in (("t0", "20220301"), ("t1", "20220101")):
        src = tmp_path / f"{name}_dicom"
        src.mkdir()
        ds = pydicom.Dataset()
        ds.StudyDate, ds.Modality, ds.SOPClassUID = date, "PT", "1.2.840.10008.5.1.4.1.1.128"
        ds.SOPInstanceUID = f"1.2.3.4.{len(preds) + 1}"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(str(src / "1.dcm"), enforce_file_format=True)
        pred = tmp_path / name
        pred.mkdir()
        (pred / "summary.json").write_text(json.dumps({"input": {"kind": "dicom", "source": str(src)}}))
        preds.append(pred)
    from petctfm.core.errors import InputError

    with pytest.raises(InputError, match="2022-01-01 is before the baseline's 2022-03-01"):
        check_dates(*preds)


# ------------------------------------------------------------------------------------------- liver reference


def test_liver_reference_next_to_a_liver_lesion_is_not_inflated():
    """A hot lesion touching the liver's right lobe: predict's readout (organ_table) places the 3 cm sphere away
    from it, so PERCIST's threshold stays 1.5 x liver + 2 SD of clean liver and the lesion is measurable."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.predict.organs import organ_table
    from petctfm.evaluate.percist import Reference, measurability_threshold, percist

    sp = 4.0
    shape = (60, 50, 50)
    x, y, z = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * sp for n in shape], indexing="ij")
    liver = ((x + 20) / 80) ** 2 + (y / 60) ** 2 + (z / 60) ** 2 <= 1  # x from -100 to +60 mm
    lesion = ((x + 70) ** 2 + y ** 2 + z ** 2) <= 14 ** 2  # in the lobe at -x, against the liver's edge
    suv = np.where(liver, 2.0, 0.8).astype(np.float32)
    suv[lesion] = 12.0
    organs = np.where(liver, ORGAN_LABELS["liver"], 0).astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(suv, (2, 1, 0))))
    img.SetSpacing((sp,) * 3)
    rows = {r["organ"]: r for r in organ_table(organs, lesion, img, {"liver": ORGAN_LABELS["liver"]})}
    ref = rows["liver_reference"]
    assert ref["n_voxels"] > 0 and ref["suv_mean"] == pytest.approx(2.0, abs=1e-6) and ref["suv_sd"] < 1e-6
    from scipy import ndimage

    from petctfm.evaluate.organs import reference_masks

    sphere = reference_masks(organs, lesion, (sp,) * 3, labels={"liver": ORGAN_LABELS["liver"]})["liver_reference"]
    gap = ndimage.distance_transform_edt(~lesion, sampling=(sp,) * 3)[sphere].min()
    assert gap >= 10.0  # PERCIST's sphere keeps clear of the lesion it touches the lobe of
    thr, _ = measurability_threshold(Reference("liver", ref["suv_mean"], ref["suv_sd"]), None)
    assert thr == pytest.approx(3.0, abs=1e-4)
    assert percist(12.0, 8.0, thr, thr, 2.0).category == "PMR"
