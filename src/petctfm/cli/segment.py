"""``petctfm segment``: promptable segmentation of one PET(/CT) study from a prompt file (docs/promptable.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment objects from clicks / boxes (promptable model)",
                       description="Apply the prompts of a JSON file (points, boxes; voxel, LPS or RAS mm) to one "
                       "study; writes mask.nii.gz on the input PET grid, objects.csv and summary.json. Example: "
                       "petctfm segment --model runs/prompt --pet SUV.nii.gz --prompts prompts.json --out seg/")
    p.add_argument("--model", required=True, help="prompt-train run folder or model.safetensors")
    p.add_argument("--pet", required=True, help="PET image in SUV (NIfTI, MHA, NRRD)")
    p.add_argument("--ct", help="CT image (needed by PET+CT models; resampled onto the PET grid)")
    p.add_argument("--prompts", required=True, help="prompt file (JSON, see docs/promptable.md)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--start-from", help="mask / label map on the PET grid to correct (e.g. petctfm predict's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="a later object may take an earlier object's voxels")
    p.add_argument("--max-zoom", type=float, default=4.0, help="auto-zoom limit (crop side x this at most)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petctfm.methods.promptable.segment import segment

    s = segment(args.model, args.pet, args.prompts, args.out, ct=args.ct, start_from=args.start_from,
                device=args.device, overwrite=args.overwrite, max_zoom=args.max_zoom)
    for r in s["objects"]:
        print(f"object {r['object']} {r['name']}: {r['volume_ml']:.1f} ml, SUVmax {r['suv_max']:.2f}, TLG {r['tlg']:.1f}")
    print(f"wrote {args.out} ({s['s_per_prompt']:.2f} s per prompt)")
    return 0
