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


def no_tmp_left(out: Path) -> None:
    """Nothing half-written: no temporary sibling folders/files left behind in the dataset."""
    left = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".tmp")]
    assert not left, left



def write_mask(path: Path, value=1):
    arr = np.zeros((8, 8, 8), np.uint8)
    arr[2:5, 2:5, 2:5] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
