"""Nested config dicts as plain data: deep merge, dotted overrides, presets, YAML / JSON files.

No argparse and no method knowledge: a method's presets are a dict ``{name: {"task": ..., "train": ...}}``
(:func:`pick_preset`), its config is :data:`DEFAULT_CONFIG` deep-merged with a preset (:func:`deep_merge`),
and any field is then set by a dotted key (:func:`set_key`, ``"mask.ratio"``). Overrides come either as
``"key=value"`` strings (the command line's ``--set``, value parsed as YAML: numbers, lists, booleans, none)
or as a mapping / pairs of keys and Python values (the Python API); :func:`parse_overrides` turns both into
``[(key, value)]``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from petctfm.core.errors import InputError

#: What the Python API accepts as overrides: ``{"mask.ratio": 0.75}``, ``["mask.ratio=0.75"]`` or
#: ``[("mask.ratio", 0.75)]`` (strings and pairs may be mixed; applied in order).
Overrides = Mapping[str, Any] | Iterable["str | tuple[str, Any]"] | None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``over`` merged in, recursively for dict values (``over`` wins)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def pick_preset(presets: Mapping[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """A deep copy of ``presets[name]``; one-line InputError naming the choices for an unknown name."""
    if name not in presets:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return copy.deepcopy(presets[name])


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``"key.sub=value"`` -> ``("key.sub", value)``, the value parsed as YAML."""
    if "=" not in assignment:
        raise InputError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise InputError(f"--set {key}: cannot parse value {raw!r} ({exc})") from None
    return key.strip(), value


def parse_overrides(overrides: Overrides) -> list[tuple[str, Any]]:
    """``[(dotted key, value)]`` from a mapping, ``"key=value"`` strings (YAML values) or pairs, in order."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [(str(k).strip(), v) for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise InputError(f"overrides must be a list of key=value strings or a mapping, got {overrides!r}")
    out = []
    for item in overrides:
        out.append(parse_assignment(item) if isinstance(item, str) else (str(item[0]).strip(), item[1]))
    return out


def set_key(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``key = "a.b"``; the key must exist (free keys under ``overrides``)."""
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise InputError(f"--set {key}: no config section {p!r}")
        node = node[p]
    if parts[-1] not in node and parts[-2:-1] != ["overrides"]:
        raise InputError(f"--set {key}: unknown config key (known here: {', '.join(node)})")
    node[parts[-1]] = value


def set_dotted(cfg: dict[str, Any], assignment: str) -> None:
    """Apply ``key.sub=value`` (value parsed as YAML: numbers, lists, booleans) to a nested config."""
    set_key(cfg, *parse_assignment(assignment))


def read_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.json`` or YAML file (``{}`` for an empty file); one-line InputError otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read config ({' '.join(str(exc).split())[:300]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file must hold a mapping, not {type(data).__name__}")
    return data


__all__ = ["Overrides", "deep_merge", "pick_preset", "parse_assignment", "parse_overrides", "set_key", "set_dotted",
           "read_config"]
