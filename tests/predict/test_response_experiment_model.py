"""``petctfm experiment response --model``: each pair's two study folders are predicted by the lesion model
(``petctfm response``'s study-folder path) and scored against response_truth.json. The tiny model's masks need
not be good: this checks the plumbing (predicted masks on the grid of LESIONS.nii.gz, scoring, outputs);
tests/response/test_followup.py checks the numbers with the truth masks."""

from __future__ import annotations

import json


def test_experiment_response_with_a_model(tiny_model, tmp_path, capsys):
    from petctfm.cli.main import main
    from petctfm.experiments.response.report import PREDICTED

    data = tmp_path / "fu"
    assert main(["synth", "--out", str(data), "--cases", "2", "--seed", "0", "--size", "tiny", "--followup",
                 "--no-progress"]) == 0
    out = tmp_path / "exp"
    rc = main(["experiment", "response", "--data", str(data), "--model", str(tiny_model), "--device", "cpu",
               "--out", str(out), "--bootstrap", "50"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["n_pairs"] == 2 and not s["quarantined"] and s["settings"]["model"] == str(tiny_model)
    assert 0.0 <= s["category_accuracy"] <= 1.0
    counts = s["confusion"]["counts"]
    assert sum(map(sum, counts)) == 2 and len(counts[0]) == len(PREDICTED)
    for pair in sorted((data / "pairs").iterdir()):
        if pair.is_dir():
            r = json.loads((out / "pairs" / pair.name / "response.json").read_text())
            assert "/predict/baseline/" in r["baseline"]["folder"].replace("\\", "/")
            assert r["study_dates"]["interval_days"] > 0  # the study.json sidecars beside the predicted PETs
