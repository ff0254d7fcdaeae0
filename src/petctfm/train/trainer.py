"""The generic training engine: one function, :func:`train`, runs a :class:`~petctfm.train.task.TrainTask`.

What it does, in order:

1. **Processes** (:mod:`petctfm.train.distributed`): a plain process, or one rank of a ``torchrun`` job
   (NCCL on CUDA, Gloo on CPU). Rank 0 alone writes files.
2. **Run folder**: ``config.yaml`` = ``{"train": TrainConfig, "task": task.config}``. A folder holding a
   different config, or checkpoints without ``resume=True``, is refused (one-line ``InputError``).
3. **Model**: seeded with ``cfg.seed`` (identical on every rank), then optionally the latest checkpoint's
   weights; moved to the device, channels-last, EMA copy, DDP, ``torch.compile``.
4. **Optimizer**: AdamW (fused on CUDA), no weight decay on 1-D parameters, or the task's own param groups
   (``task.param_groups(model, cfg)``, optional: e.g. layer-wise LR decay, each group with an ``lr_scale``);
   ``LambdaLR`` with linear warm-up and cosine decay (:class:`WarmupCosine`); a grad scaler only for fp16.
5. **Loop**: per optimizer step, ``grad_accum`` micro-batches from ``task.batches(rank, world_size,
   start_sample)``, each under autocast (bf16 on CUDA by default), loss / grad_accum backpropagated
   (DDP ``no_sync`` on all but the last); clip, step, schedule, EMA.
6. **Outputs**: ``metrics.jsonl`` and TensorBoard every ``log_every`` steps (loss and task logs averaged over
   the steps since the previous line), ``task.on_checkpoint`` every
   ``figure_every`` steps (RNG preserved), checkpoints every ``checkpoint_every`` steps and at exit
   (``max_steps``, ``max_time_s``, SIGTERM, Ctrl-C).

Exact resume: a checkpoint stores the step, the samples each rank consumed, the RNG states of every rank,
optimizer / scheduler / scaler / EMA; the task's batches are a pure function of (seed, rank, sample index),
so the resumed run sees the same next batch and computes the same losses.

Its parts: ``train/run_dir.py`` (run-folder check, ``metrics.jsonl``, file names), ``train/schedule.py``
(optimizer and LR schedule), ``train/progress.py`` (stop flag, progress bar), ``train/checkpoint.py`` and
``train/distributed.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch import nn

from petctfm.core.errors import InputError, PetctfmError
from petctfm.io.atomic import atomic_write_json, atomic_write_text, ensure_output_dir
from petctfm.train import checkpoint as ck
from petctfm.train.config import TrainConfig
from petctfm.train.distributed import (DistInfo, any_rank, barrier, cleanup, gather_to_all, init_distributed,
                                       mean_over_ranks, rank_seed, seed_everything)
from petctfm.train.progress import Progress, StopFlag
from petctfm.train.run_dir import (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, append_metrics, check_run_dir,
                                   open_tensorboard, plain, truncate_metrics)
from petctfm.train.schedule import WarmupCosine, base_lr, build_optimizer
from petctfm.train.task import TrainTask

# ------------------------------------------------------------------------------------------------ helpers


def _batch_size(batch: dict[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    raise PetctfmError("task batch holds no tensor with a batch dimension")


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 5 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last_3d)
        out[k] = v
    return out


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` on CPU. fp16 needs CUDA (it uses the grad scaler)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise InputError("train.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return precision



# ------------------------------------------------------------------------------------------------ trainer


def train(task: TrainTask, cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train ``task`` with ``cfg`` in ``run_dir``; ``resume=True`` continues from its latest checkpoint.

    Works as a plain process and as one rank of ``torchrun``. Returns the summary (every rank)::

        {"steps": final step, "start_step": step resumed from, "loss": last loss (mean over ranks),
         "time_s": wall time of this call, "samples_per_s": global samples / s of this call,
         "samples": global samples consumed in total, "stopped": "max_steps" | "max_time" | "SIGTERM" | ...,
         "checkpoint": last checkpoint folder, "world_size": ..., "precision": ..., "device": ...}
    """
    cfg = TrainConfig.from_dict(cfg.to_dict(), strict=True) if isinstance(cfg, TrainConfig) else \
        TrainConfig.from_dict(cfg, strict=True)
    ensure_output_dir(run_dir, "--out")  # a file, /proc or read-only: one line (exit 4) before any work
    info = init_distributed(cfg.device)
    try:
        return _Run(task, cfg, Path(run_dir), resume, info).run()
    finally:
        cleanup(info)


class _Run:
    def __init__(self, task: TrainTask, cfg: TrainConfig, run_dir: Path, resume: bool, info: DistInfo):
        self.task, self.cfg, self.run_dir, self.info = task, cfg, run_dir, info
        self.device = info.device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.task_config = plain(task.config)
        self.full_config = plain({"train": cfg.to_dict(), "task": self.task_config})

        # Run folder: rank 0 checks (one answer for all ranks), writes config.yaml.
        err, ckpt_name = None, None
        self.loaded: ck.LoadedCheckpoint | None = None  # rank 0: the resume checkpoint, read once by the check
        if info.is_main:
            try:
                notes: list[str] = []
                self.loaded = check_run_dir(run_dir, self.full_config, resume, notes)
                ckpt_name = str(self.loaded.path) if self.loaded else None
                for note in notes:  # a skipped corrupted checkpoint, settings changed on resume: said, not silent
                    warnings.warn(f"{run_dir}: {note}", stacklevel=2)
            except InputError as exc:
                err = str(exc)
        err, ckpt_name = gather_to_all((err, ckpt_name), info)[0]
        if err:
            raise InputError(err)
        self.resume_from = Path(ckpt_name) if ckpt_name else None
        if info.is_main:
            atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(self.full_config, sort_keys=False))
        barrier(info)

    # -- setup ---------------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg, info = self.cfg, self.info
        seed_everything(cfg.seed)  # same initial weights on every rank
        model = self.task.build_model()
        self.state: dict[str, Any] | None = None
        loaded = None
        if self.resume_from is not None:  # rank 0 read it in check_run_dir; other ranks read it here, once
            loaded = self.loaded if self.loaded is not None else ck.read_checkpoint(self.resume_from)
            self.loaded = None
            model.load_state_dict(loaded.weights, strict=True)
            self.state = loaded.state
        model = model.to(self.device)
        if cfg.channels_last:  # 5-D weights (3D convolutions) only; other tensors keep their layout
            for p in list(model.parameters()) + list(model.buffers()):
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        self.model = model  # the bare module: saved, given to on_checkpoint

        self.ema = None
        if cfg.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if self.state is not None:
                if loaded.ema_weights is None:
                    raise InputError(f"{self.resume_from / ck.EMA_FILE}: EMA is on but the checkpoint has no EMA "
                                     "weights")
                self.ema.module.load_state_dict(loaded.ema_weights, strict=True)
                self.ema.n_averaged.copy_(self.state["ema_n_averaged"])

        wrapped: nn.Module = model
        self.ddp = None
        if info.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters)
            wrapped = self.ddp
        if cfg.compile:
            wrapped = torch.compile(wrapped)
        self.wrapped = wrapped

        groups_fn = getattr(self.task, "param_groups", None)
        groups = groups_fn(model, cfg) if callable(groups_fn) else None
        self.optimizer = build_optimizer(model, cfg, self.device, groups)
        horizon = cfg.schedule_steps or cfg.max_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(cfg.warmup_steps, horizon, cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.step = 0
        self.samples_done = 0  # per rank
        self.elapsed_before = 0.0
        if self.state is not None:
            st = self.state
            self.optimizer.load_state_dict(st["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
            if cfg.schedule_steps is not None:  # an explicit horizon overrides the saved one
                self.scheduler.lr_lambdas[0].horizon = int(cfg.schedule_steps)
            if st.get("scaler"):
                self.scaler.load_state_dict(st["scaler"])
            self.step = int(st["step"])
            self.samples_done = int(st["samples_per_rank"])
            self.elapsed_before = float(st.get("elapsed_s", 0.0))
            if int(st["world_size"]) != info.world_size:
                warnings.warn(f"{self.resume_from}: saved with {st['world_size']} ranks, resumed with "
                              f"{info.world_size}: data order and RNG streams differ from an uninterrupted run")

    def _restore_or_seed_rng(self) -> None:
        """Last thing before the loop: per-rank RNG streams (fresh) or exactly the saved ones (resume)."""
        if self.state is not None and self.info.rank < len(self.state["rng"]):
            ck.restore_rng(self.state["rng"][self.info.rank])
        else:
            seed_everything(rank_seed(self.cfg.seed, self.info.rank))

    # -- checkpoint ----------------------------------------------------------------------------------

    def _save(self) -> Path | None:
        rngs = gather_to_all(ck.capture_rng(), self.info)  # collective: every rank calls it
        path = None
        if self.info.is_main:
            state = {
                "step": self.step,
                "samples_per_rank": self.samples_done,
                "world_size": self.info.world_size,
                "elapsed_s": self.elapsed_before + (time.perf_counter() - self.t_start),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "ema_n_averaged": self.ema.n_averaged.detach().cpu() if self.ema is not None else None,
                "rng": rngs,
                "train_config": self.cfg.to_dict(),
            }
            path = ck.write_checkpoint(self.run_dir / "checkpoints", self.step, self.model, self.task_config, state,
                                       ema_model=self.ema.module if self.ema is not None else None,
                                       keep=self.cfg.keep_checkpoints)
            if self.tb is not None:
                self.tb.flush()
        barrier(self.info)
        self.last_saved = self.step
        self.last_checkpoint = path if path is not None else self.run_dir / "checkpoints" / ck.step_dir_name(self.step)
        return path

    # -- loop ----------------------------------------------------------------------------------------

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(device_type=self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def _one_step(self, it: Iterator[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any], int]:
        """Forward/backward over ``grad_accum`` micro-batches and one optimizer update.
        Returns (mean loss, summed logs, last batch, samples consumed)."""
        cfg = self.cfg
        loss_sum = torch.zeros((), device=self.device)
        logs_sum: dict[str, Any] = {}
        n_samples = 0
        batch: dict[str, Any] = {}
        for micro in range(cfg.grad_accum):
            batch = next(it)
            n = _batch_size(batch)
            if cfg.batch_size and n != cfg.batch_size:
                raise InputError(f"task yields batches of {n} samples but train.batch_size is {cfg.batch_size}")
            n_samples += n
            batch = _to_device(batch, self.device, cfg.channels_last)
            last = micro == cfg.grad_accum - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    loss, logs = self.task.training_step(self.wrapped, batch)
                self.scaler.scale(loss.float() / cfg.grad_accum).backward()
            loss_sum += loss.detach().float()
            for k, v in (logs or {}).items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                logs_sum[k] = logs_sum.get(k, 0.0) + v
        lr = base_lr(self.optimizer)  # the LR this update uses (logged with its step)
        grad_norm = None
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        logs_mean = {k: v / cfg.grad_accum for k, v in logs_sum.items()}
        logs_mean["lr"] = float(lr)
        if grad_norm is not None:
            logs_mean["grad_norm"] = grad_norm.detach().float()
        return loss_sum / cfg.grad_accum, logs_mean, batch, n_samples

    def _log(self, loss: torch.Tensor, logs: dict[str, Any], now: float) -> float:
        """Mean over ranks (collective), then rank 0 appends metrics.jsonl and TensorBoard. Returns the loss."""
        lr = float(logs.pop("lr"))
        keys = sorted(logs)
        values = [float(loss)] + [float(logs[k]) for k in keys]
        values = mean_over_ranks(values, self.info)
        loss_v = values[0]
        if not math.isfinite(loss_v):
            raise PetctfmError(f"loss is {loss_v} at step {self.step}; lower train.lr or check the data")
        dt = max(now - self.t_last_log, 1e-9)
        steps = self.step - self.step_last_log
        samples_s = (self.samples_done - self.samples_last_log) * self.info.world_size / dt
        rec = {"step": self.step, "loss": loss_v, "lr": lr, "samples_per_s": samples_s, "steps_per_s": steps / dt,
               "time_s": self.elapsed_before + (now - self.t_start),
               **{k: v for k, v in zip(keys, values[1:])}}
        if self.info.is_main:
            append_metrics(self.run_dir / METRICS_FILE, rec)
            if self.tb is not None:
                for k, v in rec.items():
                    if k != "step":
                        self.tb.add_scalar(f"train/{k}", v, self.step)
            self.progress.update(self.step, rate=steps / dt, loss=loss_v)
        self.t_last_log, self.step_last_log, self.samples_last_log = now, self.step, self.samples_done
        return loss_v

    def run(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        self._setup()
        start_step = self.step
        self.tb = None
        if info.is_main:
            truncate_metrics(self.run_dir / METRICS_FILE, self.step)
            self.tb = open_tensorboard(self.run_dir, purge_step=self.step if self.step else None)
        self.last_saved = self.step if self.resume_from is not None else -1
        self.last_checkpoint = self.resume_from
        it = iter(self.task.batches(info.rank, info.world_size, self.samples_done))
        # Start the loader (worker start-up draws from the global RNG) before the training RNG is set, so a
        # fresh and a resumed run enter the loop with exactly the RNG states they should.
        it = itertools.chain([next(it)], it)
        self.model.train()
        self._restore_or_seed_rng()

        self.t_start = self.t_last_log = time.perf_counter()
        self.step_last_log, self.samples_last_log = self.step, self.samples_done
        samples_at_start = self.samples_done
        stopped, last_loss, last_logged, loss = "max_steps", float("nan"), -1, None
        hooked, batch = self.step, None  # last step the task's on_checkpoint hook ran (figure / validation)
        acc: dict[str, Any] = {}
        acc_n = 0
        self.progress = Progress(cfg.progress and info.is_main, cfg.max_steps, self.step)
        try:
            with StopFlag() as stop, self.progress:
                while self.step < cfg.max_steps:
                    loss, logs, batch, n = self._one_step(it)
                    self.step += 1
                    self.samples_done += n
                    now = time.perf_counter()
                    # logged values are means over the steps since the last log line (no host sync per step)
                    for k, v in (("loss", loss), *((k, v) for k, v in logs.items() if k != "lr")):
                        acc[k] = acc.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
                    acc_n += 1
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        mean = {k: v / acc_n for k, v in acc.items()}
                        last_loss = self._log(mean.pop("loss"), {**mean, "lr": logs["lr"]}, now)
                        last_logged, acc, acc_n = self.step, {}, 0
                    else:
                        self.progress.update(self.step)
                    if cfg.figure_every and self.step % cfg.figure_every == 0 and info.is_main:
                        with ck.preserved_rng():
                            self.task.on_checkpoint(self.model, batch, self.step, self.run_dir)
                        self.model.train()
                        hooked = self.step
                    if self.step % cfg.checkpoint_every == 0:
                        self._save()
                    time_up = cfg.max_time_s is not None and now - self.t_start >= cfg.max_time_s
                    if info.distributed:
                        halt = any_rank(time_up or stop.reason is not None, info)
                    else:
                        halt = time_up or stop.reason is not None
                    if halt:
                        stopped = "max_time" if time_up else (stop.reason or "signal")
                        break
        except KeyboardInterrupt:
            # A second Ctrl-C inside a step: the step is lost, the last complete state is checkpointed below
            # only in a single process (a collective after an interrupt could hang the other ranks).
            stopped = "KeyboardInterrupt"
            if info.distributed:
                raise
        if self.last_saved != self.step:
            self._save()
        if (cfg.figure_every and stopped in ("max_steps", "max_time") and hooked != self.step and batch is not None
                and info.is_main):
            # A run that ended by its budget between two hooks: figure / validate the final weights too, so a
            # fine-tuning run stopped by --max-time still competes for its best checkpoint with its last state.
            with ck.preserved_rng():
                self.task.on_checkpoint(self.model, batch, self.step, self.run_dir)
        if loss is not None and last_logged != self.step:
            last_loss = mean_over_ranks([float(loss)], info)[0]
        elapsed = time.perf_counter() - self.t_start
        summary = {
            "steps": self.step, "start_step": start_step, "loss": last_loss, "time_s": elapsed,
            "samples_per_s": (self.samples_done - samples_at_start) * info.world_size / max(elapsed, 1e-9),
            "samples": self.samples_done * info.world_size, "stopped": stopped,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "world_size": info.world_size, "precision": self.precision, "device": str(self.device),
        }
        if info.is_main:
            if self.tb is not None:
                self.tb.close()
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary


__all__ = ["train", "resolve_precision"]
