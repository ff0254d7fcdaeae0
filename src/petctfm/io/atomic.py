"""Atomic writes: every file petctfm writes appears whole or not at all.

A file is written to a temporary name in the same folder and renamed over the target (``os.replace`` is
atomic on POSIX within one file system). A folder (a whole case) is written to ``<name>.tmp-<pid>`` and
renamed when complete, so a killed run never leaves a half-written case that a re-run would take as done.

A full disk, a quota or a read-only file system is the output's fault, not the input's: :func:`output_failure`
is the one place that recognizes it (an ``OSError`` with ``ENOSPC`` / ``EDQUOT`` / ``EROFS``; a library error
that says so, e.g. safetensors' ``SafetensorError ... No space left on device (os error 28)``; or any error of a
writer when the disk has less than :data:`MIN_FREE_BYTES` left, e.g. torch's ``unexpected pos``).
:func:`atomic_path` and :func:`atomic_dir` turn such errors into one-line
:class:`~petctfm.core.errors.OutputError` (exit 4) naming the file, and delete the temporary. SimpleITK reports a
short write only on stderr and returns normally (``** ERROR: NWAD: wrote only 0 of 1048576 bytes``), so
:func:`atomic_path` also refuses to rename a file into place when the disk is full after writing it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from petctfm.core.errors import OutputError, PetctfmError

#: Pseudo file systems that no output may go to (``--out /proc/x``).
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


#: OSErrors that are the output's fault (disk full, quota, read-only file system): exit 4, never blamed on an input.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
#: Words of library errors that wrap those OSErrors (safetensors, PyTorch, ITK, Rust ``os error N``).
_OUTPUT_WORDS = ("no space left on device", "disk quota exceeded", "read-only file system",
                 *(f"os error {int(e)})" for e in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)))
#: A disk with less than this many bytes free (for this user) is full: a write that fails there, or a writer
#: that may have truncated its file silently (SimpleITK), is the disk's fault.
MIN_FREE_BYTES = 1 << 20


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user on the file system of ``folder`` (None when it cannot be told)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full(folder: str | os.PathLike) -> bool:
    """Whether the file system of ``folder`` has less than :data:`MIN_FREE_BYTES` left."""
    free = free_bytes(folder)
    return free is not None and free < MIN_FREE_BYTES


def output_failure(exc: BaseException, path: str | os.PathLike) -> OutputError | None:
    """The :class:`OutputError` (exit 4) that ``exc``, raised while writing ``path``, stands for, or None when
    it is not the output's fault (module docstring). The one owner of that classification."""
    if isinstance(exc, OutputError):
        return exc
    if not isinstance(exc, Exception) or isinstance(exc, PetctfmError):  # an input / usage error stays one
        return None
    reason = None
    if isinstance(exc, OSError):
        if exc.errno in OUTPUT_ERRNOS:
            reason = exc.strerror or os.strerror(exc.errno)
    else:
        text = str(exc).lower()
        word = next((w for w in _OUTPUT_WORDS if w in text), None)
        if word is not None:
            reason = os.strerror(int(word.split()[-1].rstrip(")"))) if word.startswith("os error") else word.capitalize()
        elif disk_full(Path(path).parent):
            reason = os.strerror(errno.ENOSPC)
    if reason is None:
        return None
    return OutputError(f"{path}: cannot be written ({reason})")


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(path)
    except OSError as exc:
        raise (output_failure(exc, path) or exc) from None
    try:
        yield tmp
        if disk_full(path.parent):  # a writer may have truncated its file without saying so (SimpleITK)
            raise OutputError(f"{path}: cannot be written ({os.strerror(errno.ENOSPC)})")
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        err = output_failure(exc, path)
        if err is not None and err is not exc:
            raise err from None
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
    tmp = _temp_folder(path)
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(path)
        _swap_in(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_as_output(exc, tmp, path)
        raise


def _temp_folder(path: Path) -> Path:
    """A new hidden temporary folder beside ``path`` (same file system, so a rename moves it), with the mode a
    plain ``mkdir`` would give; a full disk or the like is an :class:`OutputError` naming ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise (output_failure(exc, path) or exc) from None
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the finished folder ``tmp`` at ``path``, replacing what is there (moved aside first, then removed)."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _raise_as_output(exc: BaseException, tmp: Path, path: Path) -> None:
    """After a failed folder write into ``tmp`` for ``path``: raise the :class:`OutputError` a full disk (or the
    like) is, naming ``path`` rather than the temporary; return for any other error (the caller re-raises)."""
    err = output_failure(exc, path)
    if err is not None and str(tmp) in str(err):  # name the file where it was going, not the temporary
        raise OutputError(str(err).replace(str(tmp), str(path))) from None
    if err is not None and err is not exc:
        raise err from None


@contextlib.contextmanager
def atomic_outputs(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary folder for one set of output files; on success they replace those of ``path``.

    When ``path`` does not exist or holds nothing but files of the new set, the folder is replaced whole (as
    :func:`atomic_dir`: the set appears at once). When it also holds other files (``predict --out`` is a folder
    the user chose; the current folder), the old ``marker`` (the file whose presence says the set is complete,
    e.g. ``summary.json``) is removed first, the files are renamed in one by one and ``marker`` last: a folder
    with ``marker`` never mixes new and old files. On an error ``path`` is left as it was and the temporary
    folder is removed; a full disk is an :class:`OutputError` (:func:`output_failure`)."""
    path = Path(path).absolute()
    tmp = _temp_folder(path)
    try:
        yield tmp
        names = sorted(p.name for p in tmp.iterdir() if p.name != marker)
        names += [marker] if (tmp / marker).exists() else []
        whole = not path.exists() or (path.is_dir() and path.resolve() != Path.cwd().resolve()
                                      and all(p.name in names for p in path.iterdir()))
        if whole:
            _swap_in(tmp, path)
        else:
            (path / marker).unlink(missing_ok=True)
            for n in names:
                os.replace(tmp / n, path / n)
            tmp.rmdir()
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_as_output(exc, tmp, path)
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
