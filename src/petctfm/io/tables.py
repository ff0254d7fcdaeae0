"""CSV text for every table petctfm writes (manifests, QA, per-case metrics, lesion tables, results).

One cell encoding everywhere, so a CSV from any command reads back the same way: a missing value (``None``)
and a float NaN are empty cells; lists, tuples and dicts are JSON (sorted keys); numpy scalars are plain
numbers. Rows may hold more keys than ``columns`` (ignored) or fewer (empty cells).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence


def csv_cell(value: Any) -> Any:
    """The CSV form of one value (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text (header + one line per row, ``\\n`` line ends). ``columns`` default: the first row's keys;
    no rows and no columns give an empty string."""
    rows = list(rows)
    if columns is None:
        if not rows:
            return ""
        columns = list(rows[0])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: csv_cell(r.get(c)) for c in columns})
    return buf.getvalue()



def read_case_rows(path: str | Path, missing: str = "not found") -> tuple[list[str], dict[str, dict[str, str]]]:
    """``(columns, rows by case id)`` of a CSV with a ``case_id`` column (a dataset's ``manifest.csv``, a
    ``metadata.csv``); cells as text. One-line :class:`~petctfm.core.errors.InputError` naming the file when it
    is missing (``"<path>: <missing>"``) or has no ``case_id`` column."""
    from petctfm.core.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        if "case_id" not in columns:
            raise InputError(f"{path}: no 'case_id' column (has {', '.join(columns) or 'none'})")
        return columns, {row["case_id"]: row for row in reader}


__all__ = ["csv_cell", "csv_text", "read_case_rows"]
