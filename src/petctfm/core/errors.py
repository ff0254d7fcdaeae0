"""Errors that the CLI reports as one line (``error: <message>``) instead of a traceback, and the exit codes.

Every ``petctfm`` command exits with one of :class:`ExitCode` (documented in ``docs/reliability.md``):

====  ==============  ===========================================================================
code  name            meaning
====  ==============  ===========================================================================
0     OK              everything asked for was done (a batch: every case done or already done)
1     INTERNAL        a bug: an unexpected exception (a traceback is printed; please report it)
2     USAGE           the command line is wrong (unknown option, a value out of range, ``--lr nan``)
3     INPUT           an input file or folder is missing, unreadable, malformed or implausible
4     OUTPUT          an output cannot be written: not a folder, permission denied, read-only, disk full
5     PARTIAL         a batch finished, but some cases were quarantined or failed (listed in its report)
130   INTERRUPTED     Ctrl-C
====  ==============  ===========================================================================

A batch in which *every* case failed exits 3 (nothing usable came out), not 5.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``petctfm`` CLI (see the module docstring)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    INPUT = 3
    OUTPUT = 4
    PARTIAL = 5
    INTERRUPTED = 130


class PetctfmError(Exception):
    """A user-facing error: bad input, wrong path, missing tag. The message names the file and the problem.

    ``arg``: the Python argument (or config key) the error is about, when it is one. API messages name
    arguments as Python does (``max_steps=-5: must be >= 1``); the CLI words them as flags
    (:func:`cli_wording`: ``--max-steps -5: must be >= 1``), so the API never speaks of flags.
    """

    exit_code: ExitCode = ExitCode.INPUT

    def __init__(self, *args: object, arg: str | None = None):
        super().__init__(*args)
        self.arg = arg


class InputError(PetctfmError, ValueError):
    """An input file or folder is missing, unreadable, malformed or implausible."""

    exit_code = ExitCode.INPUT


class UsageError(PetctfmError, ValueError):
    """A command-line value is wrong in itself (out of range, NaN, contradictory options)."""

    exit_code = ExitCode.USAGE


class OutputError(PetctfmError, OSError):
    """An output location cannot be written (not a folder, permission denied, read-only, disk full)."""

    exit_code = ExitCode.OUTPUT


def cli_wording(exc: BaseException, flags: dict[str, str] | None = None) -> str:
    """The message of ``exc`` as the command line says it: an error about argument ``arg`` whose message reads
    ``arg=VALUE`` or ``arg:`` names the flag instead (``flags[arg]``, default ``--arg-with-dashes``)."""
    msg = str(exc)
    arg = getattr(exc, "arg", None)
    if not arg:
        return msg
    flag = (flags or {}).get(arg, "--" + arg.replace("_", "-"))
    for old, new in ((f"{arg}=", f"{flag} "), (f"{arg}:", f"{flag}:")):
        msg = msg.replace(old, new)
    return msg


def batch_exit_code(n_done: int, n_failed: int) -> ExitCode:
    """Exit code of a batch command: OK when nothing failed, PARTIAL when some failed, INPUT when all did."""
    if n_failed <= 0:
        return ExitCode.OK
    return ExitCode.PARTIAL if n_done > 0 else ExitCode.INPUT
