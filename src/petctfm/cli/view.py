"""``petctfm view``: one PNG per case: PET MIP + fused coronal and axial PET/CT with contours."""

from __future__ import annotations

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command

RENDER = "petctfm.viz.render:render_case"

EXAMPLES = """
# an autoPET case folder (SUV.nii.gz, CTres.nii.gz or CT.nii.gz, SEG.nii.gz, ORGANS.nii.gz)
petctfm view data/synth/autopet/PETCT_0000 --out PETCT_0000.png

# any PET (in SUV) + CT pair, NIfTI/MHA/NRRD, with a lesion mask
petctfm view suv.nii.gz ct.mha --seg lesions.nii.gz --out case.png

# ground truth (green) and a model's prediction (magenta), SUV window 0-8, custom title
petctfm view data/synth/autopet/PETCT_0003 --pred preds/PETCT_0003.nii.gz --suv-max 8 \\
    --title "PETCT_0003 prediction" --out PETCT_0003_pred.png

# an nnU-Net v2 raw case (channels from dataset.json; labelsTr/<id> as SEG)
petctfm view data/synth/nnunet/Dataset001_PETCT/imagesTr/PETCT_0000_0000.nii.gz --out nn.png
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "view",
        help="render a PET/CT case as a PNG (MIP + fused slices + contours)",
        description="Render one PET/CT case: PET maximum-intensity projection (inverted grey, SUV 0..max), "
        "coronal and axial fused PET-on-CT slices through the hottest lesion (or the body centre), "
        "lesion/prediction/organ contours. Radiological convention: patient's right on image left, head "
        "and anterior up. The PNG is 16x7 inches (1600x700 px at --dpi 100). See docs/view.md.",
        examples=EXAMPLES,
    )
    p.add_argument("inputs", nargs="+", metavar="CASE_DIR_OR_FILES",
                   help="autoPET case folder, nnU-Net dataset/channel file, or PET(SUV) + CT image files")
    p.add_argument("--out", required=True, help="output PNG path (written atomically)")
    p.add_argument("--seg", help="lesion mask (overrides SEG from the folder)")
    p.add_argument("--pred", help="predicted lesion mask, drawn in magenta")
    p.add_argument("--organs", help="organ label map (overrides ORGANS from the folder)")
    p.add_argument("--suv-max", type=float, action=api_default(RENDER, "suv_max"),
                   help="upper end of the SUV window, > 0 (default {default})")
    p.add_argument("--title", help="figure title (default: case id, site, tracer from metadata.csv)")
    p.add_argument("--dpi", type=int, action=api_default(RENDER, "dpi"),
                   help="dots per inch, 10-600 (default {default}: 1600x700 px)")
    p.set_defaults(func=run)


def run(args) -> int:
    from petctfm.cli._api import given
    from petctfm.io.images import read_image
    from petctfm.io.layouts.read import describe_case, read_case_images
    from petctfm.viz.render import check_options, render_case

    options = given(args, ("suv_max", "dpi"))
    check_options(**options)  # before any image is read
    images = read_case_images(args.inputs)
    for key in ("seg", "pred", "organs"):
        path = getattr(args, key)
        if path:
            images[key] = read_image(path)
    title = args.title if args.title is not None else describe_case(args.inputs)
    render_case(
        images["pet"], images.get("ct"), seg=images.get("seg"), organs=images.get("organs"),
        pred=images.get("pred"), title=title, out_png=args.out, **options,
    )
    print(f"wrote {args.out}")
    return 0
