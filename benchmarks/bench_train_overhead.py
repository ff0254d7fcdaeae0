"""How much the trainer costs per step compared to a bare PyTorch loop doing the same work.

``python benchmarks/bench_train_overhead.py [--device cuda] [--size 64] [--batch 4]``

Both loops train the same 3-layer 3D conv net (2 -> 32 -> 32 -> 2 channels, 3^3 kernels) to reproduce its
input, on the same pre-made CPU batches copied to the device each step, with AdamW (fused on CUDA), bf16
autocast on CUDA, gradient clipping. The trainer adds what it always does (schedule, metrics every 10 steps,
DDP-free stop checks, the final checkpoint). Per-step time = (time of N2 steps - time of N1 steps) / (N2 - N1),
so start-up and the final checkpoint cancel out. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from petctfm.train.config import TrainConfig
from petctfm.train.trainer import train


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv3d(2, 32, 3, padding=1), nn.GELU(), nn.Conv3d(32, 32, 3, padding=1), nn.GELU(),
                         nn.Conv3d(32, 2, 3, padding=1))


class _Task:
    def __init__(self, batches: list[torch.Tensor]):
        self.config = {"method": "bench_overhead"}
        self._batches = batches

    def build_model(self) -> nn.Module:
        return _net()

    def batches(self, rank: int, world_size: int, start_sample: int):
        for x in itertools.cycle(self._batches):
            yield {"x": x}

    def training_step(self, model, batch):
        x = batch["x"]
        return F.mse_loss(model(x).float(), x), {}

    def on_checkpoint(self, model, batch, step, run_dir):
        pass


def _bare(batches: list[torch.Tensor], steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = _net().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                   enabled=False)
    t0 = time.perf_counter()
    for _, x in zip(range(steps), itertools.cycle(batches)):
        x = x.to(device, non_blocking=True)
        with amp:
            loss = F.mse_loss(model(x).float(), x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.detach().item()  # wait for the device
    return time.perf_counter() - t0


def _trainer(batches: list[torch.Tensor], steps: int, device: str, root: Path) -> float:
    cfg = TrainConfig(max_steps=steps, lr=1e-3, log_every=10, checkpoint_every=10 ** 9, figure_every=0,
                      progress=False, device=device)
    t0 = time.perf_counter()
    train(_Task(batches), cfg, root / f"run{steps}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, nargs=2, default=[20, 120])
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(a.batch, 2, a.size, a.size, a.size, generator=g) for _ in range(4)]
    if dev.type == "cuda":
        batches = [b.pin_memory() for b in batches]
    n1, n2 = a.steps
    _bare(batches, n1, dev)  # warm-up (cuDNN autotune, allocator)
    bare = (_bare(batches, n2, dev) - _bare(batches, n1, dev)) / (n2 - n1)
    with tempfile.TemporaryDirectory() as tmp:
        _trainer(batches, n1, a.device, Path(tmp) / "warm")
        tr = (_trainer(batches, n2, a.device, Path(tmp)) - _trainer(batches, n1, a.device, Path(tmp))) / (n2 - n1)
    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "batch": a.batch,
           "size": a.size, "bare_ms_per_step": 1e3 * bare, "trainer_ms_per_step": 1e3 * tr,
           "overhead_pct": 100.0 * (tr - bare) / bare, "torch": torch.__version__}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
