"""``TrainConfig``: the trainer's settings as a typed dataclass (saved in ``config.yaml``), and the shared last
steps of a training run's config (:func:`finish_configs`).

Every field can be given by name (:func:`train_config`: ``{"max_steps": 5, "lr": 1e-4}``; on the command line
``--max-steps``, ``--lr``: :func:`petctfm.cli._common.add_train_args`) or as an override ``train.key=value``
(:func:`apply_overrides`, value parsed as YAML, optional ``train.`` prefix). A ``None`` value is written
``none`` on the command line (``--clip-grad none``). The allowed values are declared next to each field
(:func:`petctfm.core.config.setting`); a wrong one is a one-line :class:`~petctfm.core.config.ConfigError`
(a UsageError, exit 2) naming the key (or the Python argument) and the value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from petctfm.core.config import (ConfigError, Overrides, TypedConfig, deep_merge, parse_overrides, read_config,
                                 setting, split_overrides)
from petctfm.core.errors import InputError, UsageError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
PREFIX = "train."


@dataclass
class TrainConfig(TypedConfig):
    """Trainer settings. Lengths are optimizer steps; ``batch_size`` is per rank and per micro-step, so one
    step consumes ``batch_size * grad_accum * world_size`` samples."""

    # -- length
    max_steps: int = setting(1000, ge=1)  # stop after this optimizer step (checkpoint written)
    max_time_s: float | None = setting(None, gt=0)  # stop after this wall time of this process (checkpoint written)
    schedule_steps: int | None = setting(None, ge=1)  # cosine horizon; None = max_steps of the run's first start
    # -- batch
    batch_size: int = setting(0, ge=0)  # per rank; 0 = whatever the task yields (a training run: >= 1)
    grad_accum: int = setting(1, ge=1)  # micro-batches per optimizer step (DDP all-reduce only on the last)
    # -- optimizer (AdamW, or nnU-Net's SGD with Nesterov momentum) and schedule (linear warm-up, cosine or
    #    poly decay to min_lr_ratio * lr)
    optimizer: str = setting("adamw", choices=("adamw", "sgd"))  # sgd: nesterov, momentum = beta1 (nnU-Net: .99)
    lr: float = setting(1e-3, gt=0)
    weight_decay: float = setting(0.05, ge=0)  # not applied to 1-D parameters (biases, norm scales)
    beta1: float = setting(0.9, ge=0, lt=1)
    beta2: float = setting(0.999, ge=0, lt=1)
    warmup_steps: int = setting(0, ge=0)
    min_lr_ratio: float = setting(0.0, ge=0, le=1)
    lr_schedule: str = setting("cosine", choices=("cosine", "poly"))  # after warm-up: cosine | nnU-Net's poly 0.9
    clip_grad: float | None = setting(1.0, gt=0)  # max global gradient norm; None = no clipping
    ema_decay: float | None = setting(None, gt=0, lt=1)  # e.g. 0.999; None = no EMA
    # -- reproducibility and numerics
    seed: int = setting(0, ge=0)
    precision: str = setting("auto", choices=PRECISIONS)  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    device: str = setting("auto", choices=DEVICES)  # auto | cpu | cuda (cuda:LOCAL_RANK under torchrun)
    # -- outputs
    checkpoint_every: int = setting(1000, ge=1)  # steps; also at exit
    keep_checkpoints: int = setting(3, ge=0)  # newest step folders kept (0 = all)
    log_every: int = setting(10, ge=1)  # steps per metrics.jsonl / TensorBoard line
    figure_every: int = setting(1000, ge=0)  # steps per task.on_checkpoint call (0 = never)
    progress: bool = True  # rich progress bar on rank 0 (False: quiet, for tests)
    # -- speed
    compile: bool = False  # torch.compile the (DDP-wrapped) model
    fused_optimizer: bool = True  # AdamW(fused=True) on CUDA
    channels_last: bool = False  # model and 5-D batch tensors in channels_last_3d memory format
    num_workers: int = setting(0, ge=0)  # data-loader workers: read by the task's loader (the CLI copies it)
    find_unused_parameters: bool = False  # DDP option (partly frozen models in fine-tuning)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, prefix: str = PREFIX,  # type: ignore[override]
                  strict: bool = False) -> "TrainConfig":
        """A checked config from a dict; unknown keys are an error when ``strict``, else ignored with a warning
        (a preset or an old ``config.yaml`` naming a setting this trainer does not have)."""
        if isinstance(d, TrainConfig):
            d = d.to_dict()
        d = dict(d or {})
        names = cls.known()
        unknown = sorted(k for k in d if k not in names)
        if unknown and not strict:
            warnings.warn(f"unknown trainer setting(s): {', '.join(unknown)} (known: {', '.join(sorted(names))}); "
                          "ignored", stacklevel=2)
            d = {k: v for k, v in d.items() if k in names}
        return super().from_dict(d, prefix).check(prefix)  # type: ignore[return-value]

    def validate(self, prefix: str = PREFIX) -> "TrainConfig":  # type: ignore[override]
        """Cross-field checks (none beyond each field's rules today); returns self."""
        return self


#: TrainConfig fields whose API argument (and flag) has another name: ``max_time=`` / ``--max-time``.
ARGUMENT_NAMES = {"max_time_s": "max_time"}


def _named(cfg: TypedConfig, name: str, key: str, value: Any, prefix: str) -> None:
    """Set config ``key`` from the named Python argument ``name``; an error names the argument (``arg=``)."""
    try:
        cfg.set(key, value, prefix)
    except ConfigError as exc:  # a string (the command line's) is shown as parsed: --lr -1.0
        raise (exc.about_argument(name) if isinstance(value, str) else exc.about_argument(name, value)) from None


def train_config(base: TrainConfig | dict[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                 overrides: Overrides = ()) -> TrainConfig:
    """``base`` (a preset's dict or a TrainConfig), then ``options`` (field -> value; None = not given; an
    error names the argument: ``lr=-1.0: must be > 0``), then ``overrides`` (:func:`apply_overrides`)."""
    cfg = TrainConfig.from_dict(base)
    names = TrainConfig.known()
    for k, v in (options or {}).items():
        if k not in names:
            raise UsageError(f"unknown trainer setting {k!r} (known: {', '.join(sorted(names))})", arg=k)
        if v is not None:
            _named(cfg, ARGUMENT_NAMES.get(k, k), k, v, PREFIX)
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


def apply_overrides(cfg: TrainConfig, assignments: Overrides) -> TrainConfig:
    """Apply ``key=value`` strings (``lr=3e-4``, ``train.ema_decay=0.999``, ``clip_grad=none``) or ``(key,
    value)`` pairs (the ``train.`` prefix optional), through the one override parser of
    :mod:`petctfm.core.config`; a new, checked config."""
    out = TrainConfig.from_dict(cfg)
    for key, value in parse_overrides(assignments):
        out.set(key[len(PREFIX):] if key.startswith(PREFIX) else key, value, PREFIX)
    return out.check(PREFIX)


def split_train_overrides(assignments: Overrides) -> tuple[list, list]:
    """Split overrides (``key=value`` strings, pairs, or a mapping) into trainer ones (key prefixed ``train.``)
    and the rest (the task's config), each item kept as given (a mapping becomes pairs).

    Only the prefix decides: ``seed`` exists in both configs, so a bare key is left to the task.
    """
    items = list(assignments.items()) if isinstance(assignments, Mapping) else list(assignments or ())
    mine, rest = [], []
    for a in items:
        key = a if isinstance(a, str) else str(a[0])
        (mine if key.strip().startswith(PREFIX) else rest).append(a)
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
                 default_config: dict[str, Any] | type[TypedConfig]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Where every training entry point starts: ``(task config, train config dict, resumed)``. On ``resume``
    with a saved ``out/config.yaml``, that run's configs; else the method's ``default_config`` deep-merged with
    the preset's ``task`` part, and the preset's ``train`` part (``preset`` None: :func:`default_preset`);
    ``default_config``: a dict or the method's typed config class (its defaults).
    The run folder ``out`` is checked (and created) first: :func:`petctfm.io.atomic.ensure_output_dir`."""
    from petctfm.io.atomic import ensure_output_dir

    ensure_output_dir(out, "--out")  # the run folder first: a file, /proc, read-only -> one line, exit 4
    saved = saved_run_configs(out) if resume else None
    if saved is not None:
        return saved[0], saved[1], True
    p = get_preset(preset or default_preset())
    base = default_config().to_dict() if isinstance(default_config, type) else default_config
    return deep_merge(base, p["task"]), p["train"], False


def bind_dataset_path(task_cfg: dict[str, Any], dataset: str | Path | None) -> dict[str, Any]:
    """Set ``task_cfg["dataset"]`` to ``dataset`` when given; a run without any dataset is a one-line error."""
    if dataset:
        task_cfg["dataset"] = str(dataset)
    if not task_cfg.get("dataset"):
        raise InputError("--data DATASET is required")
    return task_cfg


def _given(options: Mapping[str, Any] | None, sets: list[tuple[str, Any]], name: str) -> bool:
    return (options or {}).get(name) is not None or any(k == name for k, _ in sets)


def finish_configs(config_cls: type[TypedConfig], task_cfg: dict[str, Any] | TypedConfig,
                   train_base: TrainConfig | dict[str, Any], named: Mapping[str, tuple[str, Any]],
                   overrides: Overrides = None, train_options: Mapping[str, Any] | None = None,
                   ) -> tuple[dict[str, Any], TrainConfig]:
    """The last, shared steps of a training run's config: the task config typed (``config_cls``, the method's
    ``CONFIG``) -> named task options (``{argument: (dotted key, value)}``, None = not given; an error names
    the argument) -> task overrides -> the TrainConfig (``train_base``, ``train_options``, ``train.*``
    overrides) -> one seed for everything, the loader's batch size / workers copied into the task config ->
    every check of the task config -> the memory estimate (:func:`check_memory`, when the config has
    ``train_bytes``). Returns ``(task config dict, TrainConfig)``.

    ``train.batch_size`` given as 0 (or below) is refused: a training run needs >= 1 sample per rank and
    micro-step (0 means "what the task yields" only to the bare trainer, and a preset never sets it).
    ``overrides``: ``"key=value"`` strings, ``(key, value)`` pairs or a mapping (:mod:`petctfm.core.config`).
    """
    cfg = config_cls.from_dict(task_cfg)
    for arg, (key, value) in named.items():
        if value is not None:
            _named(cfg, arg, key, value, "")
    train_sets, task_sets = split_overrides(overrides, PREFIX)
    for key, value in task_sets:
        cfg.set(key, value)
    train_cfg = train_config(train_base, train_options, train_sets)
    if train_cfg.batch_size < 1 and _given(train_options, train_sets, "batch_size"):
        raise ConfigError(PREFIX + "batch_size", train_cfg.batch_size, "must be >= 1 in a training run (samples "
                          "per rank and micro-step)", arg=None if any(k == "batch_size" for k, _ in train_sets)
                          else "batch_size")
    cfg.set("seed", train_cfg.seed)
    if train_cfg.batch_size > 0:
        cfg.set("data.batch_size", train_cfg.batch_size)
    cfg.set("data.num_workers", train_cfg.num_workers)
    cfg.check()
    out = cfg.to_dict()
    train_cfg.batch_size = int(out["data"]["batch_size"])
    estimate = getattr(cfg, "train_bytes", None)
    if estimate is not None:
        check_memory(estimate(train_cfg.batch_size), train_cfg.device)
    return out, train_cfg


def available_memory(device: str = "auto") -> tuple[int, str] | None:
    """(bytes free, what) where a training run of ``device`` would put its tensors: the current CUDA device's
    free memory, else the system's available RAM (``/proc/meminfo``); None when unknown."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free), f"free on {torch.cuda.get_device_name()}"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "RAM available"
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(estimate_bytes: int, device: str = "auto") -> None:
    """One-line UsageError (exit 2) when a training step's estimated memory (:func:`petctfm.data.loader.
    PatchConfig.train_bytes`-like: a rough lower bound) exceeds what the device has free; nothing when unknown."""
    have = available_memory(device)
    if have is None or estimate_bytes <= have[0]:
        return
    raise UsageError(f"a training step needs about {estimate_bytes / 2**30:.1f} GiB (patch, batch and backbone), "
                     f"more than the {have[0] / 2**30:.1f} GiB {have[1]}; use a smaller patch size or batch size")


__all__ = ["TrainConfig", "PRECISIONS", "DEVICES", "train_config", "run_options", "apply_overrides",
           "split_train_overrides", "saved_run_configs", "default_preset", "finish_configs", "available_memory",
           "check_memory"]
