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

# studies from a PACS by DICOMweb (credentials from $PETCTFM_DICOMWEB_USER/_PASSWORD, _TOKEN or a file),
# results (DICOM-SEG, lesion SR, report picture) stored back into each study; docs/pacs.md
petctfm predict --model runs/ft_joint --dicomweb https://pacs.example.org/dicom-web --study 1.2.3.4 --out pred/pacs --push
petctfm predict --model runs/ft_joint --dicomweb http://127.0.0.1:8042/dicom-web --query date=20240101-20240131 --out pred/jan

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
    src = p.add_argument_group("input (either --pet and --ct, or --in, or --batch, or --dicomweb)")
    src.add_argument("--pet", help="PET image in SUV (NIfTI/MHA/NRRD) or a DICOM PT series folder")
    src.add_argument("--ct", help="CT image in HU or a DICOM CT series folder")
    src.add_argument("--in", dest="folder", metavar="FOLDER",
                     help="a folder of cases (autoPET, nnU-Net raw, DICOM or paired files; see docs/data-layouts.md)")
    src.add_argument("--batch", metavar="LIST.csv",
                     help="a CSV with a header row and columns pet, ct (files or DICOM folders, relative to the "
                     "list's folder) and optional case_id: one output subfolder per row, as --in")
    web = p.add_argument_group("DICOMweb (docs/pacs.md; pip install 'petctfm[pacs]')")
    web.add_argument("--dicomweb", metavar="URL", help="a DICOMweb service (QIDO-RS, WADO-RS, STOW-RS), e.g. "
                     "http://127.0.0.1:8042/dicom-web (Orthanc); credentials only from $PETCTFM_DICOMWEB_TOKEN, "
                     "$PETCTFM_DICOMWEB_USER + $PETCTFM_DICOMWEB_PASSWORD or --dicomweb-auth FILE")
    web.add_argument("--study", action="append", metavar="UID", help="a Study Instance UID to predict (repeatable)")
    web.add_argument("--query", action="append", metavar="KEY=VALUE", help="QIDO filter for the studies to "
                     "predict (repeatable): modality=PT (the default), date=YYYYMMDD or YYYYMMDD-YYYYMMDD, "
                     "patient=ID")
    web.add_argument("--push", action="store_true", help="store the results back into each study by STOW-RS: "
                     "the DICOM-SEG, the lesion table as a TID 1500 SR, report.png as a Secondary Capture; a study "
                     "holding this model's result for its PT series already is skipped")
    web.add_argument("--dicomweb-auth", metavar="FILE", help="JSON file with {\"token\": ...} or {\"user\": ..., "
                     "\"password\": ...} (keep it chmod 600)")
    web.add_argument("--dicomweb-ca", metavar="PEM", help="CA bundle to verify the server's TLS certificate "
                     "(default: the system's; verification cannot be switched off)")
    src.add_argument("--format", default="auto", choices=("auto", "autopet", "nnunet", "dicom", "pairs"),
                     help="layout of --in (default: detected)")
    p.add_argument("--out", required=True, help="output folder (one study) or parent of one subfolder per case")
    p.add_argument("--tta", type=int, nargs="?", const=8, choices=(4, 8), metavar="N",
                   help="flip test-time augmentation: average probabilities over N flips (8 = all flip "
                   "combinations of the 3 axes, the default when N is omitted; 4 = identity + single-axis flips)")
    p.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (default: the model's, 0.5)")
    p.add_argument("--threshold", type=float, metavar="T", action=api_default(LOAD, "threshold"),
                   help="lesion if probability > T, T in (0, 1) (default {default})")
    p.add_argument("--suppress-organs", metavar="NAMES",
                   help="comma-separated organs (e.g. heart,brain,bladder,kidney_left,kidney_right): lesion "
                   "components mostly inside them are removed; the organs of --organs MODEL when given, else those "
                   "the lesion model predicts itself (auxiliary organ classes); 'none': off (default: the model's "
                   "config; docs/predict.md)")
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
                                   ("--batch", args.batch), ("--dicomweb", args.dicomweb)) if v]
    if not (args.model or args.organs):
        raise UsageError("give --model RUN (a lesion or organ model) and/or --organs RUN (an organ model)")
    if len(inputs) > 1:
        raise UsageError(f"give one input: {' or '.join(inputs)}, not both")
    if not inputs or (inputs == ["--pet/--ct"] and not (args.pet and args.ct)):
        raise UsageError("give --pet PET and --ct CT (files or DICOM folders), --in FOLDER, --batch LIST.csv or "
                         "--dicomweb URL")
    web_only = [f for f, v in (("--study", args.study), ("--query", args.query), ("--push", args.push),
                               ("--dicomweb-auth", args.dicomweb_auth), ("--dicomweb-ca", args.dicomweb_ca)) if v]
    if web_only and not args.dicomweb:
        raise UsageError(f"{web_only[0]} goes with --dicomweb URL")
    if args.dicomweb and bool(args.study) == bool(args.query):
        raise UsageError("with --dicomweb give the studies: --study UID (repeatable) or --query KEY=VALUE, not both")
    settings = given(args, {"overlap": "overlap", "tta": "tta", "threshold": "threshold", "sw_batch": "sw_batch_size"})
    with flags(FLAGS):
        check_options(**settings)  # the settings, then the output: before the inputs and the model
    if args.suppress_organs is not None:
        names = [n.strip() for n in args.suppress_organs.split(",") if n.strip()]
        if not names:
            raise UsageError("--suppress-organs takes organ names (comma-separated) or 'none'")
        settings["suppress_organs"] = [] if names == ["none"] else names
    ensure_output_dir(args.out, "--out", create=False)
    if args.dicomweb:
        return _run_dicomweb(args, settings)
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


def _run_dicomweb(args, settings: dict) -> int:
    """``--dicomweb URL``: the studies (given or queried), predicted, with ``--push`` stored back (docs/pacs.md)."""
    import importlib.util

    from petctfm.cli._api import flags
    from petctfm.core.errors import UsageError

    if importlib.util.find_spec("dicomweb_client") is None:
        raise UsageError("--dicomweb needs dicomweb-client (not installed): pip install 'petctfm[pacs]'")
    from petctfm.io.dicomweb import check_url, connect
    from petctfm.predict.pacs import find_studies, parse_query, predict_dicomweb
    from petctfm.predict.predictor import Predictor

    with flags(FLAGS):
        check_url(args.dicomweb)
        if args.query:
            parse_query(args.query)  # a malformed filter before anything is loaded
    web = connect(args.dicomweb, auth_file=args.dicomweb_auth, ca_bundle=args.dicomweb_ca)
    studies = list(args.study) if args.study else find_studies(web, args.query)
    if not studies:
        print(f"no study on {web.url} matches {' '.join(args.query)}")
        return 0
    with flags(FLAGS):
        predictor = Predictor.load(args.model or args.organs, args.device, fast=args.fast,
                                   organs=args.organs if args.model else None, **settings)
    res = predict_dicomweb(web, studies, predictor, args.out, push=args.push, report=not args.no_report, echo=print)
    print(f"{len(res['done'])} study(ies) predicted, {len(res['already'])} already in the PACS, "
          f"{len(res['failed'])} failed (device {predictor.device}); per-study summaries: {args.out}/cases.csv")
    if res["failed"]:
        print(f"failed studies listed in {args.out}/failed.csv")
    return batch_exit_code(len(res["done"]) + len(res["already"]), len(res["failed"]))
