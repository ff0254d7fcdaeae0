"""``petctfm stage``: early vs advanced stage classification from pooled whole-body encoder features."""

from __future__ import annotations

from petctfm.cli._common import add_command

EXAMPLES = """
# MLP on pooled features of a pretrained joint encoder; train split -> (val: early stopping) -> test
petctfm stage --data dataset/ --encoder runs/mae_joint --out runs/stage_joint

# deepest scale only, a bigger hidden layer, another seed (features.npz in --out is reused)
petctfm stage --data dataset/ --encoder runs/mae_joint --out runs/stage_joint --scales 1 --hidden 128 --seed 1
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "stage",
        help="early (I-II) vs advanced (III-IV) classification with an MLP on frozen whole-body features",
        description="Tile each lesion-positive case's whole body into patches, pool the frozen encoder's deepest "
        "feature maps (average + max per tile, mean + max over tiles) into one vector per case (cached in "
        "OUT/features.npz), train a small MLP on the train split with early stopping on val, and report "
        "accuracy, macro sensitivity and ROC AUC with 95%% bootstrap CIs on the test split (metrics.json, "
        "predictions.csv). Stages come from manifest.csv. See docs/probe-and-staging.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--encoder", required=True, action="append", metavar="RUN",
                   help="pretraining run folder / checkpoint (repeat to concatenate several encoders)")
    p.add_argument("--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--patch", type=int, metavar="P", help="tile side (default: the encoder's pretraining patch)")
    p.add_argument("--scales", type=int, choices=(1, 2), default=2,
                   help="pool the deepest (1) or the two deepest (2, default) feature maps")
    p.add_argument("--hidden", type=int, default=64, help="MLP hidden units (default 64)")
    p.add_argument("--max-epochs", type=int, default=500, help="full-batch epochs at most (default 500)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MLP and the bootstrap")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from petctfm.methods.staging import StageConfig, run_stage

    cfg = StageConfig(hidden=args.hidden, max_epochs=args.max_epochs, scales=args.scales, patch=args.patch,
                      seed=args.seed, n_resamples=args.bootstrap)
    m = run_stage(args.data, args.encoder, args.out, cfg, progress=not args.no_progress)
    def fmt(k: str) -> str:
        v = [m[k][f] for f in ("value", "ci_low", "ci_high")]
        v = ["n/a" if x is None or x != x else f"{x:.3f}" for x in v]
        return f"{v[0]} [{v[1]}, {v[2]}]"

    print(f"stage on {m['n']} test cases: accuracy {fmt('accuracy')}, macro sensitivity "
          f"{fmt('balanced_accuracy')}, AUC {fmt('auc')}; results in {args.out}")
    return 0
