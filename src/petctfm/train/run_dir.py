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

from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_write_text
from petctfm.train import checkpoint as ck

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
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


def check_run_dir(run_dir: Path, full_config: dict[str, Any], resume: bool) -> Path | None:
    """Validate the run folder against the config; return the checkpoint folder to resume from (or None)."""
    cfg_path = run_dir / CONFIG_FILE
    ckpt = ck.latest_checkpoint(run_dir / "checkpoints")
    if resume:
        if ckpt is None:
            raise InputError(f"{run_dir}: --resume requested but no checkpoint in {run_dir / 'checkpoints'}")
        if cfg_path.is_file():
            old = yaml.safe_load(cfg_path.read_text()) or {}
            diff = config_diff(old, full_config, frozenset(f"train.{k}" for k in RESUMABLE_CHANGES))
            if diff:
                raise InputError(f"{cfg_path}: cannot resume with a different configuration ({'; '.join(diff[:3])}"
                                 f"{'; ...' if len(diff) > 3 else ''}); use the saved settings or a new run folder")
        return ckpt
    if cfg_path.is_file():
        old = yaml.safe_load(cfg_path.read_text()) or {}
        diff = config_diff(old, full_config)
        if diff:
            raise InputError(f"{cfg_path}: run folder holds a different configuration ({'; '.join(diff[:3])}"
                             f"{'; ...' if len(diff) > 3 else ''}); use a new run folder or --resume")
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
