"""``petctfm response`` given study folders and ``--model``: both studies go through ``petctfm predict``'s own
API first (into OUT/predict/), then the response (docs/response.md). The tiny model's masks need not be good:
this checks the plumbing, tests/response/ checks the logic."""

from __future__ import annotations

import json

import pytest


def test_response_predicts_study_folders_first(synth_tiny, tiny_model, tmp_path, capsys):
    from petctfm.cli.main import main

    t0, t1 = synth_tiny / "autopet" / "PETCT_0000", synth_tiny / "autopet" / "PETCT_0001"
    out = tmp_path / "resp"
    code = main(["response", "--baseline", str(t0), "--followup", str(t1), "--model", str(tiny_model),
                 "--device", "cpu", "--out", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    for role in ("baseline", "followup"):
        assert (out / "predict" / role / "PETCT_0000" if role == "baseline" else
                out / "predict" / role / "PETCT_0001").joinpath("summary.json").is_file()
    r = json.loads((out / "response.json").read_text())
    assert r["percist"]["reason"] == "not measurable: no liver reference"  # no organ model given
    assert (out / "lesions.csv").is_file()


def test_response_refuses_a_study_without_model(synth_tiny, tmp_path, capsys):
    from petctfm.cli.main import main

    t0 = synth_tiny / "autopet" / "PETCT_0000"
    code = main(["response", "--baseline", str(t0), "--followup", str(t0.parent / "PETCT_0001"),
                 "--out", str(tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 3 and len(err) == 1 and "petctfm predict" in err[0] and "--model" in err[0]


@pytest.mark.slow
def test_response_predicts_dicom_study_folders_first(synth_tiny, tiny_model, tmp_path, capsys):
    """DICOM study folders (PT + CT series): predicted with predict's DICOM reading, the PET read back from the
    DICOM for the response, the study dates recorded by predict; DICOM outputs (SR always, a SEG per study with
    lesions; tests/response/test_response_dicom.py checks their content)."""
    import pydicom

    from petctfm.cli.main import main

    studies = [synth_tiny / "dicom" / c for c in ("PETCT_0000", "PETCT_0001")]
    day = {s: str(pydicom.dcmread(next((s / "PT").iterdir()), stop_before_pixels=True).StudyDate) for s in studies}
    t0, t1 = sorted(studies, key=lambda s: day[s])  # baseline first
    out = tmp_path / "resp"
    code = main(["response", "--baseline", str(t0), "--followup", str(t1), "--model", str(tiny_model),
                 "--device", "cpu", "--out", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    r = json.loads((out / "response.json").read_text())
    for role, study in (("baseline", t0), ("followup", t1)):
        s = json.loads((out / "predict" / role / study.name / "summary.json").read_text())
        d = day[study]
        assert s["input"]["kind"] == "dicom" and s["input"]["study_date"] == f"{d[:4]}-{d[4:6]}-{d[6:]}"
        assert r["study_dates"][role] == s["input"]["study_date"]
    if "dicom_outputs" in r:  # the 5-step model's noise can exceed a SEG's 255 segments: said, nothing written
        assert "more than a DICOM-SEG of petctfm holds (255)" in r["dicom_outputs"]
        assert not list(out.glob("*.dcm")) and "lesions.csv" in r["outputs"]
        return
    for role in ("baseline", "followup"):
        assert ((out / f"{role}_lesions.seg.dcm").is_file()) == (r[role]["lesion_count"] > 0)
    assert (out / "response_sr.dcm").is_file() and "response_sr.dcm" in r["outputs"]
