"""Configs as typed dataclasses and as plain nested dicts: building, checking, dotted overrides, presets, files.

No argparse and no method knowledge. A method declares its config as dataclasses deriving from
:class:`TypedConfig` (a section per nested dataclass; free-form sub-dicts stay ``dict[str, Any]``), with the
allowed values next to each field (:func:`setting`: ``ge``/``gt``/``le``/``lt`` bounds, ``choices``) and
cross-field checks in a ``validate()`` per dataclass. Then:

- :meth:`TypedConfig.from_dict` builds one from a nested dict (a preset merged over the defaults, a saved
  ``config.yaml``, a checkpoint's metadata): every value type-checked and range-checked, unknown keys refused
  with the known ones listed, missing keys left at their defaults (configs of older runs keep loading);
- :meth:`TypedConfig.to_dict` gives the plain nested dict back, with exactly the keys of the dataclasses (what
  ``config.yaml`` and checkpoint metadata hold, and what model builders read);
- :func:`apply_overrides` sets dotted keys (``mask.ratio=0.75``): the one override parser of task and trainer
  configs. Overrides come either as ``"key=value"`` strings (the command line's ``--set``, value parsed as
  YAML: numbers, lists, booleans, none) or as a mapping / pairs of keys and Python values (the Python API);
  :func:`parse_overrides` turns both into ``[(key, value)]``.

Every wrong value is a :class:`ConfigError` (a :class:`~petctfm.core.errors.UsageError`, exit 2): one line
naming the key, the value and what is allowed (``mask.ratio=1.5: must be < 1``). Presets stay plain data:
``{name: {"task": ..., "train": ...}}`` (:func:`pick_preset`, :func:`deep_merge`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TypeVar, Union

import yaml

from petctfm.core.errors import InputError, UsageError

#: What the Python API accepts as overrides: ``{"mask.ratio": 0.75}``, ``["mask.ratio=0.75"]`` or
#: ``[("mask.ratio", 0.75)]`` (strings and pairs may be mixed; applied in order).
Overrides = Mapping[str, Any] | Iterable["str | tuple[str, Any]"] | None

C = TypeVar("C", bound="TypedConfig")


class ConfigError(UsageError):
    """A config value that is wrong in itself (exit 2): ``KEY=VALUE: what is allowed``, one line.

    ``key``: the dotted config key (``train.lr``) or, for an error about a named Python argument, that
    argument (``arg`` is then set, so the CLI words it as its flag: ``--max-steps -5: must be >= 1``).
    """

    def __init__(self, key: str, value: Any, allowed: str, arg: str | None = None):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={show(value)}: {allowed}", arg=arg)

    def about_argument(self, name: str, value: Any = dataclasses.MISSING) -> "ConfigError":
        """The same error said of the Python argument ``name`` (``patch=-8: ...``) instead of the config key;
        ``value``: the argument as given (a scalar patch side rather than the three sides it became)."""
        if value is dataclasses.MISSING or isinstance(value, (list, tuple, dict)):
            return ConfigError(name, self.value, self.allowed, arg=name)
        allowed = self.allowed[len("each value "):] if self.allowed.startswith("each value ") else self.allowed
        return ConfigError(name, value, allowed, arg=name)


def show(value: Any) -> str:
    """A value as the user would type it, short: strings quoted, booleans and None as YAML writes them
    (``true``, ``none``), the rest as Python prints it."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    text = repr(value) if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------------------------ fields


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: Sequence[Any] | None = None,
            finite: bool = True) -> Any:
    """A dataclass field with its allowed values: bounds (``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <) and
    ``choices``, checked for the value itself or, for a list / tuple, for each element. ``finite``: NaN and
    infinities are refused (floats). A list or dict default is copied per instance."""
    meta = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}.items() if v is not None}
    meta["finite"] = finite
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def range_text(meta: Mapping[str, Any]) -> str | None:
    """The bounds of a field's metadata as words: ``">= 1"``, ``"in [0, 1)"``, ``"> 0 and <= 5"``... (None: no
    bound). Shared by :func:`allowed_text` and the API's argument checks (:mod:`petctfm.core.checks`)."""
    parts = [f"{op} {meta[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in meta]
    if not parts:
        return None
    if len(parts) == 2 and {"ge", "gt"} & set(meta) and {"le", "lt"} & set(meta):
        lo = ("[" if "ge" in meta else "(") + f"{meta.get('ge', meta.get('gt')):g}"
        hi = f"{meta.get('le', meta.get('lt')):g}" + ("]" if "le" in meta else ")")
        return f"in {lo}, {hi}"
    return " and ".join(parts)


def allowed_text(meta: Mapping[str, Any], each: bool = False) -> str | None:
    """``"must be >= 1"``, ``"must be one of zero, learnable"``... from a field's metadata (None: no rule)."""
    if meta.get("choices") is not None:
        return f"must be one of {', '.join(str(c) for c in meta['choices'])}"
    words = range_text(meta)
    return None if words is None else ("each value " if each else "") + "must be " + words


def in_range(v: Any, meta: Mapping[str, Any]) -> bool:
    """Whether ``v`` meets a field's choices or bounds (non-numbers pass the bounds: their type is checked
    elsewhere)."""
    if meta.get("choices") is not None:
        return v in meta["choices"]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True
    return not (("ge" in meta and v < meta["ge"]) or ("gt" in meta and v <= meta["gt"])
                or ("le" in meta and v > meta["le"]) or ("lt" in meta and v >= meta["lt"]))


# ------------------------------------------------------------------------------------------------ types


def _type_name(t: Any) -> str:
    if t is type(None):
        return "none"
    if isinstance(t, type):
        if dataclasses.is_dataclass(t):
            return "a section (a mapping)"
        return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                "dict": "a mapping", "list": "a list"}.get(t.__name__, t.__name__)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} {_type_name(args[0]).replace('an ', '').replace('a ', '')}s"
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0]).replace('an ', '').replace('a ', '')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return str(t)


class _WrongType(Exception):
    pass


def _coerce(t: Any, v: Any) -> Any:
    """``v`` as type ``t`` (a str from the command line or YAML is parsed for numbers and booleans); raises
    _WrongType."""
    if t is Any:
        return copy.deepcopy(v)
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (Union, types.UnionType):
        if v is None or (isinstance(v, str) and v.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
            raise _WrongType
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v)
            except _WrongType:
                continue
        raise _WrongType
    if t is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return v.strip().lower() in ("true", "yes", "1")
        raise _WrongType
    if t is int:
        if isinstance(v, bool):
            raise _WrongType
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise _WrongType from None
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, int):
            return int(v)
        raise _WrongType
    if t is float:
        if isinstance(v, bool):
            raise _WrongType
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise _WrongType from None
        if isinstance(v, (int, float)):
            return float(v)
        raise _WrongType
    if t is str:
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):  # YAML reads a split named 2020 as a number
            return str(v)
        raise _WrongType
    if origin in (list, tuple) or t in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise _WrongType
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise _WrongType
            return tuple(_coerce(a, x) for a, x in zip(args, v))
        elem = args[0] if args else Any
        out = [_coerce(elem, x) for x in v]
        return tuple(out) if origin is tuple else out
    if origin is dict or t is dict:
        if not isinstance(v, Mapping):
            raise _WrongType
        return copy.deepcopy(dict(v))
    if isinstance(t, type) and isinstance(v, t):
        return v
    raise _WrongType


def check_value(key: str, t: Any, v: Any, meta: Mapping[str, Any]) -> Any:
    """``v`` coerced to type ``t`` and checked against the field's rules; :class:`ConfigError` naming ``key``."""
    try:
        out = _coerce(t, v)
    except _WrongType:
        raise ConfigError(key, v, f"must be {_type_name(t)}") from None
    values = out if isinstance(out, (list, tuple)) else [out]
    for x in values:
        if isinstance(x, float) and meta.get("finite", True) and not math.isfinite(x):
            raise ConfigError(key, _plain(out), "must be a finite number")
        if x is not None and not in_range(x, meta):
            each = isinstance(out, (list, tuple))
            raise ConfigError(key, _plain(out), allowed_text(meta, each=each) or "out of range")
    return out


# ------------------------------------------------------------------------------------------------ configs


class TypedConfig:
    """Base of config dataclasses: :meth:`from_dict`, :meth:`to_dict`, :meth:`set` (one dotted key),
    :meth:`check` (every field's rules, then each section's :meth:`validate`)."""

    @classmethod
    def hints(cls) -> dict[str, Any]:
        """Field name -> resolved type."""
        cache = cls.__dict__.get("_hints")
        if cache is None:
            cache = typing.get_type_hints(cls)
            cls._hints = cache  # type: ignore[attr-defined]
        return cache

    @classmethod
    def known(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def prepare(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Hook: adjust a raw dict before it is checked (e.g. a scalar patch size -> three sides)."""
        return d

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any] | None, prefix: str = "") -> C:
        """A config from a nested dict: missing keys keep their defaults, unknown keys and wrong values are a
        :class:`ConfigError` naming the dotted key (``prefix`` + name). Cross-field checks: :meth:`check`."""
        if isinstance(d, cls):
            return copy.deepcopy(d)
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError(prefix.rstrip(".") or "config", d, "must be a mapping")
        d = cls.prepare(dict(d))
        names = cls.known()
        unknown = [k for k in d if k not in names]
        if unknown:
            where = f" in {prefix.rstrip('.')}" if prefix else ""
            raise ConfigError(prefix + str(unknown[0]), d[unknown[0]],
                              f"unknown config key; known{where}: {', '.join(names)}")
        hints = cls.hints()
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in d:
                continue
            t = hints[f.name]
            if isinstance(t, type) and issubclass(t, TypedConfig):
                kwargs[f.name] = t.from_dict(d[f.name], prefix + f.name + ".")
            else:
                kwargs[f.name] = check_value(prefix + f.name, t, d[f.name], f.metadata)
        return cls(**kwargs)  # type: ignore[call-arg]

    def to_dict(self) -> dict[str, Any]:
        """The plain nested dict (tuples as lists), keys exactly the fields."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def set(self, key: str, value: Any, prefix: str = "") -> None:
        """Set the dotted ``key`` (relative to this config) to ``value``, type- and range-checked; under a
        free-form dict field (``model.overrides.use_checkpoint``) any sub-key may be set."""
        head, _, rest = key.partition(".")
        hints = self.hints()
        if head not in hints:
            where = f" in {prefix.rstrip('.')}" if prefix else ""
            raise ConfigError(prefix + key, value, f"unknown config key; known{where}: {', '.join(self.known())}")
        t = hints[head]
        current = getattr(self, head)
        if rest:
            if isinstance(current, TypedConfig):
                current.set(rest, value, prefix + head + ".")
                return
            if isinstance(current, dict):
                node = current
                parts = rest.split(".")
                for p in parts[:-1]:
                    if not isinstance(node.get(p), dict):
                        node[p] = {}
                    node = node[p]
                node[parts[-1]] = copy.deepcopy(value)
                return
            raise ConfigError(prefix + key, value, f"unknown config key; {prefix + head} has no sub-keys")
        if isinstance(t, type) and issubclass(t, TypedConfig):  # a whole section: merged over the current one
            if isinstance(value, Mapping):
                value = deep_merge(current.to_dict(), dict(value))
            setattr(self, head, t.from_dict(value, prefix + head + "."))
            return
        field = next(f for f in dataclasses.fields(self) if f.name == head)  # type: ignore[arg-type]
        value = type(self).prepare({head: value}).get(head, value)
        setattr(self, head, check_value(prefix + head, t, value, field.metadata))

    def check(self: C, prefix: str = "") -> C:
        """Every field's rules again (values set as attributes), each section's :meth:`validate`; returns self."""
        hints = self.hints()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, TypedConfig):
                v.check(prefix + f.name + ".")
            else:
                setattr(self, f.name, check_value(prefix + f.name, hints[f.name], v, f.metadata))
        self.validate(prefix)
        return self

    def validate(self, prefix: str = "") -> None:
        """Cross-field checks of this section (override; raise :class:`ConfigError`)."""


def _plain(v: Any) -> Any:
    if isinstance(v, TypedConfig):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def build_config(cls: type[C], d: Mapping[str, Any] | C | None) -> C:
    """``cls.from_dict(d).check()``: a typed, fully checked config from a dict (or a copy of a typed one)."""
    return cls.from_dict(d).check()


# ------------------------------------------------------------------------------------------------ dicts


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
    """A deep copy of ``presets[name]``; one-line UsageError naming the choices for an unknown name."""
    if name not in presets:
        raise ConfigError("preset", name, f"must be one of {', '.join(presets)}", arg="preset")
    return copy.deepcopy(presets[name])


# ------------------------------------------------------------------------------------------------ overrides


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``"key.sub=value"`` -> ``("key.sub", value)``, the value parsed as YAML."""
    if not isinstance(assignment, str) or "=" not in assignment:
        raise UsageError(f"an override must be key=value, got {show(assignment)}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise UsageError(f"an override must be key=value, got {show(assignment)}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(key, raw, "cannot parse the value (YAML: a number, true/false, none, a list [1, 2], "
                                    "a string)") from None
    return key, value


def parse_overrides(overrides: Overrides) -> list[tuple[str, Any]]:
    """``[(dotted key, value)]`` from a mapping, ``"key=value"`` strings (YAML values) or pairs, in order."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [(str(k).strip(), v) for k, v in overrides.items()]
    if isinstance(overrides, str):
        raise UsageError(f"overrides must be a list of key=value strings or a mapping, got {show(overrides)}")
    out = []
    for item in overrides:
        if isinstance(item, str):
            out.append(parse_assignment(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((str(item[0]).strip(), item[1]))
        else:
            raise UsageError(f"an override must be 'key=value' or a (key, value) pair, got {show(item)}")
    return out


def split_overrides(overrides: Overrides, prefix: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """``(mine, rest)``: the parsed overrides whose key starts with ``prefix`` (``"train."``; removed) and the
    others. Only the prefix decides."""
    mine, rest = [], []
    for key, value in parse_overrides(overrides):
        if key.startswith(prefix):
            mine.append((key[len(prefix):], value))
        else:
            rest.append((key, value))
    return mine, rest


def apply_overrides(cfg: C, overrides: Overrides, prefix: str = "") -> C:
    """A copy of the typed ``cfg`` with the dotted overrides applied in order (each type- and range-checked;
    keys named with ``prefix`` in errors); cross-field checks are :meth:`TypedConfig.check`'s."""
    out = copy.deepcopy(cfg)
    for key, value in parse_overrides(overrides):
        out.set(key, value, prefix)
    return out


def set_key(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``key = "a.b"`` in a plain nested dict; the key must exist (free keys
    under ``overrides``). Typed configs: :meth:`TypedConfig.set`."""
    parts = key.strip().split(".")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node.get(p), dict):
            raise ConfigError(key, value, f"unknown config key; no section {'.'.join(parts[:i + 1])}")
        node = node[p]
    if parts[-1] not in node and parts[-2:-1] != ["overrides"]:
        raise ConfigError(key, value, f"unknown config key; known here: {', '.join(node)}")
    node[parts[-1]] = value


def set_dotted(cfg: dict[str, Any], assignment: str) -> None:
    """Apply ``key.sub=value`` (value parsed as YAML: numbers, lists, booleans) to a nested dict config."""
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


__all__ = ["Overrides", "ConfigError", "show", "setting", "allowed_text", "check_value", "TypedConfig",
           "build_config", "deep_merge", "pick_preset", "parse_assignment", "parse_overrides", "split_overrides",
           "apply_overrides", "set_key", "set_dotted", "read_config"]
