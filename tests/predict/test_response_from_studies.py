"""``petctfm response`` given study folders and ``--model``: both studies go through ``petctfm predict``'s own
API first (into OUT/predict/), then the response (docs/response.md). The tiny model's masks need not be good:
this checks the plumbing, tests/response/ checks the logic."""

from __future__ import annotations

import json


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
