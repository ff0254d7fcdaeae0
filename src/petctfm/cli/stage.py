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
    p.add_argument("--scales", type=int, choices=(1, 2), action=_default("scales"),
                   help="pool the deepest (1) or the two deepest (2) feature maps (default {default})")
    p.add_argument("--hidden", type=int, action=_default("hidden"), help="MLP hidden units, >= 1 (default {default})")
    p.add_argument("--max-epochs", type=int, action=_default("max_epochs"),
                   help="full-batch epochs at most, >= 1 (default {default})")
    p.add_argument("--bootstrap", type=int, metavar="N", action=_default("n_resamples"),
                   help="bootstrap resamples, >= 0 (default {default})")
    p.add_argument("--seed", type=int, action=_default("seed"),
                   help="seed of the MLP and the bootstrap (default {default})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


#: StageConfig fields given on the command line (argparse dest -> field; the others keep StageConfig's defaults)
#: and the flags whose name differs from the field's.
OPTIONS = {"hidden": "hidden", "max_epochs": "max_epochs", "scales": "scales", "patch": "patch", "seed": "seed",
           "bootstrap": "n_resamples"}
FLAGS = {"n_resamples": "--bootstrap"}


def _default(field: str):
    """Help text with StageConfig's default of ``field`` (read only when --help is shown: staging imports torch)."""
    from petctfm.cli._api import api_default

    return api_default("petctfm.methods.staging:StageConfig", field)


def run(args) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.methods.staging import StageConfig, run_stage

    with flags(FLAGS):
        cfg = StageConfig(**given(args, OPTIONS))
        m = run_stage(args.data, args.encoder, args.out, cfg, progress=not args.no_progress)
    def fmt(k: str) -> str:
        v = [m[k][f] for f in ("value", "ci_low", "ci_high")]
        v = ["n/a" if x is None or x != x else f"{x:.3f}" for x in v]
        return f"{v[0]} [{v[1]}, {v[2]}]"

    print(f"stage on {m['n']} test cases: accuracy {fmt('accuracy')}, macro sensitivity "
          f"{fmt('balanced_accuracy')}, AUC {fmt('auc')}; results in {args.out}")
    return 0
