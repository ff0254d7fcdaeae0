"""The optional metadata CSV of a harmonize input: which file, which id column, which values are kept.

Where from: ``--metadata FILE``, else ``metadata.csv`` in the input folder, else in its parent. Rows are
matched to cases by an id column: ``case_id`` (petctfm's own files), or the column named by
``--metadata-id COLUMN`` (e.g. ``"Subject ID"`` of TCIA's autoPET clinical table).

What is refused and what is flagged (docs/reliability.md):

* a file that cannot be read or parsed as CSV -> :class:`InputError` naming it;
* ``--metadata-id COLUMN`` that the file lacks -> :class:`InputError` naming the file and its columns;
* a file **without** the id column (a foreign table, e.g. TCIA's, found in the parent folder) -> a warning
  naming the file and its columns, and the metadata is not used (harmonize goes on; map it with
  ``--metadata-id``);
* the same id on two rows -> :class:`InputError` naming the file, the id and both row numbers (no silent
  "last row wins");
* a numeric value that is not a finite number in its range (age ``-5``, ``inf``, ``abc``; weight ``0``) ->
  dropped (the field becomes unknown) with one warning per field naming the file and rows. Dropping, not
  refusing: metadata is optional, one typo should not stop a collection, and an unknown age is honest.
  Ranges: age [0, 130] years (DICOM age strings such as ``057Y`` are read), weight, height, injected
  activity, uptake time, half-life > 0. Plausibility of body weight for SUV is checked later, per case.

Only whitelisted fields are kept (:data:`KEPT_FIELDS`, :data:`SUV_FIELDS`): no identifiers, no free text.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path
from typing import Any

from petctfm.core.errors import InputError
from petctfm.io.walk import printable

log = logging.getLogger(__name__)

# ``tracer`` is the family (fdg, psma: what QA's liver ranges and the splits use); ``radiopharmaceutical`` keeps
# the name the header / table writes (isotope included: 18F- vs 68Ga-PSMA), for FratMAE's metadata text.
KEPT_FIELDS = ("site", "tracer", "diagnosis", "stage", "age", "sex", "weight_kg", "height_cm", "radiopharmaceutical")
SUV_FIELDS = ("injected_activity_bq", "uptake_min", "half_life_s")  # used to compute SUV from PET.nii.gz, not written out
DEFAULT_ID = "case_id"
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 130.0), "weight_kg": (1e-6, math.inf), "height_cm": (1e-6, math.inf),
    "injected_activity_bq": (1e-6, math.inf), "uptake_min": (1e-6, math.inf), "half_life_s": (1e-6, math.inf),
}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YyMmWwDd]?)\s*$")  # 57, 57.5, 057Y, 6M
_AGE_UNIT = {"": 1.0, "y": 1.0, "m": 12.0, "w": 52.18, "d": 365.25}


def number(field_name: str, value: Any) -> float | None:
    """A numeric metadata value as a float in its range (:data:`NUMERIC_RANGES`), else None."""
    text = str(value).strip()
    if field_name == "age" and (m := _AGE.match(text)):
        v = float(m.group(1)) / _AGE_UNIT[m.group(2).lower()]
    else:
        try:
            v = float(text)
        except ValueError:
            return None
    lo, hi = NUMERIC_RANGES[field_name]
    return v if math.isfinite(v) and lo <= v <= hi else None


def clean(field_name: str, value: Any) -> Any:
    """Whitelisted metadata only: numbers as floats in range (None otherwise), categories as short tokens."""
    if value is None or str(value).strip() == "":
        return None
    if field_name in NUMERIC_RANGES:
        return number(field_name, value)
    token = re.sub(r"[^a-z0-9_\- ]", "", str(value).strip().lower())[:32]
    if field_name == "sex":
        return {"m": "M", "male": "M", "f": "F", "female": "F"}.get(token, None)
    return token or None


def meta_from_row(row: dict[str, Any] | None) -> dict[str, Any]:
    """The kept fields of one metadata row (None/absent values left out)."""
    row = row or {}
    kept = {k: clean(k, row.get(k)) for k in KEPT_FIELDS + SUV_FIELDS}
    return {k: v for k, v in kept.items() if v is not None}


def _check_values(path: Path, rows: list[dict[str, Any]]) -> None:
    """Warn once per numeric field about values that will be dropped (rows numbered as in the file)."""
    for name in NUMERIC_RANGES:
        bad = [(i, r[name]) for i, r in enumerate(rows, start=2)
               if r.get(name) not in (None, "") and str(r[name]).strip() and number(name, r[name]) is None]
        if bad:
            shown = ", ".join(f"row {i}: {printable(v)!r}" for i, v in bad[:5])
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            lo, hi = NUMERIC_RANGES[name]
            log.warning("%s: column %s: %s%s not a number in [%g, %g]; dropped (unknown for those cases)",
                        printable(path), name, shown, more, lo, hi)


def read_metadata_csv(path: Path, id_column: str | None = None) -> dict[str, dict[str, Any]]:
    """Rows of the metadata CSV ``path`` by id (module doc for what is refused, warned about and dropped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or []) if c is not None]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{printable(path)}: cannot read metadata CSV ({exc})") from None
    rows = [{(k or "").strip(): v for k, v in r.items()} for r in rows]
    key = id_column or DEFAULT_ID
    if key not in columns:
        if id_column:
            raise InputError(f"{printable(path)}: --metadata-id {id_column!r} is not a column of this CSV "
                             f"(columns: {', '.join(columns) or 'none'})")
        log.warning("%s: metadata CSV has no '%s' column (columns: %s); metadata not used. Name the id column "
                    "with --metadata-id COLUMN", printable(path), DEFAULT_ID, ", ".join(columns[:12]) or "none")
        return {}
    by_id: dict[str, dict[str, Any]] = {}
    first_row: dict[str, int] = {}
    for i, r in enumerate(rows, start=2):
        cid = str(r.get(key) or "").strip()
        if not cid:
            continue
        if cid in by_id:
            raise InputError(f"{printable(path)}: {key} {printable(cid)!r} appears on rows {first_row[cid]} and {i}; "
                             "one row per case (or name a unique column with --metadata-id)")
        by_id[cid], first_row[cid] = r, i
    _check_values(path, rows)
    return by_id


def load_metadata(root: Path, extra: str | None = None, id_column: str | None = None) -> dict[str, dict[str, Any]]:
    """Rows of the metadata CSV for input ``root`` by id: ``extra`` (``--metadata``), else ``ROOT/metadata.csv``,
    else ``ROOT/../metadata.csv``; {} if none (or if it has no id column: a warning)."""
    if extra and not Path(extra).is_file():
        raise InputError(f"{extra}: metadata CSV not found")
    candidates = [Path(extra)] if extra else [root / "metadata.csv", root.parent / "metadata.csv"]
    for path in candidates:
        if path.is_file():
            return read_metadata_csv(path, id_column)
    return {}


__all__ = ["KEPT_FIELDS", "SUV_FIELDS", "clean", "meta_from_row", "read_metadata_csv", "load_metadata"]
