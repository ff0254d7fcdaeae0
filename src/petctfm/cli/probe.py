"""``petctfm probe``: 5-shot (or label-fraction) linear probing of frozen pretrained encoders."""

from __future__ import annotations

from petctfm.cli._common import add_command

EXAMPLES = """
# the seed's 5-shot linear probe of a joint PET/CT encoder, evaluated on the test split
petctfm probe --data dataset/ --encoder runs/mae_joint --out runs/probe_joint --kshot 5

# "separated" pretraining: a PET-only and a CT-only encoder side by side, one linear head
petctfm probe --data dataset/ --encoder runs/mae_pet --encoder runs/mae_ct --out runs/probe_sep --kshot 5

# a stored label fraction instead of k shots, more steps, another patch size and seed
petctfm probe --data dataset/ --encoder runs/mae_joint --out runs/probe_10pc --fraction 0.1 \\
    --steps 1000 --patch 96 --seed 1
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "probe",
        help="linear probe (frozen encoder, 1x1x1 head) for lesion segmentation; k-shot or label fraction",
        description="Freeze one or more pretrained MAE encoders, upsample their multi-scale features to full "
        "patch resolution, and train a single voxel-wise linear layer (1x1x1 convolution, 2 classes) with "
        "Dice + cross-entropy on the dataset's stored k-shot subset (or label fraction). Evaluates by "
        "sliding-window inference on the test split. Writes per_case.csv, summary.json (mean Dice with a "
        "95%% bootstrap CI), head.safetensors, config.json, losses.json. See docs/probe-and-staging.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--encoder", required=True, action="append", metavar="RUN",
                   help="pretraining run folder / checkpoint; repeat for side-by-side encoders (separated)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--kshot", type=int, metavar="K", help="use splits.json kshot[K] (default 5)")
    g.add_argument("--fraction", type=float, metavar="F", help="use the stored label fraction F in (0, 1]")
    p.add_argument("--steps", type=int, default=300, metavar="N", help="head training steps (default 300)")
    p.add_argument("--batch-size", type=int, default=2, metavar="B", help="patches per step (default 2)")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate of the head (default 1e-2)")
    p.add_argument("--patch", type=int, metavar="P", help="cubic patch side (default: the encoder's pretraining patch)")
    p.add_argument("--fg-prob", type=float, default=0.5, metavar="P",
                   help="probability of a lesion-centred training patch (default 0.5)")
    p.add_argument("--split", default="test", help="evaluation split (default test)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of patches, head initialization, bootstrap")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from petctfm.core.errors import InputError
    from petctfm.methods.probe import ProbeConfig, run_probe

    if args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    cfg = ProbeConfig(kshot=None if args.fraction is not None else (args.kshot or 5), fraction=args.fraction,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, patch=args.patch,
                      fg_prob=args.fg_prob, seed=args.seed, n_resamples=args.bootstrap, split=args.split)
    summary = run_probe(args.data, args.encoder, args.out, cfg, progress=not args.no_progress)
    d = summary["dice"]
    num = lambda x: "n/a" if x is None or x != x else f"{x:.3f}"  # noqa: E731
    print(f"probe ({summary['subset']}, {summary['n_train_cases']} training cases): mean Dice on "
          f"{summary['split']} = {num(d['mean'])} [95% CI {num(d['ci_low'])}, {num(d['ci_high'])}] "
          f"(n={d['n']}); results in {args.out}")
    return 0
