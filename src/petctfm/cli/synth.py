"""``petctfm synth``: write synthetic whole-body PET/CT cases in autoPET, nnU-Net and DICOM layouts."""

from __future__ import annotations

import argparse

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command

SYNTH = "petctfm.synth.writers:synthesize"

EXAMPLES = """
# two tiny cases, all three layouts, for a quick look (seconds)
petctfm synth --out data/synth_tiny --cases 2 --seed 0 --size tiny

# 100 CPU-demo cases (about 4 mm voxels) on 2 cores, NIfTI layouts only
petctfm synth --out data/synth --cases 100 --seed 0 --size small --formats autopet,nnunet --workers 2

# PSMA only, from two sites, as DICOM
petctfm synth --out data/psma --cases 10 --seed 1 --tracers psma --sites north_valley,harbor_city --formats dicom

# 8 baseline + follow-up pairs (CMR, PMR, SMD, PMD twice each) with response_truth.json, for petctfm response
petctfm synth --out data/pairs --cases 8 --seed 0 --size tiny --followup

# 150 FDG phantoms whose organ uptake has a known correlation structure (for experiment metabolic-network)
petctfm synth --out data/metab --cases 150 --seed 0 --size tiny --tracers fdg --formats autopet --metabolic-structure
# lesions also inside the brain, kidneys, heart and bladder (to measure what organ-based post-processing removes)
petctfm synth --out data/om --cases 48 --seed 11 --size small --formats autopet --organ-metastases
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers) -> None:
    p = add_command(
        subparsers,
        "synth",
        help="write synthetic whole-body PET/CT cases (autoPET, nnU-Net, DICOM)",
        description=(
            "Generate N synthetic multi-center PET/CT cases (deterministic for a seed) and write them as "
            "OUT/autopet/<case>/*.nii.gz, OUT/nnunet/ (nnU-Net v2 raw), OUT/dicom/<case>/{CT,PT,SEG}/ and "
            "OUT/metadata.csv. All data is synthetic; the patient identifiers in the DICOM files are fake."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--cases", required=True, type=int, metavar="N", help="number of cases")
    p.add_argument("--seed", required=True, type=int, metavar="S", help="random seed (same seed => same bytes)")
    p.add_argument("--size", metavar="SIZE", action=api_default(SYNTH, "size"),
                   help="tiny | small | full (default: {default})")
    p.add_argument("--sites", type=_csv, default=None, metavar="A,B,...",
                   help="restrict to these site names (default: all sites)")
    p.add_argument("--tracers", type=_csv, default=None, metavar="fdg,psma", help="tracers (default: both)")
    p.add_argument("--formats", type=_csv, metavar="autopet,nnunet,dicom", action=api_default(SYNTH, "formats"),
                   help="layouts to write (default: {default})")
    p.add_argument("--workers", type=int, metavar="K", action=api_default(SYNTH, "workers"),
                   help="worker processes, >= 1 (default: {default})")
    p.add_argument("--metabolic-structure", action="store_true",
                   help="organ uptake follows patient-level latent factors (a known organ correlation matrix and a "
                   "lymphoma-vs-reference difference, written to OUT/organ_covariance.json; docs/synthetic-data.md); "
                   "off by default, so existing seeds give the same bytes")
    p.add_argument("--organ-metastases", action="store_true",
                   help="advanced cases may also get lesions inside the brain, kidneys, heart or bladder (sites the "
                   "default phantoms never use; enriched rates, docs/synthetic-data.md), counted per case in "
                   "metadata.csv (organ_metastases); off by default, so existing seeds give the same bytes")
    p.add_argument("--extranodal-sites", action="store_true",
                   help="advanced cases may also get adrenal, pleural or peritoneal lesions (sites the default "
                   "phantoms never use; docs/synthetic-data.md), counted per case in metadata.csv "
                   "(extranodal_lesions); off by default, so existing seeds give the same bytes")
    p.add_argument("--followup", action="store_true",
                   help="write N baseline + follow-up pairs instead (the baseline is the normal case; the follow-up "
                   "has its own pose, weight, scanner site and a drawn PERCIST response, CMR/PMR/SMD/PMD in turn) as "
                   "OUT/pairs/<patient>/{baseline,followup}/ autoPET-style study folders + response_truth.json "
                   "(docs/response.md); --formats does not apply")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from petctfm.cli._api import flags, given
    from petctfm.synth.writers import FORMATS, check_formats, synthesize

    if not getattr(args, "verbose", False):  # highdicom logs every copied module at INFO
        logging.getLogger("highdicom").setLevel(logging.WARNING)

    options = given(args, ("size", "sites", "tracers", "formats", "workers"))
    if getattr(args, "followup", False):
        return _run_followup(args, options)
    with flags({"n_cases": "--cases"}):
        rows = synthesize(args.out, n_cases=args.cases, seed=args.seed, progress=not args.no_progress,
                          metabolic_structure=args.metabolic_structure,
                          organ_metastases=getattr(args, "organ_metastases", False),
                          extranodal_sites=getattr(args, "extranodal_sites", False), **options)
    formats = check_formats(options.get("formats") or FORMATS)
    n_pos = sum(1 for r in rows if str(r.get("n_lesions", "")) not in ("", "0"))
    print(f"wrote {len(rows)} cases ({n_pos} with lesions) in {', '.join(formats)} to {args.out}; "
          f"metadata: {args.out}/metadata.csv" + (f"; planted organ covariance: {args.out}/organ_covariance.json"
                                                   if args.metabolic_structure else ""))
    return 0


def _run_followup(args: argparse.Namespace, options: dict) -> int:
    from petctfm.cli._api import flags
    from petctfm.core.errors import UsageError
    from petctfm.synth.followup import PAIRS_CSV, PAIRS_DIR, synthesize_pairs

    if "formats" in options:
        raise UsageError("--formats does not apply to --followup (it writes OUT/pairs/, autoPET-style)",
                         arg="formats")
    if getattr(args, "organ_metastases", False):
        raise UsageError("--organ-metastases does not apply to --followup (its pairs use the default lesion sites)",
                         arg="organ_metastases")
    if getattr(args, "extranodal_sites", False):
        raise UsageError("--extranodal-sites does not apply to --followup (its pairs use the default lesion sites)",
                         arg="extranodal_sites")
    with flags({"n_cases": "--cases"}):
        rows = synthesize_pairs(args.out, n_pairs=args.cases, seed=args.seed, progress=not args.no_progress,
                                metabolic_structure=args.metabolic_structure, **options)
    counts = {c: sum(r["category"] == c for r in rows) for c in ("CMR", "PMR", "SMD", "PMD")}
    print(f"wrote {len(rows)} baseline + follow-up pairs ({', '.join(f'{k} {v}' for k, v in counts.items())}) to "
          f"{args.out}/{PAIRS_DIR}/; list: {args.out}/{PAIRS_DIR}/{PAIRS_CSV}")
    return 0
