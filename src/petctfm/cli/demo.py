"""``petctfm demo``: the whole story on synthetic data, in one command.

Argument parsing only: the demo is :func:`petctfm.experiments.demo.run_demo` (stages, budgets and report
are described there).
"""

from __future__ import annotations

import argparse

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command

DEMO = "petctfm.experiments.demo:run_demo"

EXAMPLES = """
# the CPU demo (about 11 minutes on 2 cores); prints where the report is
petctfm demo --out demo_out

# the same story in about a minute, tiny sizes (what CI runs)
petctfm demo --out demo_tiny --preset tiny

# bigger defaults on a GPU machine (auto-detected; --preset gpu forces it)
petctfm demo --out demo_gpu --preset gpu
"""


def register(subparsers) -> None:
    from petctfm.experiments.demo import PRESETS

    p = add_command(
        subparsers,
        "demo",
        help="run the whole pipeline on synthetic data and write a report",
        description="Synthesize a multi-site PET/CT cohort, harmonize it, look at it, pretrain the "
        "early-fusion MAE on it, fine-tune the pretrained encoder on 10% of the labels and the same network "
        "from scratch on 10% and 100%, evaluate all three on the test split and write a report folder "
        "(README.md, results.md, plots, test cases with predicted vs true contours). All data is synthetic.",
        examples=EXAMPLES,
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="tiny | cpu | gpu (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--cases", type=int, default=None, metavar="N", help="override the number of cases")
    p.add_argument("--seed", type=int, action=api_default(DEMO, "seed"),
                   help="seed for the whole story, >= 0 (default: {default})")
    p.add_argument("--workers", type=int, metavar="K", action=api_default(DEMO, "workers"),
                   help="worker processes, >= 1 (default: {default})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petctfm.experiments.demo import run_demo

    from petctfm.cli._api import given

    run_demo(args.out, args.preset, cases=args.cases, **given(args, ("seed", "workers")))
    return 0
