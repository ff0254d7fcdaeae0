"""``petctfm experiment <name>``: experiments that combine several commands into one result.

Each experiment is a sub-subcommand registered in :data:`EXPERIMENTS` (name -> ``register(subparsers)``), so
new experiments are added without touching the others. ``label-efficiency``:
:mod:`petctfm.experiments.label_efficiency.runner`.
"""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command

LABEL_EFFICIENCY_EXAMPLES = """
# the seed experiment: pretrained vs scratch at 10/20/40/100 % of the labels, 3 seeds, 5-shot probes
petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae_base --out exp/label_eff \\
    --seeds 0,1,2 --preset gpu

# ... with the separated (PET-only + CT-only) probe; rerunning skips finished runs
petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae_base --out exp/label_eff \\
    --seeds 0,1,2 --preset gpu --separated runs/mae_pet runs/mae_ct

# exactly three runs (what 'petctfm demo' does), 90 s of fine-tuning each, no probes
petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae_tiny --out exp/demo \\
    --runs pretrained:10,scratch:10,scratch:100 --preset tiny --max-time 90 --probe-kshot 0
"""


def _register_label_efficiency(sub) -> None:
    from petctfm.experiments.label_efficiency.runner import add_arguments

    p = add_command(
        sub, "label-efficiency",
        help="pretrained vs scratch fine-tuning at several label fractions (+ k-shot probes), test Dice with CIs",
        description="Fine-tune the pretrained encoder and the same network from scratch on each stored label "
        "fraction (default 10, 20, 40, 100 %) with one or more seeds, plus k-shot linear probes of the joint "
        "encoder and (with --separated) of PET-only + CT-only encoders. Every run predicts the test split and "
        "is evaluated (per-case metrics in RUN/eval_test). Writes results.csv, results.md (Dice with 95% "
        "bootstrap CIs, paired Wilcoxon tests) and label_efficiency.png. Resumable: finished runs "
        "(RUN/done.json) are skipped, a killed fine-tuning run continues. See docs/label-efficiency.md.",
        examples=LABEL_EFFICIENCY_EXAMPLES,
    )
    add_arguments(p)
    p.set_defaults(func=_run_label_efficiency)


def _run_label_efficiency(args: argparse.Namespace) -> int:
    from petctfm.experiments.label_efficiency.runner import run_from_args

    out = run_from_args(args)
    print(f"experiment label-efficiency: {len(out['records'])} runs; results in {out['results_md']}, "
          f"{out['results_csv']}, {out['plot']}")
    return 0


#: Experiment name -> function adding its sub-subcommand.
EXPERIMENTS = {"label-efficiency": _register_label_efficiency}


def register(subparsers) -> None:
    p = add_command(
        subparsers, "experiment",
        help="run a whole experiment (several trainings, evaluation, report)",
        description="Experiments that combine fine-tuning, probing and evaluation into one report. "
        f"Available: {', '.join(EXPERIMENTS)}.",
        examples="petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae --out exp/le --preset tiny",
    )
    sub = p.add_subparsers(dest="experiment", metavar="<experiment>")
    for reg in EXPERIMENTS.values():
        reg(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
