"""The same study twice in the inputs: found by content, one copy kept, the others listed in ``duplicates.csv``.

A study copied under a renamed folder, given through two ``--in`` folders, or exported twice would otherwise
be two "patients": one copy could land in the training split and the other in the test split. Identity of a
case (:func:`content_key`):

* DICOM: the SeriesInstanceUID of the PT series discovery picked (UIDs are globally unique; copies keep them);
* NIfTI/MHA/NRRD: the BLAKE2b hash of the PET file's bytes (``SUV``/``PET`` file). Cheap enough (one
  sequential read; BLAKE2b ran at 0.30-0.37 GB/s on the shared 2-core VM: ~0.2 s for a 70 MB SUV.nii.gz)
  and cached in ``OUT/.work/content_keys.json`` by (real path, size, mtime), so a
  re-run reads only new or changed files.
* decoded content (:func:`voxel_key`): the hash of the PET voxel array (in SUV, as read) and its geometry
  (size, spacing, origin, direction), computed by :func:`petctfm.harmonize.pipeline.process_case` from the
  image it has just read (no second read) and stored in ``meta.json`` as ``pet_voxel_key``. It catches a
  re-compressed or re-saved copy (other gzip header or NIfTI extension, same voxels) and a DICOM study
  re-exported with new UIDs. Because it is known only after reading, such a copy is harmonized once more and
  then left out at finalize (:func:`decoded_duplicates`): listed in ``duplicates.csv`` (evidence "same
  decoded PET voxels and geometry"), out of the manifest, the splits and the statistics.

* a NIfTI that ``harmonize --nifti`` exported (its header says ``petctfm export <case_id>``,
  :func:`petctfm.harmonize.export.export_marker`) is the study ``<case_id>``: left out when that case is among
  the inputs or already harmonized (evidence "a petctfm export of <case_id>").

Which copy is kept (:func:`drop_duplicates`): a copy already harmonized in an earlier run, else the one of
the first ``--in`` folder, else the first by source path. The others are not harmonized; each is a row of
``OUT/duplicates.csv`` (``case_id, source, source_path, duplicate_of, duplicate_of_path, evidence``) and a
warning line. They are not failures (the exit code does not change): every study is in the dataset once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from petctfm.harmonize.discover import SourceCase
from petctfm.harmonize.export import export_marker
from petctfm.io.atomic import atomic_write_json, atomic_write_text
from petctfm.io.tables import csv_text
from petctfm.io.walk import printable

log = logging.getLogger(__name__)

DUPLICATES_CSV = "duplicates.csv"
DUPLICATE_COLUMNS = ["case_id", "source", "source_path", "duplicate_of", "duplicate_of_path", "evidence"]
CACHE_FILE = "content_keys.json"
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b-128 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pet_file(case: SourceCase) -> Path | None:
    rel = case.files.get("suv") or case.files.get("pet")
    return (Path(case.root) / rel) if isinstance(rel, str) else None


def content_key(case: SourceCase, cache: dict[str, Any] | None = None) -> str:
    """Identity of a case's image data (module doc); ``""`` when unknown (no PET file, unreadable)."""
    if case.content_key:
        return case.content_key
    path = _pet_file(case)
    if path is None:
        return ""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return ""
    stamp = [st.st_size, st.st_mtime_ns]
    entry = (cache or {}).get(printable(real))
    if entry and entry[:2] == stamp:
        return entry[2]
    try:
        key = f"PET file blake2b {file_digest(real)}"
    except OSError:
        return ""
    if cache is not None:
        cache[printable(real)] = [*stamp, key]
    return key


def voxel_key(image: Any) -> str:
    """Identity of a decoded PET (a SimpleITK image): BLAKE2b-128 of its voxel bytes, pixel type, size, spacing,
    origin and direction (geometry rounded to 1e-4 mm, so a re-save's float noise does not matter)."""
    import SimpleITK as sitk

    h = hashlib.blake2b(digest_size=16)
    geometry = [image.GetPixelIDTypeAsString(), list(image.GetSize()),
                *([round(float(v), 4) + 0.0 for v in vals] for vals in (image.GetSpacing(), image.GetOrigin(),
                                                                        image.GetDirection()))]
    h.update(json.dumps(geometry).encode())
    h.update(memoryview(sitk.GetArrayViewFromImage(image)).cast("B"))
    return f"decoded PET voxels and geometry blake2b {h.hexdigest()}"


def decoded_duplicates(metas: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows for ``duplicates.csv`` of written cases whose ``pet_voxel_key`` (meta.json) repeats an earlier
    one's; the copy kept is the first by (source folder, source path, case id). Cases without a key (written
    before the key existed) are never matched."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in metas:
        if m.get("pet_voxel_key"):
            groups.setdefault(m["pet_voxel_key"], []).append(m)
    rows = []
    for key, group in groups.items():
        group.sort(key=lambda m: (str(m.get("source")), str(m.get("source_path")), m["case_id"]))
        keep = group[0]
        for m in group[1:]:
            rows.append({"case_id": m["case_id"], "source": m.get("source"), "source_path": m.get("source_path"),
                         "duplicate_of": keep["case_id"],
                         "duplicate_of_path": f"{keep.get('source')}/{keep.get('source_path')}",
                         "evidence": f"same {key.rsplit(' ', 1)[0]}"})
            log.warning("duplicate: %s/%s is the same study as %s (%s); left out of the manifest and splits, "
                        "listed in %s", m.get("source"), m.get("source_path"), rows[-1]["duplicate_of_path"],
                        rows[-1]["evidence"], DUPLICATES_CSV)
    return sorted(rows, key=lambda r: r["case_id"])


def drop_duplicates(cases: list[SourceCase], inputs: list[str], is_done: Callable[[SourceCase], bool],
                    cache_path: str | os.PathLike | None = None) -> tuple[list[SourceCase], list[dict[str, str]]]:
    """``(kept cases, duplicate rows)``: one case per content key (module doc for which one), in input order."""
    cache: dict[str, Any] = {}
    if cache_path is not None and Path(cache_path).is_file():
        try:
            cache = json.loads(Path(cache_path).read_text())
        except (OSError, ValueError):
            cache = {}
    order = {str(Path(p).resolve()): i for i, p in enumerate(inputs)}
    groups: dict[str, list[SourceCase]] = {}
    keys = {}
    for c in cases:
        if c.error:
            continue
        keys[c.case_id] = k = content_key(c, cache)
        if k:
            groups.setdefault(k, []).append(c)
    dropped: dict[str, dict[str, str]] = {}
    by_id = {c.case_id: c for c in cases}
    for c in cases:  # harmonize's own NIfTI exports, fed back: the study they were made from
        pet = None if c.error else _pet_file(c)
        source_id = export_marker(pet) if pet is not None else None
        if source_id and source_id != c.case_id and (source_id in by_id
                                                     or is_done(dataclasses.replace(c, case_id=source_id))):
            keep = by_id.get(source_id)
            dropped[c.case_id] = {"case_id": c.case_id, "source": printable(Path(c.root).name),
                                  "source_path": printable(c.rel), "duplicate_of": source_id,
                                  "duplicate_of_path": "" if keep is None else
                                  f"{printable(Path(keep.root).name)}/{printable(keep.rel)}",
                                  "evidence": f"a petctfm export of {source_id}"}
            log.warning("duplicate: %s/%s is a petctfm export of %s; not harmonized again, listed in %s",
                        printable(Path(c.root).name), printable(c.rel), source_id, DUPLICATES_CSV)
    for key, group in groups.items():
        group = [c for c in group if c.case_id not in dropped]
        if len(group) < 2:
            continue
        group.sort(key=lambda c: (not is_done(c), order.get(c.root, len(order)), c.rel, c.case_id))
        keep = group[0]
        for c in group[1:]:
            dropped[c.case_id] = {"case_id": c.case_id, "source": printable(Path(c.root).name),
                                  "source_path": printable(c.rel), "duplicate_of": keep.case_id,
                                  "duplicate_of_path": f"{printable(Path(keep.root).name)}/{printable(keep.rel)}",
                                  "evidence": f"same {key.rsplit(' ', 1)[0]}"}
            log.warning("duplicate: %s/%s is the same study as %s/%s (%s); not harmonized again, listed in %s",
                        printable(Path(c.root).name), printable(c.rel), printable(Path(keep.root).name),
                        printable(keep.rel), dropped[c.case_id]["evidence"], DUPLICATES_CSV)
    if cache_path is not None and cache:
        try:
            atomic_write_json(cache_path, cache)
        except OSError:
            pass  # only a cache
    return [c for c in cases if c.case_id not in dropped], sorted(dropped.values(), key=lambda r: r["case_id"])


def write_duplicates_csv(out: str | os.PathLike, rows: list[dict[str, str]]) -> Path:
    """``OUT/duplicates.csv`` (header only when there are none)."""
    return atomic_write_text(Path(out) / DUPLICATES_CSV, csv_text(rows, DUPLICATE_COLUMNS))


__all__ = ["DUPLICATES_CSV", "file_digest", "content_key", "voxel_key", "decoded_duplicates", "drop_duplicates",
           "write_duplicates_csv"]
