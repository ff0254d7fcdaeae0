"""Entry point of the ``petctfm`` console command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from petctfm.core.version import __version__
from petctfm.core.errors import ExitCode, PetctfmError, cli_wording
from petctfm.io.walk import printable

# Order is the order shown by ``petctfm --help``. A module that does not exist yet is skipped, so
# commands appear as their issues land.
COMMANDS = [
    "synth",
    "view",
    "harmonize",
    "pretrain",
    "finetune",
    "probe",
    "stage",
    "evaluate",
    "experiment",
    "predict",
    "response",
    "prompt_train",
    "segment",
    "serve",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petctfm",
        description="PET/CT foundation models for oncologic imaging: synthesize, harmonize, pretrain, "
        "fine-tune, evaluate and predict. Run 'petctfm <command> --help' for examples.",
    )
    parser.add_argument("--version", action="version", version=f"petctfm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"petctfm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"petctfm.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PetctfmError as exc:
        print(f"error: {printable(cli_wording(exc))}", file=sys.stderr)  # printable: file names that are not UTF-8
        return int(exc.exit_code)
    except OSError as exc:  # a file-system problem the code did not anticipate: one line, never a traceback
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {printable(where)}{printable(exc.strerror or exc)}", file=sys.stderr)
        return int(ExitCode.OUTPUT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
