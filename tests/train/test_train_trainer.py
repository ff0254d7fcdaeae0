"""The generic trainer on a tiny CPU task (tests/train/tiny_train_task.py): learning, exact resume, gradient
accumulation, LR schedule, EMA, checkpoints, a two-process gloo run, errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from petctfm.cli._common import add_train_args, train_config_from_args
from petctfm.core.errors import InputError, UsageError
from petctfm.train.checkpoint import latest_checkpoint, load_model
from petctfm.train.config import TrainConfig, apply_overrides, split_train_overrides
from petctfm.train.schedule import WarmupCosine
from petctfm.train.trainer import train
from tiny_train_task import TinyTask, build_tiny_model

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these nets are tiny, and spinning OpenMP threads on a shared CPU is slow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=10, lr=1e-2, warmup_steps=2, log_every=1, checkpoint_every=4, figure_every=0,
                progress=False, device="cpu", seed=3, clip_grad=1.0)
    base.update(kw)
    return TrainConfig(**base)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run_dir / "checkpoints") / name))


def test_loss_decreases(tmp_path):
    s = train(TinyTask(batch_size=4), cfg(max_steps=40, log_every=5, checkpoint_every=40), tmp_path / "run")
    m = metrics(tmp_path / "run")
    assert [r["step"] for r in m] == list(range(5, 45, 5))
    assert s["steps"] == 40 and s["stopped"] == "max_steps" and s["samples"] == 160
    assert m[-1]["loss"] < 0.3 * m[0]["loss"], (m[0]["loss"], m[-1]["loss"])
    assert s["loss"] == pytest.approx(m[-1]["loss"])
    assert {"lr", "samples_per_s", "steps_per_s", "time_s", "pred_mean", "grad_norm"} <= set(m[0])
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "summary.json").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "run" / "tb").iterdir())


def test_kill_and_resume_is_exact(tmp_path):
    """10 steps straight vs 6 steps, then resume to 10: same losses and same final (and EMA) weights.
    Dropout makes the result depend on the restored RNG state; figures consume RNG and must not matter."""
    kw = dict(schedule_steps=10, ema_decay=0.8, figure_every=3)
    a, b = tmp_path / "a", tmp_path / "b"
    train(TinyTask(dropout=0.2), cfg(**kw), a)
    first = train(TinyTask(dropout=0.2), cfg(max_steps=6, **kw), b)
    assert first["steps"] == 6 and (b / "checkpoints" / "step_0000006" / "state.pt").is_file()
    task_b = TinyTask(dropout=0.2)
    second = train(task_b, cfg(**kw), b, resume=True)
    assert second["start_step"] == 6 and second["steps"] == 10
    assert task_b.seen[0] == (0, 12)  # the next sample after 6 steps x 2 samples
    assert task_b.figures == [9, 10]  # every 3 steps, and the final weights when the budget ends between hooks
    la, lb = metrics(a), metrics(b)
    assert [r["step"] for r in lb] == list(range(1, 11))  # resumed log continues without duplicates
    torch.testing.assert_close(torch.tensor([r["loss"] for r in lb]), torch.tensor([r["loss"] for r in la]),
                               rtol=1e-5, atol=0)
    assert [r["lr"] for r in lb] == pytest.approx([r["lr"] for r in la])
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = final_weights(a, name), final_weights(b, name)
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-7)


def test_sigterm_stops_cleanly_and_resumes_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(TinyTask(dropout=0.2), cfg(max_steps=8), a)
    task = TinyTask(dropout=0.2, sigterm_at_sample=6)
    s = train(task, cfg(max_steps=8, figure_every=3), b)  # SIGTERM during step 4
    assert s["stopped"] == "SIGTERM" and s["steps"] == 4
    assert task.figures == [3]  # a signal means "stop now": no extra figure / validation at exit
    assert latest_checkpoint(b / "checkpoints").name == "step_0000004"
    train(TinyTask(dropout=0.2), cfg(max_steps=8), b, resume=True)
    assert [r["loss"] for r in metrics(b)] == pytest.approx([r["loss"] for r in metrics(a)], rel=1e-5)


def test_grad_accum_matches_bigger_batch(tmp_path):
    s2 = train(TinyTask(batch_size=2), cfg(max_steps=3, grad_accum=2, ema_decay=None), tmp_path / "acc")
    s4 = train(TinyTask(batch_size=4), cfg(max_steps=3, grad_accum=1, batch_size=4), tmp_path / "big")
    assert s2["samples"] == s4["samples"] == 12
    assert [r["loss"] for r in metrics(tmp_path / "acc")] == pytest.approx(
        [r["loss"] for r in metrics(tmp_path / "big")], rel=1e-5)
    wa, wb = final_weights(tmp_path / "acc"), final_weights(tmp_path / "big")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="batches of 2 samples but train.batch_size is 4"):
        train(TinyTask(batch_size=2), cfg(max_steps=1, batch_size=4), tmp_path / "mismatch")


def test_checkpoint_files_safetensors_and_weights_only(tmp_path):
    run = tmp_path / "run"
    task = TinyTask()
    train(task, cfg(max_steps=10, checkpoint_every=2, keep_checkpoints=2, ema_decay=0.9), run)
    ck = run / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step_0000008", "step_0000010"]
    assert (ck / "latest").read_text().strip() == "step_0000010"
    w = load_file(str(ck / "step_0000010" / "model.safetensors"))
    assert set(w) == {"0.weight", "0.bias", "3.weight", "3.bias"} and w["0.weight"].shape == (4, 1, 3, 3, 3)
    with safe_open(str(ck / "step_0000010" / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["config"]) == task.config and meta["step"] == "10"
    state = torch.load(ck / "step_0000010" / "state.pt", weights_only=True)
    assert state["step"] == 10 and state["samples_per_rank"] == 20 and state["world_size"] == 1
    assert len(state["rng"]) == 1 and state["rng"][0]["torch"].dtype == torch.uint8
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 10
    model, config = load_model(run)  # run folder -> latest, builder from the registered method
    assert config == task.config and not model.training
    from petctfm.train.checkpoint import resolve_weights

    assert resolve_weights(ck / "latest") == ck / "step_0000010" / "model.safetensors"  # the pointer file
    for k, v in model.state_dict().items():
        assert torch.equal(v, w[k])
    ema, _ = load_model(ck / "step_0000008", build_model=build_tiny_model, ema=True)
    assert not torch.equal(ema.state_dict()["0.weight"], load_file(str(ck / "step_0000008" / "model.safetensors"))
                           ["0.weight"])


def test_lr_warmup_and_cosine(tmp_path):
    f = WarmupCosine(warmup=4, horizon=10, min_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(7) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the 6 cosine steps
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)
    train(TinyTask(), cfg(max_steps=10, lr=0.02, warmup_steps=4, min_lr_ratio=0.1), tmp_path / "run")
    lrs = [r["lr"] for r in metrics(tmp_path / "run")]  # LR used by steps 1..10
    assert lrs == pytest.approx([0.02 * f(s) for s in range(10)])


def test_ema_changes_slower_than_weights(tmp_path):
    run = tmp_path / "run"
    train(TinyTask(), cfg(max_steps=1, ema_decay=0.9, checkpoint_every=1, keep_checkpoints=0), run)
    w1 = load_file(str(run / "checkpoints" / "step_0000001" / "model.safetensors"))
    train(TinyTask(), cfg(max_steps=12, ema_decay=0.9, checkpoint_every=1, keep_checkpoints=0), run, resume=True)
    w = final_weights(run)
    e = final_weights(run, "ema.safetensors")
    e1 = load_file(str(run / "checkpoints" / "step_0000001" / "ema.safetensors"))
    for k in w1:
        torch.testing.assert_close(e1[k], w1[k])  # the EMA starts as a copy
    dw = sum(float((w[k] - w1[k]).norm()) for k in w)
    de = sum(float((e[k] - e1[k]).norm()) for k in w)
    assert 0 < de < 0.8 * dw, (de, dw)


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(HERE / "ddp_worker.py"), str(run)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1))
    seen0, seen1 = {tuple(x) for x in r0["seen"]}, {tuple(x) for x in r1["seen"]}
    assert seen0 == {(0, i) for i in range(12)} and seen1 == {(1, i) for i in range(12)}  # 3 steps x 2 x 2
    assert r0["weights_sha256"] == r1["weights_sha256"]  # DDP kept the replicas identical
    assert r0["summary"]["world_size"] == 2 and r0["summary"]["samples"] == 24
    assert r0["summary"]["loss"] == pytest.approx(r1["summary"]["loss"])
    state = torch.load(run / "checkpoints" / "step_0000003" / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-rank seeds
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]  # rank 0 alone writes


def test_errors_are_one_line(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(InputError, match="no checkpoint") as e:
        train(TinyTask(), cfg(max_steps=2), run, resume=True)
    assert "\n" not in str(e.value)
    train(TinyTask(), cfg(max_steps=2), run)
    with pytest.raises(InputError, match=r"different configuration \(train.lr: 0.01 -> 0.05\)"):
        train(TinyTask(), cfg(max_steps=2, lr=0.05), run)
    with pytest.raises(InputError, match="cannot resume with a different configuration"):
        train(TinyTask(channels=8), cfg(max_steps=4), run, resume=True)
    with pytest.raises(InputError, match="already holds checkpoints"):
        train(TinyTask(), cfg(max_steps=2), run)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(InputError, match=f"{bare}: not a petctfm checkpoint"):
        load_model(bare, build_model=build_tiny_model)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InputError, match="junk.safetensors: not a safetensors file"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="no such checkpoint"):
        load_model(tmp_path / "missing")


def test_cli_options_and_overrides():
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    args = parser.parse_args(["--max-steps", "5", "--no-fused-optimizer", "--clip-grad", "none", "--lr", "3e-4",
                              "--precision", "bf16"])
    c = train_config_from_args(args, base={"max_steps": 100, "warmup_steps": 7}, overrides=["ema_decay=0.99"])
    assert (c.max_steps, c.fused_optimizer, c.clip_grad, c.lr, c.precision, c.warmup_steps, c.ema_decay) == \
        (5, False, None, 3e-4, "bf16", 7, 0.99)
    c2 = apply_overrides(c, ["train.grad_accum=4", "compile=true", "max_time_s=none"])
    assert (c2.grad_accum, c2.compile, c2.max_time_s) == (4, True, None) and c.grad_accum == 1
    assert split_train_overrides(["train.lr=1", "mask.ratio=0.5", "seed=2"]) == (["train.lr=1"],
                                                                                ["mask.ratio=0.5", "seed=2"])
    # a wrong key or value is a usage error (exit 2): one line naming the key, the value and what is allowed
    with pytest.raises(UsageError, match="train.learning_rate=1: unknown config key; known in train: max_steps"):
        apply_overrides(c, ["learning_rate=1"])
    with pytest.raises(UsageError, match=r"train.grad_accum=0: must be >= 1"):
        apply_overrides(c, ["grad_accum=0"])
    with pytest.raises(UsageError, match="train.max_steps='abc': must be an integer"):
        apply_overrides(c, ["max_steps=abc"])
