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

# an nnU-Net multi-label dataset: organ labels -> organs.npy, lesion/tumor -> label.npy; name the others
petctfm harmonize --in /data/nnUNet_raw/Dataset500_Organs --out ds --label-roles roles.json
#   roles.json: {"pancreas": "ignore", "GTV": "lesion", "Leber": "liver"}

# a harmonized dataset's copy at a coarser grid (the same cases, splits and normalization), in ds/respaced/6x6x6
petctfm harmonize --respace ds --spacing 6 6 6

# keep a pseudonym -> source mapping OUTSIDE the dataset (only on request)
petctfm harmonize --in /data/autoPET --out ds --write-mapping ~/private/ds_mapping.csv
"""


def _default(field: str):
    """Help text with HarmonizeOptions' default of ``field`` (the option itself defaults to None = not given)."""
    from petctfm.cli._api import api_default

    return api_default("petctfm.harmonize.api:HarmonizeOptions", field)


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
    p.add_argument("--format", choices=["auto", "autopet", "nnunet", "dicom", "pairs"], action=_default("fmt"),
                   help="input layout (default {default}: detect per input)")
    p.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                   help="target voxel spacing in mm, each in [0.5, 20] (default 2 2 3)")
    p.add_argument("--ct-window", nargs=2, type=float, metavar=("LO", "HI"), action=_default("ct_window"),
                   help="CT clip window in HU, LO < HI (default {default})")
    p.add_argument("--margin", type=float, action=_default("margin"),
                   help="margin around the body crop in mm, >= 0 (default {default})")
    p.add_argument("--suv", choices=["bw", "sul"], action=_default("suv"),
                   help="DICOM: body-weight SUV (bw) or SUL (lean body mass, Janmahasatian) (default {default})")
    p.add_argument("--workers", type=int, action=_default("workers"), help="worker processes (default {default})")
    p.add_argument("--shard", metavar="i/n", help="process only shard i of n (0-based); then run --finalize")
    p.add_argument("--finalize", metavar="DATASET", help="only (re)compute splits, statistics, manifest, QA")
    p.add_argument("--respace", metavar="DATASET",
                   help="a copy of a harmonized DATASET at --spacing (every case, its splits and its normalization "
                   "statistics kept; made once, in DATASET/respaced/<X>x<Y>x<Z> or --out)")
    p.add_argument("--seed", type=int, action=_default("seed"), help="seed of the splits (default {default})")
    p.add_argument("--holdout-site", metavar="NAME", default=None,
                   help="keep this site's cases out of train/val/test and the normalization statistics: they form "
                   "the 'holdout' split (generalization to an unseen site)")
    p.add_argument("--salt", help="secret mixed into the pseudonym hashes (recommended for real data)")
    p.add_argument("--metadata", help="metadata CSV (default: metadata.csv in the input folder or its parent)")
    p.add_argument("--metadata-id", metavar="COLUMN",
                   help="the metadata CSV's case id column (default case_id; e.g. 'Subject ID' for TCIA's table)")
    p.add_argument("--write-mapping", metavar="FILE", help="write pseudonym -> source path CSV here (outside DATASET)")
    p.add_argument("--label-roles", metavar="FILE",
                   help="JSON {label name: role} (role: lesion, ignore, or an organ: liver, kidney_left, ...): what "
                   "an nnU-Net dataset.json label or a DICOM-SEG segment (by its label) is, where its name or codes "
                   "do not say it. Organs go to organs.npy, lesions to label.npy (docs/harmonize.md)")
    p.add_argument("--no-thumbnails", action="store_true", help="skip the per-case QA thumbnail PNGs")
    p.add_argument("--nifti", action="store_true",
                   help="also write NIfTI copies (DATASET/nifti/<case>/SUV, CTres, SEG) for viewing; training does not need them")
    p.set_defaults(func=run)


#: HarmonizeOptions fields whose flag is not ``--field-name``.
FLAGS = {"fmt": "--format", "inputs": "--in", "thumbnails": "--no-thumbnails"}
#: Options passed to HarmonizeOptions when given (argparse dest -> field); the others keep its defaults.
OPTIONS = {"format": "fmt", "spacing": "spacing", "ct_window": "ct_window", "margin": "margin", "suv": "suv",
           "workers": "workers", "shard": "shard", "seed": "seed", "salt": "salt", "metadata": "metadata",
           "metadata_id": "metadata_id", "write_mapping": "write_mapping", "holdout_site": "holdout_site",
           "label_roles": "label_roles"}


def run(args) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.core.errors import UsageError
    from petctfm.harmonize.api import HarmonizeOptions, finalize_dataset, harmonize_folder

    if args.finalize:
        if args.inputs:
            raise UsageError(f"--finalize {args.finalize} takes no --in (it only recomputes the dataset's splits, "
                             "statistics and manifest)")
        res = finalize_dataset(args.finalize, **given(args, {"seed": "seed", "holdout_site": "holdout_site"}))
        print(f"finalized {args.finalize}: {res['num_cases']} cases, {res['num_failed']} quarantined")
        return 0
    if args.respace:
        from petctfm.harmonize.respace import respace_dataset

        if args.inputs or not args.spacing:
            raise UsageError(f"--respace {args.respace} takes --spacing X Y Z and no --in (it resamples a "
                             "harmonized dataset)")
        out = respace_dataset(args.respace, args.spacing, args.out, progress=True)
        print(f"dataset {args.respace} at {' x '.join(f'{s:g}' for s in args.spacing)} mm: {out}")
        return 0
    if not args.inputs or not args.out:
        raise UsageError("--in SRC and --out DATASET are required (or --finalize DATASET, --respace DATASET)")
    with flags(FLAGS, also=("spacing", "ct_window", "suv")):  # a re-run with other settings names them all
        options = HarmonizeOptions(**given(args, OPTIONS), thumbnails=not args.no_thumbnails, nifti=args.nifti,
                                   progress=True)
        summary = harmonize_folder(args.inputs, args.out, options)
    if summary["finalized"]:
        print(f"dataset {args.out}: {summary['n_cases']} cases, {summary['n_quarantined']} quarantined")
    else:
        print(f"shard {args.shard} done; after all shards run: petctfm harmonize --finalize {args.out}")
    return batch_exit_code(summary["n_done"] + summary["n_skipped"], summary["n_failed"])
