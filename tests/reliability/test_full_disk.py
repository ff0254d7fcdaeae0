"""A full disk gives exit 4 everywhere, with nothing half-written (issue 28, item 2).

Each test stubs one write with the error a full disk really gives there (measured on a 64 KiB tmpfs,
2026-12-05): ``OSError(ENOSPC)`` from numpy, nibabel, matplotlib and plain files; safetensors'
``SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')``; torch's
``RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534')`` with the disk then
full; and SimpleITK, which writes a truncated file, prints ``** ERROR: NWAD: wrote only 0 of ... bytes`` and
returns normally. Every case asserts exit 4, one ``error:`` line naming the file and "No space left on device",
no traceback, no temporary file left, and no output set that is incomplete (predict: no ``lesions.nii.gz``
without its ``summary.json``, an earlier complete prediction untouched; harmonize: no case quarantined).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import SimpleITK as sitk

from harmonize_phantoms import synth_case
from petctfm.io import atomic
from petctfm.synth.layouts import write_autopet_case
from test_values_and_outputs import TINY, no_temp_files, one_error_line, run_cli

NOSPACE = "No space left on device"


class Disk:
    """A disk that becomes full at the stubbed write: ``atomic.free_bytes`` reports 0 from then on."""

    def __init__(self, monkeypatch):
        self.full = False
        monkeypatch.setattr(atomic, "free_bytes", lambda folder: 0 if self.full else 10**12)

    def oserror(self, *a, **k):
        self.full = True
        raise OSError(errno.ENOSPC, NOSPACE)

    def safetensors(self, *a, **k):
        from safetensors import SafetensorError

        self.full = True
        raise SafetensorError(f"Error while serializing: I/O error: {NOSPACE} (os error 28)")

    def torch(self, *a, **k):
        self.full = True
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    def sitk_truncates(self, original):
        def write(img, path, *a, **k):  # what ITK does on a full disk: a short file, no exception
            original(img, path, *a, **k)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 3])
            self.full = True
        return write


# ------------------------------------------------------------------------------------------------ pretrain


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from toy_data import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(32, 32, 32))


@pytest.mark.parametrize("where", ["model.safetensors", "state.pt"])
def test_pretrain_full_disk_is_one_line_exit_4(where, toy, tmp_path, monkeypatch, capsys):
    """It used to end in a SafetensorError traceback (exit 1)."""
    from petctfm.train import checkpoint as ck

    disk = Disk(monkeypatch)
    if where == "model.safetensors":
        monkeypatch.setattr(ck, "save_file", disk.safetensors)
    else:
        monkeypatch.setattr(ck.torch, "save", disk.torch)
    run = tmp_path / "run"
    rc, _, err = run_cli(["pretrain", "--data", toy, "--out", run, *TINY, "--max-steps", "1"], capsys)
    assert rc == 4
    one_error_line(err, NOSPACE, where if where == "model.safetensors" else "state.pt")
    assert not (run / "checkpoints" / "latest").exists()  # no step folder was published
    assert not list((run / "checkpoints").glob("step_*")) if (run / "checkpoints").exists() else True
    no_temp_files(run)


# ------------------------------------------------------------------------------------------------ harmonize


@pytest.fixture(scope="module")
def one_case(tmp_path_factory):
    src = tmp_path_factory.mktemp("hin") / "in"
    write_autopet_case(synth_case("F0"), src)
    return src


@pytest.mark.parametrize("where", ["image.npy", "meta.json", "thumbnail", "nifti"])
def test_harmonize_full_disk_stops_with_exit_4_and_quarantines_nothing(where, one_case, tmp_path, monkeypatch,
                                                                       capsys):
    from petctfm.data import format as fmt

    disk = Disk(monkeypatch)
    argv = ["harmonize", "--in", one_case, "--out", tmp_path / "ds", "--spacing", "4", "4", "4"]
    if where == "image.npy":
        monkeypatch.setattr(fmt.np, "save", disk.oserror)
    elif where == "meta.json":
        monkeypatch.setattr(fmt, "atomic_write_json", disk.oserror)
    elif where == "thumbnail":
        import petctfm.viz.render as render

        monkeypatch.setattr(render, "render_case", disk.oserror)
    else:
        import nibabel

        monkeypatch.setattr(nibabel, "save", disk.oserror)
        argv.append("--nifti")
    out = tmp_path / "ds"
    rc, _, err = run_cli(argv + ([] if where == "thumbnail" else ["--no-thumbnails"]), capsys)
    assert rc == 4, err
    one_error_line(err, NOSPACE)
    failed = out / ".work" / "failed"
    assert not failed.exists() or not list(failed.iterdir())  # not blamed on the case
    assert not (out / "quarantine.csv").exists() or len((out / "quarantine.csv").read_text().splitlines()) <= 1
    no_temp_files(out)
    # room again: a re-run completes the dataset
    monkeypatch.undo()
    rc, _, err = run_cli(argv + ([] if where == "thumbnail" else ["--no-thumbnails"]), capsys)
    assert rc == 0, err
    assert len(list((out / "cases").iterdir())) == 1


# ------------------------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("pin") / "in"
    write_autopet_case(synth_case("P0"), root)
    write_autopet_case(synth_case("P1"), root)
    return root


def _predict(model, study, out, capsys, *extra):
    d = study / "P0"
    return run_cli(["predict", "--model", model, "--pet", d / "SUV.nii.gz", "--ct", d / "CT.nii.gz", "--out", out,
                    "--no-progress", *extra], capsys)


def _stub_predict_write(where, disk, monkeypatch):
    from petctfm.io import images
    from petctfm.predict import outputs

    if where == "lesions.nii.gz":
        monkeypatch.setattr(images.sitk, "WriteImage", disk.sitk_truncates(sitk.WriteImage))
    elif where == "lesions.csv":
        monkeypatch.setattr(outputs, "atomic_write_text", disk.oserror)
    elif where == "report.png":
        from matplotlib.figure import Figure

        monkeypatch.setattr(Figure, "savefig", disk.oserror)
    else:
        monkeypatch.setattr(outputs, "atomic_write_json", disk.oserror)


WRITES = ["lesions.nii.gz", "lesions.csv", "report.png", "summary.json"]


@pytest.mark.parametrize("where", WRITES)
def test_predict_full_disk_writes_nothing_half(where, study, tiny_model, tmp_path, monkeypatch, capsys):
    """It exited 3 with a flattened traceback and left lesions.nii.gz without summary.json."""
    out = tmp_path / "pred"
    _stub_predict_write(where, Disk(monkeypatch), monkeypatch)
    rc, _, err = _predict(tiny_model, study, out, capsys)
    assert rc == 4, err
    line = one_error_line(err, NOSPACE)
    assert str(out) in line and "SUV.nii.gz" not in line  # blames the output, not the input
    assert not out.exists() or not list(out.iterdir())
    no_temp_files(tmp_path)


@pytest.mark.parametrize("where", ["lesions.nii.gz", "summary.json"])
def test_predict_overwrite_on_a_full_disk_keeps_the_earlier_prediction(where, study, tiny_model, tmp_path,
                                                                       monkeypatch, capsys):
    out = tmp_path / "pred"
    assert _predict(tiny_model, study, out, capsys, "--no-report")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _stub_predict_write(where, Disk(monkeypatch), monkeypatch)
    rc, _, err = _predict(tiny_model, study, out, capsys, "--no-report", "--overwrite")
    assert rc == 4
    one_error_line(err, NOSPACE)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old set, whole
    no_temp_files(tmp_path)


def test_predict_overwrite_in_a_shared_folder_never_mixes_old_and_new(study, tiny_model, tmp_path, monkeypatch,
                                                                      capsys):
    """--out holding the user's own files: outputs are renamed in one by one, summary.json removed first and
    written last, the user's file untouched."""
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _predict(tiny_model, study, out, capsys, "--no-report")[0] == 0
    assert json.loads((out / "summary.json").read_text())["case"]
    _stub_predict_write("summary.json", Disk(monkeypatch), monkeypatch)
    rc, _, err = _predict(tiny_model, study, out, capsys, "--no-report", "--overwrite")
    assert rc == 4
    assert (out / "notes.txt").read_text() == "mine" and (out / "lesions.nii.gz").is_file()
    no_temp_files(tmp_path)
    monkeypatch.undo()
    assert _predict(tiny_model, study, out, capsys, "--no-report", "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["lesions.csv", "lesions.nii.gz", "notes.txt", "summary.json"]


def test_predict_batch_full_disk_stops_exit_4(study, tiny_model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pred"
    _stub_predict_write("lesions.nii.gz", Disk(monkeypatch), monkeypatch)
    rc, _, err = run_cli(["predict", "--model", tiny_model, "--in", study, "--format", "autopet", "--out", out,
                          "--no-progress", "--no-report"], capsys)
    assert rc == 4, err
    one_error_line(err, NOSPACE)
    for d in [p for p in out.iterdir() if p.is_dir()] if out.exists() else []:
        assert not any(d.iterdir()), d  # no case folder without its summary.json
    no_temp_files(tmp_path)


def test_output_failure_is_the_one_classifier(tmp_path):
    """Which errors are the disk's fault (exit 4), and which are not."""
    from petctfm.core.errors import InputError, OutputError

    p = tmp_path / "x.bin"
    for exc in (OSError(errno.ENOSPC, NOSPACE), OSError(errno.EDQUOT, "Disk quota exceeded"),
                RuntimeError(f"Error while serializing: I/O error: {NOSPACE} (os error 28)")):
        err = atomic.output_failure(exc, p)
        assert isinstance(err, OutputError) and str(err).startswith(f"{p}: cannot be written"), exc
    for exc in (OSError(errno.EIO, "I/O error"), InputError("x: bad"), ValueError("shape"), KeyboardInterrupt()):
        assert atomic.output_failure(exc, p) is None, exc
    with pytest.raises(OutputError, match="x.bin: cannot be written .No space left on device"):
        with atomic.atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"1")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not p.exists() and not list(tmp_path.iterdir())
