"""The prepared GPU scripts (benchmarks/gpu/, docs/gpu.md) run their whole code path on the CPU (--smoke).

They are run on a GPU only by a session lent the device; these smokes keep them from rotting in between:
every stage must finish (no stage cut by its budget, no failure) and leave the files docs/gpu.md promises.
About a minute each on an idle 2-core machine (several times that on a loaded one).
"""

from __future__ import annotations

import csv
import json
import os
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


def test_fetch_wheels_check_reports_the_carry_size():
    p = subprocess.run(["bash", str(GPU / "fetch_wheels.sh"), "--check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert "limit 64 MiB" in p.stdout, p.stdout + p.stderr
    assert p.returncode == (0 if "ok: fits" in p.stdout else 1)


def test_scripts_are_valid_bash():
    for script in ("speed.sh", "science.sh", "fetch_wheels.sh", "_setup.sh"):
        p = subprocess.run(["bash", "-n", str(GPU / script)], capture_output=True, text=True)
        assert p.returncode == 0, f"{script}: {p.stderr}"
