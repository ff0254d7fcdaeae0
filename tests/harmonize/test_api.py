"""``harmonize_folder``: the Python API behind ``petctfm harmonize`` (same outputs, a summary dict)."""

from __future__ import annotations

import json

import pytest

from harmonize_phantoms import synth_case
from petctfm.core.errors import InputError
from petctfm.harmonize.api import finalize_dataset, harmonize_folder, parse_spacing
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
    with pytest.raises(InputError, match="--workers"):
        harmonize_folder(tmp_path, tmp_path / "ds", workers=0)
    with pytest.raises(InputError, match="--ct-window"):
        harmonize_folder(tmp_path, tmp_path / "ds", ct_window=(100, -100))
    with pytest.raises(InputError, match="--spacing"):
        parse_spacing([1.0, 2.0])
    with pytest.raises(InputError, match="no cases/"):
        finalize_dataset(tmp_path)
