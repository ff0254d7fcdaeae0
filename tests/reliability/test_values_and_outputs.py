"""Bad-input battery, part A (issue 17): implausible values, fatal problems, outputs, resume.

Every case asserts the exit code (``petctfm.core.errors.ExitCode``), a one-line message naming the file or
folder, no traceback, that the rest of a batch finished, and that nothing was half-written. Inputs are the
analytic phantoms of ``tests/harmonize_phantoms.py`` (4 mm, ~0.3 s a case) and the toy dataset of
``tests/toy_data.py``; one harmonize run serves all the harmonize value cases.
"""

from __future__ import annotations

import csv
import errno
import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from harmonize_phantoms import SUV_TO_BQML, synth_case
from petctfm.cli.main import main
from petctfm.data import format as fmt
from petctfm.io.images import write_image
from petctfm.synth.dicom import write_dicom_case
from petctfm.synth.layouts import write_autopet_case

SPACING = ["--spacing", "4", "4", "4", "--no-thumbnails"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``petctfm argv`` in-process: (exit code, stdout, stderr); asserts no traceback anywhere."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err, cap.out + cap.err
    return rc, cap.out, cap.err


def one_error_line(err: str, *fragments: str) -> str:
    """The single ``error: ...`` line of stderr, containing every fragment."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def no_temp_files(root: Path) -> None:
    """Nothing half-written: no temporary file or folder of an atomic write is left under ``root``."""
    if root.exists():
        left = [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".petctfm-write-probe")]
        assert not left, left


# ------------------------------------------------------------------------------------------------ images


def _arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def _like(img: sitk.Image, arr: np.ndarray, pixel=None) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return sitk.Cast(out, pixel) if pixel is not None else out


def _rewrite(folder: Path, name: str, img: sitk.Image) -> None:
    write_image(img, folder / name)


def _zero_pixdim(path: Path, axis: int = 3) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[76 + 4 * axis:80 + 4 * axis] = struct.pack("<f", 0.0)
    path.write_bytes(gzip.compress(bytes(raw)))


def _set_suv(folder: Path, fn) -> None:
    img = sitk.ReadImage(str(folder / "SUV.nii.gz"))
    _rewrite(folder, "SUV.nii.gz", _like(img, fn(_arr(img)).astype(np.float32)))


def _set_ct(folder: Path, fn) -> None:
    for name in ("CT.nii.gz", "CTres.nii.gz"):
        if (folder / name).exists():
            img = sitk.ReadImage(str(folder / name))
            _rewrite(folder, name, _like(img, fn(_arr(img)).astype(np.float32)))


def _swap(folder: Path) -> None:
    suv, ct = sitk.ReadImage(str(folder / "SUV.nii.gz")), sitk.ReadImage(str(folder / "CT.nii.gz"))
    (folder / "CTres.nii.gz").unlink()
    _rewrite(folder, "SUV.nii.gz", sitk.Cast(ct, sitk.sitkFloat32))
    _rewrite(folder, "CT.nii.gz", suv)


def _shift_label(folder: Path) -> None:
    seg = sitk.ReadImage(str(folder / "SEG.nii.gz"))
    o = seg.GetOrigin()
    seg.SetOrigin((o[0], o[1], o[2] + 300.0))
    _rewrite(folder, "SEG.nii.gz", seg)


def _other_body(folder: Path) -> None:
    """The CT of another patient (or position): the body 100 mm to the side, on the same grid."""
    (folder / "CTres.nii.gz").unlink()
    def shift(a, n=40):
        out = np.full_like(a, -1000)
        out[..., n:] = a[..., :-n]
        return out

    _set_ct(folder, shift)


# (folder, how to break it, fragment of the quarantine reason)
AUTOPET_BAD = [
    ("ZEROPET", lambda d: _set_suv(d, lambda a: np.zeros_like(a)), "every voxel is <= 0"),
    ("NEGPET", lambda d: _set_suv(d, lambda a: -a), "every voxel is <= 0"),
    ("FLIPPEDPET", lambda d: _set_suv(d, lambda a: 0.01 - a), "more negative than positive"),
    ("BQMLASSUV", lambda d: _set_suv(d, lambda a: a * SUV_TO_BQML), "impossible for SUV"),
    ("SUVX1E30", lambda d: _set_suv(d, lambda a: a * 1e30), "impossible for SUV"),
    ("SUVX60", lambda d: _set_suv(d, lambda a: a * 60.0), "Bq/ml"),
    ("SWAPPED", _swap, "this is a CT, not a PET"),
    ("PETINCTSLOT", lambda d: _set_ct(d, lambda a: np.clip(a, 0, None) / 40.0), "not a CT in HU"),
    ("CONSTCT", lambda d: _set_ct(d, lambda a: np.full_like(a, 40)), "an empty CT"),
    ("PIXDIM0", lambda d: _zero_pixdim(d / "SUV.nii.gz"), "pixdim[3]=0"),
    ("LABELOFF", _shift_label, "affine is off"),
    ("OTHERBODY", _other_body, "do not show the same body"),
    ("NANCT", lambda d: _set_ct(d, lambda a: np.where(a > 0, np.nan, a)), "NaN"),
]


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory):
    """One harmonize run over 2 good autoPET cases, 2 good DICOM cases and every bad case above, plus a
    DICOM case whose PatientWeight is in grams."""
    root = tmp_path_factory.mktemp("bad")
    ap, dc = root / "autopet_site", root / "dicom_site"
    for cid in ("GOOD_A", "GOOD_B"):
        write_autopet_case(synth_case(cid), ap)
    for cid, breaker, _ in AUTOPET_BAD:
        write_autopet_case(synth_case(cid), ap)
        breaker(ap / cid)
    write_dicom_case(synth_case("GOOD_D"), dc, seed=1)
    write_dicom_case(synth_case("GRAMS"), dc, seed=2)
    for p in sorted((dc / "GRAMS" / "PT").iterdir()):
        ds = pydicom.dcmread(p)
        ds.PatientWeight = 80000
        ds.save_as(p)
    out = root / "ds"
    capsys_like = {}
    import contextlib
    import io

    err, so = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(so):
        rc = main(["harmonize", "--in", str(ap), "--in", str(dc), "--out", str(out), *SPACING])
    capsys_like.update(rc=rc, stdout=so.getvalue(), err=err.getvalue())
    rows = {r["source_path"]: r for r in csv.DictReader(open(out / "quarantine.csv"))}
    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    return {"root": root, "out": out, "quarantine": rows, "manifest": manifest, **capsys_like}


EXPECTED = {cid: frag for cid, _, frag in AUTOPET_BAD} | {"GRAMS": "grams?"}


@pytest.mark.parametrize("cid", sorted(EXPECTED))
def test_harmonize_refuses_implausible_case(bad_batch, cid):
    """Each impossible case is quarantined with a one-line reason naming its folder; the batch went on."""
    assert "Traceback" not in bad_batch["stdout"] + bad_batch["err"]
    assert bad_batch["rc"] == 5  # PARTIAL: the good cases are done
    reason = bad_batch["quarantine"][cid]["reason"]
    assert EXPECTED[cid] in reason and cid in reason and "\n" not in reason, reason
    assert f"quarantined {bad_batch['quarantine'][cid]['case_id']}: {reason}" in bad_batch["stdout"]
    # the case left nothing in cases/ and the good ones are complete
    assert not fmt.case_dir(bad_batch["out"], bad_batch["quarantine"][cid]["case_id"]).exists()
    assert sorted(r["source_path"] for r in bad_batch["manifest"]) == ["GOOD_A", "GOOD_B", "GOOD_D"]
    no_temp_files(bad_batch["out"])


def test_harmonize_good_phantoms_are_not_flagged(bad_batch):
    """'warn' is rare: the sound phantoms (4 mm PET, 2.5 x 2.5 x 5 mm CT) carry no flag."""
    assert {r["qa_status"] for r in bad_batch["manifest"]} == {"ok"}
    assert all(r["qa_flags"] == "" for r in bad_batch["manifest"])


def test_one_absurd_case_does_not_shift_the_normalization(tmp_path):
    """Robust statistics: a kept (only flagged) case with SUV x 10 leaves the PET/CT mean and std within 2 %
    of the clean dataset's, and is listed as left out; an SUV x 1e30 case never gets in (quarantined)."""
    from petctfm.harmonize.api import harmonize_folder
    from petctfm.harmonize.manifest import normalization_stats

    src = tmp_path / "in"
    for cid in ("G0", "G1", "G2", "G3", "X10", "X1E30"):
        write_autopet_case(synth_case(cid, lesion=cid != "G1"), src)
    _set_suv(src / "X10", lambda a: a * 10.0)
    _set_suv(src / "X1E30", lambda a: a * 1e30)
    out = tmp_path / "ds"
    summary = harmonize_folder(src, out, spacing=(4, 4, 4), thumbnails=False)
    assert summary["n_failed"] == 1 and "impossible for SUV" in summary["failed"][0]["reason"]
    rows = {r["source_path"]: r for r in csv.DictReader(open(out / "manifest.csv"))}
    assert rows["X10"]["qa_status"] == "warn" and "liver SUVmean" in rows["X10"]["qa_flags"]
    ids = {k: r["case_id"] for k, r in rows.items()}
    clean = normalization_stats(out, [ids[k] for k in ("G0", "G1", "G2", "G3")], (-1000.0, 1000.0))
    excluded: list[str] = []
    dirty = normalization_stats(out, list(ids.values()), (-1000.0, 1000.0), excluded)
    assert excluded == [ids["X10"]]
    for ch in ("PET", "CT"):
        for k in ("mean", "std"):
            assert dirty[ch][k] == pytest.approx(clean[ch][k], rel=0.02), (ch, k)
    info = json.loads((out / "dataset.json").read_text())
    train = json.loads((out / "splits.json").read_text())["train"]
    assert info["normalization_excluded"] == ([ids["X10"]] if ids["X10"] in train and len(train) >= 3 else [])


# ------------------------------------------------------------------------------------------------ harmonize outputs


@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    src = tmp_path_factory.mktemp("small") / "in"
    write_autopet_case(synth_case("S0"), src)
    return src


def _read_only(monkeypatch):
    """Make every probe / temporary file creation fail as on a read-only mount (root ignores chmod)."""
    import tempfile

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", k.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


OUT_CASES = ["file", "proc", "readonly"]


def _bad_out(kind: str, tmp_path: Path, monkeypatch) -> Path:
    if kind == "file":
        p = tmp_path / "taken.txt"
        p.write_text("not a folder")
        return p
    if kind == "proc":
        return Path("/proc/petctfm_out")
    _read_only(monkeypatch)
    return tmp_path / "ro_out"


@pytest.mark.parametrize("kind", OUT_CASES)
def test_harmonize_bad_out_is_one_line_exit_4(kind, small_input, tmp_path, monkeypatch, capsys):
    out = _bad_out(kind, tmp_path, monkeypatch)
    rc, _, err = run_cli(["harmonize", "--in", small_input, "--out", out, *SPACING], capsys)
    assert rc == 4
    one_error_line(err, str(out), "--out")
    assert not (tmp_path / "ro_out").exists()


@pytest.mark.parametrize("kind", ["folder", "device", "fifo", "symlink_to_fifo"])
def test_harmonize_write_mapping_refuses_non_regular_target(kind, small_input, tmp_path, capsys):
    import os

    if kind == "folder":
        target = tmp_path / "a_folder"
        target.mkdir()
    elif kind == "device":
        target = Path("/dev/null")
    else:
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        target = fifo
        if kind == "symlink_to_fifo":
            target = tmp_path / "link.csv"
            target.symlink_to(fifo)
    out = tmp_path / "ds"
    rc, _, err = run_cli(["harmonize", "--in", small_input, "--out", out, "--write-mapping", target, *SPACING],
                         capsys)
    assert rc == 4
    one_error_line(err, "--write-mapping", "not a regular file" if kind != "device" else "pseudo file system")
    assert not out.exists()  # refused before any work
    if kind != "device":
        assert Path(target).resolve().exists() and not Path(target).resolve().is_file()  # untouched


@pytest.mark.parametrize("option", [["--spacing", "6", "6", "6"], ["--ct-window", "-500", "500"]])
def test_harmonize_rerun_with_other_settings_writes_nothing(option, tmp_path, capsys):
    src = tmp_path / "in"
    write_autopet_case(synth_case("R0"), src)
    out = tmp_path / "ds"
    assert run_cli(["harmonize", "--in", src, "--out", out, *SPACING], capsys)[0] == 0
    write_autopet_case(synth_case("R1"), src)  # a new case arrives, then a re-run with other settings
    before = sorted(p.name for p in (out / "cases").iterdir())
    argv = ["harmonize", "--in", src, "--out", out, "--no-thumbnails", *option]
    if option[0] != "--spacing":
        argv += ["--spacing", "4", "4", "4"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2
    one_error_line(err, str(out / "cases"), option[0], "remove")
    assert sorted(p.name for p in (out / "cases").iterdir()) == before  # nothing written before refusing


def test_harmonize_disk_full_is_exit_4_not_a_quarantine(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    write_autopet_case(synth_case("F0"), src)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fmt.np, "save", full)
    out = tmp_path / "ds"
    rc, _, err = run_cli(["harmonize", "--in", src, "--out", out, *SPACING], capsys)
    assert rc == 4
    one_error_line(err, str(out), "No space left on device")
    assert not (out / ".work" / "failed").exists() or not list((out / ".work" / "failed").iterdir())
    no_temp_files(out)


# ------------------------------------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    import nibabel as nib
    from toy_data import write_toy_dataset

    root = tmp_path_factory.mktemp("ev")
    toy = write_toy_dataset(root / "toy", n_cases=2, shape=(16, 16, 16))
    pred = root / "pred"
    pred.mkdir()
    for cid in ("toy000", "toy001"):
        lab = np.asarray(fmt.load_case(toy, cid)["label"])
        nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 2.0, 1.0])), str(pred / f"{cid}.nii.gz"))
    return toy, pred


@pytest.mark.parametrize("kind", OUT_CASES)
def test_evaluate_bad_out_is_one_line_exit_4(kind, eval_inputs, tmp_path, monkeypatch, capsys):
    toy, pred = eval_inputs
    out = _bad_out(kind, tmp_path, monkeypatch)
    rc, _, err = run_cli(["evaluate", "--pred", pred, "--gt", toy, "--out", out, "--bootstrap", "0"], capsys)
    assert rc == 4
    one_error_line(err, str(out), "--out")


def test_evaluate_good_run_still_works(eval_inputs, tmp_path, capsys):
    """The same inputs with a writable --out, the numbers against a hand count: toy000 predicted empty (its
    lesion missed: FN volume), toy001's lesion predicted only where x >= its median (partial: no FN volume)
    plus a 2x2x2 false positive far from it (FP volume)."""
    import nibabel as nib

    toy, pred = eval_inputs
    mine = tmp_path / "pred"
    shutil.copytree(pred, mine)
    masks = {}
    for cid in ("toy000", "toy001"):
        img = nib.load(str(mine / f"{cid}.nii.gz"))
        masks[cid] = np.asarray(img.dataobj) > 0
    gt0, gt1 = masks["toy000"], masks["toy001"]
    cut = gt1.copy()
    cut[: int(np.median(np.nonzero(gt1)[0]))] = False
    assert 0 < cut.sum() < gt1.sum() and not gt1[12:, :3, :3].any()
    fp = np.zeros_like(gt1)
    fp[13:15, 0:2, 0:2] = True  # 8 voxels, not 18-connected to the lesion
    nib.save(nib.Nifti1Image(np.zeros(gt0.shape, np.uint8), img.affine), str(mine / "toy000.nii.gz"))
    nib.save(nib.Nifti1Image((cut | fp).astype(np.uint8), img.affine), str(mine / "toy001.nii.gz"))
    rc, out, _ = run_cli(["evaluate", "--pred", mine, "--gt", toy, "--out", tmp_path / "r", "--bootstrap", "0"],
                         capsys)
    assert rc == 0
    with open(tmp_path / "r" / "per_case.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["toy000", "toy001"]
    voxel_ml = 2.0 ** 3 / 1000.0  # the toy dataset's 2 mm grid
    r0, r1 = rows["toy000"], rows["toy001"]
    assert float(r0["dice"]) == 0.0 and float(r0["fp_volume_ml"]) == 0.0
    assert float(r0["fn_volume_ml"]) == pytest.approx(gt0.sum() * voxel_ml, rel=1e-6)
    assert float(r1["dice"]) == pytest.approx(2 * cut.sum() / (cut.sum() + 8 + gt1.sum()), abs=1e-6)
    assert float(r1["fp_volume_ml"]) == pytest.approx(8 * voxel_ml, rel=1e-6)
    assert float(r1["fn_volume_ml"]) == 0.0


# ------------------------------------------------------------------------------------------------ predict

PREDICT_BAD = [  # (case, breaker, fragment of the error, the file the error names)
    ("BQMLASSUV", lambda d: _set_suv(d, lambda a: a * SUV_TO_BQML), "impossible for SUV", "SUV.nii.gz"),
    ("SWAPPED", _swap, "PET and CT swapped", "SUV.nii.gz"),
    ("ZEROPET", lambda d: _set_suv(d, lambda a: np.zeros_like(a)), "every voxel is <= 0", "SUV.nii.gz"),
    ("OTHERBODY", _other_body, "do not show the same body", "SUV.nii.gz"),
    ("CONSTCT", lambda d: _set_ct(d, lambda a: np.full_like(a, 40)), "an empty CT", "SUV.nii.gz"),
    ("PIXDIM0", lambda d: _zero_pixdim(d / "CT.nii.gz", 1), "pixdim[1]=0", "CT.nii.gz"),
]


@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pin") / "in"
    write_autopet_case(synth_case("GOOD_P"), root)
    write_autopet_case(synth_case("HOT"), root)  # a 150-SUV lesion: unusual, flagged, predicted
    _set_suv(root / "HOT", lambda a: np.where(a > 5, 150.0, a))
    for cid, breaker, _, _ in PREDICT_BAD:
        write_autopet_case(synth_case(cid), root)
        breaker(root / cid)
    for d in root.iterdir():  # predict reads PET, CT (and organs); keep the layout minimal
        for extra in ("PET.nii.gz", "CTres.nii.gz"):
            if (d / extra).exists() and (d / "CT.nii.gz").exists():
                (d / extra).unlink()
    return root


@pytest.mark.parametrize("cid", [c[0] for c in PREDICT_BAD])
def test_predict_refuses_implausible_study(cid, predict_inputs, tiny_seg_model, tmp_path, capsys):
    _, _, fragment, named = next(c for c in PREDICT_BAD if c[0] == cid)
    d = predict_inputs / cid
    out = tmp_path / "pred"
    rc, _, err = run_cli(["predict", "--model", tiny_seg_model, "--pet", d / "SUV.nii.gz", "--ct", d / "CT.nii.gz",
                          "--out", out, "--no-progress", "--no-report"], capsys)
    assert rc == 3
    one_error_line(err, fragment, named)
    assert not (out / "summary.json").exists()
    no_temp_files(tmp_path)


def test_predict_batch_finishes_the_rest_and_flags_the_unusual(predict_inputs, tiny_seg_model, tmp_path, capsys):
    out = tmp_path / "pred"
    rc, stdout, _ = run_cli(["predict", "--model", tiny_seg_model, "--in", predict_inputs, "--format", "autopet",
                             "--out", out, "--no-progress", "--no-report"], capsys)
    assert rc == 5  # PARTIAL
    failed = {r["case"]: r["reason"] for r in csv.DictReader(open(out / "failed.csv"))}
    assert set(failed) == {c[0] for c in PREDICT_BAD}
    for cid, _, fragment, _ in PREDICT_BAD:
        assert fragment in failed[cid] and "\n" not in failed[cid]
        assert not (out / cid / "summary.json").exists()
    good = json.loads((out / "GOOD_P" / "summary.json").read_text())
    hot = json.loads((out / "HOT" / "summary.json").read_text())
    assert good["flags"] == []
    assert any("SUVmax 150.0 > 100" in f for f in hot["flags"]), hot["flags"]
    cases = {r["case"]: r for r in csv.DictReader(open(out / "cases.csv", encoding="utf-8"))}
    assert set(cases) == {"GOOD_P", "HOT"}  # only the finished cases; their flags as in summary.json
    assert cases["GOOD_P"]["flags"] == "" and cases["HOT"]["flags"] == "; ".join(hot["flags"])
    no_temp_files(out)


@pytest.mark.parametrize("kind", OUT_CASES)
def test_predict_checks_out_before_loading_the_model(kind, predict_inputs, tmp_path, monkeypatch, capsys):
    from petctfm.predict import predictor

    def never(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(predictor.Predictor, "load", classmethod(never))
    out = _bad_out(kind, tmp_path, monkeypatch)
    d = predict_inputs / "GOOD_P"
    rc, _, err = run_cli(["predict", "--model", tmp_path / "no_model", "--pet", d / "SUV.nii.gz", "--ct",
                          d / "CT.nii.gz", "--out", out], capsys)
    assert rc == 4
    line = one_error_line(err, str(out), "--out")
    assert "SUV.nii.gz" not in line  # blames the output, not the input


# ------------------------------------------------------------------------------------------------ pretrain / finetune

TINY = ["--preset", "tiny", "--no-progress", "--seed", "3", "--figure-every", "0", "--log-every", "1"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from toy_data import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(32, 32, 32))


@pytest.fixture(scope="module")
def pretrained(toy, tmp_path_factory):
    """A 2-step pretraining run with checkpoints at steps 1 and 2 (copied by the tests that damage it)."""
    run = tmp_path_factory.mktemp("pre") / "run"
    assert main(["pretrain", "--data", str(toy), "--out", str(run), *TINY, "--max-steps", "2",
                 "--checkpoint-every", "1"]) == 0
    return run


def _copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
@pytest.mark.parametrize("kind", OUT_CASES)
def test_training_bad_out_is_one_line_exit_4(command, kind, toy, tmp_path, monkeypatch, capsys):
    out = _bad_out(kind, tmp_path, monkeypatch)
    extra = ["--init", "scratch", "--backbone", "unet-resenc-tiny", "--patch", "16"] if command == "finetune" else []
    rc, _, err = run_cli([command, "--data", toy, "--out", out, *TINY, *extra, "--max-steps", "1"], capsys)
    assert rc == 4
    one_error_line(err, str(out), "--out")


@pytest.mark.parametrize("option", [["--lr", "nan"], ["--lr", "inf"], ["--weight-decay", "nan"],
                                    ["--set", "train.clip_grad=.nan"], ["--max-time", "nan"]])
def test_training_non_finite_numbers_are_usage_errors(option, toy, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(["pretrain", "--data", toy, "--out", out, *TINY, "--max-steps", "1", *option], capsys)
    assert rc == 2
    one_error_line(err, "must be a finite number")
    assert not (out / "checkpoints").exists()


def test_resume_with_broken_config_yaml_is_one_line(pretrained, tmp_path, capsys):
    run = _copy_run(pretrained, tmp_path)
    (run / "config.yaml").write_text("train: {lr: [unclosed\n  task: : :\n")
    rc, _, err = run_cli(["pretrain", "--out", run, "--resume", "--no-progress", "--max-steps", "3"], capsys)
    assert rc == 3
    one_error_line(err, str(run / "config.yaml"), "cannot read config")


def test_resume_with_edited_config_yaml_is_refused_naming_the_keys(pretrained, tmp_path, capsys):
    import yaml

    run = _copy_run(pretrained, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["lr"] = 0.5
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    rc, _, err = run_cli(["pretrain", "--out", run, "--resume", "--no-progress", "--max-steps", "3"], capsys)
    assert rc == 3
    one_error_line(err, "config.yaml", "train.lr", "edited")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_resume_reports_changed_resumable_settings(pretrained, tmp_path, capsys):
    run = _copy_run(pretrained, tmp_path)
    with pytest.warns(UserWarning, match=r"changed settings: train.max_steps: 2 -> 3"):
        rc, _, _ = run_cli(["pretrain", "--out", run, "--resume", "--no-progress", "--max-steps", "3"], capsys)
    assert rc == 0 and (run / "checkpoints" / "step_0000003").is_dir()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # resumed after step 2: nothing redone
    summary = json.loads((run / "summary.json").read_text())
    assert summary["start_step"] == 2 and summary["steps"] == 3


@pytest.mark.parametrize("damage", ["truncated_weights", "garbage_state"])
def test_corrupted_latest_checkpoint_falls_back_to_the_previous(damage, pretrained, tmp_path, capsys):
    run = _copy_run(pretrained, tmp_path)
    last = run / "checkpoints" / "step_0000002"
    if damage == "truncated_weights":
        data = (last / "model.safetensors").read_bytes()
        (last / "model.safetensors").write_bytes(data[: len(data) // 3])
    else:
        (last / "state.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.warns(UserWarning, match="skipped a corrupted checkpoint: step_0000002.*resuming from step_0000001"):
        rc, _, _ = run_cli(["pretrain", "--out", run, "--resume", "--no-progress", "--max-steps", "3"], capsys)
    assert rc == 0
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # step 2 recomputed from step 1, then step 3
    from petctfm.train.checkpoint import read_state

    assert read_state(run / "checkpoints" / "step_0000003")["step"] == 3


def test_pretraining_disk_full_is_one_line_exit_4(toy, tmp_path, monkeypatch, capsys):
    from petctfm.train import checkpoint as ck

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "checkpoints"))

    monkeypatch.setattr(ck, "write_checkpoint", full)
    rc, _, err = run_cli(["pretrain", "--data", toy, "--out", tmp_path / "run", *TINY, "--max-steps", "1"], capsys)
    assert rc == 4
    one_error_line(err, "No space left on device", "checkpoints")


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
@pytest.mark.parametrize("breakage", ["3d_image", "truncated_image"])
def test_training_refuses_a_broken_image_npy_naming_it(command, breakage, toy, tmp_path, capsys):
    data = tmp_path / "toy"
    shutil.copytree(toy, data)
    victim = data / "cases" / "toy000" / "image.npy"
    if breakage == "3d_image":
        np.save(victim, np.zeros((32, 32, 32), np.float32))
    else:
        victim.write_bytes(victim.read_bytes()[:500])
    extra = ["--init", "scratch", "--backbone", "unet-resenc-tiny", "--patch", "16"] if command == "finetune" else []
    rc, _, err = run_cli([command, "--data", data, "--out", tmp_path / "run", *TINY, *extra, "--max-steps", "2"],
                         capsys)
    assert rc == 3
    one_error_line(err, str(victim))
