"""``petctfm pretrain``: self-supervised pretraining with any registered method (``--method NAME``, default the
first registered pretraining method) on a harmonized dataset.

Argument parsing only. The methods, their options (:class:`petctfm.core.registry.Option`) and their entry
points (:attr:`petctfm.core.registry.Method.pretrain`) come from the method registry; nothing here names one.
Config = preset -> the method's named options -> ``--set key=value`` -> trainer options; with ``--resume`` the
run folder's saved config, whose method wins over ``--method``.
"""

from __future__ import annotations

import argparse

from petctfm.cli._common import add_command, add_run_args, train_options
from petctfm.io.walk import printable  # a --out that is not UTF-8 is printed with U+FFFD

EXAMPLES = """
# any field: --set (task) / --set train.KEY=... (trainer); continue a killed run exactly
petctfm pretrain --data dataset/ --out runs/x --preset cpu --set data.fg_prob=0.5 --set train.lr=1e-4
petctfm pretrain --out runs/x --resume --max-steps 200000

# many GPUs / nodes (same command on every node; see docs/pretrain.md)
torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
    -m petctfm.cli.main pretrain --data dataset/ --out runs/base --preset gpu
"""


def register(subparsers) -> None:
    from petctfm.core.errors import InputError
    from petctfm.core.registry import options_of, pretraining_methods

    try:
        methods, options = pretraining_methods(), options_of()
    except InputError:  # no method registered (stale metadata): the command still parses; run() says why
        methods, options = [], {}
    names = [m.name for m in methods]
    p = add_command(
        subparsers, "pretrain",
        help="self-supervised pretraining (--method: " + ", ".join(names) + ")",
        description="Pretrain a PET/CT network self-supervised on a harmonized dataset with a registered method "
        "(--method; default " + (names[0] if names else "none") + "). Writes a run folder (config.yaml, "
        "metrics.jsonl, TensorBoard, safetensors checkpoints, figures). Methods: " +
        "; ".join(f"{m.name}: {m.summary}" for m in methods) + ".",
        examples="\n\n".join([*(m.examples.strip("\n") for m in methods if m.examples), EXAMPLES.strip("\n")]),
    )
    p.add_argument("--method", choices=names, default=None,
                   help=f"{' | '.join(names)} (default {names[0] if names else 'none'}; docs/architecture.md)")
    p.add_argument("--data", metavar="DATASET", help="harmonized dataset folder ('petctfm harmonize' output)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (required unless --show-config)")
    p.add_argument("--show-config", action="store_true",
                   help="print the method's config (its typed defaults with --preset merged in, the keys --set "
                   "takes) as YAML and exit")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default=None,
                   help="base configuration (default: gpu if CUDA is available, else cpu)")
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for flag, (opt, owners) in options.items():
        key = tuple(owners)
        if key not in groups:
            groups[key] = p.add_argument_group(f"options of --method {' / '.join(owners)}")
        kw: dict = {"dest": _DEST + opt.dest, "default": None, "help": opt.help}
        if opt.type is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=opt.type, metavar=opt.metavar)
            if opt.choices:
                kw["choices"] = list(opt.choices)
        groups[key].add_argument(flag, **kw)
    add_run_args(p, "data.fg_prob=0.5")
    p.set_defaults(func=run)


_DEST = "method__"  # argparse dest prefix of the methods' options


def run(args: argparse.Namespace) -> int:
    from petctfm.core.errors import UsageError
    from petctfm.core.registry import get_method, options_of

    method = get_method(_method_name(args))
    if args.show_config:
        import yaml

        from petctfm.train.config import default_preset

        print(yaml.safe_dump(method.default_config(args.preset or default_preset()), sort_keys=False), end="")
        return 0
    if not args.out:
        raise UsageError("--out RUN_DIR is required")
    if method.pretrain is None:
        raise UsageError(f"method={method.name!r}: not a pretraining method", arg="method")
    options = options_of()
    given = {flag: v for flag, (opt, _) in options.items() if (v := getattr(args, _DEST + opt.dest, None)) is not None}
    mine = {o.dest for o in method.options}
    foreign = [flag for flag in given if options[flag][0].dest not in mine]
    if foreign:
        raise UsageError(f"{', '.join(foreign)}: not an option of --method {method.name} (see petctfm pretrain "
                         f"--help)")
    opts = train_options(args)
    named = {options[flag][0].dest: v for flag, v in given.items()}
    summary = method.pretrain(args.data, args.out, args.preset, max_steps=opts.pop("max_steps", None),
                              max_time=opts.pop("max_time_s", None), resume=args.resume, overrides=args.set,
                              **named, **opts)
    _report(summary, args.out)
    return 0


def _report(summary: dict, out: str) -> None:
    import os

    if summary.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(f"pretrain: {summary.get('steps')} steps, loss {summary.get('loss'):.4f}, "
              f"{summary.get('samples_per_s', 0):.2f} samples/s, stopped by {summary.get('stopped')}; "
              f"run folder {printable(out)}")


def _method_name(args: argparse.Namespace) -> str:
    """``--method``; on ``--resume`` the method that wrote the saved run; else the first pretraining method."""
    from petctfm.core.registry import owner_of, pretraining_methods
    from petctfm.train.config import saved_run_configs
    from pathlib import Path

    saved = saved_run_configs(args.out) if args.resume and args.out else None
    if saved is not None and saved[0].get("method") is not None:
        return owner_of(saved[0].get("method"), Path(args.out) / "config.yaml").name
    return args.method or pretraining_methods()[0].name
