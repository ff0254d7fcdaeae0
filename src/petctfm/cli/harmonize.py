"""``petctfm harmonize``: turn autoPET / nnU-Net / DICOM / plain PET+CT folders into one training dataset."""

from __future__ import annotations

from petctfm.cli._common import add_command

EXAMPLES = """
# synthetic multi-site DICOM -> harmonized dataset (2x2x3 mm RAS, SUV + HU, splits, QA)
petctfm harmonize --in data/synth/dicom --out data/harmonized --workers 2

# mix layouts; 3 mm isotropic; no thumbnails
petctfm harmonize --in /data/autoPET --in /data/nnUNet_raw/Dataset221 --out ds --spacing 3 3 3 --no-thumbnails

# a big collection over 4 machines, then compute splits/statistics/manifest once
petctfm harmonize --in /data/dicom --out ds --shard 0/4    # ... 1/4, 2/4, 3/4 elsewhere
petctfm harmonize --finalize ds

# keep a pseudonym -> source mapping OUTSIDE the dataset (only on request)
petctfm harmonize --in /data/autoPET --out ds --write-mapping ~/private/ds_mapping.csv
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "harmonize",
        help="harmonize multi-center PET/CT into one training-ready dataset",
        description="Read autoPET NIfTI, nnU-Net v2 raw, plain PET+CT pairs or DICOM trees (SUV computed from "
        "the PT tags), resample PET, CT and labels onto one RAS grid cropped to the body, and write the "
        "petctfm dataset format (docs/data-format.md) with manifest, patient-level splits, normalization "
        "statistics, QA report and quarantine list. Exit code: number of failed cases (max 100). "
        "A re-run skips finished cases. See docs/harmonize.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--in", dest="inputs", action="append", metavar="SRC", help="input folder (repeatable)")
    p.add_argument("--out", help="output dataset folder")
    p.add_argument("--format", default="auto", choices=["auto", "autopet", "nnunet", "dicom", "pairs"],
                   help="input layout (default: detect per input)")
    p.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                   help="target voxel spacing in mm (default 2 2 3)")
    p.add_argument("--ct-window", nargs=2, type=float, metavar=("LO", "HI"), default=[-1000.0, 1000.0],
                   help="CT clip window in HU (default -1000 1000)")
    p.add_argument("--margin", type=float, default=10.0, help="margin around the body crop in mm (default 10)")
    p.add_argument("--suv", choices=["bw", "sul"], default="bw",
                   help="DICOM: body-weight SUV (default) or SUL (lean body mass, Janmahasatian)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard", metavar="i/n", help="process only shard i of n (0-based); then run --finalize")
    p.add_argument("--finalize", metavar="DATASET", help="only (re)compute splits, statistics, manifest, QA")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    p.add_argument("--salt", default="", help="secret mixed into the pseudonym hashes (recommended for real data)")
    p.add_argument("--metadata", help="metadata CSV (default: metadata.csv in the input folder or its parent)")
    p.add_argument("--write-mapping", metavar="FILE", help="write pseudonym -> source path CSV here (outside DATASET)")
    p.add_argument("--no-thumbnails", action="store_true", help="skip the per-case QA thumbnail PNGs")
    p.add_argument("--nifti", action="store_true",
                   help="also write NIfTI copies (DATASET/nifti/<case>/SUV, CTres, SEG) for viewing; training does not need them")
    p.set_defaults(func=run)


def _mapping(path, out, cases) -> None:
    from pathlib import Path

    from petctfm.core.errors import InputError
    from petctfm.io.tables import csv_text
    from petctfm.io.atomic import atomic_write_text

    target, dataset = Path(path).expanduser().resolve(), Path(out).resolve()
    if target == dataset or dataset in target.parents:
        raise InputError(f"--write-mapping {path}: must be outside the dataset folder {out}")
    rows = [{"case_id": c.case_id, "source_root": c.root, "source_path": c.rel, "format": c.fmt} for c in cases]
    atomic_write_text(target, csv_text(rows, ["case_id", "source_root", "source_path", "format"]))


def run(args) -> int:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from petctfm.core.errors import InputError
    from petctfm.harmonize.discover import discover, shard
    from petctfm.harmonize.manifest import finalize
    from petctfm.harmonize.pipeline import is_done, parse_spacing, process_case

    if args.finalize:
        if args.inputs:
            raise InputError("--finalize DATASET takes no --in")
        from pathlib import Path

        if not (Path(args.finalize) / "cases").is_dir():
            raise InputError(f"{args.finalize}: no cases/ folder (not a harmonize output)")
        res = finalize(args.finalize, args.seed)
        print(f"finalized {args.finalize}: {res['num_cases']} cases, {res['num_failed']} quarantined")
        return 0
    if not args.inputs or not args.out:
        raise InputError("--in SRC and --out DATASET are required (or --finalize DATASET)")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    lo, hi = args.ct_window
    if lo >= hi:
        raise InputError(f"--ct-window {lo} {hi}: LO must be < HI")
    opts = {"spacing": parse_spacing(args.spacing), "ct_window": (lo, hi), "margin_mm": args.margin,
            "suv_kind": "lbm" if args.suv == "sul" else "bw", "thumbnails": not args.no_thumbnails, "threads": 1}
    cases = discover(args.inputs, args.format, salt=args.salt, metadata=args.metadata)
    if args.write_mapping:
        _mapping(args.write_mapping, args.out, cases)
    mine = shard(cases, args.shard)
    todo = [c for c in mine if not is_done(args.out, c.case_id)]
    print(f"{len(cases)} cases found, {len(mine)} in this shard, {len(mine) - len(todo)} already done")
    results = []
    columns = [TextColumn("harmonize"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns) as progress:
        task = progress.add_task("cases", total=len(todo))
        if args.workers == 1 or len(todo) <= 1:
            for c in todo:
                results.append(process_case(c, args.out, opts))
                progress.advance(task)
        else:
            with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(process_case, c, args.out, opts) for c in todo]
                for fut in as_completed(futures):
                    results.append(fut.result())
                    progress.advance(task)
    failed = [r for r in results if r["status"] != "done"]
    for r in failed:
        print(f"quarantined {r['case_id']}: {r['reason']}")
    if args.nifti:
        from petctfm.harmonize.export import export_nifti

        for r in results:
            if r["status"] == "done":
                export_nifti(args.out, r["case_id"])
    if not args.shard:
        res = finalize(args.out, args.seed)
        print(f"dataset {args.out}: {res['num_cases']} cases, {res['num_failed']} quarantined")
    else:
        print(f"shard {args.shard} done; after all shards run: petctfm harmonize --finalize {args.out}")
    return min(len(failed), 100)
