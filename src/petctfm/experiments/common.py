"""What every experiment (label efficiency, FratMAE ablation, vs nnU-Net) shares about its folder."""

from __future__ import annotations

from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from petctfm.core.errors import InputError


def check_settings(path: Path, settings: Any) -> None:
    """Refuse to continue an experiment folder whose saved experiment file ``path`` (YAML, key ``settings``)
    holds other settings than ``settings`` (a dataclass): one-line InputError naming up to three differences.
    A setting added to the dataclass later counts as its default in folders written before it. No file: a
    new folder, nothing to check."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return
    old = (yaml.safe_load(path.read_text()) or {}).get("settings") or {}
    new = asdict(settings)
    defaults = {f.name: f.default for f in fields(settings) if f.default is not MISSING}
    old = {k: old.get(k, defaults.get(k)) for k in new}
    diff = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    if diff:
        raise InputError(f"{path}: this folder holds an experiment with other settings ({'; '.join(diff[:3])}); "
                         "use a new --out or the same settings")


def threads_per_job(jobs: int) -> int:
    """Torch threads of each of ``jobs`` runs at once: the machine's cores shared evenly (>= 1)."""
    import os

    return max(1, (os.cpu_count() or 1) // max(1, int(jobs)))


def call_with_threads(fn: Any, threads: int, *args: Any) -> Any:
    """``fn(*args)`` with ``threads`` torch threads: what a worker process of a parallel experiment runs."""
    import torch

    torch.set_num_threads(int(threads))
    return fn(*args)


def data_words_of(dataset: str | Path | None) -> tuple[str, str]:
    """``(short label, warning sentence)`` of :func:`petctfm.core.provenance.data_words` for the dataset folder
    ``dataset`` (its ``dataset.json["provenance"]``, recorded by harmonize); unknown when it cannot be read."""
    from petctfm.core.provenance import data_words
    from petctfm.data import format as fmt

    try:
        info = fmt.load_dataset_info(dataset) if dataset else {}
    except (InputError, OSError, ValueError):
        info = {}
    return data_words(info.get("provenance") if isinstance(info, dict) else None)


__all__ = ["check_settings", "threads_per_job", "call_with_threads", "data_words_of"]
