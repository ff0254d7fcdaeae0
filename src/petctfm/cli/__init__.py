"""Command-line interface: ``petctfm <command> ...``.

Each command lives in its own module ``petctfm.cli.<name>`` exposing ``register(subparsers)``, which adds
an argparse sub-parser and sets ``func`` to a callable ``run(args) -> int``. Heavy imports (torch, monai)
happen inside ``run`` so that ``petctfm --help`` stays fast.
"""
