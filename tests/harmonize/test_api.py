"""``harmonize_folder``: the Python API behind ``petctfm harmonize`` (same outputs, a summary dict)."""

from __future__ import annotations

import json

import pytest

from harmonize_phantoms import synth_case
from petctfm.core.errors import InputError, UsageError, cli_wording
from petctfm.harmonize.api import HarmonizeOptions, finalize_dataset, harmonize_folder, parse_spacing
from petctfm.synth.layouts import write_autopet_case


def test_harmonize_folder_summary_resume_and_shards(tmp_path):
    src = tmp_path / "in"
    for cid in ("A0", "A1"):
        write_autopet_case(synth_case(cid), src)
    out = tmp_path / "ds"
    summary = harmonize_folder(src, out, spacing=(4, 4, 4), thumbnails=False)
    assert summary["n_found"] == 2 and summary["n_done"] == 2 and summary["failed"] == [] and summary["n_failed"] == 0
    assert summary["finalized"] and summary["n_cases"] == 2 and summary["n_quarantined"] == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["spacing"] == [4.0, 4.0, 4.0] and info["num_cases"] == 2
    again = harmonize_folder([str(src)], out, spacing=[4, 4, 4], thumbnails=False)
    assert again["n_skipped"] == 2 and again["n_done"] == 0  # resume: finished cases are skipped
    shard = harmonize_folder(src, tmp_path / "sharded", spacing=(4, 4, 4), thumbnails=False, shard="0/2")
    assert shard["n_in_shard"] == 1 and not shard["finalized"] and shard["n_cases"] is None
    assert finalize_dataset(tmp_path / "sharded")["num_cases"] == 1


def test_harmonize_folder_rejects_bad_arguments(tmp_path):
    with pytest.raises(UsageError, match=r"^workers=0: must be an integer >= 1$") as exc:
        harmonize_folder(tmp_path, tmp_path / "ds", workers=0)
    assert exc.value.arg == "workers"
    with pytest.raises(UsageError, match=r"ct_window=\(100.0, -100.0\): must be two finite numbers LO < HI"):
        harmonize_folder(tmp_path, tmp_path / "ds", ct_window=(100, -100))
    with pytest.raises(UsageError, match="spacing="):
        parse_spacing([1.0, 2.0])
    with pytest.raises(UsageError, match="shard='abc'"):
        harmonize_folder(tmp_path, tmp_path / "ds", shard="abc")
    assert not (tmp_path / "ds").exists()


def test_harmonize_options_dataclass(tmp_path):
    o = HarmonizeOptions(spacing=[4, 4, 4], workers=2)
    assert o.spacing == (4.0, 4.0, 4.0) and o.ct_window == (-1000.0, 1000.0) and o.workers == 2
    with pytest.raises(UsageError, match="^margin=-1: must be a finite number >= 0$"):
        HarmonizeOptions(margin=-1)
    with pytest.raises(UsageError, match="^fmt='png': must be one of auto, ") as exc:
        HarmonizeOptions(fmt="png")
    assert cli_wording(exc.value, {"fmt": "--format"}).startswith("--format 'png': must be one of")
    with pytest.raises(UsageError, match=r"unknown option\(s\) worker; the options are fmt, spacing, ") as exc:
        harmonize_folder(tmp_path, tmp_path / "ds", HarmonizeOptions(), worker=2)
    assert exc.value.arg == "worker"
    # keyword fields replace those of the options object; the object itself is not changed
    base = HarmonizeOptions(workers=2)
    with pytest.raises(UsageError, match="workers=0"):
        harmonize_folder(tmp_path, tmp_path / "ds", base, workers=0)
    assert base.workers == 2
    with pytest.raises(InputError, match="no cases/"):
        finalize_dataset(tmp_path)
