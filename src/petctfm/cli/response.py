"""``petctfm response``: treatment response from a baseline and a follow-up ``petctfm predict`` output."""

from __future__ import annotations

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command

API = "petctfm.response.api:assess_response"

EXAMPLES = """
# two prediction folders written by `petctfm predict` (add --organs to predict for PERCIST's liver reference)
petctfm predict --model runs/seg --organs runs/organs --pet t0/SUV.nii.gz --ct t0/CT.nii.gz --out pred/t0
petctfm predict --model runs/seg --organs runs/organs --pet t1/SUV.nii.gz --ct t1/CT.nii.gz --out pred/t1
petctfm response --baseline pred/t0 --followup pred/t1 --out resp/patient1

# study folders (autoPET style: SUV.nii.gz + CT.nii.gz): predicted first into resp/p1/predict/
petctfm response --baseline data/t0 --followup data/t1 --model runs/seg --organs runs/organs --out resp/p1

# DICOM study folders (a PT and a CT series each): also a DICOM-SEG per study and a TID 1500 SR (response_sr.dcm)
petctfm response --baseline dicom/t0 --followup dicom/t1 --model runs/seg --organs runs/organs --out resp/p1

# the PET moved since predict ran (predict keeps only its path): name it
petctfm response --baseline pred/t0 --followup pred/t1 --baseline-pet /data/t0/SUV.nii.gz --out resp/p1
"""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "response",
        help="treatment response (PERCIST 1.0, Deauville, TMTV/TLG change, matched lesions) from two predict outputs",
        description="Register the follow-up PET to the baseline (SimpleITK rigid + affine, Mattes mutual "
        "information), match lesions (matched, new, disappeared, split, merged), and write response.json "
        "(PERCIST 1.0 category, Deauville score, TMTV and TLG change), lesions.csv (one row per lesion group) "
        "and response.png (MIPs side by side, waterfall); for DICOM studies also a DICOM-SEG per study referencing "
        "its own PT instances (lesion groups numbered alike) and a TID 1500 structured report (response_sr.dcm). "
        "BASELINE and FOLLOWUP are `petctfm predict` output folders, or study folders with --model. When both "
        "study dates are known (recorded by predict in summary.json: the DICOM StudyDate or a study.json sidecar) "
        "a follow-up dated before its baseline is refused (exit 3). "
        "See docs/response.md.",
        examples=EXAMPLES)
    p.add_argument("--baseline", required=True, help="`petctfm predict` output folder of the baseline study (or a "
                   "study folder, with --model)")
    p.add_argument("--followup", required=True, help="`petctfm predict` output folder of the follow-up study (or a "
                   "study folder, with --model)")
    p.add_argument("--out", required=True, help="output folder (response.json written last)")
    p.add_argument("--baseline-pet", help="the baseline PET in SUV, or its DICOM PT folder (default: the input named in its "
                   "summary.json)")
    p.add_argument("--followup-pet", help="the follow-up PET in SUV, or its DICOM PT folder (default: the input named in its "
                   "summary.json)")
    p.add_argument("--min-overlap", type=float, action=api_default(API, "min_overlap"),
                   help="overlap (fraction of the smaller lesion) that links two lesions, in (0, 1] (default {default})")
    p.add_argument("--max-distance", type=float, dest="max_distance_mm", action=api_default(API, "max_distance_mm"),
                   help="centroid distance (mm) that pairs lesions without overlap, > 0 (default {default})")
    p.add_argument("--marked", type=float, action=api_default(API, "marked"),
                   help="Deauville 5: lesion SUVmax above this times the liver's, > 1 (default {default})")
    p.add_argument("--model", help="lesion model (a `petctfm finetune` run): predict BASELINE / FOLLOWUP first when "
                   "they are study folders (SUV.nii.gz + CT.nii.gz, or DICOM PT + CT series), into OUT/predict/")
    p.add_argument("--organs", dest="organs_model", help="organ model for that prediction (PERCIST liver reference)")
    p.add_argument("--device", default="auto", help="device for that prediction: auto, cpu, cuda, cuda:N")
    p.add_argument("--no-report", action="store_true", help="skip response.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.response.api import assess_response

    options = given(args, ("min_overlap", "max_distance_mm", "marked"))
    with flags({"max_distance_mm": "--max-distance"}):
        r = assess_response(args.baseline, args.followup, args.out, baseline_pet=args.baseline_pet,
                            followup_pet=args.followup_pet, report=not args.no_report, model=args.model,
                            organs_model=args.organs_model, device=args.device, **options)
    pc, ds = r["percist"], r["deauville"]
    print(f"PERCIST: {pc['category'] or 'none'} ({pc['reason']}); Deauville: {ds['score'] or 'none'} "
          f"({ds['reason']}); TMTV {r['tmtv']['baseline_ml']} -> {r['tmtv']['followup_ml']} ml; "
          f"lesions {r['lesions']}")
    print(f"wrote {args.out}")
    return 0
