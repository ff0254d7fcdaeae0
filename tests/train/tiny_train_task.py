"""A tiny TrainTask for the trainer tests: a 2-layer 3D conv net regresses a smoothed copy of its input.

Samples are a pure function of (seed, rank, sample index): ``x`` (1, 8, 8, 8) ~ N(0, 1) from a generator
seeded with those three numbers, target ``y = 2 * avgpool3(x) + 0.5`` (learnable by the net). The task
records which samples each training step saw (``seen``: list of (rank, index)) for the DDP test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petctfm.train.checkpoint import register_model_builder

METHOD = "tiny_regression"


def build_tiny_model(config: dict) -> nn.Module:
    ch = int(config["channels"])
    return nn.Sequential(nn.Conv3d(1, ch, 3, padding=1), nn.ReLU(), nn.Dropout3d(float(config["dropout"])),
                         nn.Conv3d(ch, 1, 3, padding=1))


register_model_builder(METHOD, build_tiny_model)


def sample(seed: int, rank: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = int(np.random.SeedSequence([seed, rank, index]).generate_state(1)[0])
    x = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(s))
    y = 2.0 * F.avg_pool3d(x[None], 3, stride=1, padding=1)[0] + 0.5
    return x, y


class TinyTask:
    def __init__(self, batch_size: int = 2, seed: int = 0, dropout: float = 0.0, channels: int = 4,
                 sigterm_at_sample: int | None = None):
        self.config = {"method": METHOD, "seed": seed, "batch_size": batch_size, "dropout": dropout,
                       "channels": channels}
        self.seen: list[tuple[int, int]] = []
        self.figures: list[int] = []
        self.sigterm_at_sample = sigterm_at_sample

    def build_model(self) -> nn.Module:
        return build_tiny_model(self.config)

    def batches(self, rank: int, world_size: int, start_sample: int):
        bs, i = int(self.config["batch_size"]), start_sample
        while True:
            if self.sigterm_at_sample is not None and i == self.sigterm_at_sample:
                os.kill(os.getpid(), signal.SIGTERM)  # a "kill" arriving while this batch trains
            xs, ys = zip(*(sample(self.config["seed"], rank, i + j) for j in range(bs)))
            yield {"x": torch.stack(xs), "y": torch.stack(ys), "index": torch.arange(i, i + bs),
                   "rank": torch.full((bs,), rank)}
            i += bs

    def training_step(self, model, batch):
        self.seen += [(int(r), int(k)) for r, k in zip(batch["rank"], batch["index"])]
        self.last_model = model  # the DDP-wrapped / compiled model the trainer trains (for the DDP test)
        pred = model(batch["x"])
        loss = F.mse_loss(pred.float(), batch["y"])
        return loss, {"pred_mean": pred.detach().float().mean()}

    def on_checkpoint(self, model, batch, step: int, run_dir: Path) -> None:
        self.figures.append(step)
        torch.rand(3)  # consumes RNG: the trainer must shield training from it
