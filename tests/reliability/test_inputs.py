"""Bad-input battery (issue 17, part B), part 1: discovery (special files, symlinks, names) and duplicates.
Part 2 (metadata, stale predictions, ambiguous evaluate inputs, workers): test_inputs_commands.py.

Each case runs a real command on tiny phantoms and asserts the exit code (docs/reliability.md), no traceback,
a one-line ``error:`` naming the file where the run is refused, the rest of the batch finished, and nothing
half-written. Commands that could hang on a regression (a FIFO in the input) run under :func:`fifo_guard`:
a thread that keeps checking whether anyone has opened the FIFOs for reading, and if so releases the
reader (a writer open + close gives it EOF) and records it, so a regression fails the test instead of
stalling CI.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest

from input_helpers import (FAST, NON_UTF8, autopet, check_prediction, dicom, fifo_guard, manifest, no_tmp_left,
                           run)


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


@pytest.mark.parametrize("how", ["fifo_named_suv", "link_to_outside_fifo"])
def test_fifo_named_like_an_image_is_not_a_case(template, tmp_path, capsys, caplog, how):
    root = autopet(template, tmp_path / "in")
    (root / "C").mkdir()
    fifo = root / "C" / "SUV.nii.gz" if how == "fifo_named_suv" else tmp_path / "outside.pipe"
    with fifo_guard(fifo), caplog.at_level(logging.INFO):
        if how == "link_to_outside_fifo":
            (root / "C" / "SUV.nii.gz").symlink_to(fifo)
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
    assert "1 case(s) predicted, 0 already done, 0 failed" in out  # the stray FIFO is no case
    assert sorted(p.name for p in (tmp_path / "pred").iterdir() if p.is_dir()) == ["A"]
    s = check_prediction(tmp_path / "pred" / "A", root / "A" / "SUV.nii.gz")
    assert s["input"]["source"] == str(root / "A")


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
    s = check_prediction(tmp_path / "pred", pet)
    assert s["input"]["source"] == str(pet)  # the undecodable bytes round-trip (surrogateescape)


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
