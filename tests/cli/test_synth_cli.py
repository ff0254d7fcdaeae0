"""`petctfm synth` end to end on 2 tiny cases, its --help, and one-line errors."""

from __future__ import annotations

import csv

import pytest

from petctfm.cli.main import main


def test_synth_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["synth", "--out", str(out), "--cases", "2", "--seed", "3", "--size", "tiny", "--no-progress",
               "--formats", "autopet,nnunet"])
    assert rc == 0
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        assert (out / "autopet" / row["case_id"] / "SUV.nii.gz").is_file()
        assert (out / "nnunet" / "labelsTr" / f"{row['case_id']}.nii.gz").is_file()
    assert not (out / "dicom").exists()
    assert "wrote 2 cases" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--formats", "autopet,jpeg"], "error: --formats jpeg: must be among autopet, nnunet, dicom"),
        (["--sites", "atlantis"], "error: --sites atlantis: must be among "),
        (["--size", "medium"], "error: --size 'medium': must be one of tiny, small, full"),
        (["--cases", "0"], "error: --cases 0: must be an integer >= 1"),
    ],
)
def test_bad_choice_is_one_line_error_exit_2(tmp_path, capsys, extra, message):
    rc = main(["synth", "--out", str(tmp_path / "o"), "--cases", "1", "--seed", "0", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_help_lists_options_and_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--cases", "--seed", "--size", "--sites", "--tracers", "--formats", "--workers"):
        assert flag in text
    assert "examples:" in text and "petctfm synth --out" in text
