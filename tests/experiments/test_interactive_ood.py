"""The out-of-distribution protocol: prompt-train --train-filter selects the training cases (recorded in the run's
config), experiment interactive --test-filter / --ood select and split the evaluated cases (recorded in info.json
and results.md), with the exit codes of docs/reliability.md; and a tiny run writes the effort table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from toy_data import write_toy_dataset

from petctfm.cli.main import main
from petctfm.core.config import deep_merge
from petctfm.core.errors import InputError
from petctfm.experiments.interactive.report import EFFORT_COLUMNS
from petctfm.io.tables import csv_text
from petctfm.methods.promptable.api import prompt_train, prompt_train_configs
from petctfm.methods.promptable.model import build_model
from petctfm.methods.promptable.presets import get_preset
from petctfm.methods.promptable.task import DEFAULT_CONFIG, PromptPatchDataset, PromptTask
from petctfm.train.checkpoint import save_weights

MANIFEST = {"toy000": ("a", "fdg"), "toy001": ("b", "psma"), "toy002": ("b", "fdg"), "toy003": ("a", "psma")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("ood") / "ds", n_cases=4, shape=(32, 32, 40), organs=True)
    (root / "manifest.csv").write_text(csv_text([{"case_id": c, "split": "", "site": s, "tracer": t}
                                                 for c, (s, t) in MANIFEST.items()]))
    return root


@pytest.fixture(scope="module")
def models(data, tmp_path_factory):
    """(a model trained on every case, one trained on FDG only): untrained tiny weights, the configs say so."""
    tmp = tmp_path_factory.mktemp("models")
    return _model(data, tmp / "plain"), _model(data, tmp / "fdg", ["tracer=fdg"])


def _model(root, path, train_filter=()):
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"]["patch_size"] = [16, 16, 16]
    cfg["targets"]["train_filter"] = list(train_filter)
    task = PromptTask(cfg, root)
    save_weights(build_model(task.config), path / "model.safetensors", task.config, step=0)
    return path


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_filter_selects_the_training_cases_and_is_recorded(data, tmp_path):
    cfg, _ = prompt_train_configs(data, tmp_path / "run", preset="tiny", train_filter=["tracer = FDG"],
                                  overrides=["data.patch_size=[16,16,16]"])
    assert cfg["targets"]["train_filter"] == ["tracer=FDG"]  # normalized, saved with the run's config
    ds = PromptPatchDataset(cfg)
    assert ds.case_ids == ["toy000", "toy002"]  # the train split (toy000-002) less the PSMA case
    drawn = {ds.pick(np.random.default_rng(i))[0] for i in range(40)}
    assert drawn == {"toy000", "toy002"}
    cfg["targets"]["train_filter"] = ["site!=a"]
    assert PromptPatchDataset(cfg).case_ids == ["toy001", "toy002"]
    cfg["targets"]["train_filter"] = ["site!=a", "tracer=fdg"]  # AND
    assert PromptPatchDataset(cfg).case_ids == ["toy002"]
    with pytest.raises(InputError, match="no column 'scanner'"):  # before any training step
        prompt_train(data, tmp_path / "run2", preset="tiny", train_filter=["scanner=x"], max_steps=1)
    assert not (tmp_path / "run2" / "config.yaml").exists()


def test_train_filter_errors_exit_2_and_3(data, tmp_path, capsys):
    base = ["prompt-train", "--data", str(data), "--preset", "tiny", "--max-steps", "1"]
    assert main([*base, "--out", str(tmp_path / "r1"), "--train-filter", "tracer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --train-filter 'tracer': must be COLUMN=V")
    assert main([*base, "--out", str(tmp_path / "r2"), "--train-filter", "site=nowhere"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train-filter 'site=nowhere': no case has site 'nowhere'" in err[0]
    # the val split (toy003, PSMA) has no FDG case: no best/ checkpoint then, but the filter itself is fine; a
    # filter that leaves no train case is refused
    assert main([*base, "--out", str(tmp_path / "r3"), "--train-filter", "tracer=psma",
                 "--train-filter", "site=a"]) == 3
    assert "leaves none of split 'train'" in capsys.readouterr().err
    assert not (tmp_path / "r3" / "config.yaml").exists()


def test_test_filter_and_ood_errors(data, models, tmp_path, capsys):
    plain, only_fdg = models
    base = ["experiment", "interactive", "--data", str(data), "--split", "all", "--no-progress"]
    assert main([*base, "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "e0"),
                 "--test-filter", "tracer"]) == 2  # before the model is read
    assert "--test-filter 'tracer': must be COLUMN=V" in capsys.readouterr().err
    assert main([*base, "--model", str(plain), "--out", str(tmp_path / "e1"), "--test-filter", "tracr=psma"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--test-filter 'tracr=psma': no column 'tracr'" in err[0]
    assert main([*base, "--model", str(plain), "--out", str(tmp_path / "e2"), "--ood"]) == 3
    assert "trained on every case (no prompt-train --train-filter)" in capsys.readouterr().err
    assert main([*base, "--model", str(only_fdg), "--out", str(tmp_path / "e3"), "--ood",
                 "--test-filter", "tracer=fdg"]) == 3  # every test case in distribution: no OOD cohort
    assert "leaves no out-of-distribution case" in capsys.readouterr().err
    for out in ("e1", "e2", "e3"):
        assert not (tmp_path / out / "results.md").exists()


def test_ood_run_writes_cohorts_filters_and_the_effort_table(data, models, tmp_path):
    model = models[1]
    out = tmp_path / "exp"
    assert main(["experiment", "interactive", "--data", str(data), "--model", str(model), "--out", str(out),
                 "--split", "all", "--ood", "--test-filter", "site=a,b", "--max-cases", "1", "--max-clicks", "2",
                 "--max-targets", "1", "--protocols", "one_per_lesion,effort", "--figures", "0",
                 "--no-progress"]) == 0
    info = json.loads((out / "info.json").read_text())
    assert info["ood"] and info["train_filter"] == ["tracer=fdg"] and info["test_filter"] == ["site=a,b"]
    assert info["cohorts"] == {"in": 1, "out": 1} and info["n_cases"] == 2
    steps = _read(out / "steps.csv")
    assert {(r["case_id"], r["cohort"]) for r in steps} == {("toy000", "in"), ("toy001", "out")}  # first of each
    assert {r["arm"] for r in steps if r["protocol"] == "corrective"} == {"model", "iso_brush"}
    assert {r["kind"] for r in steps if r["protocol"] == "corrective"} == {"lesion", "organ"}  # effort: no 'lesions'
    assert all(float(r["seconds"]) >= 0 for r in steps if r["protocol"] == "corrective")
    summary = _read(out / "results.csv")
    assert {r["cohort"] for r in summary} == {"all", "in", "out"}
    assert any(r["section"] == "per_step" and r["cohort"] == "out" and r["arm"] == "model" and r["kind"] == "lesion"
               and r["clicks"] == "2" and r["metric"] == "dice" for r in summary)
    assert any(r["section"] == "effort" and r["cohort"] == "in" and r["metric"] == "interactions_median"
               for r in summary)
    effort = _read(out / "effort.csv")
    assert list(effort[0]) == EFFORT_COLUMNS
    assert {(r["arm"], r["kind"]) for r in effort} >= {("model", "lesion"), ("iso_brush", "lesion"),
                                                       ("model", "organ"), ("iso_brush", "organ")}
    assert all(r["cap"] == "2" and r["reached"] in ("0", "1") for r in effort)
    md = (out / "results.md").read_text()
    assert "trained on `tracer=fdg`; evaluated on `site=a,b`" in md
    assert "## Out of distribution: Dice at 1 / 3 / 5 clicks" in md and "| corrective | model | lesion | all |" in md
    assert "## Annotation effort" in md and "8 mm" in md
    # --test-filter alone: only the PSMA cases, no cohorts
    out2 = tmp_path / "psma"
    assert main(["experiment", "interactive", "--data", str(data), "--model", str(model), "--out", str(out2),
                 "--split", "all", "--test-filter", "tracer=psma", "--max-clicks", "1", "--protocols",
                 "one_per_lesion", "--figures", "0", "--no-progress"]) == 0
    assert {r["case_id"] for r in _read(out2 / "steps.csv")} == {"toy001", "toy003"}
    assert "Out of distribution" not in (out2 / "results.md").read_text()
