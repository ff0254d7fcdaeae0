"""The commands pass only the options given to the Python API, which owns every default (issue 22)."""

from __future__ import annotations

import argparse

import pytest

from petctfm.cli import _api
from petctfm.cli.main import main
from petctfm.core.errors import UsageError


def test_given_keeps_only_options_given_and_renames_them():
    args = argparse.Namespace(bootstrap=None, seed=3, split="val")
    assert _api.given(args, {"bootstrap": "n_resamples", "seed": "seed", "split": "split"}) == {"seed": 3,
                                                                                                 "split": "val"}
    assert _api.given(args, ("seed", "missing")) == {"seed": 3}


def test_flags_words_the_argument_as_its_flag():
    with pytest.raises(UsageError, match=r"^--bootstrap -1: must be an integer >= 0$"):
        with _api.flags({"n_resamples": "--bootstrap"}):
            from petctfm.core.checks import check_int

            check_int("n_resamples", -1, lo=0)
    with pytest.raises(UsageError, match=r"^workers=0") as exc:  # not in the map: main words it (--workers)
        with _api.flags({"n_resamples": "--bootstrap"}):
            raise UsageError("workers=0: must be an integer >= 1", arg="workers")
    assert exc.value.arg == "workers"


def test_default_of_reads_dataclasses_functions_and_constants():
    assert _api.default_of("petctfm.harmonize.api:HarmonizeOptions", "workers") == 1
    assert _api.default_of("petctfm.evaluate.report:evaluate_folder", "n_resamples") == 1000
    assert _api.default_of("petctfm.predict.predictor:Predictor.load", "threshold") == 0.5
    assert _api.default_of("petctfm.methods.probe:DEFAULT_KSHOT", "") == 5


def test_probe_passes_only_given_options(monkeypatch, tmp_path):
    import petctfm.methods.probe as P

    seen = []

    def fake(data, encoders, out, cfg, progress=False):
        seen.append(cfg)
        return {"dice": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 1}, "ap": {"mean": 0.1, "ci_low": 0.0,
                "ci_high": 0.2}, "prevalence": {"mean": 0.01}, "subset": "kshot5", "n_train_cases": 5,
                "head_in_channels": 8, "split": "test"}

    monkeypatch.setattr(P, "run_probe", fake)
    base = ["probe", "--data", "D", "--encoder", "E", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base) == 0
    assert seen[-1] == P.ProbeConfig()  # every default is ProbeConfig's
    assert main([*base, "--fraction", "0.1", "--bootstrap", "10", "--l2", "0.5"]) == 0
    assert (seen[-1].kshot, seen[-1].fraction, seen[-1].n_resamples, seen[-1].l2) == (None, 0.1, 10, 0.5)
    assert seen[-1].steps == P.ProbeConfig().steps


def test_probe_config_checks_its_fields():
    from petctfm.methods.probe import ProbeConfig

    assert ProbeConfig().kshot == 5 and ProbeConfig(fraction=0.2).kshot is None
    with pytest.raises(UsageError, match=r"^steps=0: must be an integer >= 1$"):
        ProbeConfig(steps=0)
    with pytest.raises(UsageError, match="give one of them"):
        ProbeConfig(kshot=3, fraction=0.5)
    with pytest.raises(UsageError, match=r"^overlap=1.0: must be a finite number in \[0, 1\)$"):
        ProbeConfig(overlap=1.0)


def test_harmonize_passes_only_given_options(monkeypatch, tmp_path):
    import petctfm.harmonize.api as api

    seen = []

    def fake(inputs, out, options=None, **kwargs):
        seen.append(options)
        return {"finalized": True, "n_cases": 0, "n_quarantined": 0, "n_done": 0, "n_skipped": 0, "n_failed": 0}

    monkeypatch.setattr(api, "harmonize_folder", fake)
    assert main(["harmonize", "--in", "IN", "--out", str(tmp_path / "ds")]) == 0
    assert seen[-1] == api.HarmonizeOptions(progress=True)
    assert main(["harmonize", "--in", "IN", "--out", str(tmp_path / "ds"), "--workers", "3", "--format", "dicom",
                 "--no-thumbnails"]) == 0
    assert (seen[-1].workers, seen[-1].fmt, seen[-1].thumbnails) == (3, "dicom", False)


def test_help_texts_read_the_api_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 1000; 0 = no CI)" in text and "(default 18, as the autoPET challenge)" in text
