"""The contract between the generic trainer (``petctfm.train.trainer``) and a method (MAE, fine-tuning).

A method is a :class:`TrainTask`. The trainer owns everything generic: processes and DDP, devices and bf16
autocast, optimizer (AdamW), cosine schedule with warm-up, gradient accumulation and clipping, EMA,
checkpoints (safetensors weights + training state), resume, ``metrics.jsonl``, TensorBoard, progress bar.
The task owns the model, the data and the loss.

Determinism and exact resume: the task's samples are a pure function of ``(seed, rank, sample_index)``.
The trainer tells the task which global sample index to start from (``start_sample``), so after a resume
the next batch is the batch an uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn


class TrainTask(Protocol):
    #: Everything needed to rebuild the model and its preprocessing; saved as ``config.yaml`` and inside
    #: every checkpoint (safetensors metadata), so ``load_model(checkpoint)`` needs nothing else.
    config: dict[str, Any]

    def build_model(self) -> nn.Module:
        """A fresh model (on CPU, fp32). The trainer moves it to the device and wraps it in DDP."""

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        """An endless iterator of CPU batches for this rank, beginning at per-rank sample ``start_sample``.

        Different ranks see different samples; the same ``(config seed, rank, start_sample)`` gives the same
        batches. Each batch holds ``batch_size`` samples (the trainer counts samples, not batches: the first
        dimension of the first tensor in the dict). Tensors are moved to the device by the trainer; other
        values pass through unchanged. Samples must not depend on the global RNG of the main process (the
        trainer restores that RNG on resume for dropout and the like, not for data).
        """

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward + loss on a batch already on the device. Returns the scalar loss and float logs.

        ``model`` is what the trainer trains: possibly wrapped in DDP and/or ``torch.compile`` (call it; reach
        the bare module through ``petctfm.core.device.unwrap_model`` for anything else). Runs under the
        trainer's autocast; the loss should be a mean over the batch (gradient accumulation divides it by
        ``grad_accum``). Logs may be floats or 0-d tensors (the trainer syncs them only at log steps).
        """

    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        """Called on rank 0 every ``figure_every`` steps: write figures (PNG) or validation metrics.

        ``model`` is the bare module (no DDP, no compile), in train mode (switch to eval and back if needed);
        ``batch`` the step's last micro-batch, on the device. The trainer saves and restores the RNG states
        around this call, so it may draw random numbers without changing training.
        """

    # Optional (the trainer calls it when the task defines it):
    #
    # def param_groups(self, model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    #     """AdamW param groups ``{"params", "weight_decay", "lr_scale"}`` covering every trainable parameter
    #     of the bare ``model`` exactly once; group LR = ``cfg.lr * lr_scale`` under the shared schedule.
    #     Without it: two groups (>= 2-D weights decayed, the rest not), ``lr_scale`` 1."""
