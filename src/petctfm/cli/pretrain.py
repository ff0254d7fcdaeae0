"""``petctfm pretrain``: early-fusion masked-autoencoder pretraining on a harmonized dataset.

Argument parsing only: the run is :func:`petctfm.methods.early_fusion_mae.api.pretrain` (config = preset ->
named options -> ``--set key=value`` -> trainer options; with ``--resume`` the run folder's saved config).
"""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command, add_run_args, train_options

EXAMPLES = """
# seconds on a CPU: tiny network, 32^3 patches (what tests and the demo use)
petctfm pretrain --data dataset/ --out runs/mae_tiny --preset tiny

# the real configuration on one GPU: SwinUNETR-v2 base, 96^3, bf16, torch.compile
petctfm pretrain --data dataset/ --out runs/mae_base --preset gpu

# ablations: learnable mask token, masked-only loss, PET-only pretraining
petctfm pretrain --data dataset/ --out runs/mae_token --preset gpu --mask-token learnable
petctfm pretrain --data dataset/ --out runs/mae_w0 --preset gpu --w-visible 0
petctfm pretrain --data dataset/ --out runs/mae_pet --preset gpu --mode pet

# any field: --set (task) / --set train.KEY=... (trainer); continue a killed run exactly
petctfm pretrain --data dataset/ --out runs/x --preset cpu --set mask.ratio=0.75 --set data.fg_prob=0.5
petctfm pretrain --out runs/mae_base --resume --max-steps 200000

# many GPUs / nodes (same command on every node; see docs/pretrain.md)
torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
    -m petctfm.cli.main pretrain --data dataset/ --out runs/mae_base --preset gpu
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "pretrain",
        help="early-fusion masked-autoencoder pretraining (PET+CT channels, zero-mean imputation)",
        description="Pretrain a hierarchical backbone (SwinUNETR-v2 or residual UNet) as an early-fusion masked "
        "autoencoder on a harmonized PET/CT dataset: random 3D blocks are masked (set to zero = the modality "
        "mean) in PET and CT together and the network reconstructs the whole volume. Writes a run folder "
        "(config.yaml, metrics.jsonl, TensorBoard, safetensors checkpoints, reconstruction figures).",
        examples=EXAMPLES,
    )
    p.add_argument("--data", metavar="DATASET", help="harmonized dataset folder ('petctfm harmonize' output)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default=None,
                   help="base configuration (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--mode", choices=["joint", "pet", "ct"], help="input channels: joint [PET, CT] | pet | ct")
    p.add_argument("--backbone", metavar="NAME", help="swinunetr-{small,base,large,tiny} | unet-resenc[-tiny]")
    p.add_argument("--patch", type=int, metavar="N", help="cubic patch side in voxels")
    p.add_argument("--mask-ratio", type=float, metavar="R", help="fraction of blocks masked (default 0.6)")
    p.add_argument("--mask-block", type=int, metavar="B", help="mask block side in voxels (default 16)")
    p.add_argument("--mask-token", choices=["zero", "learnable"], help="zero-mean imputation | learnable token")
    p.add_argument("--w-masked", type=float, metavar="W", help="loss weight of masked voxels (default 1.0)")
    p.add_argument("--w-visible", type=float, metavar="W", help="loss weight of visible voxels (default 0.1)")
    p.add_argument("--loss", choices=["l2", "l1"], help="reconstruction error (default l2)")
    add_run_args(p, "mask.ratio=0.75")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from petctfm.methods.early_fusion_mae.api import pretrain

    opts = train_options(args)
    summary = pretrain(args.data, args.out, args.preset, max_steps=opts.pop("max_steps", None),
                       max_time=opts.pop("max_time_s", None), resume=args.resume, overrides=args.set,
                       mode=args.mode, backbone=args.backbone, patch=args.patch, mask_ratio=args.mask_ratio,
                       mask_block=args.mask_block, mask_token=args.mask_token, w_masked=args.w_masked,
                       w_visible=args.w_visible, loss=args.loss, **opts)
    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(f"pretrain: {summary.get('steps')} steps, loss {summary.get('loss'):.4f}, "
              f"{summary.get('samples_per_s', 0):.2f} samples/s, stopped by {summary.get('stopped')}; "
              f"run folder {args.out}")
    return 0
