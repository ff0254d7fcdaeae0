"""Identifiers (issue 28, item 4): no DICOM identifier in any field of predict's ``summary.json`` or
``cases.csv`` (nor ``lesions.csv``, ``failed.csv``), but for the study date and time, which ``summary.json``
records on purpose in ``input.study_date`` / ``input.study_time`` only (issue 27: ``response`` orders studies). ``input.fingerprint`` used to hold the raw PT
SeriesInstanceUID; it now holds salted hashes, and a re-run still recognizes its own prediction."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from test_values_and_outputs import run_cli

TAGS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber", "StudyID",
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "InstitutionName",
        "ReferringPhysicianName", "StudyDate", "StudyTime", "DeviceSerialNumber")


def _identifiers(folder: Path) -> set[str]:
    """Every identifying value of every DICOM file under ``folder`` (6 characters or more, and the UIDs'
    last component, which alone would let a UID be found again)."""
    values: set[str] = set()
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        for tag in TAGS:
            v = ds.get(tag)
            if v is None or str(v).strip() == "":
                continue
            for part in ([str(v)] + str(v).replace("^", " ").split()):
                if len(part) >= 6:
                    values.add(part)
            if tag.endswith("UID"):
                values.add(str(v).split(".")[-1]) if len(str(v).split(".")[-1]) >= 6 else None
    return values


def _strings(obj, where="summary"):
    """(path, text) of every leaf of a JSON document (keys too)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{where}.{k}", str(k)
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")
    else:
        yield where, str(obj)


def _no_identifier(fields, ids: set[str]) -> None:
    for where, text in fields:
        low = text.lower()
        for v in ids:
            assert v.lower() not in low, (where, v, text)


def _csv_fields(path: Path):
    for i, row in enumerate(csv.DictReader(open(path, encoding="utf-8"))):
        for k, v in row.items():
            yield f"{path.name}[{i}].{k}", f"{k} {v}"


def test_predict_outputs_carry_no_dicom_identifier(template, tiny_model, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(template / "dicom", src)
    ids = _identifiers(src)
    assert any(v.startswith("ZZTESTNAME") for v in ids) and len(ids) > 20  # the headers carry identifiers
    pt = next(p for p in src.rglob("PT") if p.is_dir())
    series_uid = str(pydicom.dcmread(next(pt.iterdir()), stop_before_pixels=True).SeriesInstanceUID)

    # batch: cases.csv, failed.csv and each case's summary.json / lesions.csv
    out = tmp_path / "batch"
    rc, _, err = run_cli(["predict", "--model", tiny_model, "--in", src, "--out", out, "--no-progress",
                          "--no-report"], capsys)
    assert rc == 0, err
    summaries = list(out.glob("*/summary.json"))
    assert len(summaries) == 1
    for s in summaries:
        doc = json.loads(s.read_text())
        assert series_uid not in s.read_text()  # it used to be input.fingerprint.pet
        fp = doc["input"]["fingerprint"]
        assert set(fp) == {"pet", "ct", "salt"} and fp["pet"].startswith("blake2b-salted ")
        _no_identifier(_strings(doc), ids)
        _no_identifier(_csv_fields(s.parent / "lesions.csv"), ids)
    for table in ("cases.csv", "failed.csv"):
        _no_identifier(_csv_fields(out / table), ids)
    # the re-run recognizes its own prediction through the salted fingerprint
    rc, stdout, _ = run_cli(["predict", "--model", tiny_model, "--in", src, "--out", out, "--no-progress",
                             "--no-report"], capsys)
    assert rc == 0 and "0 case(s) predicted, 1 already done" in stdout, stdout

    # one study from its DICOM folders: summary.json
    single = tmp_path / "single"
    ct = next(p for p in src.rglob("CT") if p.is_dir())
    rc, _, err = run_cli(["predict", "--model", tiny_model, "--pet", pt, "--ct", ct, "--out", single,
                          "--no-report"], capsys)
    assert rc == 0, err
    doc = json.loads((single / "summary.json").read_text())
    _no_identifier(_strings(doc), ids)
    # the study date and time are recorded on purpose (docs/predict.md: `response` orders two studies by them,
    # DICOM PS3.15's longitudinal temporal information), in input.study_date / input.study_time only
    head = pydicom.dcmread(next(pt.iterdir()), stop_before_pixels=True)
    day, tm = str(head.StudyDate), str(head.StudyTime)
    iso_day, iso_tm = f"{day[:4]}-{day[4:6]}-{day[6:]}", f"{tm[:2]}:{tm[2:4]}:{tm[4:6]}"
    assert (doc["input"]["study_date"], doc["input"]["study_time"]) == (iso_day, iso_tm)
    _no_identifier([(w, t) for w, t in _strings(doc) if w not in ("summary.input.study_date",
                                                                  "summary.input.study_time")], ids | {iso_day, iso_tm})
    # a second prediction of the same study elsewhere gets an unlinkable fingerprint
    other = json.loads(summaries[0].read_text())["input"]["fingerprint"]
    assert doc["input"]["fingerprint"]["salt"] != other["salt"]


def test_serve_audit_log_and_outputs_carry_no_dicom_identifier(template, tmp_path):
    """A DICOM study read, edited and saved in ``petctfm serve``: the case id, ``audit.jsonl``, ``objects.json``,
    ``lesions.csv`` and the API's case list name none of the study's identifiers (the DICOM-SEG itself does:
    it must reference its source)."""
    import sys

    pytest.importorskip("fastapi")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
    from serve_fixtures import page_client, stub_session

    from petctfm.serve.app import Server
    from petctfm.serve.cases import CaseList

    src = tmp_path / "in"
    shutil.copytree(template / "dicom", src)
    ids = _identifiers(src)
    assert any(v.startswith("ZZTESTNAME") for v in ids)
    server = Server(CaseList(src), tmp_path / "out", stub_session)
    c = page_client(server)
    cases = c.get("/api/cases").json()
    _no_identifier(_strings(cases, "cases"), ids)
    cid = cases["cases"][0]["id"]
    assert c.post(f"/api/cases/{cid}/open").status_code == 200
    st = server.open_cases[cid]
    centre = np.array(st.session.suv.shape) // 2
    lps = (st.session.grid.index_to_lps @ np.append(centre.astype(float), 1.0))[:3]
    r = c.post(f"/api/cases/{cid}/click", json={"version": 0, "ras": (lps * [-1, -1, 1]).tolist(), "user": "reader"})
    assert r.status_code == 200, r.text
    assert c.post(f"/api/cases/{cid}/save", json={"user": "reader"}).status_code == 200
    case_out = tmp_path / "out" / cid
    audit = [json.loads(line) for line in (case_out / "audit.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit][-2:] == ["click", "save"]
    _no_identifier(_strings(audit, "audit"), ids)
    _no_identifier(_strings(json.loads((case_out / "objects.json").read_text()), "objects"), ids)
    _no_identifier(_csv_fields(case_out / "lesions.csv"), ids)
    _no_identifier([("case id", cid)], ids)
