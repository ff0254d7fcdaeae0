"""The run folder of a training run: file names, the config check before a (resumed) run, metrics.jsonl.

A run folder holds ``config.yaml`` (``{"train": TrainConfig, "task": task.config}``), ``metrics.jsonl``
(one JSON line per log step, appended), ``summary.json`` (written at exit), ``checkpoints/step_*`` and
``tb/``. :func:`check_run_dir` refuses a folder that holds a different config, or checkpoints without
``resume``; on resume only the fields in :data:`RESUMABLE_CHANGES` may differ. :func:`truncate_metrics`
drops the lines a resumed run will write again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from petctfm.core.config import read_config
from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_write_text
from petctfm.train import checkpoint as ck

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
#: How a trainer's summary says training ended by its budget (not killed, not interrupted).
FINISHED = ("max_steps", "max_time")


def finished_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The trainer's ``RUN/summary.json`` when training ended by its budget (:data:`FINISHED`), else None (no
    summary, an unreadable one, or a run that was stopped otherwise)."""
    try:
        s = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) and s.get("stopped") in FINISHED else None


#: TrainConfig fields that may change when a run is resumed (they do not change what is computed).
RESUMABLE_CHANGES = frozenset({"max_steps", "max_time_s", "checkpoint_every", "keep_checkpoints", "log_every",
                               "figure_every", "progress", "compile", "num_workers", "schedule_steps"})


def plain(obj: Any) -> Any:
    """A YAML/JSON-safe copy (tuples -> lists, Paths -> str, numpy scalars -> numbers)."""
    return yaml.safe_load(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one dict with dotted keys."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
    """``"key: old -> new"`` for every dotted key (``train.lr``) whose value differs, sorted, except ``ignore``."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}" for k in keys
            if a.get(k, "<missing>") != b.get(k, "<missing>") and k not in ignore]


def checkpoint_config(loaded: ck.LoadedCheckpoint) -> dict[str, Any]:
    """``{"train": ..., "task": ...}`` a checkpoint was trained with: the task config from the weights'
    safetensors metadata and the TrainConfig from ``state.pt`` (what an edited config.yaml is compared to)."""
    return plain({"train": loaded.state.get("train_config") or {}, "task": loaded.config})


def check_run_dir(run_dir: Path, full_config: dict[str, Any], resume: bool,
                  notes: list[str] | None = None) -> ck.LoadedCheckpoint | None:
    """Validate the run folder against the config; return the checkpoint to resume from, already read (its
    weights, state and EMA are read once, here, and handed to the trainer), or None.

    On ``resume``: the newest *intact* checkpoint (:func:`petctfm.train.checkpoint.intact_checkpoint`; a
    corrupted latest one is skipped with a note), and the config must equal both ``config.yaml`` and the one
    that checkpoint was trained with (an edited config.yaml is refused, naming the keys), except the
    :data:`RESUMABLE_CHANGES`, which are applied and reported. ``notes`` collects those one-line reports.
    """
    notes = notes if notes is not None else []
    cfg_path = run_dir / CONFIG_FILE
    resumable = frozenset(f"train.{k}" for k in RESUMABLE_CHANGES) | {"task.data.num_workers"}
    if resume:
        ckpt, skipped = ck.read_intact_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            if skipped:
                raise InputError(f"{run_dir}: --resume requested but no intact checkpoint in "
                                 f"{run_dir / 'checkpoints'} (unreadable: {'; '.join(skipped)})")
            raise InputError(f"{run_dir}: --resume requested but no checkpoint in {run_dir / 'checkpoints'}")
        notes += [f"skipped a corrupted checkpoint: {s}; resuming from {ckpt.name}" for s in skipped]
        if cfg_path.is_file():
            old = read_config(cfg_path)  # a broken file: one line naming it
            diff = config_diff(old, full_config, resumable)
            if diff:
                raise InputError(f"{cfg_path}: cannot resume with a different configuration ({'; '.join(diff[:3])}"
                                 f"{'; ...' if len(diff) > 3 else ''}); use the saved settings or a new run folder")
        trained = checkpoint_config(ckpt)
        if trained.get("train"):
            diff = config_diff(trained, full_config, resumable)
            if diff:
                raise InputError(f"{cfg_path}: differs from the configuration {ckpt.name} was trained with "
                                 f"({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); was config.yaml "
                                 "edited? Restore it or start a new run folder")
            changed = [d for d in config_diff(trained, full_config) if d.split(":")[0] in resumable]
            if changed:
                notes.append(f"resuming {ckpt.name} with changed settings: {'; '.join(changed)}")
        return ckpt
    if cfg_path.is_file():
        old = read_config(cfg_path)  # a broken file: one line naming it
        diff = config_diff(old, full_config)
        if diff:
            raise InputError(f"{cfg_path}: run folder holds a different configuration ({'; '.join(diff[:3])}"
                             f"{'; ...' if len(diff) > 3 else ''}); use a new run folder or --resume")
    ckpt = ck.latest_checkpoint(run_dir / "checkpoints")
    if ckpt is not None:
        raise InputError(f"{run_dir}: already holds checkpoints ({ckpt.name}); pass --resume to continue it "
                         f"or choose a new run folder")
    return None


def truncate_metrics(path: Path, keep_upto_step: int) -> None:
    """Keep metrics lines of steps <= ``keep_upto_step`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        atomic_write_text(path, "")
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= keep_upto_step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(x + "\n" for x in kept))


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to ``metrics.jsonl`` as one JSON line, in a single ``write`` (append-only log: a
    kill leaves at most one cut line, which :func:`truncate_metrics` skips)."""
    line = json.dumps(record) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one whole line per write (append-only log)
    finally:
        os.close(fd)


def median_step_seconds(run_dir: Path, skip: int = 2) -> float:
    """Seconds per optimizer step of a run logged every step (``log_every`` 1): the median gap between the
    ``time_s`` of consecutive ``metrics.jsonl`` lines, the first ``skip`` steps (start-up) left out."""
    times = [json.loads(line)["time_s"] for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines()
             if line.strip()]
    deltas = sorted(b - a for a, b in zip(times[skip:], times[skip + 1:]))
    if not deltas:
        raise ValueError(f"{Path(run_dir) / METRICS_FILE}: fewer than {skip + 2} logged steps")
    return float(deltas[len(deltas) // 2])


def open_tensorboard(run_dir: Path, purge_step: int | None):
    """A ``SummaryWriter`` on ``run_dir/tb``, or None (with a warning) when no path to it can be given.

    TensorBoard encodes its log path as UTF-8, so a run folder whose name is not UTF-8 (``surrogateescape``
    bytes from the file system) raised ``UnicodeEncodeError`` deep inside it. Such a folder is reached through
    an open descriptor, ``/proc/self/fd/N/tb`` (a plain ASCII path to the same folder, Linux); the descriptor is
    closed when the writer is collected. Where ``/proc`` is missing, TensorBoard logging is skipped for that
    run (``metrics.jsonl`` still holds every logged number)."""
    import logging
    import weakref

    from torch.utils.tensorboard import SummaryWriter

    from petctfm.io.walk import is_utf8_name, printable

    if is_utf8_name(run_dir):
        return SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
    fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    if not os.path.isdir(f"/proc/self/fd/{fd}"):
        os.close(fd)
        logging.getLogger(__name__).warning("%s: folder name is not UTF-8 and /proc is missing: no TensorBoard log "
                                            "(metrics.jsonl has the numbers)", printable(run_dir))
        return None
    writer = SummaryWriter(f"/proc/self/fd/{fd}/tb", purge_step=purge_step)
    weakref.finalize(writer, os.close, fd)
    return writer
