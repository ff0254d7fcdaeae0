"""``petctfm segment``: promptable segmentation of one PET(/CT) study from a prompt file (docs/promptable.md)."""

from __future__ import annotations

import argparse

from petctfm.cli._api import api_default

SEGMENT = "petctfm.methods.promptable.segment:segment"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment objects from clicks / boxes (promptable model)",
                       description="Apply the prompts of a JSON file (points, boxes; voxel, LPS or RAS mm) to one "
                       "study; writes mask.nii.gz on the input PET grid, objects.csv and summary.json. Example: "
                       "petctfm segment --model runs/prompt --pet SUV.nii.gz --prompts prompts.json --out seg/")
    p.add_argument("--model", required=True, help="prompt-train run folder or model.safetensors")
    p.add_argument("--pet", required=True, help="PET image in SUV (NIfTI, MHA, NRRD), or a DICOM PT series folder "
                   "(SUV from the tags; then give --ct CT_FOLDER too, and mask.seg.dcm, a DICOM-SEG with one segment per object, is written)")
    p.add_argument("--ct", help="CT image or DICOM CT folder (needed by PET+CT models; resampled onto the PET grid)")
    p.add_argument("--prompts", required=True, help="prompt file (JSON, see docs/promptable.md)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--start-from", help="mask / label map on the PET grid to correct (e.g. petctfm predict's)")
    p.add_argument("--device", action=api_default(SEGMENT, "device"), help="cpu, cuda, cuda:N (default {default})")
    p.add_argument("--overwrite", action="store_true", help="a later object may take an earlier object's voxels")
    p.add_argument("--max-zoom", type=float, action=api_default(SEGMENT, "max_zoom"),
                   help="auto-zoom limit (crop side x this at most), >= 1 (default {default}; 1 = off)")
    p.add_argument("--components", choices=("all", "prompted"), action=api_default(SEGMENT, "components"),
                   help="prompted: drop predicted components that no positive click or box reaches; "
                   "all: the decoder's mask as it is (default {default})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from petctfm.cli._api import given
    from petctfm.methods.promptable.segment import check_options, segment

    options = given(args, ("device", "max_zoom", "components"))
    check_options(**{k: v for k, v in options.items() if k != "device"})  # before any image or the model is read
    pet, ct, pt_datasets = args.pet, args.ct, None
    if Path(args.pet).is_dir():  # DICOM in: read as petctfm predict does (SUV from the PT tags), DICOM-SEG out
        from petctfm.core.errors import UsageError
        from petctfm.predict.predictor import read
        from petctfm.predict.sources import source_from_files

        if not args.ct:
            raise UsageError(f"--pet {args.pet} is a DICOM folder: give --ct CT_FOLDER too (as petctfm predict)")
        images, pt_datasets = read(source_from_files(args.pet, args.ct))
        pet, ct = images["suv"], images["ct"]
    s = segment(args.model, pet, args.prompts, args.out, ct=ct, start_from=args.start_from, overwrite=args.overwrite,
                pt_datasets=pt_datasets, pet_name=args.pet, **options)
    for r in s["objects"]:
        print(f"object {r['object']} {r['name']}: {r['volume_ml']:.1f} ml, SUVmax {r['suv_max']:.2f}, TLG {r['tlg']:.1f}")
    print(f"wrote {args.out} ({s['s_per_prompt']:.2f} s per prompt)")
    return 0
