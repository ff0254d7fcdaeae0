"""How a command hands its options to the Python API it runs.

- :func:`given`: only the options given on the command line (argparse default ``None`` = not given), renamed to
  the API's argument names, so that the API (a dataclass or a function) is the one owner of every default.
- :func:`api_default`: an argparse action whose help reads that default from the API when ``--help`` is shown
  (so ``petctfm --help`` does not import torch for it).
- :func:`flags`: the API's errors name Python arguments (``n_resamples=-1: ...``); where a flag's name differs
  from its argument's (``--bootstrap``), this words the error with the flag, as ``petctfm.cli.main`` does for
  the others (:func:`petctfm.core.errors.cli_wording`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
from typing import Any, Iterable, Iterator, Mapping

from petctfm.core.errors import PetctfmError, cli_wording


def given(args: argparse.Namespace, names: Mapping[str, str] | Any) -> dict[str, Any]:
    """``{api_name: value}`` of the options given (not None); ``names``: ``{dest: api_name}`` or dests."""
    names = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
    return {api: getattr(args, dest) for dest, api in names.items() if getattr(args, dest, None) is not None}


def default_of(target: str, name: str) -> Any:
    """The default of field / parameter ``name`` of ``target``: ``"module:Class"`` (a dataclass) or
    ``"module:function"`` / ``"module:Class.method"``; with ``name`` empty, ``target`` itself (a constant)."""
    import inspect

    module, qual = target.split(":")
    try:
        obj: Any = importlib.import_module(module)
    except ModuleNotFoundError:  # an optional extra not installed (petctfm[serve]): say where it is
        return f"{target}'s"
    for part in qual.split("."):
        obj = getattr(obj, part)
    if not name:
        return obj
    if dataclasses.is_dataclass(obj):
        f = {f.name: f for f in dataclasses.fields(obj)}[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return inspect.signature(obj).parameters[name].default


def api_default(target: str, name: str) -> type[argparse.Action]:
    """A store action whose help's ``{default}`` is :func:`default_of` ``(target, name)``, read when the help is
    shown (``petctfm --help`` does not import the API)."""

    class _Store(argparse._StoreAction):  # noqa: SLF001 - argparse's store action with a lazy help text
        @property  # type: ignore[override]
        def help(self) -> str | None:
            text = self._help
            if text and "{default}" in text:
                default = default_of(target, name)
                if isinstance(default, (tuple, list)):  # X Y Z for nargs options, else a comma-separated list
                    default = (" " if self.nargs else ",").join(f"{v:g}" if isinstance(v, float) else str(v)
                                                                 for v in default)
                text = text.replace("{default}", str(default))
            return text

        @help.setter
        def help(self, value: str | None) -> None:
            self._help = value

    return _Store


@contextlib.contextmanager
def flags(names: Mapping[str, str], also: Iterable[str] = ()) -> Iterator[None]:
    """Word an API error about argument ``arg`` with the flag ``names[arg]`` (e.g. ``{"n_resamples":
    "--bootstrap"}``), and the arguments ``also`` the message may name besides it (``--arg-name`` unless in
    ``names``); other errors pass unchanged (``petctfm.cli.main`` words them with ``--arg-name``)."""
    try:
        yield
    except PetctfmError as exc:
        todo = [a for a in dict.fromkeys([*also, *([exc.arg] if exc.arg else [])])
                if a == exc.arg and a in names or a != exc.arg]
        if todo:
            msg = str(exc)
            for a in todo:
                msg = cli_wording(PetctfmError(msg, arg=a), dict(names))
            exc.args = (msg,)
            if exc.arg in todo:
                exc.arg = None
        raise


__all__ = ["given", "default_of", "api_default", "flags"]
