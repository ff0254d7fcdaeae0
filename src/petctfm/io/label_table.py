"""Organ name tables: ``{organ name: label value}`` of a label map, read from JSON (``--labels`` of
``petctfm finetune --task organs`` and ``petctfm evaluate --organs``; docs/organs.md)."""

from __future__ import annotations

from pathlib import Path

from petctfm.core.errors import InputError
from petctfm.io.bounded_json import load_bounded_file


def read_label_table(path: str | Path) -> dict[str, int]:
    """An organ name table ``{name: label value}`` from a JSON file (``--labels``): a flat object
    (``{"liver": 1, "spleen": 2}``) or an nnU-Net v2 ``dataset.json`` (its ``"labels"`` object, so a multi-label
    nnU-Net dataset's table works as is). Background (value 0, or the name ``background``) is dropped. One-line
    :class:`InputError` naming the file for anything else (nnU-Net region labels, a value outside 1..255, two
    names for one value, an empty table)."""
    doc = load_bounded_file(path)
    if isinstance(doc, dict) and isinstance(doc.get("labels"), dict):
        doc = doc["labels"]
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object {{organ name: label value}} (or an nnU-Net dataset.json)")
    out: dict[str, int] = {}
    for name, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{path}: label {name!r} has value {value!r}; expected one integer label value "
                             "(nnU-Net region labels are not supported)")
        if value == 0 or str(name).lower() == "background":
            continue
        if not 1 <= value <= 255:
            raise InputError(f"{path}: label {name!r} has value {value}; label values must be in 1..255")
        if value in out.values():
            raise InputError(f"{path}: label value {value} is named twice")
        out[str(name)] = value
    if not out:
        raise InputError(f"{path}: no organ label (only background)")
    return out


__all__ = ["read_label_table"]
