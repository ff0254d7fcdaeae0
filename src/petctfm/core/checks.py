"""Argument checks of the Python API: a value out of range is a :class:`~petctfm.core.errors.UsageError` that names
the Python argument (``workers=0: must be an integer >= 1``); the CLI words it as the flag
(:func:`petctfm.core.errors.cli_wording`: ``--workers 0: must be an integer >= 1``) and exits 2.

Each check returns the value converted (``int`` / ``float`` / ``str``) so that callers can write
``workers = check_int("workers", workers, lo=1)``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from petctfm.core.config import ConfigError, in_range, range_text
from petctfm.core.errors import UsageError


def fail(arg: str, value: Any, allowed: str) -> UsageError:
    """The error ``arg=VALUE: <allowed>`` about argument ``arg`` (to raise): the typed configs' one-line
    :class:`~petctfm.core.config.ConfigError`, said of the Python argument."""
    return ConfigError(arg, value, allowed, arg=arg)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> dict[str, Any]:
    """Bounds as a config field's metadata (``ge`` / ``gt`` / ``le`` / ``lt``), so that the words and the test
    are the typed configs' (:func:`petctfm.core.config.range_text`, :func:`~petctfm.core.config.in_range`)."""
    meta: dict[str, Any] = {}
    if lo is not None:
        meta["gt" if lo_open else "ge"] = lo
    if hi is not None:
        meta["lt" if hi_open else "le"] = hi
    return meta


def check_int(arg: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (either bound optional); a bool, float with a fraction or text is refused."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and math.isfinite(value) and value == int(value):
        value, ok = int(value), True
    meta = _bounds(lo, hi)
    if not ok or not in_range(value, meta):
        raise fail(arg, value, " ".join(["must be an integer", range_text(meta) or ""]).rstrip())
    return int(value)


def check_float(arg: str, value: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> float:
    """``value`` as a finite float in the interval from ``lo`` to ``hi`` (open ends with ``lo_open`` /
    ``hi_open``; either bound optional)."""
    try:
        x = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        x = math.nan
    meta = _bounds(lo, hi, lo_open, hi_open)
    if not math.isfinite(x) or not in_range(x, meta):
        raise fail(arg, value, " ".join(["must be a finite number", range_text(meta) or ""]).rstrip())
    return x


def check_choice(arg: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise fail(arg, value, f"must be one of {', '.join(map(str, choices))}")
    return value


def check_choices(arg: str, values: Sequence[Any], choices: Iterable[Any]) -> list[Any]:
    """Every item of ``values`` one of ``choices`` (and at least one item)."""
    choices = list(choices)
    bad = [v for v in values if v not in choices]
    if bad or not values:
        shown = ", ".join(map(str, bad)) if bad else "(none)"
        raise UsageError(f"{arg}={shown}: must be among {', '.join(map(str, choices))}", arg=arg)
    return list(values)


def parse_list(arg: str, text: str | Sequence[Any], cast: Any = float, what: str = "number") -> list[Any]:
    """``"10,20,40"`` (or a list) -> ``[10.0, 20.0, 40.0]`` by ``cast``; a bad or missing item is a UsageError
    about ``arg`` (``seeds='0,abc': 'abc' is not an integer; expected a comma-separated list``)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for it in items:
        if isinstance(it, str) and not it.strip():
            continue
        try:
            out.append(cast(it.strip() if isinstance(it, str) else it))
        except (TypeError, ValueError):
            raise fail(arg, text if isinstance(text, str) else list(text),
                       f"{it!r} is not {what}; expected a comma-separated list") from None
    if not out:
        raise fail(arg, text, f"empty; expected a comma-separated list of {what}s")
    return out


__all__ = ["fail", "check_int", "check_float", "check_choice", "check_choices", "parse_list"]
