"""The study date (and time) of an input study: the one owner of "when was this study acquired".

``petctfm predict`` records it in ``summary.json`` (``input.study_date``, ``input.study_time``,
``input.study_date_source``); ``petctfm response`` reads it from there to refuse swapped baseline and follow-up
studies, and asks this module directly for a study folder it has not predicted yet.

Where the date comes from, in order:

- **DICOM**: a PT header's ``StudyDate`` (else ``AcquisitionDate``) and ``StudyTime`` (else
  ``AcquisitionTime``) (:func:`of_dicom`); a DICOM folder: the first of its files (sorted, at most
  :data:`DICOM_FILES_TRIED`) that has a date (:func:`of_path`).
- **autoPET-style NIfTI folders**: the study folder's sidecar :data:`~petctfm.io.layouts.autopet.STUDY_SIDECAR`
  (``study.json``, as ``petctfm synth --followup`` writes it): ``study_date`` (``YYYYMMDD`` or ``YYYY-MM-DD``) and
  ``study_time``, else the time of its ``acquisition_time`` (ISO date-time) (:func:`of_sidecar`). A PET file's
  study folder is the folder holding it.
- otherwise unknown (``None``): nothing is guessed from file names or modification times.

Nothing here raises for a missing or unreadable file: an unknown date is ``StudyDate()``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petctfm.io.layouts.autopet import STUDY_SIDECAR

DICOM_FILES_TRIED = 50  # a DICOM folder: the date of the first of these files that has one


@dataclass(frozen=True)
class StudyDate:
    """A study's date and time (each None when unknown) and where they were found (``""`` when unknown)."""

    date: dt.date | None = None
    time: dt.time | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json["input"]`` fields: ``study_date`` (ISO ``YYYY-MM-DD``), ``study_time``
        (``HH:MM:SS``), ``study_date_source``; each None when unknown."""
        return {"study_date": None if self.date is None else self.date.isoformat(),
                "study_time": None if self.time is None else self.time.replace(microsecond=0).isoformat(),
                "study_date_source": self.source or None}


def parse_date(value: Any) -> dt.date | None:
    """``YYYYMMDD`` (DICOM DA) or ``YYYY-MM-DD`` (a date-time's date part too) -> a date; None when empty or not
    a date."""
    text = str(value or "").strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text[:10] if "-" in text else text[:8], fmt).date()
        except ValueError:
            continue
    return None


def parse_time(value: Any) -> dt.time | None:
    """``HHMMSS[.ffffff]`` (DICOM TM; ``HHMM`` and ``HH`` too), ``HH:MM[:SS]`` or the time part of an ISO
    date-time -> a time; None when empty or not a time."""
    text = str(value or "").strip()
    if "T" in text:
        text = text.split("T", 1)[1]
    text = text.split("+")[0].split("Z")[0]
    digits = text.replace(":", "").split(".")[0]
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return None
    try:
        return dt.time(int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0))
    except ValueError:
        return None


def of_dicom(ds: Any) -> StudyDate:
    """The study date of one DICOM header: ``StudyDate`` else ``AcquisitionDate``, with ``StudyTime`` else
    ``AcquisitionTime`` (the time of the tag pair the date came from)."""
    for date_tag, time_tag in (("StudyDate", "StudyTime"), ("AcquisitionDate", "AcquisitionTime")):
        day = parse_date(getattr(ds, date_tag, ""))
        if day is not None:
            return StudyDate(day, parse_time(getattr(ds, time_tag, "")), f"DICOM {date_tag}")
    return StudyDate()


def of_sidecar(folder: str | os.PathLike) -> StudyDate:
    """The study date of an autoPET-style study folder from its ``study.json`` (module docstring)."""
    from petctfm.core.errors import InputError
    from petctfm.io.bounded_json import load_bounded_file

    p = Path(folder) / STUDY_SIDECAR
    if not p.is_file():
        return StudyDate()
    try:
        d = load_bounded_file(p)
    except InputError:
        return StudyDate()
    if not isinstance(d, dict):
        return StudyDate()
    day = parse_date(d.get("study_date"))
    if day is None:
        return StudyDate()
    acq = str(d.get("acquisition_time") or "")
    t = parse_time(d.get("study_time")) or (parse_time(acq) if parse_date(acq) == day else None)
    return StudyDate(day, t, str(p))


def _dicom_files(path: Path) -> list[Path]:
    from petctfm.io.walk import walk_files

    if path.is_file():
        return [path]
    return walk_files(path, max_files=DICOM_FILES_TRIED)


def of_dicom_path(path: str | os.PathLike) -> StudyDate:
    """The study date of a DICOM file or folder: the first file (sorted; at most :data:`DICOM_FILES_TRIED`)
    whose header has one; ``source`` names that file."""
    import pydicom

    for f in _dicom_files(Path(path)):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=[
                "StudyDate", "StudyTime", "AcquisitionDate", "AcquisitionTime"])
        except Exception:  # noqa: BLE001 - not DICOM (pydicom raises several kinds): try the next file
            continue
        found = of_dicom(ds)
        if found.date is not None:
            return StudyDate(found.date, found.time, f"{f} ({found.source})")
    return StudyDate()


def of_path(path: str | os.PathLike) -> StudyDate:
    """The study date of a study given by path: a folder with ``study.json`` (:func:`of_sidecar`); a PET image
    file (its folder's ``study.json``); else a DICOM file or folder (:func:`of_dicom_path`)."""
    from petctfm.io.images import is_image_file

    p = Path(path)
    if not p.exists():
        return StudyDate()
    folder = p if p.is_dir() else p.parent
    found = of_sidecar(folder)
    if found.date is not None or (p.is_file() and is_image_file(p)):
        return found
    return of_dicom_path(p)


__all__ = ["StudyDate", "DICOM_FILES_TRIED", "parse_date", "parse_time", "of_dicom", "of_sidecar",
           "of_dicom_path", "of_path"]
