"""``petctfm prompt-train``: train a promptable (click / box) segmenter. Argument parsing only: training is
:func:`petctfm.methods.promptable.api.prompt_train`."""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command, add_run_args, train_options

EXAMPLES = """
# seconds on a CPU: PET-only, encoder from an early-fusion MAE run (input convolutions inflated)
petctfm prompt-train --data dataset/ --out runs/prompt --init runs/mae_tiny --preset tiny

# out of distribution: train on FDG only (then: experiment interactive --ood on the PSMA cases)
petctfm prompt-train --data dataset/ --out runs/prompt_fdg --preset tiny --train-filter tracer=fdg

# from scratch, PET+CT, other held-out organs (never sampled; for zero-shot evaluation)
petctfm prompt-train --data dataset/ --out runs/prompt_pc --backbone unet-resenc-tiny --mode joint --held-out spleen,liver
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "prompt-train", help="train a promptable (clicks, box, previous mask) segmenter",
        description="Targets: each organ of organs.npy (minus --held-out), each lesion, all lesions in view; "
        "iterative click simulation (interior point, then the largest error region). Design 'cached' (default): "
        "the backbone embeds the image once per crop and a light decoder reads the prompt channels per click; "
        "'channels': prompts are extra input channels of the backbone. Same trainer as pretraining. "
        "See docs/promptable.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--data", metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--init", metavar="RUN_OR_CKPT|scratch", help="pretrained petctfm run / checkpoint (default scratch)")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default=None)
    p.add_argument("--mode", choices=["pet", "joint"], help="input: PET only (default) or PET+CT")
    p.add_argument("--backbone", metavar="NAME", help="backbone from scratch (default: the preset's)")
    p.add_argument("--patch", type=int, metavar="N", help="cubic patch side in voxels")
    p.add_argument("--design", choices=["cached", "channels", "sam"], help="cached image embedding + light prompt "
                   "decoder (default), prompts as input channels of the whole network, or a SAM-style prompt encoder "
                   "and two-way-transformer mask decoder over the cached embedding")
    p.add_argument("--class-prompts", action="store_true", default=None, help="train with class prompts (a target "
                   "class steers the decoder; dropped with targets.class_dropout; designs cached and sam)")
    p.add_argument("--held-out", metavar="ORGANS", help="comma-separated organ names never sampled "
                   "(default spleen,kidney_left,kidney_right)")
    p.add_argument("--train-filter", action="append", metavar="COL=V[,V]", help="train (and validate) only on the "
                   "cases whose manifest.csv column COL is one of the values (COL!=V[,V]: none of them); repeat to "
                   "AND several, e.g. --train-filter tracer=fdg (the out-of-distribution protocol, "
                   "docs/promptable.md)")
    add_run_args(p, "clicks.max_iter=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petctfm.methods.promptable.api import prompt_train

    opts = train_options(args)
    held = [s.strip() for s in args.held_out.split(",") if s.strip()] if args.held_out is not None else None
    s = prompt_train(args.data, args.out, args.init, args.preset, backbone=args.backbone, held_out=held,
                     max_steps=opts.pop("max_steps", None), max_time=opts.pop("max_time_s", None),
                     resume=args.resume, overrides=args.set, mode=args.mode, patch=args.patch, design=args.design,
                     class_prompts=args.class_prompts, train_filter=args.train_filter, **opts)
    print(f"prompt-train: {s.get('steps')} steps, loss {s.get('loss'):.4f}, stopped by {s.get('stopped')}; "
          f"run folder {args.out}")
    return 0
