"""``petctfm finetune``: lesion segmentation from a pretrained encoder (or from scratch) on a label subset.

Argument parsing only: training is :func:`petctfm.methods.finetune.finetune`, which hands the run to the method
that owns ``--init`` (config = preset -> the pretrained run's backbone and mode -> named options ->
``--set key=value`` -> trainer options; with ``--resume`` the run folder's saved config); ``--predict`` is
:func:`petctfm.predict.split.predict_split`.
"""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command, add_run_args, train_options
from petctfm.io.walk import printable  # a --out that is not UTF-8 is printed with U+FFFD

EXAMPLES = """
# the recipe: nnU-Net's PlainConvUNet from scratch, planned for a CPU from the training cases (docs/segmentation-recipe.md)
petctfm finetune --data dataset/ --out runs/recipe --init scratch --backbone nnunet-plain --plan cpu --max-steps 3000

# 10% of the labels, encoder from a pretraining run (its backbone and mode are used); seconds on a CPU
petctfm finetune --data dataset/ --out runs/ft10 --init runs/mae_tiny --fraction 0.1 --preset tiny

# the same from scratch (needs a backbone), on all training cases, and a 5-shot run with a frozen encoder
petctfm finetune --data dataset/ --out runs/scratch10 --init scratch --backbone unet-resenc-tiny --fraction 10 --preset tiny
petctfm finetune --data dataset/ --out runs/ft5shot --init runs/mae_base --kshot 5 --freeze-encoder --preset gpu

# any field: --set (task) / --set train.KEY=... (trainer); continue a killed run exactly
petctfm finetune --data dataset/ --out runs/x --init runs/mae_base --set data.fg_prob=0.5 --set train.lr=5e-5
petctfm finetune --out runs/ft10 --resume --max-steps 40000

# multi-organ segmentation from the dataset's organ maps (organs.npy), the CPU recipe; an own name table
petctfm finetune --data dataset/ --out runs/organs --init scratch --backbone nnunet-plain --plan cpu --task organs
petctfm finetune --data dataset/ --out runs/organs5 --init runs/mae_base --task organs --labels organs.json

# then: predictions of the best checkpoint on the test split, scored
petctfm finetune --out runs/ft10 --predict test --pred-out runs/ft10/pred_test --data dataset/
petctfm evaluate --pred runs/ft10/pred_test --gt dataset/ --split test --out runs/ft10/eval_test
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "finetune",
        help="fine-tune a pretrained encoder (or train from scratch) for lesion or organ segmentation",
        description="Lesion segmentation (background/lesion) with the backbone of a pretraining run: only the "
        "encoder is transferred, decoder and head are new. Trains on EXACTLY a stored label subset of the "
        "dataset (--fraction / --kshot from splits.json), Dice + cross-entropy (MONAI), foreground-oversampled "
        "patches, validates by sliding-window inference on the val split and keeps RUN/best/model.safetensors "
        "by val Dice. Same trainer as pretraining (DDP, bf16, resume). --task organs: one class per organ of the "
        "dataset's organ maps, multi-class Dice + CE, validated by mean per-organ Dice (docs/organs.md). "
        "See docs/finetune.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--data", metavar="DATASET", help="harmonized dataset folder ('petctfm harmonize' output)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--init", metavar="RUN_OR_CKPT|scratch",
                   help="pretraining run folder / checkpoint (.safetensors or step folder), or 'scratch'")
    sub = p.add_mutually_exclusive_group()
    sub.add_argument("--fraction", type=float, metavar="F",
                     help="stored label fraction: 0.1 or 10 = 10%% (default: the whole train split)")
    sub.add_argument("--kshot", type=int, metavar="K", help="stored k-shot subset (splits.json 'kshot')")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default=None,
                   help="base configuration (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--mode", choices=["joint", "pet", "ct"],
                   help="input channels; must match the pretrained run (default: the run's mode)")
    p.add_argument("--backbone", metavar="NAME", help="backbone for --init scratch (default: the --preset's; must match a pretrained run)")
    p.add_argument("--plan", choices=["cpu", "gpu"], default=None,
                   help="the recipe: plan patch, network (nnU-Net backbones from scratch), batch, precision and poly "
                   "LR from the training cases' fingerprint for this compute target; written into the run's config "
                   "(docs/segmentation-recipe.md)")
    p.add_argument("--plan-step-seconds", type=float, default=None, metavar="S",
                   help="with --plan: the step-time budget on this machine; the planner times a training step and "
                   "shrinks the patch until it fits (the CPU's analogue of nnU-Net's GPU-memory target). Default: "
                   "the target's (cpu: 1 s for a lesion run, none for --task organs; gpu: none); 0 = untimed")
    p.add_argument("--plan-spacing", type=float, default=None, metavar="MM",
                   help="with --plan: train on a grid no finer than MM on any axis (a copy of the dataset resampled "
                   "once, in DATASET/respaced/; nnU-Net's 3d_lowres trade; predict resamples to the model's grid). "
                   "Default: the target's (cpu: 6 mm for a lesion run whose network the plan plans, else the dataset's "
                   "spacing; gpu: the dataset's spacing); 0 = the dataset's spacing")
    p.add_argument("--task", choices=["lesions", "organs"], default=None,
                   help="what to segment: lesions (label.npy, 2 classes; the default) or organs (the dataset's "
                   "organs.npy, one class per organ; docs/organs.md)")
    p.add_argument("--labels", metavar="ORGANS.json",
                   help="with --task organs: organ name table {name: label value} (or an nnU-Net dataset.json); "
                   "default: the dataset's organ labels")
    p.add_argument("--patch", type=int, metavar="N", help="cubic patch side in voxels (training and inference)")
    p.add_argument("--fg-prob", type=float, metavar="P", help="foreground oversampling probability (default 0.33)")
    p.add_argument("--freeze-encoder", action="store_true", default=None, help="train decoder and head only")
    p.add_argument("--layer-decay", type=float, metavar="D",
                   help="layer-wise LR decay: encoder stage s of S gets lr * D**(S-s) (default 1 = off; try 0.75)")
    p.add_argument("--overlap", type=float, metavar="O", help="sliding-window overlap for validation (default 0.5)")
    p.add_argument("--predict", metavar="SPLIT",
                   help="do not train: predict SPLIT of --data with the run's best checkpoint (NIfTI)")
    p.add_argument("--pred-out", metavar="DIR", help="with --predict: output folder (default RUN/pred_SPLIT)")
    add_run_args(p, "data.fg_prob=0.5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from petctfm.core.errors import InputError

    if args.predict:
        from petctfm.predict.split import predict_split

        if not args.data:
            raise InputError("--predict needs --data DATASET")
        out = Path(args.pred_out or Path(args.out) / f"pred_{args.predict}")
        paths = predict_split(args.out, args.data, split=args.predict, out_dir=out, progress=True)
        print(f"finetune: {len(paths)} predictions of split {args.predict!r} written to {printable(out)}")
        return 0

    from petctfm.inference.model import BEST_DIR
    from petctfm.methods.finetune import finetune
    from petctfm.train.config import saved_run_configs

    if args.init is None and not (args.resume and saved_run_configs(args.out) is not None):
        raise InputError("--init RUN_OR_CKPT|scratch is required")
    opts = train_options(args)
    if args.plan:
        opts["plan"] = args.plan
    if args.plan_step_seconds is not None:
        opts["plan_step_seconds"] = args.plan_step_seconds
    if args.plan_spacing is not None:
        opts["plan_spacing"] = args.plan_spacing
    if args.labels and args.task != "organs":
        from petctfm.core.errors import UsageError

        raise UsageError(f"--labels {args.labels}: an organ name table needs --task organs")
    if args.task is not None:  # only when given: a method without organ support keeps its signature
        opts["task"] = args.task
    if args.labels is not None:
        opts["labels"] = args.labels
    summary = finetune(args.data, args.out, args.init, args.preset, args.fraction, kshot=args.kshot,
                       backbone=args.backbone, max_steps=opts.pop("max_steps", None),
                       max_time=opts.pop("max_time_s", None), resume=args.resume, overrides=args.set,
                       mode=args.mode, patch=args.patch, fg_prob=args.fg_prob, freeze_encoder=args.freeze_encoder,
                       layer_decay=args.layer_decay, overlap=args.overlap, **opts)
    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        best = Path(args.out) / BEST_DIR / "best.json"
        extra = f"; best val Dice {best.read_text().strip()}" if best.is_file() else ""
        subset = saved_run_configs(args.out)[0]["subset"]
        print(f"finetune: {summary.get('steps')} steps on {subset['name']} ({len(subset['cases'])} cases), "
              f"loss {summary.get('loss'):.4f}, stopped by {summary.get('stopped')}; run folder {printable(args.out)}{extra}")
    return 0
