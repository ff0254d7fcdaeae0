"""Case filters on a harmonized dataset's ``manifest.csv`` (``prompt-train --train-filter``, ``experiment
interactive --test-filter``; docs/promptable.md, "Out-of-distribution protocol").

A filter is ``COLUMN=V[,V...]`` (the case's value is one of the values) or ``COLUMN!=V[,V...]`` (it is none of
them); several filters are AND-ed. Values are compared after stripping spaces, case-insensitively (``tracer=FDG``
matches ``fdg``); an empty cell matches no value (so ``site!=x`` keeps a case whose site is unknown).

Errors (docs/reliability.md):

- a filter that is not ``COLUMN=V`` / ``COLUMN!=V`` with a non-empty column and values: a
  :class:`~petctfm.core.errors.UsageError` naming the argument, before anything is read (exit 2);
- no ``manifest.csv``, a column the manifest does not have, a value that no case of the manifest has (a typo in
  ``site!=north_valey`` would otherwise silently exclude nothing), or filters that leave no case of the split:
  an :class:`~petctfm.core.errors.InputError` naming the file, the column and the value (exit 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from petctfm.core.errors import InputError, UsageError
from petctfm.data import format as fmt

SYNTAX = "must be COLUMN=V[,V] or COLUMN!=V[,V] (several filters are AND-ed)"


def _norm(value: object) -> str:
    return str(value if value is not None else "").strip().casefold()


@dataclass(frozen=True)
class CaseFilter:
    """One filter: ``column`` ``op`` (``"="`` or ``"!="``) one of ``values`` (as given)."""

    column: str
    op: str
    values: tuple[str, ...]

    def matches(self, row: dict) -> bool:
        """Whether a manifest row passes (an empty or missing cell equals no value)."""
        cell = _norm(row.get(self.column))
        hit = bool(cell) and cell in {_norm(v) for v in self.values}
        return hit if self.op == "=" else not hit

    def __str__(self) -> str:
        return f"{self.column}{self.op}{','.join(self.values)}"


def parse_filter(text: str, arg: str = "filter") -> CaseFilter:
    """``"tracer=fdg"`` / ``"site!=a,b"`` -> :class:`CaseFilter`; a malformed one is a UsageError about ``arg``."""
    s = str(text).strip()
    op = "!=" if "!=" in s else "="
    column, sep, rest = s.partition(op)
    values = tuple(v.strip() for v in rest.split(","))
    if not sep or not column.strip() or not all(values) or any(c in column for c in "=!") or "=" in rest:
        raise UsageError(f"{arg}={text!r}: {SYNTAX}", arg=arg)
    return CaseFilter(column.strip(), op, values)


def parse_filters(texts: str | Sequence[str] | None, arg: str = "filter") -> list[CaseFilter]:
    """Each of ``texts`` (one string or several; None: none) parsed by :func:`parse_filter`."""
    if texts is None:
        return []
    if isinstance(texts, (str, CaseFilter)):
        texts = [texts]
    return [t if isinstance(t, CaseFilter) else parse_filter(t, arg) for t in texts]


def describe(filters: Iterable[CaseFilter | str]) -> list[str]:
    """The filters as the text a user gives (what run configs and experiment reports record)."""
    return [str(f) for f in filters]


def read_manifest(root: str | os.PathLike, arg: str = "filter") -> tuple[Path, list[str], dict[str, dict]]:
    """(path, columns, rows by case id) of ``root/manifest.csv``; a missing or id-less file is an InputError."""
    from petctfm.io.tables import read_case_rows

    path = Path(root) / fmt.MANIFEST_CSV
    if not path.is_file():
        raise InputError(f"{path}: not found ({arg}: cases are selected by the manifest's columns; petctfm "
                         "harmonize writes it)", arg=arg)
    columns, rows = read_case_rows(path)
    return path, columns, rows


def check_against(filters: Sequence[CaseFilter], path: Path, columns: list[str], rows: dict[str, dict],
                  arg: str) -> None:
    """Every filter's column is a manifest column and each of its values occurs in it (InputError otherwise)."""
    for f in filters:
        if f.column not in columns:
            raise InputError(f"{path}: {arg}={str(f)!r}: no column {f.column!r} (has {', '.join(columns)})", arg=arg)
        present = {_norm(r.get(f.column)) for r in rows.values()} - {""}
        for v in f.values:
            if _norm(v) not in present:
                raise InputError(f"{path}: {arg}={str(f)!r}: no case has {f.column} {v!r} "
                                 f"({f.column} values: {', '.join(sorted(present)) or 'none'})", arg=arg)


def select_cases(root: str | os.PathLike, case_ids: Sequence[str], filters: Sequence[CaseFilter] | Sequence[str],
                 arg: str = "filter", what: str = "the cases") -> list[str]:
    """The ``case_ids`` (order kept) whose manifest rows pass every filter; no filter: ``case_ids`` unchanged
    (the manifest is not read). InputError: see the module docstring; a case id without a manifest row passes
    no filter. ``what``: the cases' name in the error (``"split 'test'"``)."""
    filters = parse_filters(list(filters), arg)
    if not filters:
        return list(case_ids)
    path, columns, rows = read_manifest(root, arg)
    check_against(filters, path, columns, rows, arg)
    kept = [c for c in case_ids if c in rows and all(f.matches(rows[c]) for f in filters)]
    if not kept:
        said = " and ".join(repr(str(f)) for f in filters)
        seen = {f.column: sorted({_norm(rows[c].get(f.column)) or "(empty)" for c in case_ids if c in rows})
                for f in filters}
        there = "; ".join(f"{k} values there: {', '.join(v) or 'none'}" for k, v in seen.items())
        raise InputError(f"{path}: {arg}={said}: leaves none of {what} ({len(case_ids)} cases; {there})", arg=arg)
    return kept


def partition(root: str | os.PathLike, case_ids: Sequence[str], filters: Sequence[CaseFilter] | Sequence[str],
              arg: str = "filter") -> tuple[list[str], list[str]]:
    """(the ``case_ids`` that pass every filter, those that fail one), order kept: the in- and out-of-distribution
    cohorts of a model trained with these filters. Only the columns are checked (InputError when the manifest
    lacks one); either list may be empty (the caller says what that means)."""
    filters = parse_filters(list(filters), arg)
    path, columns, rows = read_manifest(root, arg)
    for f in filters:
        if f.column not in columns:
            raise InputError(f"{path}: {arg}={str(f)!r}: no column {f.column!r} (has {', '.join(columns)})", arg=arg)
    ok = {c for c in case_ids if c in rows and all(f.matches(rows[c]) for f in filters)}
    return [c for c in case_ids if c in ok], [c for c in case_ids if c not in ok]


__all__ = ["SYNTAX", "CaseFilter", "parse_filter", "parse_filters", "describe", "read_manifest", "check_against",
           "select_cases", "partition"]
