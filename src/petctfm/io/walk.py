"""Walking input trees safely: regular files only, every folder once, links followed by real path, odd names kept.

:func:`walk_files` is what every layout's discovery (:mod:`petctfm.io.layouts`, :mod:`petctfm.io.dicom_read`,
``petctfm harmonize`` / ``petctfm predict --in``) walks an input folder with. The rules:

* **Regular files only.** A named pipe (FIFO), socket or device node is skipped with a logged note, never
  opened (opening a FIFO for reading blocks until a writer appears: the input tree would hang the run).
  A dangling symlink is skipped with a note too.
* **Symlinked folders.** A link to a folder *outside* the input tree is followed (linked archives are a
  normal way to assemble a collection), once per real path: two links to the same archive, or a link loop,
  give every file once. A link that points *inside* the tree (``ln -s . self``, ``ln -s ../other``) is not
  followed: its target is walked at its real place already, and following it would list each case twice
  (one copy could land in the training split, one in the test split).
* **Excluded folders**: ``exclude`` (e.g. the output folder when it lies inside the input) and every
  petctfm dataset (a folder holding ``dataset.json`` and ``cases/``: harmonize's own output) are skipped with
  a note, so a re-run never ingests what an earlier run wrote. When the output *is* the input, or holds it
  (``harmonize --in X --out X``), the output's own folders (:data:`OUTPUT_FOLDERS`: ``cases``, ``nifti``,
  ``qa``, ``.work``) are skipped, wherever the walk meets them.
* **Names that are not UTF-8** stay usable: Python decodes them with ``surrogateescape`` (``os.fsdecode``),
  :func:`fs_bytes` gives back the exact bytes (for hashing), :func:`printable` a text safe to print or write
  into CSV/JSON (undecodable bytes become U+FFFD).

The walk is sorted (deterministic). Paths are returned as reached from ``root`` (through the link), so they
stay relative to ``root``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

DATASET_MARKERS = ("dataset.json", "cases")  # a petctfm harmonized dataset folder holds both
#: The folders petctfm writes into an output folder (harmonize: ``cases/``, the ``--nifti`` export, QA, the
#: work folder): never read as input, also when the output folder is (or holds) the input.
OUTPUT_FOLDERS = ("cases", "nifti", "qa", ".work")


def fs_bytes(text: str) -> bytes:
    """The bytes of a (file-system) string, undecodable bytes restored exactly (``surrogateescape``)."""
    return text.encode("utf-8", "surrogateescape")


def printable(text: object) -> str:
    """``text`` safe to print / write as UTF-8: undecodable file-name bytes become U+FFFD."""
    return fs_bytes(str(text)).decode("utf-8", "replace")


def is_utf8_name(path: str | os.PathLike) -> bool:
    """True when ``path`` decodes as UTF-8 (libraries taking C strings, e.g. SimpleITK, can open it)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_petctfm_dataset(folder: Path) -> bool:
    """A harmonized petctfm dataset (``dataset.json`` + ``cases/``), i.e. an earlier output."""
    return (folder / DATASET_MARKERS[0]).is_file() and (folder / DATASET_MARKERS[1]).is_dir()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def file_kind(path: str | os.PathLike) -> str:
    """What ``path`` is, in words ("named pipe", "folder", "dangling symlink", "regular file"...); never opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "dangling symlink" if os.path.islink(path) else "missing path"
    if stat.S_ISREG(mode):
        return "regular file"
    return "folder" if stat.S_ISDIR(mode) else _kind(mode)


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file (through symlinks); False for folders, FIFOs, sockets, devices, dangling links.
    Never opens the file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def walk_files(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = (), max_files: int | None = None,
               skip_datasets: bool = True) -> list[Path]:
    """Regular files under ``root``, sorted, by the rules of the module doc (``max_files``: stop after that
    many, for quick layout sniffing)."""
    root = Path(root)
    root_real = os.path.realpath(root)
    excluded = {os.path.realpath(p) for p in exclude}
    owned = {os.path.join(e, name) for e in excluded for name in OUTPUT_FOLDERS}  # the outputs' own folders
    if any(root_real == o or root_real.startswith(o + os.sep) for o in owned):
        log.info("skipping %s: inside an output folder of this run", printable(root))
        return []
    seen: set[str] = set()
    out: list[Path] = []
    stack = [(root, root_real)]
    while stack:
        folder, real = stack.pop()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("skipping folder %s: %s", printable(folder), exc.strerror or exc)
            continue
        subdirs = []
        for e in entries:
            path = Path(e.path)
            try:
                is_link = e.is_symlink()
                st = os.stat(e.path)  # follows links
            except OSError:
                log.warning("skipping %s: dangling symlink or unreadable entry", printable(path))
                continue
            if stat.S_ISDIR(st.st_mode):
                target = os.path.realpath(e.path)
                if target in excluded or target in owned:
                    log.info("skipping %s: the output folder", printable(path))
                elif is_link and (target == root_real or target.startswith(root_real + os.sep)):
                    log.info("not following %s: links back into the input folder (walked at %s)", printable(path),
                             printable(target))
                elif skip_datasets and is_petctfm_dataset(path):
                    log.info("skipping %s: a petctfm dataset (an earlier harmonize output), not input", printable(path))
                elif target not in seen:
                    subdirs.append((path, target))
            elif stat.S_ISREG(st.st_mode):
                out.append(path)
                if max_files is not None and len(out) >= max_files:
                    return out
            else:
                log.warning("skipping %s: a %s, not a regular file", printable(path), _kind(st.st_mode))
        stack.extend(reversed(subdirs))  # depth first, in sorted order
    return out


__all__ = ["OUTPUT_FOLDERS", "walk_files", "is_regular_file", "is_petctfm_dataset", "fs_bytes", "printable", "is_utf8_name"]
