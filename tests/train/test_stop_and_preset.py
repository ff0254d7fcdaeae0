"""First-run training fixes (issue 23, item 7): ``finetune --init scratch --preset tiny`` takes the preset's
backbone; SIGTERM stops a run within 5 s, after writing a checkpoint, also while it validates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from petctfm.cli.main import main
from toy_data import write_toy_dataset

FAST = ["--patch", "16", "--no-progress", "--seed", "1", "--num-workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "ds", n_cases=3, shape=(32, 32, 40))


def test_finetune_scratch_takes_the_presets_backbone(toy, tmp_path, capsys):
    from petctfm.methods.finetune import preset_backbone

    assert main(["finetune", "--data", str(toy), "--out", str(tmp_path / "run"), "--init", "scratch",
                 "--preset", "tiny", "--max-steps", "1", "--figure-every", "0", *FAST]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["task"]["model"]["backbone"] == preset_backbone("tiny") == "unet-resenc-tiny"
    # an explicit --backbone still wins, and without a preset it is still required (one line, exit 2)
    capsys.readouterr()
    assert main(["finetune", "--data", str(toy), "--out", str(tmp_path / "r2"), "--init", "scratch", "--max-steps",
                 "1", *FAST]) == 2
    assert "backbone" in capsys.readouterr().err


def test_validation_gives_up_when_a_stop_is_requested(toy):
    from petctfm.methods.segmentation.model import build_model
    from petctfm.methods.segmentation.task import FinetuneTask
    from petctfm.methods.segmentation.validation import validate
    from petctfm.methods.segmentation.api import finetune_configs
    from petctfm.train.progress import StopFlag, stop_requested

    task_cfg = FinetuneTask(finetune_configs(str(toy), "unused", "scratch", "tiny", backbone="unet-resenc-tiny",
                                             patch=16)[0]).config
    model = build_model(task_cfg)
    assert validate(model, task_cfg, toy) is not None  # runs when nobody asked to stop
    with StopFlag() as flag:
        flag.reason = "SIGTERM"
        assert stop_requested() and validate(model, task_cfg, toy) is None
    assert not stop_requested()


def _last_logged_step(run) -> int:
    lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()] \
        if (run / "metrics.jsonl").is_file() else []
    return max((json.loads(ln).get("step", 0) for ln in lines if ln.startswith("{")), default=0)


def test_sigterm_stops_finetune_at_the_next_step_after_a_checkpoint(toy, tmp_path):
    """SIGTERM ends the run at the step boundary: at most two steps after the last one logged when the signal
    was sent (the step in flight, and one whose log line was not yet flushed), never the epoch or the run's end.
    Counted in steps, not seconds: a loaded machine is slower, not different."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "petctfm.cli.main", "finetune", "--data", str(toy), "--out",
                             str(run), "--init", "scratch", "--preset", "tiny", "--max-steps", "100000",
                             "--figure-every", "1", "--checkpoint-every", "100000", "--log-every", "1", *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        t0 = time.monotonic()
        while not (run / "val.jsonl").is_file():  # training and validating (the hook runs every step)
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() - t0 < 300, "the run did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        logged = _last_logged_step(run)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "SIGTERM" and summary["steps"] >= 1
    step = summary["steps"]
    assert logged <= step <= logged + 2, f"stopped at step {step}, {step - logged} steps after SIGTERM"
    assert (run / "checkpoints" / f"step_{step:07d}" / "model.safetensors").is_file(), list((run / "checkpoints").iterdir())
