"""Processes and devices: a plain single process, or one process per GPU/CPU rank under ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables; :func:`init_distributed` reads them and initializes ``torch.distributed`` with NCCL on
CUDA and Gloo on CPU. Without them it returns a single-process :class:`DistInfo` and initializes nothing.
See ``docs/trainer.md`` for the single-node and multi-node commands.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from petctfm.core.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its global rank, the number of ranks, its rank on the node, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool  # True when init_distributed created the process group (and should destroy it)
    distributed: bool = False  # a process group exists (torchrun, even with one rank): collectives and DDP

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto``: ``cuda:<local_rank>`` when CUDA is available, else CPU; ``cpu``; ``cuda``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but CUDA is not available (use --device cpu or auto)")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    raise InputError(f"unknown device {requested!r}; choose auto, cpu or cuda")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Initialize ``torch.distributed`` when launched by ``torchrun`` (env ``RANK``, ``WORLD_SIZE`` and
    ``MASTER_ADDR`` set; a one-rank torchrun job also gets a process group and DDP, like a bigger one).

    Backend: NCCL when the device is CUDA, Gloo on CPU. The CUDA device is ``cuda:<LOCAL_RANK>``. When a
    process group already exists (the caller made one), it is reused and left alone.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, initialized_here=False,
                        distributed=True)
    launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))
    if not launched:
        if world_size > 1:
            raise InputError("WORLD_SIZE > 1 but RANK/MASTER_ADDR are not set: launch with torchrun")
        return DistInfo(0, 1, 0, dev, initialized_here=False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistInfo(rank, world_size, local_rank, dev, initialized_here=True, distributed=True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is True on at least one rank (a stop decision all ranks share)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise mean of a short list of floats over ranks (for logging only)."""
    if not info.distributed or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64 if info.device.type == "cpu" else torch.float32,
                     device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / info.world_size).tolist()


def gather_to_all(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects; small ones only)."""
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """A per-rank seed derived from the run seed (distinct, reproducible, fits in 63 bits)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0] >> 2)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator, torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)  # also seeds all CUDA devices


__all__ = ["DistInfo", "pick_device", "init_distributed", "cleanup", "barrier", "any_rank", "mean_over_ranks",
           "gather_to_all", "rank_seed", "seed_everything"]
