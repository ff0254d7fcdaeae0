"""Atomic writes: every file petctfm writes appears whole or not at all.

A file is written to a temporary name in the same folder and renamed over the target (``os.replace`` is
atomic on POSIX within one file system). A folder (a whole case) is written to ``<name>.tmp-<pid>`` and
renamed when complete, so a killed run never leaves a half-written case that a re-run would take as done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from petctfm.core.errors import OutputError

#: Pseudo file systems that no output may go to (``--out /proc/x``).
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


def _tmp_sibling(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.npy``), so writers that choose the
    format from the extension (SimpleITK, nibabel, numpy) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def json_safe(obj):
    """``obj`` with every NaN / infinite float replaced by None (JSON ``null``), recursively through dicts,
    lists and tuples: ``json.dumps`` would write ``NaN``, which strict JSON readers refuse."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` (a whole case appears at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_output_dir(path: str | os.PathLike, what: str = "--out", create: bool = True) -> Path:
    """Check, before any work, that ``path`` is (or can become) a writable folder; create it (``create``;
    else only its nearest existing folder is probed) and return it.

    One-line :class:`~petctfm.core.errors.OutputError` (exit 4) naming ``path`` and ``what`` (the option) when
    it is a file, lies under ``/proc``, ``/sys`` or ``/dev``, cannot be created, or is read-only / not
    writable (a probe file is created and removed: permission bits alone do not tell root or a read-only
    mount).
    """
    p = Path(path).expanduser()
    resolved = p.resolve()
    if any(resolved == Path(r) or Path(r) in resolved.parents for r in SPECIAL_ROOTS):
        raise OutputError(f"{path}: {what} lies under /{resolved.parts[1]}, a "
                          "pseudo file system; choose a folder on a disk")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{path}: {what} is a file, not a folder")
    probe_dir = p
    if not create:
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise OutputError(f"{path}: {what} cannot be created ({probe_dir} is a file)")
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".petctfm-write-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"{path}: {what} is not writable ({reason})") from None
    return p


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Check that ``path`` may be (re)written as a regular file: refuse an existing directory, device, FIFO or
    socket (also behind a symlink) and a path under ``/proc``/``/sys``/``/dev``; its folder must be writable
    (:func:`ensure_output_dir`). Returns the resolved path."""
    p = Path(path).expanduser()
    resolved = p.resolve()
    if any(resolved == Path(r) or Path(r) in resolved.parents for r in SPECIAL_ROOTS):
        raise OutputError(f"{path}: {what} lies under a pseudo file system ({resolved}); choose a regular file")
    if resolved.exists() and not resolved.is_file():
        kind = "a folder" if resolved.is_dir() else "a device, FIFO or socket"
        raise OutputError(f"{path}: {what} is {kind}, not a regular file; refusing to replace it")
    ensure_output_dir(resolved.parent, f"the folder of {what}", create=False)
    return resolved
