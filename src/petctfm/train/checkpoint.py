"""Checkpoints: safetensors weights (config JSON in the metadata) + a plain training-state file.

Layout of a run folder's checkpoints::

    run_dir/checkpoints/
        step_0000200/model.safetensors   weights of the bare model (no DDP/compile prefixes), fp32, metadata:
                                         {"petctfm_format": "petctfm-weights/1", "config": <task config JSON>,
                                          "step": "200"}
        step_0000200/ema.safetensors     the EMA weights (same metadata), when EMA is on
        step_0000200/state.pt            optimizer / scheduler / grad scaler / EMA count / RNG states of every
                                         rank / data position; only tensors, dicts, lists, numbers, strings,
                                         so it loads with ``torch.load(weights_only=True)``
        latest                           text file "step_0000200", written (atomically) after the folder

A step folder is written whole (``atomic_dir``) and the ``latest`` pointer last, so a run killed at any
moment leaves the previous checkpoint intact. Weights are loaded with ``safetensors`` only: nothing in a
petctfm checkpoint is unpickled except ``state.pt`` with ``weights_only=True``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from petctfm.core.device import unwrap_model
from petctfm.core.errors import InputError
from petctfm.io.atomic import atomic_dir, atomic_path, atomic_write_text

WEIGHTS_FORMAT = "petctfm-weights/1"
BEST_DIR = "best"  # RUN/best/model.safetensors + best.json: the best checkpoint by a validation score
BEST_FILE = "best.json"
STATE_FORMAT = "petctfm-train-state/1"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step_(\d{7,})$")


def register_model_builder(method: str, builder: Callable[[dict], nn.Module], role: str = "other") -> None:
    """Make :func:`load_model` rebuild checkpoints whose config ``"method"`` is ``method`` with ``builder``: a
    one-kind method record (:func:`petctfm.core.registry.register_method`; a real method declares its kinds in
    its :class:`~petctfm.core.registry.Method`). Replaces an earlier one of that name."""
    from petctfm.core.registry import Method, ModelKind, register_method

    register_method(Method(name=method, summary="", kinds=(ModelKind(method, builder, role),)), replace=True)


# ------------------------------------------------------------------------------------------------ weights


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; tensors sharing storage (tied weights) are cloned (safetensors refuses them)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in unwrap_model(model).state_dict().items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            t = t.clone()
        elif ptr != -1:
            seen.add(ptr)
        out[k] = t
    return out


def save_weights(model: nn.Module, path: str | Path, config: dict[str, Any], step: int | None = None) -> Path:
    """Write the bare model's ``state_dict`` to ``path`` (safetensors, atomic) with ``config`` in the metadata.

    ``config`` must be JSON-serializable (the task config that ``build_model(config)`` rebuilds the model
    from). Returns ``path``.
    """
    path = Path(path)
    meta = {"petctfm_format": WEIGHTS_FORMAT, "config": json.dumps(config, default=str)}
    if step is not None:
        meta["step"] = str(int(step))
    with atomic_path(path) as tmp:
        save_file(_plain_state_dict(model), str(tmp), metadata=meta)
    return path


def _read_config(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(config dict, raw metadata) of a petctfm safetensors file, from its metadata alone; one-line errors."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for garbage files
        raise InputError(f"{path}: not a safetensors file ({exc})") from None
    if meta.get("petctfm_format") != WEIGHTS_FORMAT or "config" not in meta:
        raise InputError(f"{path}: not a petctfm checkpoint (safetensors metadata lacks petctfm_format/config)")
    try:
        return json.loads(meta["config"]), meta
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: config in the safetensors metadata is not valid JSON ({exc})") from None


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """(state dict on CPU, config dict, raw metadata) of a petctfm safetensors file; one-line errors."""
    path = Path(path)
    config, meta = _read_config(path)
    return load_file(str(path), device="cpu"), config, meta


def resolve_weights(checkpoint_or_run: str | Path, ema: bool = False) -> Path:
    """The weights file for a ``.safetensors`` file, a step folder, a ``checkpoints`` folder or a run folder
    (the latter two: the ``latest`` checkpoint), or the ``checkpoints/latest`` pointer file itself."""
    p = Path(checkpoint_or_run)
    name = EMA_FILE if ema else MODEL_FILE
    if p.name == LATEST and p.is_file():
        p = p.parent
    if p.is_file():
        return p
    if not p.exists():
        raise InputError(f"{p}: no such checkpoint file or run folder")
    if (p / name).is_file():
        return p / name
    step_dir = latest_checkpoint(p / "checkpoints") or latest_checkpoint(p)
    if step_dir is not None and (step_dir / name).is_file():
        return step_dir / name
    raise InputError(f"{p}: no {name} found (expected a .safetensors file, a step folder or a run folder with "
                     f"checkpoints/)")


def _builder_for(config: dict[str, Any], where: Path) -> Callable[[dict], nn.Module]:
    """The builder of the checkpoint kind the config's ``"method"`` names (the method registry)."""
    from petctfm.core.registry import model_kind

    return model_kind(config.get("method"), where).build


def read_checkpoint_config(checkpoint_or_run: str | Path) -> tuple[dict[str, Any], Path]:
    """(config, weights file) of a checkpoint or run folder from the safetensors metadata alone (no tensor is
    read): what a run is, cheaply (which method wrote it). One-line InputError for a missing or foreign file."""
    path = resolve_weights(checkpoint_or_run)
    return _read_config(path)[0], path


def build_from_config(config: dict[str, Any], where: str | Path = "config") -> nn.Module:
    """The untrained (randomly initialized) model a checkpoint's ``config`` describes, by its registered builder
    (a random-init control with exactly the architecture of a trained run)."""
    return _builder_for(config, Path(where))(config)


def load_model(checkpoint_or_run: str | Path, build_model: Callable[[dict], nn.Module] | None = None,
               ema: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint with safetensors only: ``(model on CPU in eval mode, config)``.

    ``checkpoint_or_run``: a ``.safetensors`` file, a step folder, or a run folder (latest checkpoint).
    ``build_model(config)`` makes the empty model; by default the builder of the checkpoint kind
    ``config["method"]`` names in the method registry (:func:`petctfm.core.registry.model_kind`). ``ema=True`` loads ``ema.safetensors`` instead.
    """
    path = resolve_weights(checkpoint_or_run, ema=ema)
    state, config, _ = read_weights(path)
    model = (build_model or _builder_for(config, path))(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{path}: weights do not fit the model built from its config "
                         f"({' '.join(first[:2])[:300]})") from None
    return model.eval(), config


# ------------------------------------------------------------------------------------------------ RNG


def capture_rng() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch, CUDA) as tensors / numbers (``weights_only``-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        n = min(len(state["cuda"]), torch.cuda.device_count())
        torch.cuda.set_rng_state_all(state["cuda"][:n])


class preserved_rng:
    """Context manager: RNG states are the same after the block as before (figures must not shift training)."""

    def __enter__(self):
        self._saved = capture_rng()
        return self

    def __exit__(self, *exc):
        restore_rng(self._saved)
        return False


# ------------------------------------------------------------------------------------------------ step folders


def step_dir_name(step: int) -> str:
    return f"step_{int(step):07d}"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete step folders (holding model + state), sorted by step."""
    if not ckpt_dir.is_dir():
        return []
    out = []
    for d in ckpt_dir.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir() and (d / MODEL_FILE).is_file() and (d / STATE_FILE).is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The folder named by ``latest``; if that pointer is missing or stale, the newest complete folder."""
    ckpt_dir = Path(ckpt_dir)
    pointer = ckpt_dir / LATEST
    if pointer.is_file():
        d = ckpt_dir / pointer.read_text().strip()
        if (d / MODEL_FILE).is_file() and (d / STATE_FILE).is_file():
            return d
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


@dataclass
class LoadedCheckpoint:
    """A step folder read whole, once (what ``--resume`` needs: the intact check, the trained-with config
    and the weights to load all come from this one read)."""

    path: Path  # the step folder
    weights: dict[str, torch.Tensor]  # model.safetensors, on the CPU
    config: dict[str, Any]  # the task config from the safetensors metadata
    state: dict[str, Any]  # state.pt (weights_only=True)
    ema_weights: dict[str, torch.Tensor] | None  # ema.safetensors, when the folder holds one

    @property
    def name(self) -> str:
        return self.path.name


def read_checkpoint(step_dir: Path) -> LoadedCheckpoint:
    """Read a step folder whole (weights, state, EMA weights if present); InputError naming the unreadable file."""
    d = Path(step_dir)
    weights, config, _ = read_weights(d / MODEL_FILE)
    state = read_state(d)
    ema = read_weights(d / EMA_FILE)[0] if (d / EMA_FILE).is_file() else None
    return LoadedCheckpoint(d, weights, config, state, ema)


def read_intact_checkpoint(ckpt_dir: Path) -> tuple[LoadedCheckpoint | None, list[str]]:
    """The newest checkpoint that reads back whole (weights and training state), read once, newest first from
    the ``latest`` pointer, and one line for each newer one skipped as unreadable (a disk error, a truncated
    file): ``(LoadedCheckpoint or None, ["step_0000200/model.safetensors: not a safetensors file (...)", ...])``."""
    ckpt_dir = Path(ckpt_dir)
    first = latest_checkpoint(ckpt_dir)
    candidates = ([first] if first is not None else []) + [d for _, d in reversed(list_checkpoints(ckpt_dir))
                                                            if d != first]
    skipped = []
    for d in candidates:
        try:
            return read_checkpoint(d), skipped
        except InputError as exc:
            skipped.append(f"{d.name}: {str(exc).replace(str(d) + '/', '')}")
    return None, skipped


def intact_checkpoint(ckpt_dir: Path) -> tuple[Path | None, list[str]]:
    """:func:`read_intact_checkpoint`, returning only the step folder: ``(step folder or None, skipped)``."""
    loaded, skipped = read_intact_checkpoint(ckpt_dir)
    return (loaded.path if loaded is not None else None), skipped


def write_checkpoint(ckpt_dir: Path, step: int, model: nn.Module, config: dict[str, Any], state: dict[str, Any],
                     ema_model: nn.Module | None = None, keep: int = 3) -> Path:
    """Write ``step_{step:07d}/`` whole, then the ``latest`` pointer, then delete all but the newest ``keep``."""
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / step_dir_name(step)
    with atomic_dir(final) as tmp:
        save_weights(model, tmp / MODEL_FILE, config, step=step)
        if ema_model is not None:
            save_weights(ema_model, tmp / EMA_FILE, config, step=step)
        with atomic_path(tmp / STATE_FILE) as t:
            torch.save({"format": STATE_FORMAT, **state}, t)
    atomic_write_text(ckpt_dir / LATEST, final.name + "\n")
    if keep and keep > 0:
        for _, old in list_checkpoints(ckpt_dir)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(step_dir: Path) -> dict[str, Any]:
    """``state.pt`` of a step folder, loaded with ``weights_only=True`` onto the CPU."""
    path = Path(step_dir) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: training state file not found") from None
    except Exception as exc:
        raise InputError(f"{path}: not a loadable petctfm training state ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path}: not a petctfm training state (format tag missing)")
    return state


def keep_best(model: nn.Module, config: dict[str, Any], run_dir: str | Path, step: int, score: float,
              metric: str, extra: dict[str, Any] | None = None) -> bool:
    """Keep ``RUN/best/`` (model.safetensors + best.json ``{"step", "dice", "metric", **extra}``) when ``score`` (a
    validation Dice: higher is better) beats the kept one, or the kept one is from this step or later (a
    resumed run redoes its steps). Returns whether it was kept. The one owner of best checkpoints: fine-tuning
    and prompt-train call it, :func:`petctfm.inference.model.load_run_model` reads it."""
    import math

    from petctfm.io.atomic import atomic_write_json

    best_file = Path(run_dir) / BEST_DIR / BEST_FILE
    try:
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
    except (OSError, ValueError):
        best = None  # an unreadable best.json is replaced
    improved = math.isfinite(score) and (best is None or int(best["step"]) >= step or score > float(best["dice"]))
    if improved:
        save_weights(model, Path(run_dir) / BEST_DIR / MODEL_FILE, config, step=step)
        atomic_write_json(best_file, {"step": step, "dice": score, "metric": metric, **(extra or {})})
    return improved


__all__ = [
    "WEIGHTS_FORMAT", "build_from_config", "STATE_FORMAT", "MODEL_FILE", "EMA_FILE", "STATE_FILE", "LATEST", "read_checkpoint_config",
    "register_model_builder", "save_weights", "read_weights", "resolve_weights", "load_model",
    "capture_rng", "restore_rng", "preserved_rng", "step_dir_name", "list_checkpoints", "latest_checkpoint", "intact_checkpoint",
    "LoadedCheckpoint", "read_checkpoint", "read_intact_checkpoint",
    "write_checkpoint", "read_state", "BEST_DIR", "BEST_FILE", "keep_best",
]
