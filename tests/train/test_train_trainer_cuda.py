"""The trainer on a GPU (skipped without CUDA): bf16 autocast, fused AdamW, torch.compile, channels-last, EMA,
exact resume, and an NCCL run under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from petctfm.train.checkpoint import latest_checkpoint
from petctfm.train.config import TrainConfig
from petctfm.train.trainer import train
from tiny_train_task import TinyTask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HERE = Path(__file__).parent


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=10, lr=1e-2, warmup_steps=2, log_every=1, checkpoint_every=5, figure_every=0,
                progress=False, device="cuda", seed=3, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_cuda_bf16_compile_fused_channels_last(tmp_path):
    s = train(TinyTask(batch_size=4), cfg(max_steps=40, compile=True, channels_last=True, fused_optimizer=True),
              tmp_path / "run")
    assert s["precision"] == "bf16" and s["device"].startswith("cuda") and s["steps"] == 40
    ls = losses(tmp_path / "run")
    assert ls[-1] < 0.5 * ls[0], (ls[0], ls[-1])
    w = load_file(str(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors"))
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in w.values())
    assert "_orig_mod" not in "".join(w) and "module." not in "".join(w)


def test_cuda_resume_is_exact(tmp_path):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    a, b = tmp_path / "a", tmp_path / "b"
    train(TinyTask(dropout=0.2), cfg(schedule_steps=10), a)
    train(TinyTask(dropout=0.2), cfg(max_steps=6, schedule_steps=10), b)
    train(TinyTask(dropout=0.2), cfg(schedule_steps=10), b, resume=True)
    assert losses(b) == pytest.approx(losses(a), rel=1e-5)


def test_torchrun_nccl(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                           str(HERE / "ddp_worker.py"), str(tmp_path / "ddp"), "cuda"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "ddp" / "rank0.json").read_text())
    assert r0["summary"]["world_size"] == 1 and r0["summary"]["device"].startswith("cuda")
