"""Small helpers shared by the CLI modules: sub-commands with examples, and the training options.

The training commands (``pretrain``, ``finetune``) share ``--max-time``, ``--resume``, ``--set KEY=VALUE`` and
one option per :class:`~petctfm.train.config.TrainConfig` field (:func:`add_run_args`); :func:`train_options`
reads the latter back as plain values for the Python API.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import fields
from typing import Any, Iterable

from petctfm.train.config import DEVICES, PRECISIONS, TrainConfig, train_config


def add_command(subparsers, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` ends with an Examples section."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_train_args(parser: argparse.ArgumentParser, prefix: str = "") -> argparse._ArgumentGroup:
    """Add one option per TrainConfig field (``--max-steps``, ``--lr``, ``--compile/--no-compile``...).

    Defaults are ``None`` (= not given), so :func:`train_options` only returns what the user typed.
    ``prefix`` (e.g. ``"train-"``) avoids clashes with a command's own options.
    """
    group = parser.add_argument_group("trainer")
    for f in fields(TrainConfig):
        opt = "--" + prefix + f.name.replace("_", "-")
        t = str(f.type)
        default = TrainConfig().__getattribute__(f.name)
        helptext = f"(default {default})"
        if t.startswith("bool"):
            group.add_argument(opt, dest="train__" + f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=helptext)
        else:
            kw: dict[str, Any] = {}
            if f.name == "precision":
                kw["choices"] = PRECISIONS
            elif f.name == "device":
                kw["choices"] = DEVICES
            group.add_argument(opt, dest="train__" + f.name, default=None, metavar=f.name.upper(), help=helptext,
                               **kw)
    return group


def add_run_args(parser: argparse.ArgumentParser, set_example: str) -> argparse._ArgumentGroup:
    """The options every training command shares: ``--max-time``, ``--resume``, ``--set KEY=VALUE``
    (``set_example``: a task key of that command, for the help), then one option per TrainConfig field
    (:func:`add_train_args`)."""
    parser.add_argument("--max-time", type=float, dest="train__max_time_s", default=None, metavar="S",
                        help="stop (with a checkpoint) after S seconds")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override any config field (task: {set_example}; trainer: train.lr=1e-4)")
    return add_train_args(parser)


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (as typed, strings), by field name."""
    return {f.name: v for f in fields(TrainConfig) if (v := getattr(args, "train__" + f.name, None)) is not None}


def train_config_from_args(args: argparse.Namespace, base: TrainConfig | dict[str, Any] | None = None,
                           overrides: Iterable[str] = ()) -> TrainConfig:
    """``base`` (a preset's dict or a TrainConfig), then the named options given, then ``--set`` overrides."""
    return train_config(base, train_options(args), overrides)


__all__ = ["add_command", "add_train_args", "add_run_args", "train_options", "train_config_from_args"]
