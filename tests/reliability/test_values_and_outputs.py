"""Bad-input battery, part A (issue 17): implausible values, fatal problems, outputs, resume.

Every case asserts the exit code (``petctfm.core.errors.ExitCode``), a one-line message naming the file or
folder, no traceback, that the rest of a batch finished, and that nothing was half-written. Inputs are the
analytic phantoms of ``tests/harmonize_phantoms.py`` (4 mm, ~0.3 s a case) and the toy dataset of
``tests/toy_data.py``; one harmonize run serves all the harmonize value cases.
"""

from __future__ import annotations

import csv
import gzip
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
    """The CT of another patient (or position): the body 70 mm to the side, on the same grid."""
    (folder / "CTres.nii.gz").unlink()
    _set_ct(folder, lambda a: np.roll(a, 28, axis=2))


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
