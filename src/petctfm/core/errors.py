"""Errors that the CLI reports as one line (``error: <message>``) instead of a traceback."""


class PetctfmError(Exception):
    """A user-facing error: bad input, wrong path, missing tag. The message names the file and the problem."""


class InputError(PetctfmError, ValueError):
    """An input file or folder is missing, unreadable or inconsistent."""
