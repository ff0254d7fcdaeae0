"""Bad-input battery (issue 17, part B), part 2: metadata, stale predictions, ambiguous evaluate inputs, orphaned
workers, special files given to other commands. Helpers and conventions: input_helpers.py, test_inputs.py."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from input_helpers import (FAST, SRC, autopet, check_one_step_run, check_prediction, error_line, fifo_guard,
                           manifest, run, write_mask)


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


def test_metadata_with_bom_and_padded_header(template, tmp_path, capsys):
    root = autopet(template, tmp_path / "in")
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf case_id , age ,tracer\nA, 61 ,psma\n")  # Excel's UTF-8 BOM
    rc, _, err = run(["harmonize", "--in", root, "--out", tmp_path / "ds", *FAST], capsys)
    assert rc == 0, err
    m = _case_meta(tmp_path / "ds")
    assert m["A"]["age"] == 61.0 and m["A"]["tracer"] == "psma" and m["B"]["age"] is None


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
    rc, out, err = run(["predict", "--model", tiny_model, "--in", root, "--out", tmp_path / "pred", "--no-report",
                        "--no-progress"], capsys)
    assert rc == 0, err
    assert "1 case(s) predicted, 0 already done, 0 failed" in out
    check_prediction(tmp_path / "pred" / "A", root / "A" / "SUV.nii.gz")


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


@pytest.mark.parametrize("layout", ["nii_and_niigz", "flat_and_nested", "nested_two_ext", "gt_two_ext"])
def test_evaluate_refuses_two_files_for_one_case(tmp_path, capsys, layout):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_mask(gt / "c1.nii.gz")
    write_mask(gt / "c2.nii.gz")
    write_mask(pred / "c2.nii.gz")
    if layout == "nii_and_niigz":
        first, second = pred / "c1.nii.gz", pred / "c1.nii"
    elif layout == "flat_and_nested":
        first, second = pred / "c1" / "lesions.nii.gz", pred / "c1.nii.gz"
    elif layout == "nested_two_ext":
        first, second = pred / "c1" / "lesions.nii.gz", pred / "c1" / "lesions.mha"
    else:
        write_mask(pred / "c1.nii.gz")
        first, second = gt / "c1.mha", gt / "c1.nii.gz"
    write_mask(first)
    write_mask(second)
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
    write_mask(gt / "c1.nii.gz")
    write_mask(gt / "c2.nii.gz")
    write_mask(pred / "c2.nii.gz")
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
    check_one_step_run(tmp_path / "run", data)
