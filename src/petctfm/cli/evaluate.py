"""``petctfm evaluate``: segmentation metrics (autoPET style) with bootstrap CIs, breakdowns and comparisons."""

from __future__ import annotations

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command

API = "petctfm.evaluate.report:evaluate_folder"
#: evaluate_folder settings given on the command line (argparse dest -> argument), and their flags.
OPTIONS = {"bootstrap": "n_resamples", "seed": "seed", "connectivity": "connectivity", "detection_iou": "detection_iou"}
FLAGS = {"n_resamples": "--bootstrap"}

EXAMPLES = """
# predictions <case>.nii.gz (or <case>/lesions.nii.gz) against autoPET case folders (<case>/SEG.nii.gz;
# SUV for TLG taken from <case>/SUV.nii.gz); site/tracer/diagnosis breakdowns from DIR/metadata.csv
petctfm evaluate --pred preds/ --gt data/synth/autopet --out reports/eval

# nnU-Net labelsTr as ground truth, explicit manifest and SUV pattern, 2,000 bootstrap resamples
petctfm evaluate --pred preds/ --gt Dataset001_PETCT/labelsTr --manifest meta.csv \\
    --suv 'data/{case}/SUV.nii.gz' --bootstrap 2000 --seed 1 --out reports/eval

# paired comparison of two models (Wilcoxon signed-rank + bootstrap CI of the mean difference)
petctfm evaluate --pred runs/pretrained/preds --compare runs/scratch/preds --gt data/synth/autopet --out cmp

# the test split of a harmonized dataset as ground truth
petctfm evaluate --pred preds/ --gt datasets/synth --split test --out reports/test

# organs: Dice and normalized surface distance per organ (finetune --task organs --predict test output)
petctfm evaluate --organs --pred runs/organs/pred_test --gt datasets/synth --split test --out reports/organs
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "evaluate",
        help="score predicted lesion masks against ground truth (Dice, autoPET FP/FN volume, lesion F1, ...)",
        description="Per case: Dice, IoU, sensitivity, precision, autoPET false-positive and false-negative "
        "volumes (ml, 18-connected components), lesion-wise recall/precision/F1, TMTV and TLG errors. "
        "Negative cases (empty ground truth) follow autoPET: Dice undefined, FP volume counted. Aggregates: "
        "mean with 95% percentile-bootstrap CI, per site/tracer/diagnosis, optional paired comparison. "
        "Writes per_case.csv, summary.csv, summary.md and dice_per_case.png into --out. "
        "Predictions must lie on the ground truth's grid. See docs/evaluate.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--pred", required=True, help="folder of predictions: <case>.nii.gz|.mha|.nrrd or "
                   "<case>/lesions.nii.gz")
    p.add_argument("--gt", required=True, help="ground truth: folder of <case>.nii.gz, autoPET <case>/SEG.nii.gz "
                   "folders, nnU-Net raw folder / labelsTr, or a harmonized dataset")
    p.add_argument("--out", required=True, help="report folder (created)")
    p.add_argument("--suv", help="SUV images for TLG: a folder (<case>.nii.gz or <case>/SUV.nii.gz) or a "
                   "pattern with {case}; default: found next to the ground truth when the layout has it")
    p.add_argument("--manifest", help="CSV with case_id and site/tracer/diagnosis columns for breakdowns "
                   "(default: manifest.csv or metadata.csv next to the ground truth, if any)")
    p.add_argument("--compare", help="a second prediction folder, compared case by case with --pred")
    p.add_argument("--split", help="with a harmonized dataset as --gt: evaluate only this split (e.g. test)")
    p.add_argument("--allow-missing", action="store_true",
                   help="count a ground-truth case without prediction as an empty prediction "
                   "(default: error listing them)")
    p.add_argument("--bootstrap", type=int, metavar="N", action=api_default(API, "n_resamples"),
                   help="bootstrap resamples for the 95%% CIs, >= 0 (default {default}; 0 = no CI)")
    p.add_argument("--seed", type=int, action=api_default(API, "seed"), help="bootstrap seed, >= 0 (default {default})")
    p.add_argument("--connectivity", type=int, choices=(6, 18, 26), action=api_default(API, "connectivity"),
                   help="voxel connectivity of lesions (default {default}, as the autoPET challenge)")
    p.add_argument("--detection-iou", type=float, metavar="T", action=api_default(API, "detection_iou"),
                   help="a lesion counts as detected when the predicted components touching it reach "
                   "IoU > T, T in [0, 1) (default {default} = any overlap, consistent with the autoPET FN volume)")
    org = p.add_argument_group("organs (--organs: organ label maps instead of lesion masks; docs/organs.md)")
    org.add_argument("--organs", action="store_true",
                     help="score organ label maps (<case>.nii.gz or <case>/organs.nii.gz) against organ ground "
                     "truth (dataset organs.npy, <case>/ORGANS.nii.gz or label maps): Dice and normalized surface "
                     "distance per organ with bootstrap CIs, SUVmean agreement when the truth has the SUV image; writes "
                     "organs_per_case.csv, organs_summary.csv/.md")
    org.add_argument("--labels", metavar="ORGANS.json",
                     help="organ name table {name: value} (or an nnU-Net dataset.json); default the dataset's "
                     "organ labels, else petctfm's")
    org.add_argument("--nsd-tolerance", type=float, metavar="MM", default=None,
                     help="normalized surface distance tolerance in mm (default 3)")
    p.set_defaults(func=run)


def run_organs(args) -> int:
    from petctfm.core.errors import UsageError
    from petctfm.evaluate.organ_report import evaluate_organs_folder, write_organ_report
    from petctfm.evaluate.organs import DEFAULT_NSD_TOLERANCE_MM
    from petctfm.io.atomic import ensure_output_dir

    for flag, value in (("--compare", args.compare), ("--suv", args.suv), ("--manifest", args.manifest)):
        if value:
            raise UsageError(f"{flag} {value}: not used with --organs")
    labels = None
    if args.labels:
        from petctfm.io.label_table import read_label_table

        labels = read_label_table(args.labels)
    tol = DEFAULT_NSD_TOLERANCE_MM if args.nsd_tolerance is None else args.nsd_tolerance
    if not tol > 0:
        raise UsageError(f"--nsd-tolerance {args.nsd_tolerance}: must be > 0 mm")
    from petctfm.cli._api import flags, given
    from petctfm.evaluate.report import check_options

    settings = given(args, {"bootstrap": "n_resamples", "seed": "seed"})
    with flags(FLAGS):
        check_options(**settings)
    ensure_output_dir(args.out, "--out", create=False)
    result = evaluate_organs_folder(args.pred, args.gt, labels, split=args.split, nsd_tolerance_mm=tol,
                                    allow_missing=args.allow_missing, **settings)
    paths = write_organ_report(result, args.out)
    defined = [r for r in result["summary"] if r["n_dice"]]
    mean = float(sum(r["dice_mean"] for r in defined) / len(defined)) if defined else float("nan")
    print(f"{len(result['per_case'])} cases, {len(defined)} organs; mean organ Dice {mean:.3f}")
    pooled = result["suv_pooled"]
    if pooled["n_suv"]:
        print(f"SUVmean from predicted organs ({', '.join(pooled['organs'])}): median |rel err| "
              f"{pooled['suv_abs_rel_err_median']:.3f}, {pooled['suv_within_5pct']:.0%} of case-organs within 5%")
    print(f"report: {paths['markdown']}")
    return 0


def run(args) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.evaluate.report import check_options, evaluate_folder, write_report
    from petctfm.io.atomic import ensure_output_dir

    if args.organs:
        return run_organs(args)
    for flag, value in (("--labels", args.labels), ("--nsd-tolerance", args.nsd_tolerance)):
        if value is not None:
            from petctfm.core.errors import UsageError

            raise UsageError(f"{flag} {value}: only with --organs")
    settings = given(args, OPTIONS)
    with flags(FLAGS):
        check_options(**settings)  # the settings, then the output, before any case is read
        ensure_output_dir(args.out, "--out", create=False)
        result = evaluate_folder(args.pred, args.gt, suv=args.suv, manifest=args.manifest, compare=args.compare,
                                 allow_missing=args.allow_missing, split=args.split, progress=True, **settings)
    write_report(result, args.out)
    overall = {s["metric"]: s for s in result["summary"] if s["group_by"] == "all"}
    d = overall["dice"]
    print(f"{len(result['cases'])} cases; Dice {d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] "
          f"(n={d['n']}); FP volume {overall['fp_volume_ml']['mean']:.2f} ml; "
          f"FN volume {overall['fn_volume_ml']['mean']:.2f} ml")
    print(f"report: {args.out}/summary.md")
    return 0
