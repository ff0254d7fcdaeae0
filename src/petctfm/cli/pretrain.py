"""``petctfm pretrain``: early-fusion masked-autoencoder pretraining on a harmonized dataset.

Config = preset (``tiny`` | ``cpu`` | ``gpu``) -> named options -> ``--set key=value`` (task keys such as
``mask.ratio``, ``data.fg_prob``, ``model.overrides.use_checkpoint``; trainer keys prefixed ``train.``).
With ``--resume`` the run folder's saved ``config.yaml`` is the base instead of the preset.
One seed (``--seed``, default 0) drives weights, masks, patches and augmentations.
"""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command

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
    from petctfm.train.config import add_run_args

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


def build_configs(args: argparse.Namespace) -> tuple[dict, object]:
    """(task config, TrainConfig) from preset / saved run config, named options and ``--set``."""
    from petctfm.core.errors import InputError
    from petctfm.methods.early_fusion_mae.mae import DEFAULT_CONFIG
    from petctfm.methods.early_fusion_mae.presets import deep_merge, get_preset
    from petctfm.train.config import default_preset, finish_configs, saved_run_configs

    saved = saved_run_configs(args.out) if args.resume else None
    if saved is not None:
        task_cfg, train_base = saved
    else:
        args.preset = args.preset or default_preset()
        preset = get_preset(args.preset)
        task_cfg, train_base = deep_merge(DEFAULT_CONFIG, preset["task"]), preset["train"]
    if args.data:
        task_cfg["dataset"] = str(args.data)
    if not task_cfg.get("dataset"):
        raise InputError("--data DATASET is required")
    named = {
        ("data", "mode"): args.mode, ("model", "backbone"): args.backbone, ("mask", "ratio"): args.mask_ratio,
        ("mask", "block"): args.mask_block, ("mask", "token"): args.mask_token, ("loss", "w_masked"): args.w_masked,
        ("loss", "w_visible"): args.w_visible, ("loss", "kind"): args.loss,
        ("data", "patch_size"): [args.patch] * 3 if args.patch else None,
    }
    return finish_configs(args, task_cfg, train_base, named)


def run(args: argparse.Namespace) -> int:
    from petctfm.methods.early_fusion_mae.mae import EarlyFusionMAETask
    from petctfm.train.trainer import train

    task_cfg, train_cfg = build_configs(args)
    task = EarlyFusionMAETask(task_cfg)  # validates; wrong dataset path -> one-line InputError
    summary = train(task, train_cfg, args.out, resume=args.resume)
    if summary.get("world_size", 1) == 1 or int(__import__("os").environ.get("RANK", "0")) == 0:
        print(f"pretrain: {summary.get('steps')} steps, loss {summary.get('loss'):.4f}, "
              f"{summary.get('samples_per_s', 0):.2f} samples/s, stopped by {summary.get('stopped')}; "
              f"run folder {args.out}")
    return 0
