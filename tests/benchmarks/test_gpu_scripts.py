"""The prepared GPU scripts (benchmarks/gpu/, docs/gpu.md) run their whole code path on the CPU (--smoke).

They are run on a GPU only by a session lent the device; these smokes keep them from rotting in between:
every stage must finish (no stage cut by its budget, no failure) and leave the files docs/gpu.md promises.
About a minute each on an idle 2-core machine (several times that on a loaded one).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "benchmarks" / "gpu"


def _run(script: str, out: Path, **env) -> str:
    e = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    p = subprocess.run(["bash", str(GPU / script), "--smoke"], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=1200)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow
def test_speed_smoke_measures_every_stage(tmp_path):
    out = tmp_path / "out"
    log = _run("speed.sh", out)
    assert "ended with status" not in log, log[-4000:]
    files = {p.name for p in out.iterdir()}
    assert {"speed.log", "speed.md", "predict.json", "pretrain_swin.json", "pretrain_unet.json"} <= files
    assert len(files) <= 8  # what comes back from the device machine

    pred = json.loads((out / "predict.json").read_text())
    assert pred["seconds"]["wall"] > 0 and pred["reference_monai_fp32_s"] > 0
    assert pred["pet_shape"] == [48, 48, 32] and pred["ct_shape"] == [64, 64, 32]  # PET and CT on their own grids

    swin = json.loads((out / "pretrain_swin.json").read_text())
    runs = {r["name"]: r for r in swin["runs"]}
    assert set(runs) == {"reference_f12", "ours_f12_b1"}
    assert all(r["samples_per_s"] > 0 and r["flops_per_sample"] > 1e9 for r in runs.values())
    assert runs["ours_f12_b1"]["speedup_vs_reference"] > 0
    assert swin["loader"]["patches_per_s"] > 0 and swin["end_to_end"]["samples_per_s"] > 0

    unet = json.loads((out / "pretrain_unet.json").read_text())
    assert {r["name"] for r in unet["runs"]} == {"reference_unet", "ours_unet_b1"} and unet["patch"] == 32

    md = (out / "speed.md").read_text()
    assert "| reference_f12 | 1 |" in md and "| ours_unet_b1 | 1 |" in md and "smoke" in md
    for method in ("fratmae", "promptable"):
        if not (ROOT / "src" / "petctfm" / "methods" / method).exists():
            assert f"skipped: petctfm.methods.{method} does not exist yet" in log


@pytest.mark.slow
def test_science_smoke_writes_the_experiment(tmp_path):
    out = tmp_path / "out"
    _run("science.sh", out, WORK=str(tmp_path / "work"))
    files = {p.name for p in out.iterdir()}
    assert files == {"science.log", "science.md", "results.md", "results.csv", "label_efficiency.png"}
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = " ".join(json.dumps(r) for r in rows)
    for run in ("finetune_pretrained_f10_s0", "finetune_scratch_f10_s0", "finetune_scratch_f100_s0",
                "probe_joint_k5_s0"):
        assert run in names
    md = (out / "science.md").read_text()
    for stage in ("| synth |", "| harmonize |", "| pretrain |", "| label-efficiency |"):
        assert stage in md
    assert "--max-steps 4" in md and "## Results" in md and "no results.md" not in md
    assert (out / "label_efficiency.png").read_bytes()[:4] == b"\x89PNG"


def _check(root: Path) -> tuple[subprocess.CompletedProcess, tuple[float, float, float]]:
    """``fetch_wheels.sh --check`` run from ``root``'s copy; (the process, its tree / .whl / total MiB)."""
    p = subprocess.run(["bash", str(root / "benchmarks" / "gpu" / "fetch_wheels.sh"), "--check"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"working tree ([\d.]+) MiB \+ \.whl ([\d.]+) MiB = ([\d.]+) MiB \(limit 64 MiB\)", p.stdout)
    assert m, p.stdout + p.stderr
    return p, tuple(float(v) for v in m.groups())


def _travelling_bytes(root: Path) -> tuple[int, int]:
    """(tree, .whl/) bytes of what the device tool carries, counted here: tracked and untracked-but-not-ignored
    files, and the git-ignored .whl/ that the run call carries."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((root / os.fsdecode(n)).stat().st_size for n in names if n and (root / os.fsdecode(n)).is_file())
    whl = sum(f.stat().st_size for f in (root / ".whl").rglob("*") if f.is_file()) if (root / ".whl").is_dir() else 0
    return tree, whl


def test_fetch_wheels_check_reports_the_carry_size():
    p, (tree_mib, whl_mib, total_mib) = _check(ROOT)
    tree, whl = _travelling_bytes(ROOT)
    assert tree_mib == pytest.approx(tree / 2**20, abs=0.06) and whl_mib == pytest.approx(whl / 2**20, abs=0.1)
    assert total_mib == pytest.approx(tree_mib + whl_mib, abs=0.11)
    fits = tree + whl < 64 * 2**20
    assert p.returncode == (0 if fits else 1), p.stdout + p.stderr
    assert ("ok: fits the carry limit" in p.stdout) == fits and ("over the 64 MiB" in p.stderr) == (not fits)


def test_fetch_wheels_check_fails_over_the_limit(tmp_path):
    """Both outcomes on a scratch repository holding a copy of the script: 0.5 MiB of files plus a 62 MiB .whl/
    fits, plus 64 MiB does not (the wheel is a sparse file: no disk is used)."""
    root = tmp_path / "repo"
    (root / "benchmarks" / "gpu").mkdir(parents=True)
    shutil.copy(GPU / "fetch_wheels.sh", root / "benchmarks" / "gpu" / "fetch_wheels.sh")
    (root / ".gitignore").write_text(".whl/\n")
    (root / "big_untracked.bin").write_bytes(b"x" * (512 * 1024))  # untracked, not ignored: it travels
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".whl").mkdir()
    wheel = root / ".whl" / "w.whl"
    for mib, fits in ((62, True), (64, False)):
        with open(wheel, "wb") as f:
            f.truncate(mib * 2**20)
        p, (tree_mib, whl_mib, total_mib) = _check(root)
        tree = sum(f.stat().st_size for f in (root / ".gitignore", root / "big_untracked.bin",
                                              root / "benchmarks" / "gpu" / "fetch_wheels.sh"))
        assert tree_mib == pytest.approx(tree / 2**20, abs=0.06) and 0.45 < tree_mib < 0.6
        assert whl_mib == pytest.approx(mib, abs=0.06) and total_mib == pytest.approx(tree_mib + mib, abs=0.06)
        assert p.returncode == (0 if fits else 1), (mib, p.stdout + p.stderr)
        assert ("ok: fits the carry limit" in p.stdout) == fits
        assert ("over the 64 MiB carry limit" in p.stderr) == (not fits)


def test_scripts_are_valid_bash():
    for script in ("speed.sh", "science.sh", "fetch_wheels.sh", "_setup.sh"):
        p = subprocess.run(["bash", "-n", str(GPU / script)], capture_output=True, text=True)
        assert p.returncode == 0, f"{script}: {p.stderr}"
