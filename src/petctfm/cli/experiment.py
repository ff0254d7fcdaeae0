"""``petctfm experiment <name>``: experiments that combine several commands into one result.

Each experiment is a sub-subcommand registered in :data:`EXPERIMENTS` (name -> ``register(subparsers)``), so
new experiments are added without touching the others. ``label-efficiency``:
:func:`petctfm.experiments.label_efficiency.run.run_label_efficiency`; ``fratmae-ablation``:
:func:`petctfm.experiments.fratmae_ablation.run.run_fratmae_ablation`. Argument parsing only.
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
    _add_label_efficiency_arguments(p)
    p.set_defaults(func=_run_label_efficiency)


def _add_label_efficiency_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's command-line options (used by ``petctfm experiment label-efficiency``)."""
    from petctfm.experiments.label_efficiency.plan import PROBE_STEPS
    from petctfm.methods.segmentation.presets import PRESETS

    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--pretrained", required=True, metavar="RUN", help="joint pretraining run folder or checkpoint")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--fractions", default="10,20,40,100", metavar="P,P,...",
                   help="stored label fractions in percent (default 10,20,40,100)")
    p.add_argument("--seeds", default="0", metavar="S,S,...", help="seeds (default 0); e.g. 0,1,2")
    p.add_argument("--arms", default="pretrained,scratch", metavar="A,A", help="pretrained,scratch (default both)")
    p.add_argument("--runs", metavar="ARM:P,...",
                   help="explicit runs instead of arms x fractions, e.g. pretrained:10,scratch:10,scratch:100")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="fine-tuning preset (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--probe-kshot", type=int, default=5, metavar="K", help="k of the linear probes (0 = no probes)")
    p.add_argument("--probe-steps", type=int, default=None, metavar="N",
                   help=f"probe head steps (default per preset: {PROBE_STEPS})")
    p.add_argument("--separated", nargs=2, metavar=("PET_RUN", "CT_RUN"),
                   help="PET-only and CT-only pretraining runs for the separated probe")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="fine-tuning steps per run")
    p.add_argument("--max-time", type=float, default=None, metavar="S", help="fine-tuning seconds per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every fine-tuning run (as in petctfm finetune: data.fg_prob=0.5, train.lr=1e-4)")
    p.add_argument("--holdout-site", metavar="NAME", default=None,
                   help="the site the dataset holds out (petctfm harmonize --holdout-site NAME): checked absent from "
                   "training, pretraining and normalization, and reported separately beside the in-domain test")
    p.add_argument("--no-progress", action="store_true", help="quiet: no progress display")


def _run_label_efficiency(args: argparse.Namespace) -> int:
    from petctfm.core.errors import InputError
    from petctfm.experiments.label_efficiency.plan import parse_list
    from petctfm.experiments.label_efficiency.run import run_label_efficiency

    if args.probe_steps is not None and args.probe_steps < 1:
        raise InputError(f"--probe-steps must be >= 1, got {args.probe_steps}")
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    out = run_label_efficiency(
        args.data, args.pretrained, args.out, runs=args.runs, seeds=parse_list(args.seeds, int, "seed"),
        preset=args.preset, overrides=args.set, arms=parse_list(args.arms, str, "arm"),
        fractions=parse_list(args.fractions, float, "fraction"), probe_kshot=args.probe_kshot,
        probe_steps=args.probe_steps, separated=args.separated, max_steps=args.max_steps, max_time=args.max_time,
        holdout_site=args.holdout_site, progress=not args.no_progress)
    print(f"experiment label-efficiency: {len(out['records'])} runs; results in {out['results_md']}, "
          f"{out['results_csv']}, {out['plot']}")
    return 0


FRATMAE_ABLATION_EXAMPLES = """
# the paper's Tables 2 and 3 at 20 % of the labels (+ 40 / 100 %), 3 seeds, every arm the same steps
petctfm experiment fratmae-ablation --data dataset/ --out exp/frat --fraction 20 --seeds 0,1,2 --preset gpu \\
    --pretrain-steps 20000 --max-steps 5000

# seconds on a CPU (tiny ViTs); rerunning skips finished runs
petctfm experiment fratmae-ablation --data dataset/ --out exp/frat_tiny --preset tiny --max-steps 20
"""


def _register_fratmae_ablation(sub) -> None:
    p = add_command(
        sub, "fratmae-ablation",
        help="FratMAE ablation: no pretraining / MAE / +ContextAlign / FratMAE, coronal vs axial; Dice, IoU, staging",
        description="Pretrains the four FratMAE variants, fine-tunes each (and the same network from scratch, on "
        "coronal and on axial stacks) on a stored label fraction, and no pretraining vs FratMAE at more "
        "fractions; stages early vs advanced with each frozen encoder. Test Dice and IoU with 95% bootstrap "
        "CIs, paired Wilcoxon against no pretraining, staging macro sensitivity and accuracy. Writes "
        "results.csv, results.md, fratmae_ablation.png. Resumable. See docs/fratmae.md.",
        examples=FRATMAE_ABLATION_EXAMPLES,
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--fraction", type=float, default=20.0, metavar="P", help="label fraction of Tables 2/3 (default 20)")
    p.add_argument("--more-fractions", default="40,100", metavar="P,P|none",
                   help="fractions where no pretraining and FratMAE are compared again (default 40,100)")
    p.add_argument("--seeds", default="0", metavar="S,S,...", help="fine-tuning / staging seeds (default 0)")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default=None,
                   help="pretraining and fine-tuning preset (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--pretrain-steps", type=int, metavar="N", help="steps per pretraining run (default --max-steps)")
    p.add_argument("--max-steps", type=int, metavar="N", help="steps per fine-tuning run (every arm the same)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every fine-tuning run")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every pretraining run")
    p.add_argument("--no-stage", action="store_true", help="skip the staging runs")
    p.add_argument("--stage-epochs", type=int, default=500, metavar="N", help="staging MLP epochs (default 500)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--no-progress", action="store_true", help="quiet: no progress display")
    p.set_defaults(func=_run_fratmae_ablation)


def _run_fratmae_ablation(args: argparse.Namespace) -> int:
    from petctfm.experiments.fratmae_ablation.run import run_fratmae_ablation
    from petctfm.experiments.label_efficiency.plan import parse_list

    more = [] if args.more_fractions.strip().lower() == "none" else parse_list(args.more_fractions, float, "fraction")
    out = run_fratmae_ablation(
        args.data, args.out, fraction=args.fraction, more_fractions=more, seeds=parse_list(args.seeds, int, "seed"),
        preset=args.preset, pretrain_steps=args.pretrain_steps, max_steps=args.max_steps, overrides=args.set,
        pretrain_overrides=args.pretrain_set, stage=not args.no_stage, stage_epochs=args.stage_epochs,
        n_resamples=args.bootstrap, progress=not args.no_progress)
    print(f"experiment fratmae-ablation: {len(out['records'])} runs ({out['ran']} run now); results in "
          f"{out['results_md']}, {out['results_csv']}, {out['plot']}")


def _register_interactive(sub) -> None:
    p = add_command(
        sub, "interactive",
        help="a promptable model click by click (autoPET IV protocol, corrective clicks) vs isocontour / automatic",
        description="Evaluate a prompt-train model on the test split: the autoPET IV click protocol (lesion and "
        "background clicks fixed from the ground truth, 0..10+10), corrective clicks on the largest error (lesions, "
        "each lesion, each organ, seen vs held-out), one click per lesion against a 41 %-of-SUVmax isocontour, and "
        "optionally an automatic petctfm finetune model. Writes results.md, results.csv, steps.csv, "
        "dice_vs_clicks.png and cases/*.png. See docs/promptable.md.",
        examples="petctfm experiment interactive --data dataset/ --model runs/prompt --out exp/interactive "
        "--auto runs/finetune",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--model", required=True, metavar="RUN", help="prompt-train run folder or model.safetensors")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="output folder")
    p.add_argument("--auto", metavar="RUN", help="a petctfm finetune run: the zero-click automatic baseline")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--max-cases", type=int, default=None, metavar="N", help="only the first N cases")
    p.add_argument("--max-clicks", type=int, default=10, metavar="N", help="clicks per protocol (default 10)")
    p.add_argument("--max-targets", type=int, default=10, metavar="N",
                   help="single lesions and organs per case for the corrective protocol (default 10)")
    p.add_argument("--no-organs", action="store_true", help="skip the organ targets")
    p.add_argument("--iso-box-mm", type=float, default=60.0, help="side of the isocontour's box (default 60 mm)")
    p.add_argument("--figures", type=int, default=3, metavar="N", help="case PNGs (default 3)")
    p.add_argument("--max-zoom", type=float, default=4.0, help="the session's auto-zoom limit (default 4; 1 = off)")
    p.add_argument("--iso-prior", action="store_true", help="also the isocontour-informed first click at one click "
                   "per lesion (the 41 %% isocontour as the previous-mask prompt; reported separately)")
    p.add_argument("--components", choices=("all", "prompted"), default="prompted",
                   help="prompted (default): drop predicted components that no positive click or box reaches; "
                   "all: the decoder's mask as it is")
    p.add_argument("--protocols", default="autopet,one_per_lesion,corrective",
                   help="comma-separated subset of autopet, one_per_lesion, corrective (default all three)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--no-progress", action="store_true", help="quiet")
    p.set_defaults(func=_run_interactive)


def _run_interactive(args: argparse.Namespace) -> int:
    from petctfm.experiments.interactive.run import run_interactive

    out = run_interactive(args.data, args.model, args.out, auto=args.auto, split=args.split,
                          max_cases=args.max_cases, max_clicks=args.max_clicks, max_targets=args.max_targets,
                          organs=not args.no_organs, iso_box_mm=args.iso_box_mm, n_figures=args.figures,
                          device=args.device, max_zoom=args.max_zoom, progress=not args.no_progress,
                          iso_prior=args.iso_prior, components=args.components,
                          protocols=tuple(p.strip() for p in args.protocols.split(",") if p.strip()))
    print(f"experiment interactive: {len(out['rows'])} rows; results in {out['results_md']}, {out['results_csv']}, "
          f"{out['plot']}")
    return 0


def _register_vs_nnunet(sub) -> None:
    p = add_command(
        sub, "vs-nnunet",
        help="petctfm vs nnU-Net v2 itself at the same wall time (+ SUV-threshold floors); Dice with CIs, paired test",
        description="Exports the harmonized train/val/test splits to nnU-Net raw (fold 0 = our split), lets "
        "nnU-Net v2 plan and preprocess (its default plan and a CPU-sized one), trains nnU-Net 3d_fullres and "
        "petctfm's UNet from scratch for the same minutes on the same device, predicts the test split with each "
        "one's own predictor, scores both and two SUV-threshold floors with petctfm evaluate. Writes results.md, "
        "results.csv, vs_nnunet.png. Needs pip install 'petctfm[nnunet]'. Resumable. See docs/vs-nnunet.md.",
        examples="petctfm experiment vs-nnunet --data dataset/ --out exp/vs_nnunet --minutes 60 --seeds 0,1,2",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--minutes", required=True, type=float, metavar="M", help="training wall time of every run")
    p.add_argument("--seeds", default="0", metavar="S,S,...", help="seeds (default 0)")
    p.add_argument("--holdout-site", metavar="NAME", default=None, help="the site the dataset holds out; scored too")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--preset", choices=("tiny", "cpu", "gpu"), default=None,
                   help="petctfm fine-tuning preset (default gpu on cuda, else cpu)")
    p.add_argument("--backbone", default=None, help="petctfm backbone (default: the preset's)")
    p.add_argument("--plans", default="default,cpu", metavar="P,P", help="nnU-Net plans: default,cpu (default both)")
    p.add_argument("--no-progress", action="store_true", help="quiet")
    p.set_defaults(func=_run_vs_nnunet)


def _run_vs_nnunet(args: argparse.Namespace) -> int:
    from petctfm.experiments.label_efficiency.plan import parse_list
    from petctfm.experiments.vs_nnunet.run import run_vs_nnunet

    out = run_vs_nnunet(args.data, args.out, args.minutes, seeds=parse_list(args.seeds, int, "seed"),
                        device=args.device, preset=args.preset, backbone=args.backbone,
                        plans=parse_list(args.plans, str, "plan"), holdout_site=args.holdout_site,
                        progress=not args.no_progress)
    print(f"experiment vs-nnunet: {len(out['records'])} runs; compared with nnU-Net "
          f"{out['summary']['stronger_nnunet']}; results in {out['results_md']}, {out['results_csv']}, {out['plot']}")
    return 0


#: Experiment name -> function adding its sub-subcommand.
EXPERIMENTS = {"label-efficiency": _register_label_efficiency, "fratmae-ablation": _register_fratmae_ablation,
               "interactive": _register_interactive, "vs-nnunet": _register_vs_nnunet}


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
