"""Is a stored prediction still the answer? Which input and which model a ``summary.json`` was made from.

``petctfm predict`` skips a case whose output folder holds ``summary.json`` (a re-run after a crash finishes
only the rest). The skip is taken only when the stored summary was made from the **same input** and the
**same model and settings**; otherwise the case is predicted again and a line says why
(:func:`stale_reason`). Recorded in ``summary.json``:

* ``input.fingerprint``: ``{"pet", "ct", "salt"}``: ``pet`` and ``ct`` are salted BLAKE2b hashes
  (:func:`salted`) of the input's identity: the BLAKE2b hash of the image file's bytes
  (:func:`petctfm.harmonize.duplicates.file_digest`) or, for DICOM, the PT SeriesInstanceUID (``--in``) or a
  hash of the series' file names and sizes (``--pet/--ct`` folders). A UID identifies a patient's study, so it
  is never stored as it is; ``salt`` is random per summary (the same study predicted into two folders gives
  two unlinkable fingerprints) and a re-run recomputes the hashes with the stored salt;
* ``model.weights_blake2b``: the hash of the checkpoint file;
* the settings that change the mask: threshold, TTA flips, overlap, spacing, ``--fast``.

A summary without these fields (an older petctfm) counts as stale: the case is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from petctfm.harmonize.discover import SourceCase
from petctfm.harmonize.duplicates import content_key, file_digest

SETTINGS = (("inference", "threshold"), ("inference", "tta_flips"), ("inference", "overlap"),
            ("preprocessing", "spacing_mm"), ("preprocessing", "fast"))


def _listing_digest(files: list[str]) -> str:
    """Hash of a DICOM series' file names and sizes (cheap; the slices are read anyway when predicting)."""
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(files):
        try:
            size = os.stat(f).st_size
        except OSError:
            size = -1
        h.update(os.fsencode(Path(f).name) + b"|" + str(size).encode() + b"\n")
    return f"DICOM files {h.hexdigest()}"


def _file_key(case: SourceCase, value: Any) -> str:
    if isinstance(value, list):
        root = Path(case.root)
        return _listing_digest([str(root / f) for f in value])
    if isinstance(value, str):
        try:
            return f"file blake2b {file_digest(Path(case.root) / value)}"
        except OSError:
            return ""
    return ""


def salted(salt: str, key: str) -> str:
    """``"blake2b-salted <hex>"`` of ``key`` with ``salt`` (``""`` for an unknown key)."""
    if not key:
        return ""
    h = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16, key=bytes.fromhex(salt)[:64])
    return f"blake2b-salted {h.hexdigest()}"


def input_fingerprint(case: SourceCase, salt: str | None = None) -> dict[str, str]:
    """``{"pet", "ct", "salt"}`` identities of a case's inputs, salted (module doc; ``salt``: hex, a new random
    one when None); ``""`` where unknown."""
    if not salt or not all(c in "0123456789abcdef" for c in str(salt)) or len(salt) % 2:
        salt = os.urandom(16).hex()
    pet = content_key(case) if case.fmt == "dicom" and case.content_key else ""
    if not pet:
        pet = _file_key(case, case.files.get("suv") or case.files.get("pet") or case.files.get("PT"))
    ct = _file_key(case, case.files.get("ct") or case.files.get("ctres") or case.files.get("CT"))
    return {"pet": salted(salt, pet), "ct": salted(salt, ct), "salt": salt}


def model_digest(path: str | os.PathLike) -> str:
    """BLAKE2b of the checkpoint file ``path`` (``""`` for a folder or an unreadable file)."""
    try:
        return file_digest(path) if Path(path).is_file() else ""
    except OSError:
        return ""


def _get(d: dict[str, Any], a: str, b: str) -> Any:
    return (d.get(a) or {}).get(b)


def stale_reason(summary_path: str | os.PathLike, case: SourceCase, settings: dict[str, Any]) -> str | None:
    """None when ``summary_path`` was made from this case's input and the model/settings ``settings``
    (:meth:`petctfm.predict.predictor.Predictor.describe`); else why not, in a few words."""
    try:
        stored = json.loads(Path(summary_path).read_text())
    except (OSError, ValueError):
        return "its summary.json is unreadable"
    if not isinstance(stored, dict):
        return "its summary.json is not a summary"
    fp = (stored.get("input") or {}).get("fingerprint")
    if not fp or not isinstance(fp, dict) or not isinstance(fp.get("salt"), str):
        return "its summary.json does not record which input it was made from"
    now = input_fingerprint(case, fp["salt"])
    if fp != now:
        return "it was made from another input (PET/CT files differ)"
    if _get(stored, "model", "weights_blake2b") != _get(settings, "model", "weights_blake2b"):
        return "it was made by another model (weights differ)"
    if _get(stored, "organs_model", "weights_blake2b") != _get(settings, "organs_model", "weights_blake2b"):
        return "it was made with another organ model (--organs; weights differ or one is absent)"
    for a, b in SETTINGS:
        if _get(stored, a, b) != _get(settings, a, b):
            return f"it was made with {a}.{b} = {_get(stored, a, b)} (now {_get(settings, a, b)})"
    return None


__all__ = ["salted", "input_fingerprint", "model_digest", "stale_reason"]
