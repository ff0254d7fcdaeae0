"""``petctfm harmonize``: turn autoPET / nnU-Net / DICOM / plain PET+CT folders into one training dataset.

Argument parsing only; the work is :func:`petctfm.harmonize.api.harmonize_folder`.
"""

from __future__ import annotations

from petctfm.cli._common import add_command
from petctfm.core.errors import batch_exit_code

EXAMPLES = """
# synthetic multi-site DICOM -> harmonized dataset (2x2x3 mm RAS, SUV + HU, splits, QA)
petctfm harmonize --in data/synth/dicom --out data/harmonized --workers 2

# mix layouts; 3 mm isotropic; no thumbnails
petctfm harmonize --in /data/autoPET --in /data/nnUNet_raw/Dataset221 --out ds --spacing 3 3 3 --no-thumbnails

# a big collection over 4 machines, then compute splits/statistics/manifest once
petctfm harmonize --in /data/dicom --out ds --shard 0/4    # ... 1/4, 2/4, 3/4 elsewhere
petctfm harmonize --finalize ds

# a foreign metadata table: say which column holds the case (folder) id
petctfm harmonize --in /data/autoPET --out ds --metadata clinical.csv --metadata-id "Subject ID"

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
        "statistics, QA report and quarantine list. Exit code: 0 all cases done, 5 some quarantined, 3 all failed (docs/reliability.md). "
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
    p.add_argument("--holdout-site", metavar="NAME", default=None,
                   help="keep this site's cases out of train/val/test and the normalization statistics: they form "
                   "the 'holdout' split (generalization to an unseen site)")
    p.add_argument("--salt", default="", help="secret mixed into the pseudonym hashes (recommended for real data)")
    p.add_argument("--metadata", help="metadata CSV (default: metadata.csv in the input folder or its parent)")
    p.add_argument("--metadata-id", metavar="COLUMN",
                   help="the metadata CSV's case id column (default case_id; e.g. 'Subject ID' for TCIA's table)")
    p.add_argument("--write-mapping", metavar="FILE", help="write pseudonym -> source path CSV here (outside DATASET)")
    p.add_argument("--no-thumbnails", action="store_true", help="skip the per-case QA thumbnail PNGs")
    p.add_argument("--nifti", action="store_true",
                   help="also write NIfTI copies (DATASET/nifti/<case>/SUV, CTres, SEG) for viewing; training does not need them")
    p.set_defaults(func=run)


def run(args) -> int:
    from petctfm.core.errors import InputError
    from petctfm.harmonize.api import finalize_dataset, harmonize_folder

    if args.finalize:
        if args.inputs:
            raise InputError("--finalize DATASET takes no --in")
        res = finalize_dataset(args.finalize, args.seed, holdout_site=args.holdout_site)
        print(f"finalized {args.finalize}: {res['num_cases']} cases, {res['num_failed']} quarantined")
        return 0
    if not args.inputs or not args.out:
        raise InputError("--in SRC and --out DATASET are required (or --finalize DATASET)")
    summary = harmonize_folder(
        args.inputs, args.out, fmt=args.format, spacing=args.spacing, ct_window=args.ct_window, margin=args.margin,
        suv=args.suv, workers=args.workers, shard=args.shard, seed=args.seed, salt=args.salt,
        metadata=args.metadata, metadata_id=args.metadata_id, write_mapping=args.write_mapping, thumbnails=not args.no_thumbnails,
        nifti=args.nifti, progress=True, holdout_site=args.holdout_site,
    )
    if summary["finalized"]:
        print(f"dataset {args.out}: {summary['n_cases']} cases, {summary['n_quarantined']} quarantined")
    else:
        print(f"shard {args.shard} done; after all shards run: petctfm harmonize --finalize {args.out}")
    return batch_exit_code(summary["n_done"] + summary["n_skipped"], summary["n_failed"])
