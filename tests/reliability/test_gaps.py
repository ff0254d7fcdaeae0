"""Bad-input battery, part C (issue 17 follow-ups): a run folder whose name is not UTF-8 (TensorBoard), a
``dataset.json`` that is not a regular file, the body-weight flag in harmonize and predict, ``cases.csv``
flags, and duplicates by decoded content. Conventions as in test_inputs.py: exit code, one ``error:`` line
naming the file, no traceback, the rest of the batch finished, nothing half-written."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pydicom
import pytest

from input_helpers import FAST, autopet, check_one_step_run, error_line, fifo_guard, manifest, no_tmp_left, run


# ------------------------------------------------------------------------- training into a non-UTF-8 folder


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_training_into_a_non_utf8_run_folder(tmp_path, capsys, command):
    """TensorBoard encodes its path as UTF-8 (it raised UnicodeEncodeError); the run now completes and the
    event file is in the run folder's tb/."""
    from toy_data import write_toy_dataset

    data = write_toy_dataset(tmp_path / "ds", n_cases=3, shape=(32, 32, 32))
    run_dir = Path(os.path.join(tmp_path, os.fsdecode(b"run_\xe9\xff")))
    extra = ["--patch", "16", "--init", "scratch", "--backbone", "unet-resenc-tiny"] if command == "finetune" else []
    rc, out, err = run([command, "--data", data, "--out", run_dir, "--preset", "tiny", "--no-progress",
                        "--max-steps", "1", "--log-every", "1", *extra], capsys)
    assert rc == 0, err
    summary = check_one_step_run(run_dir, data)
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1] and logged[0]["loss"] == pytest.approx(summary["loss"])
    assert [p.name for p in (run_dir / "tb").iterdir() if p.name.startswith("events.out.tfevents")]
    no_tmp_left(run_dir)


# ------------------------------------------------------------------------- dataset.json not a regular file


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling_symlink"])
def test_dataset_json_not_a_regular_file(tmp_path, capsys, kind):
    data = tmp_path / "ds"
    (data / "cases").mkdir(parents=True)
    target = data / "dataset.json"
    args = ["pretrain", "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "--no-progress",
            "--max-steps", "1"]
    if kind == "fifo":
        with fifo_guard(target):
            rc, out, err = run(args, capsys)
        what = "named pipe"
    else:
        target.mkdir() if kind == "folder" else target.symlink_to(tmp_path / "gone.json")
        rc, out, err = run(args, capsys)
        what = "folder" if kind == "folder" else "dangling symlink"
    assert rc == 3
    line = error_line(err, str(target), "not a regular file", what)
    assert "folder not found" not in line and "not a harmonized" not in line
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------- body weight outside 20-200 kg


def _set_weight(case_dir: Path, kg: float) -> None:
    for p in sorted(case_dir.rglob("*")):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p)
            except Exception:  # noqa: BLE001 - not a DICOM file
                continue
            if getattr(ds, "Modality", "") == "PT":
                ds.PatientWeight = kg
                ds.save_as(p)


def test_harmonize_flags_an_unusual_body_weight(template, tmp_path, capsys):
    """A DICOM PatientWeight of 19 kg and a metadata weight_kg of 250 are kept but flagged (qa.csv, manifest);
    the 80 kg cases are not. 0.5 kg would be refused (impossible), tested in test_values_and_outputs."""
    root = autopet(template, tmp_path / "in")
    (root / "metadata.csv").write_text("case_id,weight_kg\nA,250\nB,80\n")
    dc = shutil.copytree(template / "dicom", tmp_path / "dicom")
    _set_weight(dc, 19.0)
    rc, _, err = run(["harmonize", "--in", root, "--in", dc, "--out", tmp_path / "out", *FAST], capsys)
    assert rc == 0, err
    flags = {r["source_path"]: r["qa_flags"] for r in manifest(tmp_path / "out")}
    assert "body weight 250 kg outside the usual 20-200 kg" in flags["A"]
    assert "body weight" not in flags["B"]
    assert any("body weight 19 kg outside the usual" in f for k, f in flags.items() if k not in ("A", "B")), flags
    qa = list(csv.DictReader(open(tmp_path / "out" / "qa" / "qa.csv", encoding="utf-8")))
    assert sum("body weight" in r["warnings"] for r in qa) == 2
    assert all(r["status"] == "warn" for r in qa if "body weight" in r["warnings"])
    no_tmp_left(tmp_path / "out")


def test_predict_flags_an_unusual_dicom_weight(template, tiny_model, tmp_path, capsys):
    dc = shutil.copytree(template / "dicom", tmp_path / "dicom")
    _set_weight(dc, 210.0)
    out = tmp_path / "pred"
    rc, _, err = run(["predict", "--model", tiny_model, "--in", dc, "--out", out, "--no-report", "--no-progress"],
                     capsys)
    assert rc == 0, err
    (summary,) = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    assert any("body weight 210 kg outside the usual 20-200 kg" in f for f in summary["flags"]), summary["flags"]
    rows = list(csv.DictReader(open(out / "cases.csv", encoding="utf-8")))
    assert len(rows) == 1 and "body weight 210 kg" in rows[0]["flags"]


def test_weight_flags_never_raise():
    from petctfm.core.plausibility import check_weight_kg, weight_flags

    assert weight_flags(None) == [] and weight_flags("abc") == [] and weight_flags(float("nan")) == []
    assert weight_flags(70) == [] and weight_flags(20) == [] and weight_flags(200) == []
    assert weight_flags(19.5) == ["body weight 19.5 kg outside the usual 20-200 kg"]
    assert check_weight_kg(250, "x") == weight_flags(250)
    with pytest.raises(Exception, match="grams"):
        check_weight_kg(80000, "x")


# ------------------------------------------------------------------------- resume reads the checkpoint once


def test_resume_reads_the_checkpoint_once_and_matches_exactly(tmp_path, capsys, monkeypatch):
    """--resume reads model.safetensors, ema.safetensors and state.pt of the resumed step once each (they were
    read up to three times: intact check, trained-with config, load), and the resumed run's weights equal an
    uninterrupted run's."""
    import safetensors.torch
    import torch

    from petctfm.train import checkpoint as ck
    from toy_data import write_toy_dataset

    data = write_toy_dataset(tmp_path / "ds", n_cases=3, shape=(32, 32, 32))
    opts = ["--preset", "tiny", "--no-progress", "--seed", "3", "--figure-every", "0", "--log-every", "1",
            "--checkpoint-every", "1", "--set", "train.ema_decay=0.9"]
    assert run(["pretrain", "--data", data, "--out", tmp_path / "full", *opts, "--max-steps", "3"], capsys)[0] == 0
    assert run(["pretrain", "--data", data, "--out", tmp_path / "cut", *opts, "--max-steps", "2"], capsys)[0] == 0
    reads: list[str] = []
    real_load_file, real_torch_load = ck.load_file, torch.load

    def load_file(path, *a, **k):
        reads.append(Path(path).relative_to(tmp_path / "cut").as_posix())
        return real_load_file(path, *a, **k)

    def torch_load(path, *a, **k):
        reads.append(Path(path).relative_to(tmp_path / "cut").as_posix())
        return real_torch_load(path, *a, **k)

    monkeypatch.setattr(ck, "load_file", load_file)
    monkeypatch.setattr(torch, "load", torch_load)
    rc, _, err = run(["pretrain", "--out", tmp_path / "cut", "--resume", "--no-progress", "--max-steps", "3"], capsys)
    monkeypatch.undo()
    assert rc == 0, err
    step2 = "checkpoints/step_0000002"
    assert sorted(reads) == [f"{step2}/ema.safetensors", f"{step2}/model.safetensors", f"{step2}/state.pt"]
    for name in ("model.safetensors", "ema.safetensors"):
        a = safetensors.torch.load_file(tmp_path / "full" / "checkpoints" / "step_0000003" / name)
        b = safetensors.torch.load_file(tmp_path / "cut" / "checkpoints" / "step_0000003" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


# ------------------------------------------------------------------------- duplicates by decoded content


def _regzip(path: Path) -> None:
    import gzip

    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))


def test_recompressed_copy_is_a_duplicate_by_decoded_voxels(template, tmp_path, capsys):
    """A copy of case A whose SUV.nii.gz is re-compressed (other bytes, same voxels) is harmonized once more but
    left out at finalize: listed in duplicates.csv, not in the manifest or the splits; a copy with one voxel
    changed is a different study and is kept. A re-run (and --finalize) keeps the same answer."""
    import nibabel as nib
    import numpy as np

    root = autopet(template, tmp_path / "in")
    for name in ("A_recompressed", "A_changed"):
        shutil.copytree(root / "A", root / name)
    _regzip(root / "A_recompressed" / "SUV.nii.gz")
    assert (root / "A_recompressed" / "SUV.nii.gz").read_bytes() != (root / "A" / "SUV.nii.gz").read_bytes()
    img = nib.load(root / "A_changed" / "SUV.nii.gz")
    arr = np.asarray(img.dataobj).copy()
    arr[arr.shape[0] // 2, arr.shape[1] // 2, arr.shape[2] // 2] += 0.5
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), root / "A_changed" / "SUV.nii.gz")
    out = tmp_path / "out"
    for args in (["--in", root, "--out", out, *FAST], ["--in", root, "--out", out, *FAST], ["--finalize", out]):
        rc, _, err = run(["harmonize", *args], capsys)
        assert rc == 0, err
        rows = list(csv.DictReader(open(out / "duplicates.csv", encoding="utf-8")))
        assert [(r["source_path"], r["duplicate_of_path"].split("/")[-1]) for r in rows] == [("A_recompressed", "A")]
        assert rows[0]["evidence"] == "same decoded PET voxels and geometry blake2b"
        assert sorted(r["source_path"] for r in manifest(out)) == ["A", "A_changed", "B"]
        splits = json.loads((out / "splits.json").read_text())
        assert rows[0]["case_id"] not in {c for v in splits.values() if isinstance(v, list) for c in v}
    no_tmp_left(out)


def test_voxel_key_sees_voxels_and_geometry():
    import numpy as np
    import SimpleITK as sitk

    from petctfm.harmonize.duplicates import voxel_key

    a = sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    b = sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    assert voxel_key(a) == voxel_key(b)
    b.SetOrigin((0.0, 0.0, 10.0))
    assert voxel_key(a) != voxel_key(b)
    c = sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(4, 4, 4) * 1.0001)
    assert voxel_key(a) != voxel_key(c)
