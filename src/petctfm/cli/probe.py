"""``petctfm probe``: 5-shot (or label-fraction) linear probing of frozen pretrained encoders."""

from __future__ import annotations

from petctfm.cli._common import add_command

EXAMPLES = """
# the seed's 5-shot linear probe of a joint PET/CT network (encoder scales + last decoder features), test split
petctfm probe --data dataset/ --encoder runs/mae_joint --out runs/probe_joint --kshot 5

# "separated" pretraining: a PET-only and a CT-only network side by side, one linear head
petctfm probe --data dataset/ --encoder runs/mae_pet --encoder runs/mae_ct --out runs/probe_sep --kshot 5

# the random-init control (same architecture, untrained) and a width-matched joint arm (two seeds)
petctfm probe --data dataset/ --encoder random:runs/mae_joint --out runs/probe_random --kshot 5
petctfm probe --data dataset/ --encoder runs/mae_joint --encoder runs/mae_joint_s1 --out runs/probe_joint2 --kshot 5

# only the decoder's last features, or only two encoder scales; a stored label fraction; another seed
petctfm probe --data dataset/ --encoder runs/mae_joint --out runs/probe_dec --points dec --fraction 0.1 --seed 1
petctfm probe --data dataset/ --encoder runs/mae_joint --out runs/probe_e02 --points enc0,enc2
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "probe",
        help="linear probe (frozen network, voxel-wise logistic regression) for lesion segmentation",
        description="Freeze one or more pretrained networks, read their features (encoder scales and/or the "
        "last decoder features) at voxels of patches from the dataset's stored k-shot subset (or label "
        "fraction), standardize them and fit a class-balanced L2 logistic regression by L-BFGS (a 1x1x1 "
        "convolution); the threshold maximizes the Dice expected at the training cases' lesion prevalence. "
        "Evaluates by sliding-window inference on the test split. Writes per_case.csv, summary.json (mean Dice "
        "and AP with 95%% bootstrap CIs, pooled Dice), head.safetensors, config.json. 'random:RUN' probes RUN's "
        "architecture untrained (the control). See docs/probe-and-staging.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--encoder", required=True, action="append", metavar="RUN",
                   help="pretraining run folder / checkpoint, or random:RUN (its architecture untrained); repeat "
                   "for side-by-side encoders (separated, width-matched); they must share patch, spacing, "
                   "normalization")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--kshot", type=int, metavar="K", action=_default("DEFAULT_KSHOT"),
                   help="use splits.json kshot[K], K >= 1 (default {default})")
    g.add_argument("--fraction", type=float, metavar="F", help="use the stored label fraction F in (0, 1]")
    p.add_argument("--steps", type=int, metavar="N", action=_default("steps"),
                   help="batches of training patches whose voxels the head is fitted on, >= 1 (default {default})")
    p.add_argument("--batch-size", type=int, metavar="B", action=_default("batch_size"),
                   help="patches per batch, >= 1 (default {default})")
    p.add_argument("--points", metavar="P", action=_default("points"),
                   help="probe points: all, enc, dec, or a list like enc0,enc3,dec (default {default})")
    p.add_argument("--voxels-per-patch", type=int, metavar="N", action=_default("voxels_per_patch"),
                   help="at most N lesion and N background voxels per patch, >= 1 (default {default})")
    p.add_argument("--l2", type=float, action=_default("l2"),
                   help="L2 penalty of the logistic regression, >= 0 (default {default})")
    p.add_argument("--patch", type=int, metavar="P", help="cubic patch side (default: the encoder's pretraining patch)")
    p.add_argument("--fg-prob", type=float, metavar="P", action=_default("fg_prob"),
                   help="probability of a lesion-centred training patch, in [0, 1] (default {default})")
    p.add_argument("--split", action=_default("split"), help="evaluation split (default {default})")
    p.add_argument("--bootstrap", type=int, metavar="N", action=_default("n_resamples"),
                   help="bootstrap resamples, >= 0 (default {default})")
    p.add_argument("--seed", type=int, action=_default("seed"),
                   help="seed of patches, head initialization, bootstrap (default {default})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


#: ProbeConfig fields given on the command line (argparse dest -> field; the others keep ProbeConfig's
#: defaults), and the flags whose name differs from the field's.
OPTIONS = {"kshot": "kshot", "fraction": "fraction", "steps": "steps", "batch_size": "batch_size",
           "points": "points", "voxels_per_patch": "voxels_per_patch", "l2": "l2", "patch": "patch",
           "fg_prob": "fg_prob", "split": "split", "bootstrap": "n_resamples", "seed": "seed"}
FLAGS = {"n_resamples": "--bootstrap"}


def _default(field: str):
    """Help text with ProbeConfig's default of ``field`` (read only when --help is shown: probe imports torch)."""
    from petctfm.cli._api import api_default

    return api_default("petctfm.methods.probe:" + ("DEFAULT_KSHOT" if field == "DEFAULT_KSHOT" else "ProbeConfig"),
                       "" if field == "DEFAULT_KSHOT" else field)


def run(args) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.methods.probe import ProbeConfig, run_probe

    with flags(FLAGS):
        cfg = ProbeConfig(**given(args, OPTIONS))
        summary = run_probe(args.data, args.encoder, args.out, cfg, progress=not args.no_progress)
    d, ap, prev = summary["dice"], summary["ap"], summary["prevalence"]
    num = lambda x: "n/a" if x is None or x != x else f"{x:.3f}"  # noqa: E731
    print(f"probe ({summary['subset']}, {summary['n_train_cases']} training cases, {summary['head_in_channels']} "
          f"features): on {summary['split']} mean Dice {num(d['mean'])} [95% CI {num(d['ci_low'])}, "
          f"{num(d['ci_high'])}], mean AP {ap['mean']:.4f} [{ap['ci_low']:.4f}, {ap['ci_high']:.4f}] (chance = "
          f"prevalence {prev['mean']:.5f}) (n={d['n']}); results in {args.out}")
    return 0
