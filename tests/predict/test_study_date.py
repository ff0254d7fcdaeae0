"""``petctfm predict`` records the study date and time in ``summary.json`` (``input.study_date``, ``input.study_time``,
``input.study_date_source``; :mod:`petctfm.io.study_date`, docs/predict.md): from the DICOM StudyDate / StudyTime,
from an autoPET study folder's ``study.json``, else null."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest


def _predict(args, capsys):
    from petctfm.cli.main import main

    rc = main(["predict", *map(str, args), "--no-report", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err


def test_dicom_study_date_and_time_recorded(synth_tiny, tiny_model, tmp_path, capsys):
    study = synth_tiny / "dicom" / "PETCT_0001"
    pt = pydicom.dcmread(next((study / "PT").iterdir()), stop_before_pixels=True)
    d, t = str(pt.StudyDate), str(pt.StudyTime)
    _predict(["--model", tiny_model, "--pet", study / "PT", "--ct", study / "CT", "--out", tmp_path / "p"], capsys)
    inp = json.loads((tmp_path / "p" / "summary.json").read_text())["input"]
    assert inp["study_date"] == f"{d[:4]}-{d[4:6]}-{d[6:8]}"
    assert inp["study_time"] == f"{t[:2]}:{t[2:4]}:{t[4:6]}"
    assert inp["study_date_source"] == "DICOM StudyDate"


def test_nifti_study_date_from_sidecar_else_null(synth_tiny, tiny_model, tmp_path, capsys):
    case = tmp_path / "PETCT_0000"
    shutil.copytree(synth_tiny / "autopet" / "PETCT_0000", case)
    _predict(["--model", tiny_model, "--pet", case / "SUV.nii.gz", "--ct", case / "CT.nii.gz",
              "--out", tmp_path / "none"], capsys)
    inp = json.loads((tmp_path / "none" / "summary.json").read_text())["input"]
    assert inp["study_date"] is None and inp["study_time"] is None and inp["study_date_source"] is None
    (case / "study.json").write_text(json.dumps({"study_date": "20210304",
                                                 "acquisition_time": "2021-03-04T09:41:05"}))
    _predict(["--model", tiny_model, "--in", tmp_path, "--out", tmp_path / "folder"], capsys)
    inp = json.loads(next((tmp_path / "folder").glob("*/summary.json")).read_text())["input"]
    assert (inp["study_date"], inp["study_time"]) == ("2021-03-04", "09:41:05")
    assert inp["study_date_source"].endswith("study.json")


@pytest.mark.parametrize("value, expected", [("20200105", "2020-01-05"), ("2020-01-05", "2020-01-05"),
                                             ("2020-01-05T08:00:00", "2020-01-05"), ("", None), ("2020", None),
                                             ("20201340", None)])
def test_parse_date(value, expected):
    from petctfm.io.study_date import parse_date

    got = parse_date(value)
    assert (None if got is None else got.isoformat()) == expected


@pytest.mark.parametrize("value, expected", [("093015", "09:30:15"), ("093015.123", "09:30:15"), ("0930", "09:30:00"),
                                             ("09:30:15", "09:30:15"), ("2021-03-04T09:41:05", "09:41:05"),
                                             ("", None), ("256000", None), ("9", None)])
def test_parse_time(value, expected):
    from petctfm.io.study_date import parse_time

    got = parse_time(value)
    assert (None if got is None else got.isoformat()) == expected


def test_dicom_date_falls_back_to_acquisition_date():
    from petctfm.io.study_date import of_dicom

    ds = pydicom.Dataset()
    ds.AcquisitionDate, ds.AcquisitionTime = "20190708", "101112"
    got = of_dicom(ds)
    assert (got.date.isoformat(), got.time.isoformat(), got.source) == ("2019-07-08", "10:11:12",
                                                                       "DICOM AcquisitionDate")
    assert of_dicom(pydicom.Dataset()).to_json() == {"study_date": None, "study_time": None, "study_date_source": None}
