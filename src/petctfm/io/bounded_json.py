"""Bounded JSON: parse JSON that a user or a browser sends, with caps on size, depth and number length.

Python's ``json`` recurses once per nesting level (50,000 nested lists raise ``RecursionError``), turns a
4,000-digit number into a 4,000-digit ``int`` (and an overlong one into a ``ValueError`` with no file name), and
reads a whole file of any size. Every JSON input petctfm takes from outside (``segment`` prompt files, the
``serve`` API) goes through :func:`loads_bounded` or :func:`load_bounded_file`, which refuse such input with one
:class:`~petctfm.core.errors.InputError` line *before* parsing (the depth and number checks scan the text
once, outside strings, in O(n)).

Limits (:data:`MAX_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NUMBER_CHARS`) are listed in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from petctfm.core.errors import InputError

#: Largest JSON document accepted (bytes). Prompt files and API bodies are small; 8 MiB leaves room for
#: thousands of points.
MAX_BYTES = 8 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 64
#: Longest number literal accepted (characters): float64 needs at most 24.
MAX_NUMBER_CHARS = 40

_NUMBER_CHARS = frozenset("0123456789+-.eE")


def check_json_text(text: str, *, what: str, max_depth: int = MAX_DEPTH,
                    max_number_chars: int = MAX_NUMBER_CHARS) -> None:
    """Refuse ``text`` (one :class:`InputError` naming ``what``) if it nests deeper than ``max_depth`` or has a
    number literal longer than ``max_number_chars``. Strings are skipped (escapes included)."""
    depth = 0
    in_string = False
    escaped = False
    run = 0
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch in _NUMBER_CHARS:
            run += 1
            if run > max_number_chars:
                raise InputError(f"{what}: a number longer than {max_number_chars} characters")
            continue
        run = 0
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise InputError(f"{what}: JSON nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def loads_bounded(data: str | bytes, *, what: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                  max_number_chars: int = MAX_NUMBER_CHARS) -> Any:
    """Parse ``data`` as JSON within the limits, or raise one :class:`InputError` line naming ``what``.

    ``NaN``/``Infinity`` literals and non-finite numbers (``1e999``) are refused too."""
    if len(data) > max_bytes:
        raise InputError(f"{what}: {len(data):,} bytes of JSON, more than the limit of {max_bytes:,}")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    check_json_text(data, what=what, max_depth=max_depth, max_number_chars=max_number_chars)
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{what}: not valid JSON: {msg}{where}") from None
    _check_finite(doc, what)
    return doc


def _check_finite(doc: Any, what: str) -> None:
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            raise InputError(f"{what}: a number out of range ({x})")
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def load_bounded_file(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                      max_number_chars: int = MAX_NUMBER_CHARS) -> Any:
    """Read a JSON file within the limits. Only a regular file is read (a FIFO would block forever, a folder is
    not a file); every problem is one :class:`InputError` naming the file."""
    from petctfm.io.images import check_readable_file

    p = Path(path)
    check_readable_file(p)  # the one owner of "exists, is a regular file, may be read"
    st = p.stat()
    if st.st_size > max_bytes:
        raise InputError(f"{p}: {st.st_size:,} bytes, more than the JSON limit of {max_bytes:,}")
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except PermissionError:
        raise InputError(f"{p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    return loads_bounded(data, what=str(p), max_bytes=max_bytes, max_depth=max_depth,
                         max_number_chars=max_number_chars)
