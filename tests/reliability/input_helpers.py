"""Helpers of the bad-input battery (tests/reliability/test_inputs*.py): tiny case trees, running the CLI in
process with the checks every case makes, and :func:`fifo_guard`."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petctfm.cli.main import main

SRC = Path(__file__).resolve().parents[2] / "src"
FAST = ["--spacing", "8", "8", "8", "--no-thumbnails"]
NON_UTF8 = os.fsdecode(b"caf\xe9_\xff")  # latin-1 'café' + a byte no encoding decodes: surrogateescape


def autopet(template, dst: Path, cases=("A", "B")) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for c in cases:
        shutil.copytree(template / "autopet" / c, dst / c)
    return dst


def dicom(template, dst: Path) -> Path:
    shutil.copytree(template / "dicom", dst)
    return dst


def run(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@contextlib.contextmanager
def fifo_guard(*fifos):
    """Create the FIFOs; fail if the code under test opened any of them (it would have hung), without hanging."""
    for f in fifos:
        os.mkfifo(f)
    opened: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for f in fifos:
                try:
                    fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while a reader waits
                except OSError:
                    continue
                opened.append(str(f))
                os.close(fd)  # the blocked reader gets EOF and goes on
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
    assert not opened, f"opened a FIFO for reading (would hang): {opened}"


def error_line(err: str, *names: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def manifest(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))


def check_prediction(case_out: Path, pet: Path) -> dict:
    """A written prediction agrees with its input and with itself, counted here: ``lesions.nii.gz`` on the
    PET's grid (shape, affine), ``summary.json``'s PET shape, lesion count = 18-connected components of the
    mask, TMTV = mask voxels x voxel volume, SUVmax = the PET's maximum under the mask. Returns the summary."""
    import json

    import cc3d
    import nibabel as nib

    src, out = nib.load(os.fspath(pet)), nib.load(os.fspath(case_out / "lesions.nii.gz"))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    mask = np.asarray(out.dataobj) > 0
    s = json.loads((case_out / "summary.json").read_text())
    assert s["input"]["pet_shape"] == list(src.shape)
    assert s["lesion_count"] == int(cc3d.connected_components(mask.astype(np.uint8), connectivity=18).max())
    voxel_ml = abs(np.linalg.det(src.affine[:3, :3])) / 1000.0
    assert abs(s["tmtv_ml"] - mask.sum() * voxel_ml) <= 1e-3 + 1e-4 * mask.sum() * voxel_ml, (s["tmtv_ml"], mask.sum())
    if mask.any():
        suv = np.asarray(src.dataobj, np.float64)
        assert abs(s["suv_max"] - suv[mask].max()) <= 1e-3 * max(1.0, suv[mask].max()), (s["suv_max"], suv[mask].max())
    else:
        assert s["suv_max"] is None
    return s


def check_one_step_run(run_dir: Path, data: str | os.PathLike) -> dict:
    """A ``--max-steps 1`` training run really trained on ``data``: config.yaml names that dataset (undecodable
    bytes kept), summary.json has one step on one batch of 2 samples with a finite loss, and the step-1
    checkpoint it names is in the run folder. Returns the summary."""
    import json
    import math

    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["task"]["dataset"] == os.fspath(data) and cfg["train"]["max_steps"] == 1
    s = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert s["steps"] == 1 and s["start_step"] == 0 and s["samples"] == 2 and s["stopped"] == "max_steps"
    assert math.isfinite(s["loss"]) and s["loss"] > 0
    assert s["checkpoint"] == os.fspath(run_dir / "checkpoints" / "step_0000001")
    assert (run_dir / "checkpoints" / "step_0000001" / "model.safetensors").is_file()
    return s


def no_tmp_left(out: Path) -> None:
    """Nothing half-written: no temporary sibling folders/files left behind in the dataset."""
    left = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".tmp")]
    assert not left, left



def write_mask(path: Path, value=1):
    arr = np.zeros((8, 8, 8), np.uint8)
    arr[2:5, 2:5, 2:5] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
