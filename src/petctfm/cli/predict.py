"""``petctfm predict``: PET/CT in, lesion masks and a quantitative report out."""

from __future__ import annotations

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command
from petctfm.core.errors import batch_exit_code

LOAD = "petctfm.predict.predictor:Predictor.load"

EXAMPLES = """
# one study from NIfTI files (PET in SUV) -> OUT/lesions.nii.gz, lesions.csv, summary.json, report.png
petctfm predict --model runs/ft_joint --pet case/SUV.nii.gz --ct case/CT.nii.gz --out pred/case

# one study from DICOM series folders (SUV from the tags) -> also OUT/lesions.seg.dcm (DICOM-SEG)
petctfm predict --model runs/ft_joint/best/model.safetensors --pet study/PT --ct study/CT --out pred/study

# every case of an autoPET / nnU-Net / DICOM folder, flip TTA (8 flips), one subfolder per case
petctfm predict --model runs/ft_joint --in data/synth/autopet --out pred/autopet --tta

# any files anywhere: a CSV list with columns case_id,pet,ct (one output subfolder per row)
petctfm predict --model runs/ft_joint --batch cases.csv --out pred/list

# lesions and organs (organs.nii.gz, organs.csv with SUV per organ and the PERCIST liver / blood-pool references)
petctfm predict --model runs/ft_joint --organs runs/organs --pet study/PT --ct study/CT --out pred/study

# organs only
petctfm predict --organs runs/organs --pet case/SUV.nii.gz --ct case/CT.nii.gz --out pred/organs

# quick look: 4 mm in-plane, no TTA, lower overlap, stricter threshold
petctfm predict --model runs/ft_joint --in data/new --out pred/new --fast --overlap 0.25 --threshold 0.6
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "predict",
        help="segment lesions on new PET/CT studies: mask, DICOM-SEG, lesion table, TMTV/TLG, report",
        description="Read a PET/CT study (NIfTI/MHA/NRRD files or DICOM series; SUV from the tags as harmonize "
        "does), harmonize it as the model's training data was, run sliding-window inference (optional flip TTA), "
        "bring the lesion probability back onto the input PET grid and threshold it there. Writes per case "
        "lesions.nii.gz (input PET geometry), lesions.seg.dcm (DICOM input), lesions.csv (per lesion: volume, "
        "SUVmax/mean/peak, TLG, centroid, region), summary.json (TMTV, TLG, timings) and report.png. Folder mode: "
        "one subfolder per case, failed cases in OUT/failed.csv, finished cases skipped unless --overwrite (only "
        "when their summary.json was made from the same input and model; else redone); exit 0 all done, 5 some "
        "failed, 3 all failed, 4 when --out cannot be written (docs/reliability.md); --in reads no metadata CSV; "
        "impossible inputs (a PET in Bq/ml, PET and CT swapped, an all-zero PET, a CT of another body) are "
        "refused, unusual ones flagged in summary.json. Device: CUDA when available (bf16), else CPU. See docs/predict.md.",
        examples=EXAMPLES,
    )
    p.add_argument("--model", metavar="RUN_OR_CKPT",
                   help="fine-tuned segmentation run folder (its best checkpoint) or model.safetensors; an organ "
                   "model ('finetune --task organs') writes the organ outputs only")
    p.add_argument("--organs", metavar="RUN_OR_CKPT",
                   help="an organ model run beside the lesion model (or alone): organs.nii.gz, organs.csv (SUV per "
                   "organ with lesion voxels excluded, PERCIST liver and blood-pool references), organs.seg.dcm for "
                   "DICOM, organ contours in report.png (docs/organs.md)")
    src = p.add_argument_group("input (either --pet and --ct, or --in, or --batch)")
    src.add_argument("--pet", help="PET image in SUV (NIfTI/MHA/NRRD) or a DICOM PT series folder")
    src.add_argument("--ct", help="CT image in HU or a DICOM CT series folder")
    src.add_argument("--in", dest="folder", metavar="FOLDER",
                     help="a folder of cases (autoPET, nnU-Net raw, DICOM or paired files; see docs/data-layouts.md)")
    src.add_argument("--batch", metavar="LIST.csv",
                     help="a CSV with a header row and columns pet, ct (files or DICOM folders, relative to the "
                     "list's folder) and optional case_id: one output subfolder per row, as --in")
    src.add_argument("--format", default="auto", choices=("auto", "autopet", "nnunet", "dicom", "pairs"),
                     help="layout of --in (default: detected)")
    p.add_argument("--out", required=True, help="output folder (one study) or parent of one subfolder per case")
    p.add_argument("--tta", type=int, nargs="?", const=8, choices=(4, 8), metavar="N",
                   help="flip test-time augmentation: average probabilities over N flips (8 = all flip "
                   "combinations of the 3 axes, the default when N is omitted; 4 = identity + single-axis flips)")
    p.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (default: the model's, 0.5)")
    p.add_argument("--threshold", type=float, metavar="T", action=api_default(LOAD, "threshold"),
                   help="lesion if probability > T, T in (0, 1) (default {default})")
    p.add_argument("--fast", action="store_true",
                   help="twice the model's in-plane spacing (e.g. 4x4x3 mm): ~4x fewer voxels, misses small lesions")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1")
    p.add_argument("--sw-batch", type=int, metavar="B",
                   help="sliding-window batch size (default 8 on CUDA, the model's (2) on CPU)")
    p.add_argument("--overwrite", action="store_true", help="redo cases that already have summary.json")
    p.add_argument("--no-report", action="store_true", help="skip report.png (saves ~1 s per case)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _organ_text(s: dict) -> str:
    o = s.get("organs")
    if not o:
        return ""
    refs = [f"{name} {o[k]:.2f}" for name, k in (("liver ref SUVmean", "liver_reference_suv_mean"),
                                                  ("blood pool SUVmean", "blood_pool_reference_suv_mean"))
            if o.get(k) is not None]
    return f"{len(o['found'])} organ(s)" + (f" ({', '.join(refs)})" if refs else "")


def _line(s: dict) -> str:
    t = s["timings_s"]
    if s.get("model", {}).get("task") == "organs":
        return (f"{s['case']}: {_organ_text(s)}; {t['total']:.1f} s"
                + (f"; FLAGS: {'; '.join(s['flags'])}" if s.get("flags") else ""))
    return (f"{s['case']}: {s['lesion_count']} lesion(s), TMTV {s['tmtv_ml']:.1f} ml, TLG "
            f"{(s['total_tlg'] or 0):.1f}, SUVmax {s['suv_max'] if s['suv_max'] is not None else 'n/a'}"
            + (f", {_organ_text(s)}" if s.get("organs") else "")
            + f"; {t['total']:.1f} s (inference {t['inference']:.1f} s)"
            + (f"; FLAGS: {'; '.join(s['flags'])}" if s.get("flags") else ""))


#: Predictor.load arguments whose flag is not ``--argument-name``.
FLAGS = {"sw_batch_size": "--sw-batch"}


def run(args) -> int:
    from pathlib import Path

    from petctfm.cli._api import flags, given
    from petctfm.core.errors import UsageError
    from petctfm.io.atomic import ensure_output_dir
    from petctfm.predict.batch import predict_folder
    from petctfm.predict.predictor import Predictor, check_options, predict_one
    from petctfm.predict.sources import source_from_files, sources_from_folder, sources_from_list

    inputs = [name for name, v in (("--pet/--ct", args.pet or args.ct), ("--in", args.folder),
                                   ("--batch", args.batch)) if v]
    if not (args.model or args.organs):
        raise UsageError("give --model RUN (a lesion or organ model) and/or --organs RUN (an organ model)")
    if len(inputs) > 1:
        raise UsageError(f"give one input: {' or '.join(inputs)}, not both")
    if not inputs or (inputs == ["--pet/--ct"] and not (args.pet and args.ct)):
        raise UsageError("give --pet PET and --ct CT (files or DICOM folders), --in FOLDER or --batch LIST.csv")
    settings = given(args, {"overlap": "overlap", "tta": "tta", "threshold": "threshold", "sw_batch": "sw_batch_size"})
    with flags(FLAGS):
        check_options(**settings)  # the settings, then the output: before the inputs and the model
    ensure_output_dir(args.out, "--out", create=False)
    if args.folder:
        cases = sources_from_folder(args.folder, args.format, exclude=[args.out])  # errors before the model loads
    elif args.batch:
        cases = sources_from_list(args.batch)
    else:
        case = source_from_files(args.pet, args.ct)
    with flags(FLAGS):
        if args.model:
            predictor = Predictor.load(args.model, args.device, fast=args.fast, organs=args.organs, **settings)
        else:  # an organ model alone
            predictor = Predictor.load(args.organs, args.device, fast=args.fast, **settings)
            if not predictor.organ_only:
                from petctfm.core.errors import InputError

                raise InputError(f"{predictor.path}: not an organ model (trained with task lesions); --organs "
                                 "takes a 'petctfm finetune --task organs' run")
    if not (args.folder or args.batch):
        out = Path(args.out)
        if (out / "summary.json").is_file() and not args.overwrite:
            from petctfm.predict.identity import stale_reason

            why = stale_reason(out / "summary.json", case, predictor.describe())
            if why is None:
                print(f"{out}/summary.json exists for this input and model: nothing to do (use --overwrite to redo)")
                return 0
            print(f"{out}/summary.json exists but {why}: predicting again")
        print(_line(predict_one(case, predictor, out, report=not args.no_report)))
        print(f"outputs: {out}")
        return 0
    res = predict_folder(cases, predictor, args.out, overwrite=args.overwrite, report=not args.no_report,
                         progress=not args.no_progress)
    for r in res["redone"]:
        print(f"{r['case']}: predicted again: the stored summary.json did not match ({r['reason']})")
    print(f"{len(res['done'])} case(s) predicted, {len(res['skipped'])} already done, {len(res['failed'])} failed "
          f"(device {predictor.device}); per-case summaries: {args.out}/cases.csv")
    for f in res["failed"]:
        print(f"failed: {f['case']}: {f['reason']}")
    if res["failed"]:
        print(f"failed cases listed in {args.out}/failed.csv")
    return batch_exit_code(len(res["done"]) + len(res["skipped"]), len(res["failed"]))
