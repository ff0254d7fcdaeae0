"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import argparse
import textwrap


def add_command(subparsers, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` ends with an Examples section."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
