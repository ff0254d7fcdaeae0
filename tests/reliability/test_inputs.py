"""Bad-input battery (issue 17, part B): discovery, duplicates, metadata, silent choices.

Each case runs a real command on tiny phantoms and asserts the exit code (docs/reliability.md), no traceback,
a one-line ``error:`` naming the file where the run is refused, the rest of the batch finished, and nothing
half-written. Commands that could hang on a regression (a FIFO in the input) run under :func:`fifo_guard`:
a thread that keeps checking whether anyone has opened the FIFOs for reading, and if so releases the
reader (a writer open + close gives it EOF) and records it, so a regression fails the test instead of
stalling CI.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.synth.dicom import write_dicom_case
from petctfm.synth.layouts import write_autopet_case

from harmonize_phantoms import synth_case

SRC = Path(__file__).resolve().parents[2] / "src"
FAST = ["--spacing", "8", "8", "8", "--no-thumbnails"]
NON_UTF8 = os.fsdecode(b"caf\xe9_\xff")  # latin-1 'café' + a byte no encoding decodes: surrogateescape


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Two different tiny autoPET cases (A: lesion, B: none) and one DICOM case, written once."""
    root = tmp_path_factory.mktemp("template")
    write_autopet_case(synth_case("A"), root / "autopet")
    write_autopet_case(synth_case("B", lesion=False, pet_spacing=(5.0, 5.0, 5.0)), root / "autopet")
    write_dicom_case(synth_case("D"), root / "dicom", seed=3)
    return root


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


# -------------------------------------------------------------------------------- discovery: special files


@pytest.mark.parametrize("layout", ["autopet", "dicom"])
def test_fifo_in_harmonize_input_is_skipped_not_opened(template, tmp_path, capsys, caplog, layout):
    root = autopet(template, tmp_path / "in") if layout == "autopet" else dicom(template, tmp_path / "in")
    inner = root / "A" / "notes.fifo" if layout == "autopet" else root / "D" / "PT" / "extra.dcm"  # DICOM name
    with fifo_guard(root / "pipe", inner), caplog.at_level(logging.INFO):
        rc, out, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    assert "named pipe" in caplog.text and inner.name in caplog.text
    assert len(manifest(tmp_path / "ds")) == (2 if layout == "autopet" else 1)
    no_tmp_left(tmp_path / "ds")


def test_fifo_named_like_an_image_is_not_a_case(template, tmp_path, capsys, caplog):
    root = autopet(template, tmp_path / "in")
    (root / "C").mkdir()
    with fifo_guard(root / "C" / "SUV.nii.gz"), caplog.at_level(logging.INFO):
        rc, out, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0 and len(manifest(tmp_path / "ds")) == 2
    assert "named pipe" in caplog.text and "SUV.nii.gz" in caplog.text


def test_socket_and_dangling_link_skipped(template, tmp_path, capsys, caplog):
    root = autopet(template, tmp_path / "in")
    s = socket.socket(socket.AF_UNIX)
    sock_path = root / "A" / "s.sock"
    if len(str(sock_path)) > 100:
        pytest.skip("socket path too long for AF_UNIX")
    s.bind(str(sock_path))
    (root / "gone").symlink_to(tmp_path / "nowhere")
    try:
        with caplog.at_level(logging.INFO):
            rc, _, _ = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    finally:
        s.close()
    assert rc == 0 and len(manifest(tmp_path / "ds")) == 2
    assert "socket" in caplog.text and "dangling" in caplog.text


def test_fifo_in_predict_input_is_skipped(template, tiny_model, tmp_path, capsys):
    root = autopet(template, tmp_path / "in", cases=("A",))
    with fifo_guard(root / "A" / "x_pet.nii.gz", root / "stray"):
        rc, out, err = run(["predict", "--model", tiny_model, "--in", root, "--out", tmp_path / "pred",
                            "--no-report", "--no-progress"], capsys)
    assert rc == 0, err
    assert (tmp_path / "pred" / "A" / "summary.json").is_file()


# ------------------------------------------------------------------------------------- discovery: symlinks


@pytest.mark.parametrize("link", ["self", "loop", "parent_loop"])
def test_links_back_into_the_tree_do_not_duplicate_cases(template, tmp_path, capsys, link):
    root = autopet(template, tmp_path / "in")
    if link == "self":
        (root / "self").symlink_to(".")
    elif link == "loop":
        (root / "A" / "again").symlink_to("..")
    else:
        (root / "B" / "up").symlink_to(root)
    rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    rows = manifest(tmp_path / "ds")
    assert sorted(r["source_path"] for r in rows) == ["A", "B"]
    assert not (tmp_path / "ds" / "duplicates.csv").read_text().strip().splitlines()[1:]


def test_link_to_outside_archive_followed_once(template, tmp_path, capsys):
    archive = autopet(template, tmp_path / "archive", cases=("B",))
    root = autopet(template, tmp_path / "in", cases=("A",))
    (root / "linked").symlink_to(archive)
    (root / "linked_again").symlink_to(archive)  # the same archive twice: its cases once
    rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    assert sorted(r["source_path"] for r in manifest(tmp_path / "ds")) == ["A", "linked/B"]


# ------------------------------------------------------------------------------------- non-UTF-8 names


@pytest.mark.parametrize("where", ["case_folder", "pairs_file", "dicom_folder"])
def test_non_utf8_names_no_traceback_no_abort(template, tmp_path, capsys, where):
    if where == "case_folder":
        root = autopet(template, tmp_path / "in")
        os.rename(root / "B", os.path.join(root, NON_UTF8))
        expected = 2
    elif where == "pairs_file":
        root = tmp_path / "in"
        root.mkdir()
        for case in ("A", "B"):
            shutil.copy(template / "autopet" / case / "SUV.nii.gz", os.path.join(root, f"{case}{NON_UTF8}_suv.nii.gz"))
            shutil.copy(template / "autopet" / case / "CTres.nii.gz", os.path.join(root, f"{case}{NON_UTF8}_ct.nii.gz"))
        expected = 2
    else:
        root = dicom(template, tmp_path / "in")
        os.rename(root / "D", os.path.join(root, NON_UTF8))
        expected = 1
    rc, out, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    rows = manifest(tmp_path / "ds")
    assert len(rows) == expected and all(r["case_id"].startswith("hc_") for r in rows)
    assert any("\ufffd" in r["source_path"] for r in rows)  # shown with replacement characters
    no_tmp_left(tmp_path / "ds")


def test_non_utf8_pet_file_name_predict(template, tiny_model, tmp_path, capsys):
    pet = Path(os.path.join(tmp_path, f"{NON_UTF8}_SUV.nii.gz"))
    shutil.copy(template / "autopet" / "A" / "SUV.nii.gz", pet)
    rc, out, err = run(["predict", "--model", tiny_model, "--pet", pet, "--ct",
                        template / "autopet" / "A" / "CTres.nii.gz", "--out", tmp_path / "pred", "--no-report"],
                       capsys)
    assert rc == 0, err
    assert (tmp_path / "pred" / "summary.json").is_file()


# ------------------------------------------------------------------------------------------- duplicates


def test_out_inside_in_with_nifti_not_reingested(template, tmp_path, capsys):
    root = tmp_path / "in"
    tmpl = tmp_path / "plain"  # pairs layout: every image file under the input counts
    tmpl.mkdir()
    for case in ("A", "B"):
        shutil.copy(template / "autopet" / case / "SUV.nii.gz", tmpl / f"{case}_suv.nii.gz")
        shutil.copy(template / "autopet" / case / "CTres.nii.gz", tmpl / f"{case}_ct.nii.gz")
    shutil.copytree(tmpl, root)
    out = root / "ds"
    for _ in range(2):
        rc, stdout, err = run(["harmonize", "--in", root, "--out", out, "--nifti", *FAST], capsys)
        assert rc == 0, err
        assert "2 cases found" in stdout
    assert len(manifest(out)) == 2 and (out / "nifti").is_dir()
    # an earlier dataset (another --out) inside the input is not input either
    rc, stdout, _ = run(["harmonize", "--in", root, "--out", tmp_path / "ds2", *FAST], capsys)
    assert rc == 0 and "2 cases found" in stdout


@pytest.mark.parametrize("how", ["renamed_folder", "second_input", "pairs_copy"])
def test_same_study_twice_kept_once_and_reported(template, tmp_path, capsys, how):
    root = autopet(template, tmp_path / "in")
    inputs = ["--in", root]
    if how == "renamed_folder":
        shutil.copytree(root / "A", root / "A_renamed")
    elif how == "second_input":
        other = autopet(template, tmp_path / "site2", cases=("A",))
        os.rename(other / "A", other / "X7")
        inputs += ["--in", other]
    else:
        other = tmp_path / "pairs"
        other.mkdir()
        shutil.copy(root / "A" / "SUV.nii.gz", other / "p9_suv.nii.gz")
        shutil.copy(root / "A" / "CTres.nii.gz", other / "p9_ct.nii.gz")
        inputs += ["--in", other]
    rc, out, err = run(["harmonize", *inputs, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    rows = manifest(tmp_path / "ds")
    assert len(rows) == 2 and sorted(r["source_path"] for r in rows) == ["A", "B"]
    dups = list(csv.DictReader(open(tmp_path / "ds" / "duplicates.csv")))
    assert len(dups) == 1 and dups[0]["duplicate_of_path"].endswith("/A") and "same PET file" in dups[0]["evidence"]
    assert "duplicate" in out
    assert dups[0]["case_id"] not in {r["case_id"] for r in rows}
    assert not (tmp_path / "ds" / "cases" / dups[0]["case_id"]).exists()  # the copy was never written
    no_tmp_left(tmp_path / "ds")
    splits = json.loads((tmp_path / "ds" / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(r["case_id"] for r in rows)


@pytest.mark.parametrize("how", ["copy_in_same_root", "second_input"])
def test_dicom_study_twice_by_uid(template, tmp_path, capsys, caplog, how):
    root = dicom(template, tmp_path / "in")
    inputs = ["--in", root]
    if how == "copy_in_same_root":
        shutil.copytree(root / "D", root / "D_copy")
    else:
        other = dicom(template, tmp_path / "in2")
        os.rename(other / "D", other / "renamed")
        inputs += ["--in", other]
    with caplog.at_level(logging.WARNING):
        rc, out, err = run(["harmonize", *inputs, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    assert len(manifest(tmp_path / "ds")) == 1
    dups = list(csv.DictReader(open(tmp_path / "ds" / "duplicates.csv")))
    if how == "second_input":
        assert len(dups) == 1 and "dicom PT series" in dups[0]["evidence"]
    else:
        assert "repeat instances" in caplog.text


# -------------------------------------------------------------------------------------------- metadata


def _meta(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _case_meta(out: Path) -> dict[str, dict]:
    return {m["source_path"]: m for m in (json.loads(p.read_text()) for p in (out / "cases").glob("*/meta.json"))}


def test_foreign_metadata_in_parent_is_warned_not_fatal(template, tmp_path, capsys, caplog):
    root = autopet(template, tmp_path / "coll" / "in")
    _meta(tmp_path / "coll" / "metadata.csv", ["Subject ID", "Study UID", "age"], [["A", "1.2.3", "057Y"]])
    with caplog.at_level(logging.WARNING):
        rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    assert "no 'case_id' column" in caplog.text and "--metadata-id" in caplog.text
    assert len(manifest(tmp_path / "ds")) == 2


def test_metadata_id_column_maps_a_foreign_table(template, tmp_path, capsys):
    root = autopet(template, tmp_path / "in")
    meta = _meta(tmp_path / "clinical.csv", ["Subject ID", "age", "sex", "diagnosis"],
                 [["A", "057Y", "F", "LYMPHOMA"], ["B", "63", "M", "negative"]])
    rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", "--metadata", meta,
                      "--metadata-id", "Subject ID", *FAST], capsys)
    assert rc == 0, err
    m = _case_meta(tmp_path / "ds")
    assert m["A"]["age"] == 57.0 and m["A"]["diagnosis"] == "lymphoma" and m["B"]["sex"] == "M"


@pytest.mark.parametrize("problem", ["unknown_id_column", "duplicate_id", "missing_file", "not_utf8"])
def test_metadata_refused_with_one_line(template, tmp_path, capsys, problem):
    root = autopet(template, tmp_path / "in")
    meta = tmp_path / "meta.csv"
    extra = []
    if problem == "unknown_id_column":
        _meta(meta, ["Subject ID", "age"], [["A", "50"]])
        extra = ["--metadata-id", "PatientKey"]
        names = [str(meta), "PatientKey", "Subject ID"]
    elif problem == "duplicate_id":
        _meta(meta, ["case_id", "age"], [["A", "50"], ["B", "60"], ["A", "70"]])
        names = [str(meta), "'A'", "rows 2 and 4"]
    elif problem == "missing_file":
        meta = tmp_path / "nope.csv"
        names = [str(meta), "not found"]
    else:
        meta.write_bytes(b"case_id,diagnosis\nA,lymphome \xe0 grandes cellules\n")
        names = [str(meta), "cannot read"]
    rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", "--metadata", meta, *extra, *FAST],
                     capsys)
    assert rc == 3
    error_line(err, *names)
    assert not (tmp_path / "ds" / "cases").exists()  # refused before anything was written


@pytest.mark.parametrize("age", ["-5", "inf", "abc", "nan", "300"])
def test_implausible_age_dropped_with_warning(template, tmp_path, capsys, caplog, age):
    root = autopet(template, tmp_path / "in")
    _meta(root / "metadata.csv", ["case_id", "age", "tracer"], [["A", age, "fdg"], ["B", "44", "fdg"]])
    with caplog.at_level(logging.WARNING):
        rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    m = _case_meta(tmp_path / "ds")
    assert m["A"]["age"] is None and m["A"]["tracer"] == "fdg" and m["B"]["age"] == 44.0
    assert "metadata.csv" in caplog.text and "row 2" in caplog.text and "age" in caplog.text


def test_predict_in_ignores_metadata(template, tiny_model, tmp_path, capsys):
    root = autopet(template, tmp_path / "coll" / "in", cases=("A",))
    _meta(root / "metadata.csv", ["case_id", "age"], [["A", "1"], ["A", "2"]])  # would be refused by harmonize
    _meta(tmp_path / "coll" / "metadata.csv", ["Subject ID"], [["A"]])
    rc, _, err = run(["predict", "--model", tiny_model, "--in", root, "--out", tmp_path / "pred", "--no-report",
                      "--no-progress"], capsys)
    assert rc == 0, err


# ---------------------------------------------------------------------------------- predict: stale skips


def test_predict_skip_only_when_input_and_model_match(template, tiny_model, tmp_path, capsys):
    root = autopet(template, tmp_path / "in", cases=("A",))
    args = ["predict", "--model", tiny_model, "--in", root, "--out", tmp_path / "pred", "--no-report",
            "--no-progress"]
    rc, out, _ = run(args, capsys)
    assert rc == 0 and "1 case(s) predicted" in out
    summary = tmp_path / "pred" / "A" / "summary.json"
    s = json.loads(summary.read_text())
    assert s["input"]["fingerprint"]["pet"] and s["model"]["weights_blake2b"]
    rc, out, _ = run(args, capsys)  # same input, same model: skipped
    assert rc == 0 and "1 already done" in out
    # another patient under the same folder name: redone, and said so
    shutil.copy(template / "autopet" / "B" / "SUV.nii.gz", root / "A" / "SUV.nii.gz")
    shutil.copy(template / "autopet" / "B" / "CTres.nii.gz", root / "A" / "CTres.nii.gz")
    rc, out, _ = run(args, capsys)
    assert rc == 0 and "another input" in out and "1 case(s) predicted" in out
    # another model (weights differ)
    s = json.loads(summary.read_text())
    s["model"]["weights_blake2b"] = "0" * 32
    summary.write_text(json.dumps(s))
    rc, out, _ = run(args, capsys)
    assert rc == 0 and "another model" in out and "1 case(s) predicted" in out
    # another threshold
    rc, out, _ = run([*args, "--threshold", "0.7"], capsys)
    assert rc == 0 and "threshold" in out and "1 case(s) predicted" in out


def test_predict_single_study_stale_summary_redone(template, tiny_model, tmp_path, capsys):
    a, b = template / "autopet" / "A", template / "autopet" / "B"
    out = tmp_path / "pred"
    base = ["predict", "--model", tiny_model, "--out", out, "--no-report"]
    assert run([*base, "--pet", a / "SUV.nii.gz", "--ct", a / "CTres.nii.gz"], capsys)[0] == 0
    rc, stdout, _ = run([*base, "--pet", a / "SUV.nii.gz", "--ct", a / "CTres.nii.gz"], capsys)
    assert rc == 0 and "nothing to do" in stdout
    rc, stdout, _ = run([*base, "--pet", b / "SUV.nii.gz", "--ct", b / "CTres.nii.gz"], capsys)
    assert rc == 0 and "predicting again" in stdout
    assert json.loads((out / "summary.json").read_text())["input"]["source"].endswith("B/SUV.nii.gz")


def test_predict_out_inside_in_not_reingested(template, tiny_model, tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(template / "autopet" / "A" / "SUV.nii.gz", root / "p1_suv.nii.gz")
    shutil.copy(template / "autopet" / "A" / "CTres.nii.gz", root / "p1_ct.nii.gz")
    args = ["predict", "--model", tiny_model, "--in", root, "--out", root / "pred", "--no-report", "--no-progress"]
    assert run(args, capsys)[0] == 0
    rc, out, _ = run(args, capsys)  # pred/p1/lesions.nii.gz would be a "seg" file of a new pairs case
    assert rc == 0 and "0 case(s) predicted, 1 already done, 0 failed" in out


# ------------------------------------------------------------------------------------ evaluate: ambiguity


def _mask(path: Path, value=1):
    arr = np.zeros((8, 8, 8), np.uint8)
    arr[2:5, 2:5, 2:5] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


@pytest.mark.parametrize("layout", ["nii_and_niigz", "flat_and_nested", "nested_two_ext", "gt_two_ext"])
def test_evaluate_refuses_two_files_for_one_case(tmp_path, capsys, layout):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _mask(gt / "c1.nii.gz")
    _mask(gt / "c2.nii.gz")
    _mask(pred / "c2.nii.gz")
    if layout == "nii_and_niigz":
        first, second = pred / "c1.nii.gz", pred / "c1.nii"
    elif layout == "flat_and_nested":
        first, second = pred / "c1" / "lesions.nii.gz", pred / "c1.nii.gz"
    elif layout == "nested_two_ext":
        first, second = pred / "c1" / "lesions.nii.gz", pred / "c1" / "lesions.mha"
    else:
        _mask(pred / "c1.nii.gz")
        first, second = gt / "c1.mha", gt / "c1.nii.gz"
    _mask(first)
    _mask(second)
    rc, _, err = run(["evaluate", "--gt", gt, "--pred", pred, "--out", tmp_path / "ev"], capsys)
    assert rc == 3
    line = error_line(err, "two files")
    assert first.name in line and second.name in line
    assert not (tmp_path / "ev").exists() or not any((tmp_path / "ev").iterdir())


# ------------------------------------------------------------------------------------ orphaned workers


WORKER_SCRIPT = """
import os, sys, time
from petctfm.harmonize.api import worker_pool
pool = worker_pool(2)
futs = [pool.submit(os.getpid) for _ in range(8)]
pids = sorted({f.result() for f in futs})
print(" ".join(map(str, pids)), flush=True)
pool.submit(time.sleep, 120)
pool.submit(time.sleep, 120)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_workers_die_when_harmonize_is_killed(tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        pids = [int(x) for x in line.split()]
        assert pids and all(_alive(pid) for pid in pids)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "orphaned worker processes"
    finally:
        if p.poll() is None:
            p.kill()


# ------------------------------------------------------------------ special files given directly, other commands


def test_predict_batch_row_with_fifo_fails_alone(template, tiny_model, tmp_path, capsys):
    a = template / "autopet" / "A"
    lst = tmp_path / "list.csv"
    lst.write_text(f"case_id,pet,ct\ngood,{a / 'SUV.nii.gz'},{a / 'CTres.nii.gz'}\n"
                   f"piped,pet_pipe.nii.gz,{a / 'CTres.nii.gz'}\n")
    with fifo_guard(tmp_path / "pet_pipe.nii.gz"):
        rc, out, err = run(["predict", "--model", tiny_model, "--batch", lst, "--out", tmp_path / "pred",
                            "--no-report", "--no-progress"], capsys)
    assert rc == 5, err
    failed = list(csv.DictReader(open(tmp_path / "pred" / "failed.csv")))
    assert [f["case"] for f in failed] == ["piped"] and "pet_pipe.nii.gz" in failed[0]["reason"]
    assert "not a regular file" in failed[0]["reason"]
    assert (tmp_path / "pred" / "good" / "summary.json").is_file()
    assert not (tmp_path / "pred" / "piped").exists()  # nothing half-written for the failed case


def test_predict_pet_fifo_one_line(template, tiny_model, tmp_path, capsys):
    with fifo_guard(tmp_path / "SUV.nii.gz"):
        rc, out, err = run(["predict", "--model", tiny_model, "--pet", tmp_path / "SUV.nii.gz", "--ct",
                            template / "autopet" / "A" / "CTres.nii.gz", "--out", tmp_path / "pred", "--no-report"],
                           capsys)
    assert rc == 3
    error_line(err, "SUV.nii.gz", "not a regular file")
    assert not (tmp_path / "pred" / "summary.json").exists()


def test_evaluate_fifo_prediction_not_opened(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _mask(gt / "c1.nii.gz")
    _mask(gt / "c2.nii.gz")
    _mask(pred / "c2.nii.gz")
    with fifo_guard(pred / "c1.nii.gz"):
        rc, out, err = run(["evaluate", "--gt", gt, "--pred", pred, "--out", tmp_path / "ev"], capsys)
    assert rc == 3
    error_line(err, "c1")


def test_pretrain_dataset_json_fifo_not_opened(tmp_path, capsys):
    data = tmp_path / "ds"
    (data / "cases").mkdir(parents=True)
    with fifo_guard(data / "dataset.json"):
        rc, out, err = run(["pretrain", "--data", data, "--out", tmp_path / "run", "--preset", "tiny",
                            "--no-progress", "--max-steps", "1"], capsys)
    assert rc == 3
    error_line(err, str(data))


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_training_on_a_non_utf8_dataset_path(tmp_path, capsys, command):
    from toy_data import write_toy_dataset

    data = write_toy_dataset(os.path.join(tmp_path, os.fsdecode(b"ds_\xe9")), n_cases=3, shape=(32, 32, 32))
    extra = ["--patch", "16", "--init", "scratch", "--backbone", "unet-resenc-tiny"] if command == "finetune" else []
    rc, out, err = run([command, "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "--no-progress",
                        "--max-steps", "1", *extra], capsys)
    assert rc == 0, err
    assert (tmp_path / "run" / "config.yaml").is_file()
