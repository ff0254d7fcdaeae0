"""``petctfm predict --dicomweb`` against a real Orthanc (orthanc_server.py): synthetic DICOM studies uploaded,
queried, predicted and pushed; the SEG read back and compared with the mask; a second push stores nothing; each
failure case (no PT, PT without a matching CT, missing instances) one line while the batch goes on; credentials."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from orthanc_server import require_orthanc

require_orthanc()

from petctfm.cli.main import main  # noqa: E402
from petctfm.io.dicomweb import connect, short_uid  # noqa: E402

FAST = ["--fast", "--overlap", "0", "--device", "cpu", "--no-progress"]


def _datasets(study: Path, *modalities: str) -> list:
    return [pydicom.dcmread(p) for m in modalities for p in sorted((study / m).iterdir())]


def _variant(datasets: list, *, new_for: bool = False, shift_ct_h: float = 0.0) -> list:
    """A copy of ``datasets`` as another study: new study, series and SOP instance UIDs (and, with ``new_for``, a
    new frame of reference for the CT; ``shift_ct_h``: the CT's series / acquisition time moved)."""
    from pydicom.uid import generate_uid

    study, series, fors = generate_uid(), {}, {}
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series.setdefault(ds.SeriesInstanceUID, generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if ds.Modality == "CT":
            if new_for:
                ds.FrameOfReferenceUID = fors.setdefault(ds.FrameOfReferenceUID, generate_uid())
            if shift_ct_h:
                t = dt.datetime.strptime(ds.SeriesDate + ds.SeriesTime.split(".")[0], "%Y%m%d%H%M%S")
                t += dt.timedelta(hours=shift_ct_h)
                for what in ("Series", "Acquisition", "Content"):
                    if f"{what}Date" in ds:
                        setattr(ds, f"{what}Date", t.strftime("%Y%m%d"))
                    if f"{what}Time" in ds:
                        setattr(ds, f"{what}Time", t.strftime("%H%M%S"))
        out.append(ds)
    return out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _petctfm_series(web, study: str) -> dict[str, int]:
    """How many series of each modality petctfm stored in ``study`` (SEG / SR / OT with a petctfm description)."""
    out: dict[str, int] = {}
    for s in web.series(study):
        if s.description.startswith("petctfm"):
            out[s.modality] = out.get(s.modality, 0) + 1
    return out


def test_query_predict_push_read_back_and_push_twice(orthanc, synth_dicom, tiny_model, tmp_path, monkeypatch, capsys):
    import highdicom as hd

    from petctfm.io.dicom_read import read_seg_on, read_volume

    monkeypatch.setenv("PETCTFM_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("PETCTFM_DICOMWEB_PASSWORD", orthanc.password)
    study_dir = synth_dicom / "PETCT_0000"
    web = connect(orthanc.url)
    pt_ds = _datasets(study_dir, "PT")
    web.store(pt_ds + _datasets(study_dir, "CT", "SEG"), "upload")  # the synthetic truth SEG too (MANUAL)
    study = str(pt_ds[0].StudyInstanceUID)
    out = tmp_path / "out"
    argv = ["predict", "--model", str(tiny_model), "--dicomweb", orthanc.url, "--query", "modality=PT",
            "--query", f"date={pt_ds[0].StudyDate}", "--out", str(out), "--push", *FAST]
    assert main(argv) == 0
    text = capsys.readouterr()
    case = out / ("study-" + short_uid(study).split("#")[1])
    summary = json.loads((case / "summary.json").read_text())
    assert "pushed SC, SR, SEG" in text.out
    assert summary["input"]["kind"] == "dicom" and short_uid(study) in summary["input"]["source"]
    # identifiers never reach the output: study, series, patient
    for secret in (study, str(pt_ds[0].SeriesInstanceUID), str(pt_ds[0].PatientID), str(pt_ds[0].PatientName)):
        assert secret not in text.out + text.err and secret not in json.dumps(summary)
    assert _petctfm_series(web, study) == {"SEG": 1, "SR": 1, "OT": 1}

    # the SEG read back from Orthanc: the same instance as lesions.seg.dcm, decoding to lesions.nii.gz
    seg_meta = next(s for s in web.series(study) if s.modality == "SEG" and s.description.startswith("petctfm"))
    assert str(pt_ds[0].SeriesInstanceUID) in seg_meta.referenced_series
    (back,) = web.client.retrieve_series(study, seg_meta.uid)
    back.save_as(tmp_path / "back.seg.dcm", enforce_file_format=True)
    local = pydicom.dcmread(case / "lesions.seg.dcm")
    assert back.SOPInstanceUID == local.SOPInstanceUID and back.SeriesInstanceUID == local.SeriesInstanceUID
    pt_files = sorted(str(p.relative_to(study_dir)) for p in (study_dir / "PT").iterdir())
    suv, pt_sorted = read_volume(study_dir, pt_files)
    mask_back = sitk.GetArrayFromImage(read_seg_on(tmp_path, "back.seg.dcm", pt_sorted, suv).lesion)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "lesions.nii.gz")))
    assert mask.any() and mask_back.shape == mask.shape
    np.testing.assert_array_equal(mask_back, mask)
    assert back.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"

    # the SR holds one group per lesion + the totals, numbers equal to lesions.csv / summary.json
    sr_meta = next(s for s in web.series(study) if s.modality == "SR")
    (sr,) = web.client.retrieve_series(study, sr_meta.uid)
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    groups = report.content.get_volumetric_roi_measurement_groups()
    rows = _rows(case / "lesions.csv")
    assert len(groups) == len(rows) + 1 == summary["lesion_count"] + 1
    first = {str(m.name.meaning): m.value for m in groups[0].get_measurements()}
    assert float(first["Metabolic Volume"]) == pytest.approx(float(rows[0]["volume_ml"]), rel=1e-6)
    assert float(first["Total Lesion Glycolysis"]) == pytest.approx(float(rows[0]["tlg"]), rel=1e-6)
    whole = {str(m.name.meaning): m.value for m in groups[-1].get_measurements()}
    assert float(whole["Metabolic Volume"]) == pytest.approx(summary["tmtv_ml"], rel=1e-6)

    # push twice: the result is found, nothing is fetched, predicted or stored again
    stamp = (case / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert "already in the PACS" in capsys.readouterr().out
    assert (case / "summary.json").stat().st_mtime_ns == stamp
    assert _petctfm_series(web, study) == {"SEG": 1, "SR": 1, "OT": 1}
    assert len(orthanc.get(f"/studies/{orthanc.get('/studies')[0]}/instances")) == len(list(study_dir.rglob("*.dcm"))) + 3


def test_failure_cases_one_line_each_and_the_batch_goes_on(orthanc, synth_dicom, tiny_model, tmp_path, capsys,
                                                           monkeypatch):
    import tempfile

    for k, v in orthanc.env.items():
        monkeypatch.setenv(k, v)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where the instance cache goes
    web = connect(orthanc.url)
    a = _datasets(synth_dicom / "PETCT_0000", "PT", "CT")
    b = _datasets(synth_dicom / "PETCT_0001", "PT", "CT")
    good = _variant(b, new_for=True)  # CT with another frame of reference, same time: matched by the window
    no_pt = _variant([d for d in a if d.Modality == "CT"])
    no_ct = _variant(a, new_for=True, shift_ct_h=3)  # another frame of reference, 3 h later
    missing = _variant(a)
    pts = [d for d in missing if d.Modality == "PT"]
    missing.remove(pts[len(pts) // 2])  # one PT slice lost (NumberOfSlices says how many there are)
    studies = []
    for ds in (no_pt, good, no_ct, missing):
        web.store(ds, "upload")
        studies.append(str(ds[0].StudyInstanceUID))
    out = tmp_path / "out"
    argv = ["predict", "--model", str(tiny_model), "--dicomweb", orthanc.url, "--out", str(out), "--no-report", *FAST]
    for s in studies:
        argv += ["--study", s]
    assert main(argv) == 5  # ExitCode.PARTIAL
    printed = capsys.readouterr().out
    failed = {r["case"]: r["reason"] for r in _rows(out / "failed.csv")}
    name = {s: "study-" + short_uid(s).split("#")[1] for s in studies}
    assert set(failed) == {name[studies[0]], name[studies[2]], name[studies[3]]}
    assert "no PT series in the study (series modalities: CT)" in failed[name[studies[0]]]
    assert "without a matching CT (1 CT series, none with its frame of reference or acquired within 30 min)" \
        in failed[name[studies[2]]]
    n = len(pts)
    assert f"{n - 1} of {n} instances (NumberOfSlices) on the server: missing instances" in failed[name[studies[3]]]
    assert (out / name[studies[1]] / "summary.json").is_file()
    assert [r["case"] for r in _rows(out / "cases.csv")] == [name[studies[1]]]
    for case, reason in failed.items():
        assert "\n" not in reason and all(s not in reason for s in studies)
        assert f"failed: {case}: {reason}" in printed
    assert list(temp.iterdir()) == []  # the instance cache was removed


def test_credentials_wrong_missing_and_from_a_file(orthanc, tmp_path, capsys):
    from petctfm.io.dicomweb import DicomWebError

    with pytest.raises(DicomWebError, match=r"QIDO studies failed: HTTP 401 \(credentials missing or wrong\)"):
        connect(orthanc.url, env={}).studies()
    wrong = {"PETCTFM_DICOMWEB_USER": orthanc.user, "PETCTFM_DICOMWEB_PASSWORD": "not-it"}
    with pytest.raises(DicomWebError, match="HTTP 401"):
        connect(orthanc.url, env=wrong).studies()
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"user": orthanc.user, "password": orthanc.password}))
    auth.chmod(0o600)
    assert connect(orthanc.url, auth_file=auth, env={}).studies() == []
    # a password in the URL is refused before anything is sent (exit 2), and never echoed
    url = orthanc.url.replace("http://", f"http://{orthanc.user}:{orthanc.password}@")
    assert main(["predict", "--model", "m", "--dicomweb", url, "--study", "1.2.3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and orthanc.password not in err
