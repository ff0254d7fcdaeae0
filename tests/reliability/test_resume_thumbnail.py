"""A harmonize run killed between writing a case and drawing its QA thumbnail left the case without one for good
(the re-run skips finished cases). The re-run now draws it (issue 28, item 8), and exports a missing
``--nifti`` copy the same way."""

from __future__ import annotations

import numpy as np
from PIL import Image

from harmonize_phantoms import synth_case
from petctfm.harmonize import qa
from petctfm.synth.layouts import write_autopet_case
from test_values_and_outputs import run_cli


def test_rerun_after_a_kill_completes_the_missing_thumbnail(tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "in", tmp_path / "ds"
    write_autopet_case(synth_case("K0"), src)
    argv = ["harmonize", "--in", src, "--out", out, "--spacing", "8", "8", "8", "--nifti"]

    def killed(*a, **k):
        raise KeyboardInterrupt  # the run dies here: after the case was written, before its thumbnail

    monkeypatch.setattr(qa, "thumbnail", killed)
    rc, _, _ = run_cli(argv, capsys)
    assert rc == 130
    monkeypatch.undo()
    (cid,) = [p.name for p in (out / "cases").iterdir()]
    thumb = out / "qa" / "thumbs" / f"{cid}.png"
    assert not thumb.exists() and not (out / "nifti" / cid).exists()
    rc, stdout, err = run_cli(argv, capsys)
    assert rc == 0, err
    assert "1 already done" in stdout
    assert thumb.is_file() and (out / "nifti" / cid / "SUV.nii.gz").is_file()
    png = np.asarray(Image.open(thumb))
    assert png.ndim == 3 and png.shape[0] > 50 and png.std() > 5  # a drawn figure, not an empty canvas
    # the same picture an uninterrupted run draws
    rc, _, err = run_cli(["harmonize", "--in", src, "--out", tmp_path / "ds_whole", "--spacing", "8", "8", "8"],
                         capsys)
    assert rc == 0, err
    assert (tmp_path / "ds_whole" / "qa" / "thumbs" / f"{cid}.png").read_bytes() == thumb.read_bytes()
    stamp = thumb.stat().st_mtime_ns
    assert run_cli(argv, capsys)[0] == 0
    assert thumb.stat().st_mtime_ns == stamp  # drawn once: a complete case is left alone
