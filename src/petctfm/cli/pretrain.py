"""``petctfm pretrain``: early-fusion masked-autoencoder pretraining (default) or FratMAE (``--method fratmae``)
on a harmonized dataset.

Argument parsing only: the run is :func:`petctfm.methods.early_fusion_mae.api.pretrain` or
:func:`petctfm.methods.fratmae.api.pretrain_fratmae` (config = preset -> named options -> ``--set key=value`` ->
trainer options; with ``--resume`` the run folder's saved config, whose method wins over ``--method``).
"""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command, add_run_args, train_options
from petctfm.io.walk import printable  # a --out that is not UTF-8 is printed with U+FFFD

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

# FratMAE (twin ViTs, cross-modal masking, ContextAlign) on whole-body coronal stacks; its Table 3 ablations
petctfm pretrain --method fratmae --data dataset/ --out runs/frat --preset gpu
petctfm pretrain --method fratmae --variant fratmae-noca --data dataset/ --out runs/frat_noca --preset gpu
petctfm pretrain --method fratmae --stack axial --data dataset/ --out runs/frat_axial --preset gpu

# many GPUs / nodes (same command on every node; see docs/pretrain.md)
torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
    -m petctfm.cli.main pretrain --data dataset/ --out runs/mae_base --preset gpu
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "pretrain",
        help="self-supervised pretraining: early-fusion MAE (default) or FratMAE (--method fratmae)",
        description="Pretrain a hierarchical backbone (SwinUNETR-v2 or residual UNet) as an early-fusion masked "
        "autoencoder on a harmonized PET/CT dataset: random 3D blocks are masked (set to zero = the modality "
        "mean) in PET and CT together and the network reconstructs the whole volume. Writes a run folder "
        "(config.yaml, metrics.jsonl, TensorBoard, safetensors checkpoints, reconstruction figures).",
        examples=EXAMPLES,
    )
    p.add_argument("--method", choices=["early-fusion-mae", "fratmae"], default=None,
                   help="early-fusion-mae (default) | fratmae (docs/fratmae.md)")
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
    f = p.add_argument_group("FratMAE options (--method fratmae)")
    f.add_argument("--variant", choices=["mae", "mae+ca", "fratmae-noca", "fratmae"],
                   help="the paper's Table 3 rows (default fratmae)")
    f.add_argument("--stack", choices=["coronal", "axial"], help="whole-body coronal stacks (default) | axial")
    f.add_argument("--k", type=int, metavar="K", help="keep every K-th slice along the stack axis (default 2)")
    f.add_argument("--norm-pix", action=argparse.BooleanOptionalAction, default=None,
                   help="normalize each target patch (MAE's norm_pix_loss)")
    f.add_argument("--context-weight", type=float, metavar="L", help="lambda of the InfoNCE term (default 1)")
    add_run_args(p, "mask.ratio=0.75")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petctfm.methods.early_fusion_mae.api import pretrain

    opts = train_options(args)
    if _method(args) == "fratmae":
        return _run_fratmae(args, opts)
    frat_only = {"--variant": args.variant, "--stack": args.stack, "--k": args.k, "--norm-pix": args.norm_pix,
                 "--context-weight": args.context_weight}
    given = [k for k, v in frat_only.items() if v is not None]
    if given:
        from petctfm.core.errors import InputError

        raise InputError(f"{', '.join(given)}: FratMAE option(s); add --method fratmae")
    summary = pretrain(args.data, args.out, args.preset, max_steps=opts.pop("max_steps", None),
                       max_time=opts.pop("max_time_s", None), resume=args.resume, overrides=args.set,
                       mode=args.mode, backbone=args.backbone, patch=args.patch, mask_ratio=args.mask_ratio,
                       mask_block=args.mask_block, mask_token=args.mask_token, w_masked=args.w_masked,
                       w_visible=args.w_visible, loss=args.loss, **opts)
    _report(summary, args.out)
    return 0


def _report(summary: dict, out: str) -> None:
    import os

    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(f"pretrain: {summary.get('steps')} steps, loss {summary.get('loss'):.4f}, "
              f"{summary.get('samples_per_s', 0):.2f} samples/s, stopped by {summary.get('stopped')}; "
              f"run folder {printable(out)}")


def _method(args: argparse.Namespace) -> str:
    """``--method``; on ``--resume`` the saved run's method."""
    from petctfm.train.config import saved_run_configs

    saved = saved_run_configs(args.out) if args.resume else None
    if saved is not None and saved[0].get("method") == "fratmae":
        return "fratmae"
    return args.method or "early-fusion-mae"


def _run_fratmae(args: argparse.Namespace, opts: dict) -> int:
    from petctfm.core.errors import InputError
    from petctfm.methods.fratmae.api import pretrain_fratmae

    mae_only = {"--mode": args.mode, "--backbone": args.backbone, "--mask-block": args.mask_block,
                "--mask-token": args.mask_token, "--w-masked": args.w_masked, "--w-visible": args.w_visible,
                "--loss": args.loss}
    given = [k for k, v in mae_only.items() if v is not None]
    if given:
        raise InputError(f"{', '.join(given)}: early-fusion MAE option(s), not used by --method fratmae")
    summary = pretrain_fratmae(args.data, args.out, args.preset, variant=args.variant,
                               max_steps=opts.pop("max_steps", None), max_time=opts.pop("max_time_s", None),
                               resume=args.resume, overrides=args.set, patch=args.patch, mask_ratio=args.mask_ratio,
                               stack=args.stack, k=args.k, norm_pix=args.norm_pix,
                               context_weight=args.context_weight, **opts)
    _report(summary, args.out)
    return 0
