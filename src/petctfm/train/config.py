"""``TrainConfig``: the trainer's settings as plain data (saved in ``config.yaml``), and the shared last steps
of a training run's config (:func:`finish_configs`).

Every field can be given by name (:func:`train_config`: ``{"max_steps": 5, "lr": 1e-4}``; on the command line
``--max-steps``, ``--lr``: :func:`petctfm.cli._common.add_train_args`) or as an override ``train.key=value``
(:func:`apply_overrides`, value parsed as YAML, optional ``train.`` prefix). A ``None`` value is written
``none`` on the command line (``--clip-grad none``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from petctfm.core.config import Overrides, deep_merge, parse_overrides, read_config, set_key
from petctfm.core.errors import InputError, UsageError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Trainer settings. Lengths are optimizer steps; ``batch_size`` is per rank and per micro-step, so one
    step consumes ``batch_size * grad_accum * world_size`` samples."""

    # -- length
    max_steps: int = 1000  # stop after this optimizer step (checkpoint written)
    max_time_s: float | None = None  # stop after this wall time of this process (checkpoint written)
    schedule_steps: int | None = None  # cosine horizon; None = max_steps of the run's first start
    # -- batch
    batch_size: int = 0  # per rank; 0 = whatever the task yields; otherwise checked against the task's batches
    grad_accum: int = 1  # micro-batches per optimizer step (DDP all-reduce only on the last)
    # -- optimizer (AdamW) and schedule (linear warm-up, cosine decay to min_lr_ratio * lr)
    lr: float = 1e-3
    weight_decay: float = 0.05  # not applied to 1-D parameters (biases, norm scales)
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    clip_grad: float | None = 1.0  # max global gradient norm; None = no clipping
    ema_decay: float | None = None  # e.g. 0.999; None = no EMA
    # -- reproducibility and numerics
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp16 (grad scaler) | fp32
    device: str = "auto"  # auto | cpu | cuda (cuda:LOCAL_RANK under torchrun)
    # -- outputs
    checkpoint_every: int = 1000  # steps; also at exit
    keep_checkpoints: int = 3  # newest step folders kept (0 = all)
    log_every: int = 10  # steps per metrics.jsonl / TensorBoard line
    figure_every: int = 1000  # steps per task.on_checkpoint call (0 = never)
    progress: bool = True  # rich progress bar on rank 0 (False: quiet, for tests)
    # -- speed
    compile: bool = False  # torch.compile the (DDP-wrapped) model
    fused_optimizer: bool = True  # AdamW(fused=True) on CUDA
    channels_last: bool = False  # model and 5-D batch tensors in channels_last_3d memory format
    num_workers: int = 0  # data-loader workers: read by the task's loader (the CLI copies it), recorded here
    find_unused_parameters: bool = False  # DDP option (partly frozen models in fine-tuning)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, strict: bool = False) -> "TrainConfig":
        """A config from a dict; unknown keys are an error when ``strict``, else ignored with a warning."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            msg = f"unknown trainer setting(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})"
            if strict:
                raise InputError(msg)
            warnings.warn(msg + "; ignored", stacklevel=2)
        cfg = cls()
        for k in names & set(d):
            setattr(cfg, k, _coerce(k, d[k]))
        return cfg.validate()

    def validate(self) -> "TrainConfig":
        """Check values; returns self. One-line ``InputError`` naming the field."""
        for k in ("max_steps", "grad_accum", "checkpoint_every", "log_every"):
            if int(getattr(self, k)) < 1:
                raise InputError(f"train.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("batch_size", "warmup_steps", "figure_every", "keep_checkpoints", "num_workers"):
            if int(getattr(self, k)) < 0:
                raise InputError(f"train.{k} must be >= 0, got {getattr(self, k)}")
        for f in fields(self):  # NaN passes every comparison below: refuse non-finite numbers first
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise UsageError(f"train.{f.name} must be a finite number, got {v}")
        if self.lr <= 0:
            raise InputError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InputError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise InputError(f"train.ema_decay must be in (0, 1) or none, got {self.ema_decay}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise InputError(f"train.clip_grad must be > 0 or none, got {self.clip_grad}")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise InputError(f"train.max_time_s must be > 0 or none, got {self.max_time_s}")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise InputError(f"train.schedule_steps must be >= 1 or none, got {self.schedule_steps}")
        if self.precision not in PRECISIONS:
            raise InputError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise InputError(f"train.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        return self


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Cast a value (from YAML or the command line) to the field's type; ``None``/"none" for optional fields."""
    t = _FIELD_TYPES[name]
    optional = "None" in t
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise InputError(f"train.{name} cannot be none")
    try:
        if t.startswith("bool"):
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            return bool(value)
        if t.startswith("int"):
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if t.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise InputError(f"train.{name}: cannot use {value!r} (expected {t})") from None


def train_config(base: TrainConfig | dict[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                 overrides: Iterable[str | tuple[str, Any]] = ()) -> TrainConfig:
    """``base`` (a preset's dict or a TrainConfig), then ``options`` (field -> value; None = not given), then
    ``overrides`` (:func:`apply_overrides`). An unknown option name is a one-line InputError."""
    d = base.to_dict() if isinstance(base, TrainConfig) else dict(base or {})
    names = {f.name for f in fields(TrainConfig)}
    for k, v in (options or {}).items():
        if k not in names:
            raise InputError(f"unknown trainer setting {k!r} (known: {', '.join(sorted(names))})")
        if v is not None:
            d[k] = v
    cfg = TrainConfig.from_dict(d)
    return apply_overrides(cfg, overrides)


def run_options(options: Mapping[str, Any], max_steps: int | None = None,
                max_time: float | None = None) -> dict[str, Any]:
    """Trainer options of an API call: ``options`` plus ``max_steps`` and ``max_time`` (= ``max_time_s``)
    where given (None = not given)."""
    out = dict(options)
    if max_steps is not None:
        out["max_steps"] = max_steps
    if max_time is not None:
        out["max_time_s"] = max_time
    return out


def apply_overrides(cfg: TrainConfig, assignments: Iterable[str | tuple[str, Any]]) -> TrainConfig:
    """Apply ``key=value`` strings (``lr=3e-4``, ``train.ema_decay=0.999``, ``clip_grad=none``; a value that
    is not YAML stays a string) or ``(key, value)`` pairs; a new config."""
    out = dataclasses.replace(cfg)
    names = {f.name for f in fields(TrainConfig)}
    for a in assignments or ():
        if isinstance(a, str):
            if "=" not in a:
                raise InputError(f"--set expects key=value, got {a!r}")
            key, raw = a.split("=", 1)
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
        else:
            key, value = a
        key = key.strip()
        if key.startswith("train."):
            key = key[len("train."):]
        if key not in names:
            raise InputError(f"--set {key}: unknown trainer setting (known: {', '.join(sorted(names))})")
        setattr(out, key, _coerce(key, value))
    return out.validate()


def split_train_overrides(assignments: Overrides) -> tuple[list, list]:
    """Split overrides (``key=value`` strings, pairs, or a mapping) into trainer ones (key prefixed ``train.``)
    and the rest (the task's config), each item kept as given (a mapping becomes pairs).

    Only the prefix decides: ``seed`` exists in both configs, so a bare key is left to the task.
    """
    items = list(assignments.items()) if isinstance(assignments, Mapping) else list(assignments or ())
    mine, rest = [], []
    for a in items:
        key = a if isinstance(a, str) else str(a[0])
        (mine if key.strip().startswith("train.") else rest).append(a)
    return mine, rest


def saved_run_configs(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(task config, train config dict) of ``RUN/config.yaml`` (what a resumed run builds on), or None."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    old = read_config(saved)
    return old.get("task") or {}, old.get("train") or {}


def default_preset() -> str:
    """``gpu`` when CUDA is available, else ``cpu`` (the default preset of every training entry point)."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def base_configs(out: str | Path, resume: bool, preset: str | None, get_preset: Callable[[str], dict[str, Any]],
                 default_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Where every training entry point starts: ``(task config, train config dict, resumed)``. On ``resume``
    with a saved ``out/config.yaml``, that run's configs; else the method's ``default_config`` deep-merged with
    the preset's ``task`` part, and the preset's ``train`` part (``preset`` None: :func:`default_preset`).
    The run folder ``out`` is checked (and created) first: :func:`petctfm.io.atomic.ensure_output_dir`."""
    from petctfm.io.atomic import ensure_output_dir

    ensure_output_dir(out, "--out")  # the run folder first: a file, /proc, read-only -> one line, exit 4
    saved = saved_run_configs(out) if resume else None
    if saved is not None:
        return saved[0], saved[1], True
    p = get_preset(preset or default_preset())
    return deep_merge(default_config, p["task"]), p["train"], False


def bind_dataset_path(task_cfg: dict[str, Any], dataset: str | Path | None) -> dict[str, Any]:
    """Set ``task_cfg["dataset"]`` to ``dataset`` when given; a run without any dataset is a one-line error."""
    if dataset:
        task_cfg["dataset"] = str(dataset)
    if not task_cfg.get("dataset"):
        raise InputError("--data DATASET is required")
    return task_cfg


def finish_configs(task_cfg: dict[str, Any], train_base: TrainConfig | dict[str, Any],
                   named: dict[tuple[str, str], Any], overrides: Overrides = None,
                   train_options: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], TrainConfig]:
    """The last, shared steps of a training run's config: named task options (``{(section, key): value}``,
    None = not given) -> task overrides -> the TrainConfig (``train_base``, ``train_options``, ``train.*``
    overrides) -> one seed for everything and the loader's batch size / workers copied into the task config.

    ``overrides``: ``"key=value"`` strings, ``(key, value)`` pairs or a mapping (:mod:`petctfm.core.config`).
    """
    for (section, key), value in named.items():
        if value is not None:
            task_cfg[section][key] = value
    train_sets, task_sets = split_train_overrides(overrides)
    for key, value in parse_overrides(task_sets):
        set_key(task_cfg, key, value)
    train_cfg = train_config(train_base, train_options, train_sets)
    task_cfg["seed"] = train_cfg.seed
    if train_cfg.batch_size > 0:
        task_cfg["data"]["batch_size"] = train_cfg.batch_size
    train_cfg.batch_size = int(task_cfg["data"]["batch_size"])
    task_cfg["data"]["num_workers"] = train_cfg.num_workers
    return task_cfg, train_cfg


__all__ = ["TrainConfig", "PRECISIONS", "DEVICES", "train_config", "run_options", "apply_overrides",
           "split_train_overrides", "saved_run_configs", "default_preset", "finish_configs"]
