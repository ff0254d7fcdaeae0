"""What ``petctfm predict`` reads: the input studies as :class:`~petctfm.harmonize.discover.SourceCase` objects.

- :func:`source_from_files`: ``--pet PET --ct CT`` (two image files or two DICOM series folders);
- :func:`sources_from_folder`: every case under ``--in FOLDER`` (harmonize's discovery: autoPET, nnU-Net, DICOM
  or paired files), named by its readable source path;
- :func:`sources_from_list`: the rows of a ``--batch LIST.csv`` (``pet``, ``ct``, optional ``case_id``); a bad
  row becomes a case carrying an ``error`` (listed in ``failed.csv``, the others run).

:func:`named_error` turns any failure of a case into a one-line :class:`InputError` naming the input.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from petctfm.core.errors import InputError, PetctfmError
from petctfm.harmonize.discover import SourceCase
from petctfm.io.walk import printable


def dicom_series(folder: str | os.PathLike, modality: str) -> list[str]:
    """Absolute paths of the largest ``modality`` series under ``folder`` (as harmonize picks it; regular
    files only, :func:`petctfm.io.walk.walk_files`)."""
    from petctfm.io.dicom_read import pick_series, scan_tree

    folder = Path(folder)
    studies, bad = scan_tree(folder)
    picked = [pick_series(s)[modality] for s in studies.values()]
    picked = [s for s in picked if s is not None]
    if not picked:
        why = f"; unreadable: {bad[0][0]} ({bad[0][1]})" if bad else ""
        raise InputError(f"{folder}: no {modality} DICOM series found{why}")
    series = max(picked, key=lambda s: (len(s.files), s.uid))
    return [str(folder.resolve() / f) for f in series.files]


def source_from_files(pet: str | os.PathLike, ct: str | os.PathLike) -> SourceCase:
    """The case of ``--pet PET --ct CT``: two image files (NIfTI/MHA/NRRD, PET in SUV) or two DICOM folders
    (PT series in Bq/ml, SUV from the tags; CT series). One folder holding both series may be given twice."""
    pet, ct = Path(pet), Path(ct)
    for role, p in (("PET", pet), ("CT", ct)):
        if not p.exists():
            raise InputError(f"{p}: {role} file or folder not found")
    if pet.is_dir() != ct.is_dir():
        raise InputError(f"{pet}, {ct}: give two image files or two DICOM series folders, not one of each")
    name = pet.name if pet.is_dir() else _strip_suffix(pet.name)
    if name.lower() in ("suv", "pet", "pt", "petct"):  # autoPET-style file names: the case is the folder
        name = pet.resolve().parent.name
    name = printable(name)  # a case label that prints (undecodable file-name bytes -> U+FFFD)
    if pet.is_dir():
        files = {"PT": dicom_series(pet, "PT"), "CT": dicom_series(ct, "CT")}
        return SourceCase(name, "dicom", "/", str(pet), files)
    return SourceCase(name, "pairs", "/", str(pet), {"suv": str(pet.resolve()), "ct": str(ct.resolve())})


def _strip_suffix(name: str) -> str:
    from petctfm.io.images import IMAGE_SUFFIXES

    for s in IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def sources_from_folder(folder: str | os.PathLike, fmt: str = "auto",
                        exclude: list[str | os.PathLike] | tuple = ()) -> list[SourceCase]:
    """Every case under ``folder`` (autoPET, nnU-Net, DICOM or paired-file layout; harmonize's discovery),
    each named by its readable source path (``case_id`` = output subfolder name, unique). No metadata CSV is
    read (prediction needs none); ``exclude``: folders not walked (the output folder, when inside)."""
    from petctfm.harmonize.discover import discover

    cases = discover([str(folder)], fmt, use_metadata=False, exclude=exclude)
    used: set[str] = set()
    out = []
    for c in cases:
        rel = c.rel.split("#")[0]
        if c.fmt == "nnunet":
            rel = Path(rel).name  # imagesTs/<id> -> <id>
        name = _safe_name(rel) or Path(c.root).name
        if name in used:
            name = f"{name}_{c.case_id}"
        used.add(name)
        out.append(replace(c, case_id=name))
    return out


def _safe_name(text: str) -> str:
    """A folder name from a source path: letters, digits, ``-_.``; anything else (``/``, undecodable bytes)
    becomes ``_``."""
    return "".join(ch if (ch.isalnum() and ch.isprintable()) or ch in "-_." else "_"
                   for ch in text.strip("./").replace("/", "_"))


def sources_from_list(path: str | os.PathLike) -> list[SourceCase]:
    """The cases of ``--batch LIST``: a CSV file with a header row and columns ``pet`` and ``ct`` (image files
    or DICOM series folders, as ``--pet``/``--ct``; relative paths are relative to the list's folder) and an
    optional ``case_id`` (output subfolder name; default the PET's name). A row whose files are missing or
    unusable becomes a case with an ``error``: it is listed in ``failed.csv`` and the other rows run."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: batch list not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read batch list ({exc})") from None
    if "pet" not in header or "ct" not in header:
        raise InputError(f"{path}: batch list needs a header row with columns pet and ct (and optionally case_id), "
                         f"found {header or 'none'}")
    out, used = [], set()
    for i, raw in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not row.get("pet") and not row.get("ct"):
            continue  # blank line
        pet, ct = path.parent / row.get("pet", ""), path.parent / row.get("ct", "")
        given = _safe_name(row.get("case_id", ""))
        try:
            if not row.get("pet") or not row.get("ct"):
                raise InputError(f"{path}:{i}: a pet and a ct path are both needed")
            case = source_from_files(pet, ct)
            case = replace(case, case_id=given or _safe_name(case.case_id) or f"row{i}")
        except InputError as exc:
            case = SourceCase(given or f"row{i}", "pairs", "/", str(pet), {}, error=str(exc))
        if case.case_id in used:
            raise InputError(f"{path}:{i}: case_id {case.case_id!r} is used twice (output folders must differ)")
        used.add(case.case_id)
        out.append(case)
    if not out:
        raise InputError(f"{path}: batch list has no cases")
    return out


def study_date_of(case: SourceCase, pt_datasets: list | None = None):
    """The study date of a case (:class:`petctfm.io.study_date.StudyDate`): DICOM from its first PT header
    (``pt_datasets``, in slice order, as read), else the ``study.json`` sidecar of the folder holding its PET
    file (autoPET-style study folders); unknown otherwise."""
    from petctfm.io import study_date as sd

    if pt_datasets:
        return sd.of_dicom(pt_datasets[0])
    pet = case.files.get("suv") or case.files.get("pet")
    if case.fmt == "dicom" or not isinstance(pet, str) or not pet:
        return sd.StudyDate()
    return sd.of_sidecar((Path(case.root) / pet).parent)


def case_label(case: SourceCase) -> str:
    """How error messages name the case: the PET file / DICOM folder / case folder."""
    if case.root == "/":
        return case.rel
    return str(Path(case.root) / case.rel.split("#")[0])


def named_error(exc: BaseException, case: SourceCase) -> InputError:
    """An InputError whose one-line message names the input (prefix added unless it names a path already)."""
    msg = " ".join(printable(exc).split()) or type(exc).__name__
    if not isinstance(exc, PetctfmError):
        msg = f"{type(exc).__name__}: {msg}"
    label = printable(case_label(case))
    if label not in msg and not (case.files and any(str(v) in msg for v in case.files.values() if isinstance(v, str))):
        msg = f"{label}: {msg}"
    return InputError(msg)


__all__ = ["dicom_series", "source_from_files", "sources_from_folder", "sources_from_list", "study_date_of", "case_label",
           "named_error"]
