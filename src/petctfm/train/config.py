"""``TrainConfig``: the trainer's settings as plain data (saved in ``config.yaml``), plus CLI helpers.

Every field is a command-line option (:func:`add_train_args`: ``--max-steps``, ``--lr``, ``--no-compile``...)
and can also be set as ``--set key=value`` (:func:`apply_overrides`, value parsed as YAML, optional
``train.`` prefix). A ``None`` option value is written ``none`` on the command line (``--clip-grad none``).
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import yaml

from petctfm.core.errors import InputError

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


def add_train_args(parser: argparse.ArgumentParser, prefix: str = "") -> argparse._ArgumentGroup:
    """Add one option per TrainConfig field (``--max-steps``, ``--lr``, ``--compile/--no-compile``...).

    Defaults are ``None`` (= not given), so :func:`train_config_from_args` only overrides what the user
    typed. ``prefix`` (e.g. ``"train-"``) avoids clashes with a command's own options.
    """
    group = parser.add_argument_group("trainer")
    for f in fields(TrainConfig):
        opt = "--" + prefix + f.name.replace("_", "-")
        t = str(f.type)
        default = TrainConfig().__getattribute__(f.name)
        helptext = f"(default {default})"
        if t.startswith("bool"):
            group.add_argument(opt, dest="train__" + f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=helptext)
        else:
            kw: dict[str, Any] = {}
            if f.name == "precision":
                kw["choices"] = PRECISIONS
            elif f.name == "device":
                kw["choices"] = DEVICES
            group.add_argument(opt, dest="train__" + f.name, default=None, metavar=f.name.upper(), help=helptext,
                               **kw)
    return group


def add_run_args(parser: argparse.ArgumentParser, set_example: str) -> argparse._ArgumentGroup:
    """The options every training command shares, read by :func:`finish_configs`: ``--max-time``,
    ``--resume``, ``--set KEY=VALUE`` (``set_example``: a task key of that command, for the help), then one
    option per TrainConfig field (:func:`add_train_args`)."""
    parser.add_argument("--max-time", type=float, dest="train__max_time_s", default=None, metavar="S",
                        help="stop (with a checkpoint) after S seconds")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override any config field (task: {set_example}; trainer: train.lr=1e-4)")
    return add_train_args(parser)


def train_config_from_args(args: argparse.Namespace, base: TrainConfig | dict[str, Any] | None = None,
                           overrides: Iterable[str] = ()) -> TrainConfig:
    """``base`` (a preset's dict or a TrainConfig), then the named options given, then ``--set`` overrides."""
    d = base.to_dict() if isinstance(base, TrainConfig) else dict(base or {})
    for f in fields(TrainConfig):
        v = getattr(args, "train__" + f.name, None)
        if v is not None:
            d[f.name] = v
    cfg = TrainConfig.from_dict(d)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: TrainConfig, assignments: Iterable[str]) -> TrainConfig:
    """Apply ``key=value`` strings (``lr=3e-4``, ``train.ema_decay=0.999``, ``clip_grad=none``); new config."""
    out = dataclasses.replace(cfg)
    names = {f.name for f in fields(TrainConfig)}
    for a in assignments or ():
        if "=" not in a:
            raise InputError(f"--set expects key=value, got {a!r}")
        key, raw = a.split("=", 1)
        key = key.strip()
        if key.startswith("train."):
            key = key[len("train."):]
        if key not in names:
            raise InputError(f"--set {key}: unknown trainer setting (known: {', '.join(sorted(names))})")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        setattr(out, key, _coerce(key, value))
    return out.validate()


def split_train_overrides(assignments: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split ``--set`` strings into trainer ones (key prefixed ``train.``) and the rest (the task's config).

    Only the prefix decides: ``seed`` exists in both configs, so a bare key is left to the task.
    """
    mine, rest = [], []
    for a in assignments or ():
        (mine if a.strip().startswith("train.") else rest).append(a)
    return mine, rest


def saved_run_configs(run_dir: str | Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(task config, train config dict) of ``RUN/config.yaml`` (what ``--resume`` builds on), or None."""
    from pathlib import Path

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    old = yaml.safe_load(saved.read_text()) or {}
    return old.get("task") or {}, old.get("train") or {}


def default_preset() -> str:
    """``gpu`` when CUDA is available, else ``cpu`` (the default of every command with ``--preset``)."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def finish_configs(args: argparse.Namespace, task_cfg: dict[str, Any], train_base: TrainConfig | dict[str, Any],
                   named: dict[tuple[str, str], Any]) -> tuple[dict[str, Any], TrainConfig]:
    """The last, shared steps of a training command's config: named options (``{(section, key): value}``,
    None = not given) -> task ``--set key=value`` -> the TrainConfig (base, ``--flags``, ``--set train.*``) ->
    one seed for everything and the loader's batch size / workers copied into the task config."""
    from petctfm.methods.early_fusion_mae.presets import set_dotted

    for (section, key), value in named.items():
        if value is not None:
            task_cfg[section][key] = value
    train_sets, task_sets = split_train_overrides(args.set)
    for a in task_sets:
        set_dotted(task_cfg, a)
    train_cfg = train_config_from_args(args, train_base, train_sets)
    task_cfg["seed"] = train_cfg.seed
    if train_cfg.batch_size > 0:
        task_cfg["data"]["batch_size"] = train_cfg.batch_size
    train_cfg.batch_size = int(task_cfg["data"]["batch_size"])
    task_cfg["data"]["num_workers"] = train_cfg.num_workers
    return task_cfg, train_cfg


__all__ = ["TrainConfig", "split_train_overrides", "PRECISIONS", "DEVICES", "add_train_args", "train_config_from_args",
           "apply_overrides", "add_run_args", "saved_run_configs", "default_preset", "finish_configs"]
