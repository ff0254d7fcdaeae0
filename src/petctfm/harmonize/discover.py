"""Find the PET/CT cases under one or more input folders, in any of the supported layouts.

Layouts (``--format auto`` tries them in this order):

* ``nnunet``: ``ROOT/dataset.json`` with ``channel_names`` (the channel named CT and the one named PET/SUV/PT
  are used, whatever their order), ``imagesTr/<id>_000k.nii.gz``, ``labelsTr/<id>.nii.gz``, ``imagesTs``; its
  ``labels`` table says which values are the lesion and which are organs (``SourceCase.value_roles``).
* ``dicom``: any file with the DICOM Part-10 preamble under ROOT; one case per StudyInstanceUID with a CT and
  a PT series (several studies of a patient are several cases of one patient).
* ``autopet``: folders holding ``SUV.nii.gz`` (or ``PET.nii.gz`` + metadata for SUV), ``CT.nii.gz`` and/or
  ``CTres.nii.gz``, ``SEG.nii.gz``, optional ``ORGANS.nii.gz``: ``ROOT/<case>/`` or ``ROOT/<patient>/<study>/``.
* ``pairs``: any other NIfTI/MHA/NRRD files; in each folder files are grouped by their name with the role word
  removed. Role from the name (case-insensitive, on word boundaries ``_ - .``): ``seg``/``label``/``mask``/
  ``lesion`` = lesion mask, ``organ`` = organ labels, ``pet``/``suv``/``pt`` = PET in SUV, ``ct``/``ctres`` = CT.
  E.g. ``p1_suv.nii.gz`` + ``p1_ct.mha`` + ``p1_seg.nrrd``, or ``case7/PET.nrrd`` + ``case7/CT.nrrd``.

Metadata come from ``metadata.csv`` in ROOT or its parent (or ``--metadata``, id column ``case_id`` or
``--metadata-id``; :mod:`petctfm.harmonize.metadata`), matched by case folder name / nnU-Net id / DICOM case
folder; only whitelisted fields are kept (no identifiers, no free text). The patient
grouping key (``patient_id`` column, DICOM PatientID, or the autoPET patient folder) is kept only as a salted
hash (``hp_<hash>``); case ids are salted hashes of the source path (``hc_<hash8>``).

Every layout walks its input with :func:`petctfm.io.walk.walk_files`: regular files only (a FIFO, socket or
device is skipped, never opened), symlinked folders outside the input followed once by real path, links back
into the input not followed, ``exclude`` folders (the output folder) and earlier petctfm datasets skipped.
File and folder names that are not UTF-8 are kept as they are on disk (``surrogateescape``); pseudonyms hash
their exact bytes. Each case records a ``content_key`` where discovery knows one (DICOM: the PT series UID),
used by :mod:`petctfm.harmonize.duplicates`.

The layout rules themselves (detection, autoPET file names, nnU-Net channels, role words) live in
:mod:`petctfm.io.layouts`, shared with ``petctfm view``; this module turns them into :class:`SourceCase` lists.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from petctfm.core.errors import InputError
from petctfm.harmonize.metadata import KEPT_FIELDS, SUV_FIELDS, load_metadata, meta_from_row as _meta_from_row
from petctfm.io.images import is_image_file
from petctfm.io.layouts.autopet import autopet_case_folders, autopet_files
from petctfm.io.layouts.detect import detect_format
from petctfm.io.layouts.names import role_of
from petctfm.io.layouts.nnunet import nnunet_case_files, nnunet_case_ids, nnunet_channels, nnunet_label_roles
from petctfm.io.walk import fs_bytes, printable, walk_files

log = logging.getLogger(__name__)
FORMATS = ("auto", "autopet", "nnunet", "dicom", "pairs")
__all__ = ["FORMATS", "KEPT_FIELDS", "SUV_FIELDS", "SourceCase", "discover", "load_metadata", "patient_key",
           "pseudonym", "parse_shard", "shard"]


@dataclass
class SourceCase:
    """One case found in an input folder (picklable: sent to worker processes)."""

    case_id: str  # pseudonym hc_<hash8>
    fmt: str
    root: str  # absolute input root
    rel: str  # source path relative to root (folder or file)
    files: dict[str, Any] = field(default_factory=dict)  # role -> relative path (dicom: series file lists)
    patient: str = ""  # hp_<hash>
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a problem found already at discovery (case is quarantined)
    content_key: str = ""  # identity of the image data when discovery knows it (DICOM: PT series UID)
    # nnU-Net: what each label value of labelsTr is ({value: ["lesion" and/or an organ name]}; [] = ignored),
    # from dataset.json's labels (io.layouts.nnunet.nnunet_label_roles); None: the label map is the lesion mask
    value_roles: dict[int, list[str]] | None = None


def _hash(salt: str, text: str, n: int) -> str:
    """Salted hash of ``text``'s exact bytes (file names that are not UTF-8 included: surrogateescape)."""
    return hashlib.sha256(fs_bytes(f"{salt}|{text}")).hexdigest()[:n]


def pseudonym(salt: str, root: Path, rel: str) -> str:
    return "hc_" + _hash(salt, f"{root.name}/{rel}", 8)


def patient_key(salt: str, text: str) -> str:
    return "hp_" + _hash(salt, "patient|" + text, 10)


# --------------------------------------------------------------------------------------------- autopet


def _discover_autopet(root: Path, salt: str, rows: dict, exclude: tuple = ()) -> list[SourceCase]:
    cases = []
    for folder in autopet_case_folders(root, exclude):
        rel = str(folder.relative_to(root))
        parts = Path(rel).parts
        row = rows.get(folder.name) or rows.get(parts[0]) or rows.get(rel.replace("/", "_"))
        files = {role: str(Path(rel) / name) for role, name in autopet_files(folder).items()}
        pid = (row or {}).get("patient_id") or parts[0]
        case = SourceCase(pseudonym(salt, root, rel), "autopet", str(root), rel, files, patient_key(salt, pid),
                          _meta_from_row(row))
        cases.append(case)
    return cases


# ---------------------------------------------------------------------------------------------- nnunet


def _discover_nnunet(root: Path, salt: str, rows: dict, exclude: tuple = (),
                     label_roles: dict[str, str] | None = None) -> list[SourceCase]:
    channels = nnunet_channels(root)
    value_roles = nnunet_label_roles(root, label_roles)  # an unknown label name stops here, before any case
    cases = []
    for images in ("imagesTr", "imagesTs"):
        for cid in nnunet_case_ids(root, images, channels.ending):
            files = nnunet_case_files(root, images, cid, channels)
            row = rows.get(cid)
            rel = f"{images}/{cid}"
            cases.append(SourceCase(pseudonym(salt, root, rel), "nnunet", str(root), rel, files,
                                    patient_key(salt, (row or {}).get("patient_id") or cid), _meta_from_row(row),
                                    value_roles=value_roles))
    return cases


# ----------------------------------------------------------------------------------------------- pairs

def _discover_pairs(root: Path, salt: str, rows: dict, exclude: tuple = ()) -> list[SourceCase]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(p for p in walk_files(root, exclude) if is_image_file(p)):
        role, key = role_of(path)
        if role is None:
            continue
        folder = str(path.parent.relative_to(root))
        group = groups.setdefault((folder, key), {})
        if role in group:
            group.setdefault("_dupes", []).append(str(path.relative_to(root)))
        else:
            group[role] = str(path.relative_to(root))
    cases = []
    for (folder, key), files in sorted(groups.items()):
        rel = str(Path(folder) / key) if key else folder
        row = rows.get(key) or rows.get(Path(folder).name)
        error = None
        if "_dupes" in files:
            error = f"ambiguous files for one role: {[printable(d) for d in files.pop('_dupes')[:2]]}"
        if not error and ("suv" not in files or "ct" not in files):
            error = f"missing modality: {'PET/SUV' if 'suv' not in files else 'CT'} (found {sorted(files)})"
        cases.append(SourceCase(pseudonym(salt, root, rel), "pairs", str(root), rel, files,
                                patient_key(salt, (row or {}).get("patient_id") or rel), _meta_from_row(row), error))
    return cases


# ----------------------------------------------------------------------------------------------- dicom


def _discover_dicom(root: Path, salt: str, rows: dict, exclude: tuple = ()) -> list[SourceCase]:
    from petctfm.io.dicom_read import pick_series, scan_tree

    studies, bad = scan_tree(root, exclude)
    cases = []
    for uid, study in sorted(studies.items(), key=lambda kv: (kv[1].folder, kv[0])):
        picked = pick_series(study)
        folder = study.folder
        top = Path(folder).parts[0] if folder and folder != "." else ""
        row = rows.get(Path(folder).name) or rows.get(top)
        rel = folder if folder else "."
        if sum(1 for s in studies.values() if s.folder == folder) > 1:
            rel = f"{folder}#{_hash(salt, uid, 6)}"  # several studies in one folder: disambiguate
        files = {mod: (s.files if s else None) for mod, s in picked.items()}
        error = None
        missing = [m for m in ("CT", "PT") if not picked[m]]
        if missing:
            error = f"missing modality: no {' / '.join(missing)} series in the study"
        broken = [b for b in bad if folder in ("", ".") or b[0].startswith(folder + "/")]
        if broken:
            error = f"{broken[0][0]}: {broken[0][1]}"
        pid = (row or {}).get("patient_id") or study.patient_id or uid
        if study.duplicate_files:
            log.warning("%s: %d DICOM file(s) repeat instances of the study in %s (a copy?); each instance is read "
                        "once, e.g. %s ignored", printable(root), len(study.duplicate_files), printable(rel),
                        printable(study.duplicate_files[0]))
        key = f"dicom PT series {picked['PT'].uid}" if picked["PT"] else ""
        cases.append(SourceCase(pseudonym(salt, root, rel), "dicom", str(root), rel, files,
                                patient_key(salt, pid), _meta_from_row(row), error, key))
    claimed = {c.rel.split("#")[0] for c in cases}
    for rel, reason in bad:  # corrupt files outside any study folder: one quarantined pseudo-case each
        if not any(rel.startswith(f + "/") for f in claimed if f not in ("", ".")):
            cases.append(SourceCase(pseudonym(salt, root, rel), "dicom", str(root), rel, {}, patient_key(salt, rel),
                                    {}, f"{printable(rel)}: {reason}"))
    return cases


def discover(inputs: list[str], fmt: str = "auto", salt: str = "", metadata: str | None = None, *,
             metadata_id: str | None = None, use_metadata: bool = True,
             exclude: Iterable[str | os.PathLike] = (), label_roles: dict[str, str] | None = None) -> list[SourceCase]:
    """All cases under ``inputs`` (sorted by case id; deterministic), in layout ``fmt``.

    ``metadata``/``metadata_id``: the metadata CSV and its id column (:func:`petctfm.harmonize.metadata.load_metadata`);
    ``use_metadata=False``: read none (``petctfm predict``). ``exclude``: folders not walked (the output folder).
    ``label_roles``: ``{label name: role}`` (``--label-roles``, :func:`petctfm.io.label_table.read_label_roles`)
    for an nnU-Net ``labels`` table (:func:`petctfm.io.layouts.nnunet.nnunet_label_roles`).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
    cases: list[SourceCase] = []
    skip = tuple(str(p) for p in exclude)
    for raw in inputs:
        root = Path(raw).resolve()
        if not root.is_dir():
            raise InputError(f"{raw}: input folder not found")
        kind = detect_format(root, skip) if fmt == "auto" else fmt
        rows = load_metadata(root, metadata, metadata_id) if use_metadata else {}
        if kind == "nnunet":
            found = _discover_nnunet(root, salt, rows, skip, label_roles)
        else:
            found = {"autopet": _discover_autopet, "dicom": _discover_dicom,
                     "pairs": _discover_pairs}[kind](root, salt, rows, skip)
        if not found:
            raise InputError(f"{raw}: no {kind} cases found")
        cases.extend(found)
    seen: dict[str, SourceCase] = {}
    for c in cases:
        if c.case_id in seen:
            raise InputError(f"{printable(c.root)}/{printable(c.rel)} and {printable(seen[c.case_id].root)}/"
                             f"{printable(seen[c.case_id].rel)}: same pseudonym "
                             "(two inputs with the same folder name and layout?)")
        seen[c.case_id] = c
    return sorted(cases, key=lambda c: c.case_id)


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; anything else is a UsageError about ``shard``."""
    from petctfm.core.checks import fail

    m = re.fullmatch(r"(\d+)/(\d+)", str(spec).strip())
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise fail("shard", spec, "must be i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def shard(cases: list[SourceCase], spec: str | None) -> list[SourceCase]:
    """The cases of shard ``"i/n"`` (0 <= i < n): every n-th case of the sorted list, starting at i."""
    if not spec:
        return cases
    i, n = parse_shard(spec)
    return [c for k, c in enumerate(cases) if k % n == i]
