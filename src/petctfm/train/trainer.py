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
   ``LambdaLR`` with linear warm-up and cosine or poly decay (:data:`~petctfm.train.schedule.SCHEDULES`); a grad scaler only for fp16.
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
from dataclasses import dataclass
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
from petctfm.train.schedule import SCHEDULES, base_lr, build_optimizer
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
        """Model (seeded identically on every rank, resumed weights), EMA, DDP / compile wrapper, optimizer,
        LR schedule, grad scaler, and the step / sample counters (restored on resume)."""
        seed_everything(self.cfg.seed)  # same initial weights on every rank
        loaded = self._build_model()
        self._build_ema(loaded)
        self.wrapped = self._wrap(self.model)
        self._build_optimizer()
        self.step = 0
        self.samples_done = 0  # per rank
        self.elapsed_before = 0.0
        if self.state is not None:
            self._restore_state()

    def _build_model(self) -> ck.LoadedCheckpoint | None:
        """``self.model``: the task's model with the resume checkpoint's weights (if any), on the device,
        5-D weights channels-last; sets ``self.state`` (the checkpoint's trainer state, or None). Returns the
        loaded checkpoint (its EMA weights are read next)."""
        model = self.task.build_model()
        self.state: dict[str, Any] | None = None
        loaded = None
        if self.resume_from is not None:  # rank 0 read it in check_run_dir; other ranks read it here, once
            loaded = self.loaded if self.loaded is not None else ck.read_checkpoint(self.resume_from)
            self.loaded = None
            model.load_state_dict(loaded.weights, strict=True)
            self.state = loaded.state
        model = model.to(self.device)
        if self.cfg.channels_last:  # 5-D weights (3D convolutions) only; other tensors keep their layout
            for p in list(model.parameters()) + list(model.buffers()):
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        self.model = model  # the bare module: saved, given to on_checkpoint
        return loaded

    def _build_ema(self, loaded: ck.LoadedCheckpoint | None) -> None:
        """``self.ema``: an averaged copy of the model when ``ema_decay`` is set (resumed from the checkpoint's
        EMA weights), else None."""
        self.ema = None
        if self.cfg.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.ema_decay),
                                     use_buffers=True)
            if self.state is not None:
                if loaded.ema_weights is None:
                    raise InputError(f"{self.resume_from / ck.EMA_FILE}: EMA is on but the checkpoint has no EMA "
                                     "weights")
                self.ema.module.load_state_dict(loaded.ema_weights, strict=True)
                self.ema.n_averaged.copy_(self.state["ema_n_averaged"])

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the steps call: DDP around ``model`` when distributed (``self.ddp``), then
        ``torch.compile`` when asked."""
        wrapped: nn.Module = model
        self.ddp = None
        if self.info.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.find_unused_parameters)
            wrapped = self.ddp
        if self.cfg.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    def _build_optimizer(self) -> None:
        """AdamW over the task's param groups (or the default ones), warm-up + cosine ``LambdaLR``, and the
        grad scaler (enabled for fp16 only)."""
        cfg = self.cfg
        groups_fn = getattr(self.task, "param_groups", None)
        groups = groups_fn(self.model, cfg) if callable(groups_fn) else None
        self.optimizer = build_optimizer(self.model, cfg, self.device, groups)
        horizon = cfg.schedule_steps or cfg.max_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, SCHEDULES[cfg.lr_schedule](cfg.warmup_steps, horizon, cfg.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    def _restore_state(self) -> None:
        """Resume: optimizer, schedule (an explicit ``schedule_steps`` overrides the saved horizon), scaler,
        step and sample counters, elapsed time; a warning when the number of ranks changed."""
        st, cfg, info = self.state, self.cfg, self.info
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
        """Set up, train until a stop condition, save the final state; returns (and rank 0 writes) the summary."""
        self._setup()
        start_step = self.step
        self._open_outputs()
        it = self._start_batches()
        self.t_start = self.t_last_log = time.perf_counter()
        self.step_last_log, self.samples_last_log = self.step, self.samples_done
        samples_at_start = self.samples_done
        end = self._loop(it)
        self._finish(end)
        return self._write_summary(end, start_step, samples_at_start)

    def _open_outputs(self) -> None:
        """Rank 0: cut ``metrics.jsonl`` back to the resumed step and open TensorBoard; the checkpoint marks."""
        self.tb = None
        if self.info.is_main:
            truncate_metrics(self.run_dir / METRICS_FILE, self.step)
            self.tb = open_tensorboard(self.run_dir, purge_step=self.step if self.step else None)
        self.last_saved = self.step if self.resume_from is not None else -1
        self.last_checkpoint = self.resume_from

    def _start_batches(self) -> Iterator[dict[str, Any]]:
        """The task's batch iterator from this rank's next sample, already started; then the model in train
        mode and the training RNG streams (fresh or restored)."""
        it = iter(self.task.batches(self.info.rank, self.info.world_size, self.samples_done))
        # Start the loader (worker start-up draws from the global RNG) before the training RNG is set, so a
        # fresh and a resumed run enter the loop with exactly the RNG states they should.
        it = itertools.chain([next(it)], it)
        self.model.train()
        self._restore_or_seed_rng()
        return it

    def _loop(self, it: Iterator[dict[str, Any]]) -> "_LoopEnd":
        """Optimizer steps until ``max_steps``, ``max_time_s``, a signal or Ctrl-C: each step logged (every
        ``log_every``), hooked (every ``figure_every``) and checkpointed (every ``checkpoint_every``)."""
        cfg, info = self.cfg, self.info
        end = _LoopEnd(hooked=self.step)  # hooked: last step the task's on_checkpoint hook ran (figure / validation)
        means = _StepMeans()
        self.progress = Progress(cfg.progress and info.is_main, cfg.max_steps, self.step)
        try:
            with StopFlag() as stop, self.progress:
                while self.step < cfg.max_steps:
                    end.loss, logs, end.batch, n = self._one_step(it)
                    self.step += 1
                    self.samples_done += n
                    now = time.perf_counter()
                    means.add(end.loss, logs)
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        mean = means.pop_means()
                        end.last_loss = self._log(mean.pop("loss"), {**mean, "lr": logs["lr"]}, now)
                        end.last_logged = self.step
                    else:
                        self.progress.update(self.step)
                    if cfg.figure_every and self.step % cfg.figure_every == 0 and info.is_main:
                        self._checkpoint_hook(end.batch)
                        self.model.train()
                        end.hooked = self.step
                    if self.step % cfg.checkpoint_every == 0:
                        self._save()
                    reason = self._halt_reason(now, stop)
                    if reason is not None:
                        end.stopped = reason
                        break
        except KeyboardInterrupt:
            # A second Ctrl-C inside a step: the step is lost, the last complete state is checkpointed below
            # only in a single process (a collective after an interrupt could hang the other ranks).
            end.stopped = "KeyboardInterrupt"
            if info.distributed:
                raise
        return end

    def _halt_reason(self, now: float, stop: StopFlag) -> str | None:
        """``max_time`` or the signal's name when this rank (or, distributed, any rank) must stop; else None."""
        cfg, info = self.cfg, self.info
        time_up = cfg.max_time_s is not None and now - self.t_start >= cfg.max_time_s
        if info.distributed:
            halt = any_rank(time_up or stop.reason is not None, info)
        else:
            halt = time_up or stop.reason is not None
        if halt:
            return "max_time" if time_up else (stop.reason or "signal")
        return None

    def _checkpoint_hook(self, batch: dict[str, Any]) -> None:
        """The task's ``on_checkpoint`` (figure / validation) on the bare model, the RNG states preserved."""
        with ck.preserved_rng():
            self.task.on_checkpoint(self.model, batch, self.step, self.run_dir)

    def _finish(self, end: "_LoopEnd") -> None:
        """After the loop: save the final state (unless just saved), run the hook on the final weights of a run
        ended by its budget between two hooks, and the final loss (mean over ranks) when not logged."""
        cfg, info = self.cfg, self.info
        if self.last_saved != self.step:
            self._save()
        if (cfg.figure_every and end.stopped in ("max_steps", "max_time") and end.hooked != self.step
                and end.batch is not None and info.is_main):
            # A run that ended by its budget between two hooks: figure / validate the final weights too, so a
            # fine-tuning run stopped by --max-time still competes for its best checkpoint with its last state.
            self._checkpoint_hook(end.batch)
        if end.loss is not None and end.last_logged != self.step:
            end.last_loss = mean_over_ranks([float(end.loss)], info)[0]

    def _write_summary(self, end: "_LoopEnd", start_step: int, samples_at_start: int) -> dict[str, Any]:
        """The summary of :func:`train`; rank 0 closes TensorBoard and writes ``summary.json``."""
        info = self.info
        elapsed = time.perf_counter() - self.t_start
        summary = {
            "steps": self.step, "start_step": start_step, "loss": end.last_loss, "time_s": elapsed,
            "samples_per_s": (self.samples_done - samples_at_start) * info.world_size / max(elapsed, 1e-9),
            "samples": self.samples_done * info.world_size, "stopped": end.stopped,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "world_size": info.world_size, "precision": self.precision, "device": str(self.device),
        }
        if info.is_main:
            if self.tb is not None:
                self.tb.close()
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        return summary


@dataclass
class _LoopEnd:
    """How the training loop ended: why, the last logged loss, the step it was logged at, the last step's
    loss (tensor) and batch, and the last step the ``on_checkpoint`` hook ran."""

    hooked: int
    stopped: str = "max_steps"
    last_loss: float = float("nan")
    last_logged: int = -1
    loss: torch.Tensor | None = None
    batch: dict[str, Any] | None = None


class _StepMeans:
    """Sums of the loss and the task logs (not ``lr``) over the steps since the last metrics line; tensors stay
    on the device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.n = 0

    def add(self, loss: torch.Tensor, logs: dict[str, Any]) -> None:
        for k, v in (("loss", loss), *((k, v) for k, v in logs.items() if k != "lr")):
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
        self.n += 1

    def pop_means(self) -> dict[str, Any]:
        """The means since the last call (``loss`` and each log), and start over."""
        mean = {k: v / self.n for k, v in self.sums.items()}
        self.sums, self.n = {}, 0
        return mean


__all__ = ["train", "resolve_precision"]
