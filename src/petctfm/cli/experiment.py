"""``petctfm experiment <name>``: experiments that combine several commands into one result.

Each experiment is a sub-subcommand registered in :data:`EXPERIMENTS` (name -> ``register(subparsers)``), so
new experiments are added without touching the others (``metabolic-network``:
:func:`petctfm.experiments.metabolic_network.run.run_metabolic_network`). ``label-efficiency``:
:func:`petctfm.experiments.label_efficiency.run.run_label_efficiency`; ``fratmae-ablation``:
:func:`petctfm.experiments.fratmae_ablation.run.run_fratmae_ablation`. Argument parsing only.
"""

from __future__ import annotations

import argparse
import sys

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command
from petctfm.core.errors import ExitCode

LE = "petctfm.experiments.label_efficiency.run:run_label_efficiency"
FRAT = "petctfm.experiments.fratmae_ablation.run:run_fratmae_ablation"
INTER = "petctfm.experiments.interactive.run:run_interactive"

LABEL_EFFICIENCY_EXAMPLES = """
# the seed experiment: pretrained vs scratch at 10/20/40/100 % of the labels, 3 seeds, 5-shot probes
petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae_base --out exp/label_eff \\
    --seeds 0,1,2 --preset gpu

# ... with the separated (PET-only + CT-only) probe; rerunning skips finished runs
petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae_base --out exp/label_eff \\
    --seeds 0,1,2 --preset gpu --separated runs/mae_pet runs/mae_ct

# exactly three runs (what 'petctfm demo' does), 90 s of fine-tuning each, no probes
petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae_tiny --out exp/demo \\
    --runs pretrained:10,scratch:10,scratch:100 --preset tiny --max-time 90 --probe-kshot 0
"""


def _register_label_efficiency(sub) -> None:
    p = add_command(
        sub, "label-efficiency",
        help="pretrained vs scratch fine-tuning at several label fractions (+ k-shot probes), test Dice with CIs",
        description="Fine-tune the pretrained encoder and the same network from scratch on each stored label "
        "fraction (default 10, 20, 40, 100 %) with one or more seeds, plus k-shot linear probes of the joint "
        "encoder and (with --separated) of PET-only + CT-only encoders. Every run predicts the test split and "
        "is evaluated (per-case metrics in RUN/eval_test). Writes results.csv, results.md (Dice with 95% "
        "bootstrap CIs, paired Wilcoxon tests) and label_efficiency.png. Resumable: finished runs "
        "(RUN/done.json) are skipped, a killed fine-tuning run continues. See docs/label-efficiency.md.",
        examples=LABEL_EFFICIENCY_EXAMPLES,
    )
    _add_label_efficiency_arguments(p)
    p.set_defaults(func=_run_label_efficiency)


def _add_label_efficiency_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's command-line options (used by ``petctfm experiment label-efficiency``)."""
    from petctfm.experiments.label_efficiency.plan import PROBE_STEPS
    from petctfm.methods.segmentation.presets import PRESETS

    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--pretrained", required=True, metavar="RUN", help="joint pretraining run folder or checkpoint")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--fractions", metavar="P,P,...", action=api_default(LE, "fractions"),
                   help="stored label fractions in percent, each in (0, 100] (default {default})")
    p.add_argument("--seeds", metavar="S,S,...", action=api_default(LE, "seeds"),
                   help="seeds, each >= 0 (default {default}); e.g. 0,1,2")
    p.add_argument("--arms", metavar="A,A", action=api_default(LE, "arms"),
                   help="pretrained and/or scratch (default {default})")
    p.add_argument("--runs", metavar="ARM:P,...",
                   help="explicit runs instead of arms x fractions, e.g. pretrained:10,scratch:10,scratch:100")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="fine-tuning preset (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--probe-kshot", type=int, metavar="K", action=api_default(LE, "probe_kshot"),
                   help="k of the linear probes (0 = no probes; default {default})")
    p.add_argument("--probe-steps", type=int, default=None, metavar="N",
                   help=f"probe head steps (default per preset: {PROBE_STEPS})")
    p.add_argument("--separated", nargs=2, metavar=("PET_RUN", "CT_RUN"),
                   help="PET-only and CT-only pretraining runs for the separated probe")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="fine-tuning steps per run")
    p.add_argument("--max-time", type=float, default=None, metavar="S", help="fine-tuning seconds per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every fine-tuning run (as in petctfm finetune: data.fg_prob=0.5, train.lr=1e-4)")
    p.add_argument("--holdout-site", metavar="NAME", default=None,
                   help="the site the dataset holds out (petctfm harmonize --holdout-site NAME): checked absent from "
                   "training, pretraining and normalization, and reported separately beside the in-domain test")
    p.add_argument("--plan", choices=["cpu", "gpu"], default=None,
                   help="every fine-tuning run uses the segmentation recipe planned for this compute target "
                   "(as petctfm finetune --plan), keeping the pretrained network in both arms")
    p.add_argument("--plan-spacing", type=float, default=None, metavar="MM",
                   help="with --plan: every fine-tuning run trains on a grid no finer than MM (as petctfm finetune "
                   "--plan-spacing); the test split is still scored on the dataset's grid. Default: the dataset's")
    p.add_argument("--jobs", type=int, default=None, metavar="K",
                   help="runs trained at once, each in its own process with the cores shared among them (default 1; "
                   "the same steps and results, less wall time on a machine with idle cores)")
    p.add_argument("--no-progress", action="store_true", help="quiet: no progress display")


def _run_label_efficiency(args: argparse.Namespace) -> int:
    from petctfm.cli._api import given
    from petctfm.experiments.label_efficiency.run import run_label_efficiency

    out = run_label_efficiency(
        args.data, args.pretrained, args.out, overrides=args.set, progress=not args.no_progress,
        **given(args, ("runs", "seeds", "preset", "arms", "fractions", "probe_kshot", "probe_steps", "separated",
                       "max_steps", "max_time", "holdout_site", "plan", "plan_spacing", "jobs")))
    print(f"experiment label-efficiency: {len(out['records'])} runs; results in {out['results_md']}, "
          f"{out['results_csv']}, {out['plot']}")
    return 0


FRATMAE_ABLATION_EXAMPLES = """
# the paper's Tables 2 and 3 at 20 % of the labels (+ 40 / 100 %), 3 seeds, every arm the same steps
petctfm experiment fratmae-ablation --data dataset/ --out exp/frat --fraction 20 --seeds 0,1,2 --preset gpu \\
    --pretrain-steps 20000 --max-steps 5000

# seconds on a CPU (tiny ViTs); rerunning skips finished runs
petctfm experiment fratmae-ablation --data dataset/ --out exp/frat_tiny --preset tiny --max-steps 20
"""


def _register_fratmae_ablation(sub) -> None:
    p = add_command(
        sub, "fratmae-ablation",
        help="FratMAE ablation: no pretraining / MAE / +ContextAlign / FratMAE, coronal vs axial; Dice, IoU, staging",
        description="Pretrains the four FratMAE variants, fine-tunes each (and the same network from scratch, on "
        "coronal and on axial stacks) on a stored label fraction, and no pretraining vs FratMAE at more "
        "fractions; stages early vs advanced with each frozen encoder. Test Dice and IoU with 95% bootstrap "
        "CIs, paired Wilcoxon against no pretraining, staging macro sensitivity and accuracy. Writes "
        "results.csv, results.md, fratmae_ablation.png. Resumable. See docs/fratmae.md.",
        examples=FRATMAE_ABLATION_EXAMPLES,
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--fraction", type=float, metavar="P", action=api_default(FRAT, "fraction"),
                   help="label fraction of Tables 2/3, in (0, 100] (default {default})")
    p.add_argument("--more-fractions", metavar="P,P|none", action=api_default(FRAT, "more_fractions"),
                   help="fractions where no pretraining and FratMAE are compared again (default {default})")
    p.add_argument("--seeds", metavar="S,S,...", action=api_default(FRAT, "seeds"),
                   help="fine-tuning / staging seeds, each >= 0 (default {default})")
    p.add_argument("--preset", choices=["tiny", "cpu", "gpu"], default=None,
                   help="pretraining and fine-tuning preset (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--pretrain-steps", type=int, metavar="N", help="steps per pretraining run (default --max-steps)")
    p.add_argument("--max-steps", type=int, metavar="N", help="steps per fine-tuning run (every arm the same)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every fine-tuning run")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every pretraining run")
    p.add_argument("--no-stage", action="store_true", help="skip the staging runs")
    p.add_argument("--stage-epochs", type=int, metavar="N", action=api_default(FRAT, "stage_epochs"),
                   help="staging MLP epochs, >= 1 (default {default})")
    p.add_argument("--stage-mode", choices=["probe", "finetune"], action=api_default(FRAT, "stage_mode"),
                   help="staging: probe (frozen encoder + MLP) | finetune (the paper's: end to end, lr 5e-5, batch 2, "
                        "--stage-epochs epochs, on the stored --stage-fraction) (default {default})")
    p.add_argument("--stage-fraction", type=float, metavar="P", action=api_default(FRAT, "stage_fraction"),
                   help="finetune staging: stored label fraction it trains on (default: --fraction)")
    p.add_argument("--bootstrap", type=int, metavar="N", action=api_default(FRAT, "n_resamples"),
                   help="bootstrap resamples, >= 0 (default {default})")
    p.add_argument("--no-progress", action="store_true", help="quiet: no progress display")
    p.set_defaults(func=_run_fratmae_ablation)


def _run_fratmae_ablation(args: argparse.Namespace) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.experiments.fratmae_ablation.run import run_fratmae_ablation

    with flags({"n_resamples": "--bootstrap"}):
        out = run_fratmae_ablation(
            args.data, args.out, overrides=args.set, pretrain_overrides=args.pretrain_set, stage=not args.no_stage,
            progress=not args.no_progress,
            **given(args, {"fraction": "fraction", "more_fractions": "more_fractions", "seeds": "seeds",
                           "preset": "preset", "pretrain_steps": "pretrain_steps", "max_steps": "max_steps",
                           "stage_epochs": "stage_epochs", "bootstrap": "n_resamples", "stage_mode": "stage_mode",
                           "stage_fraction": "stage_fraction"}))
    print(f"experiment fratmae-ablation: {len(out['records'])} runs ({out['ran']} run now); results in "
          f"{out['results_md']}, {out['results_csv']}, {out['plot']}")


def _register_interactive(sub) -> None:
    p = add_command(
        sub, "interactive",
        help="a promptable model click by click (autoPET IV protocol, corrective clicks) vs isocontour / automatic",
        description="Evaluate a prompt-train model on the test split: the autoPET IV click protocol (lesion and "
        "background clicks fixed from the ground truth, 0..10+10), corrective clicks on the largest error (lesions, "
        "each lesion, each organ, seen vs held-out), one click per lesion against a 41 %-of-SUVmax isocontour, and "
        "optionally an automatic petctfm finetune model; the annotation effort to reach Dice 0.8 per lesion and "
        "organ (clicks vs the isocontour plus simulated brush strokes). Cases can be filtered by manifest columns "
        "(--test-filter) or split in and out of the model's training distribution (--ood). Writes results.md, "
        "results.csv, steps.csv, effort.csv, dice_vs_clicks.png and cases/*.png. See docs/promptable.md.",
        examples="petctfm experiment interactive --data dataset/ --model runs/prompt --out exp/interactive "
        "--auto runs/finetune\n\n# out of distribution (a model trained with prompt-train --train-filter tracer=fdg)"
        "\npetctfm experiment interactive --data dataset/ --model runs/prompt_fdg --out exp/ood_tracer --ood "
        "--protocols corrective --max-clicks 5",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--model", required=True, metavar="RUN", help="prompt-train run folder or model.safetensors")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="output folder")
    p.add_argument("--auto", metavar="RUN", help="a petctfm finetune run: the zero-click automatic baseline")
    p.add_argument("--split", action=api_default(INTER, "split"), help="dataset split (default {default})")
    p.add_argument("--max-cases", type=int, metavar="N", help="only the first N cases (N >= 1)")
    p.add_argument("--max-clicks", type=int, metavar="N", action=api_default(INTER, "max_clicks"),
                   help="clicks per protocol, >= 1 (default {default})")
    p.add_argument("--max-targets", type=int, metavar="N", action=api_default(INTER, "max_targets"),
                   help="single lesions and organs per case for the corrective protocol, >= 1 (default {default})")
    p.add_argument("--no-organs", action="store_true", help="skip the organ targets")
    p.add_argument("--iso-box-mm", type=float, action=api_default(INTER, "iso_box_mm"),
                   help="side of the isocontour's box in mm, > 0 (default {default})")
    p.add_argument("--figures", type=int, metavar="N", action=api_default(INTER, "n_figures"),
                   help="case PNGs, >= 0 (default {default})")
    p.add_argument("--max-zoom", type=float, action=api_default(INTER, "max_zoom"),
                   help="the session's auto-zoom limit, >= 1 (default {default}; 1 = off)")
    p.add_argument("--iso-prior", action="store_true", help="also the isocontour-informed first click at one click "
                   "per lesion (the 41 %% isocontour as the previous-mask prompt; reported separately)")
    p.add_argument("--components", choices=("all", "prompted"), action=api_default(INTER, "components"),
                   help="prompted: drop predicted components that no positive click or box reaches; "
                   "all: the decoder's mask as it is (default {default})")
    p.add_argument("--class-prompts", action="store_true", help="prompt lesions and seen organs with their class "
                   "(a model trained with prompt-train --class-prompts; held-out organs stay class-free)")
    p.add_argument("--protocols", action=api_default(INTER, "protocols"),
                   help="comma-separated subset of autopet, one_per_lesion, corrective, effort (default {default})")
    p.add_argument("--test-filter", action="append", metavar="COL=V[,V]", help="evaluate only the cases whose "
                   "manifest.csv column COL is one of the values (COL!=V[,V]: none of them); repeat to AND several")
    p.add_argument("--ood", action="store_true", help="out-of-distribution protocol: the cases that pass the "
                   "model's prompt-train --train-filter are in distribution, the others out of distribution; "
                   "--max-cases per cohort; Dice at 1/3/5 clicks side by side (SegAnyPET Fig. 4a)")
    p.add_argument("--brush-mm", type=float, action=api_default(INTER, "brush_mm"),
                   help="effort protocol: radius of a simulated brush stroke in mm, > 0 (default {default})")
    p.add_argument("--effort-dice", type=float, action=api_default(INTER, "effort_dice"),
                   help="effort protocol: the Dice to reach, in (0, 1] (default {default})")
    p.add_argument("--device", action=api_default(INTER, "device"), help="cpu | cuda (default {default})")
    p.add_argument("--no-progress", action="store_true", help="quiet")
    p.set_defaults(func=_run_interactive)


def _run_interactive(args: argparse.Namespace) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.experiments.interactive.run import run_interactive

    with flags({"n_figures": "--figures"}):
        out = run_interactive(args.data, args.model, args.out, auto=args.auto, organs=not args.no_organs,
                              progress=not args.no_progress, iso_prior=args.iso_prior,
                              class_prompts=args.class_prompts, test_filter=args.test_filter, ood=args.ood,
                              **given(args, {"split": "split", "max_cases": "max_cases", "max_clicks": "max_clicks",
                                             "max_targets": "max_targets", "iso_box_mm": "iso_box_mm",
                                             "figures": "n_figures", "device": "device", "max_zoom": "max_zoom",
                                             "components": "components", "protocols": "protocols",
                                             "brush_mm": "brush_mm", "effort_dice": "effort_dice"}))
    effort = f", {out['effort_csv']}" if out.get("effort_csv") else ""
    print(f"experiment interactive: {len(out['rows'])} rows; results in {out['results_md']}, {out['results_csv']}"
          f"{effort}, {out['plot']}")
    return 0


def _register_vs_nnunet(sub) -> None:
    p = add_command(
        sub, "vs-nnunet",
        help="petctfm vs nnU-Net v2 itself at the same wall time (+ SUV-threshold floors); Dice with CIs, paired test",
        description="Exports the harmonized train/val/test splits to nnU-Net raw (fold 0 = our split), lets "
        "nnU-Net v2 plan and preprocess (its default plan and a CPU-sized one), trains nnU-Net 3d_fullres and "
        "petctfm's UNet from scratch for the same minutes on the same device, predicts the test split with each "
        "one's own predictor, scores both and two SUV-threshold floors with petctfm evaluate. Writes results.md, "
        "results.csv, vs_nnunet.png. Needs pip install 'petctfm[nnunet]'. Resumable. See docs/vs-nnunet.md.",
        examples="petctfm experiment vs-nnunet --data dataset/ --out exp/vs_nnunet --minutes 60 --seeds 0,1,2",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--minutes", required=True, type=float, metavar="M", help="training wall time of every run")
    p.add_argument("--seeds", default="0", metavar="S,S,...", help="seeds (default 0)")
    p.add_argument("--holdout-site", metavar="NAME", default=None, help="the site the dataset holds out; scored too")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--preset", choices=("tiny", "cpu", "gpu"), default=None,
                   help="petctfm fine-tuning preset (default gpu on cuda, else cpu)")
    p.add_argument("--backbone", default=None, help="petctfm backbone (default: the preset's)")
    p.add_argument("--plans", default="default,cpu", metavar="P,P", help="nnU-Net plans: default,cpu (default both)")
    p.add_argument("--recipe", choices=("auto", "cpu", "gpu", "none"), default="auto",
                   help="petctfm's planned recipe (docs/segmentation-recipe.md; default: the device's; none: the bare "
                   "preset)")
    p.add_argument("--jobs", type=int, default=1, metavar="K",
                   help="trained runs at once, the cores shared evenly (default 1)")
    p.add_argument("--no-tta", action="store_true", help="no test-time mirroring in nnU-Net's predictor (petctfm's "
                   "has none): both arms predict plain")
    p.add_argument("--organs", choices=("auto", "on", "off"), default="auto",
                   help="both arms learn the organ map (organs.npy) as extra classes, scored on the lesion alone, or "
                   "neither (default auto: on when petctfm's recipe trains organs and every train/val case has them)")
    p.add_argument("--petctfm-runs", metavar="RUN_{seed}", default=None,
                   help="finished petctfm fine-tuning runs to compare instead of training them, '{seed}' standing "
                   "for each seed (e.g. runs/recipe_s{seed}); each must be trained on the dataset's train split with "
                   "the same targets (--organs)")
    p.add_argument("--confirm", metavar="DATASET", default=None,
                   help="a confirmation cohort (another harmonized dataset): every finished run predicts all of its "
                   "cases, scored and paired the same way (E/confirm_<name>/results.md)")
    p.add_argument("--confirm-cases", choices=("all", "lesions"), default="all",
                   help="with --confirm: every case, or only those with lesions (nnU-Net's CPU predictor is slow)")
    p.add_argument("--no-progress", action="store_true", help="quiet")
    p.set_defaults(func=_run_vs_nnunet)


def _run_vs_nnunet(args: argparse.Namespace) -> int:
    from petctfm.core.checks import parse_list
    from petctfm.experiments.vs_nnunet.run import run_vs_nnunet

    if args.confirm is not None:
        from pathlib import Path

        from petctfm.core.errors import InputError
        from petctfm.data import format as fmt

        if not (Path(args.confirm) / fmt.SPLITS_JSON).is_file():
            raise InputError(f"--confirm {args.confirm}: not a harmonized dataset (no {fmt.SPLITS_JSON})")
    out = run_vs_nnunet(args.data, args.out, args.minutes, seeds=parse_list("seeds", args.seeds, int, "an integer"),
                        device=args.device, preset=args.preset, backbone=args.backbone,
                        plans=parse_list("plans", args.plans, str, "a plan"), holdout_site=args.holdout_site,
                        progress=not args.no_progress, recipe=args.recipe, tta=not args.no_tta, jobs=args.jobs, organs=args.organs,
                        petctfm_runs=args.petctfm_runs)
    if args.confirm is not None:
        from petctfm.experiments.vs_nnunet.confirm import run_confirm

        out["confirm"] = run_confirm(out["exp_dir"], args.confirm, cases=args.confirm_cases, device=args.device,
                                     progress=not args.no_progress)
    print(f"experiment vs-nnunet: {len(out['records'])} runs; compared with nnU-Net "
          f"{out['summary']['stronger_nnunet']}; results in {out['results_md']}, {out['results_csv']}, {out['plot']}"
          + (f"; confirmation cohort in {out['confirm']['results_md']}" if out.get("confirm") else ""))
    return 0


METNET = "petctfm.experiments.metabolic_network.run:run_metabolic_network"

METABOLIC_NETWORK_EXAMPLES = """
# ground-truth organ maps of a harmonized dataset; a network per diagnosis, adjusted for age, sex, site
petctfm experiment metabolic-network --data dataset/ --out exp/metnet --group-by diagnosis --covariates age,sex,site

# phantoms with a planted structure: lymphoma against every other diagnosis, recovery of the planted matrix
petctfm synth --out synth/ --cases 150 --seed 0 --size tiny --tracers fdg --formats autopet --metabolic-structure
petctfm harmonize --in synth/autopet --out dataset/ --spacing 8 8 8
petctfm experiment metabolic-network --data dataset/ --out exp/metnet --group-by diagnosis \\
    --groups lymphoma,negative+melanoma+lung_cancer --planted synth/organ_covariance.json

# organ maps predicted by an organ model (petctfm finetune --task organs); ground-truth lesions still excluded
petctfm experiment metabolic-network --data dataset/ --model runs/organs --out exp/metnet_pred

# per-case organ tables (DIR/<case_id>/organs.csv with organ,suv_mean) and a metadata CSV with case_id
petctfm experiment metabolic-network --tables organ_tables/ --metadata organ_tables/metadata.csv --out exp/metnet
"""


def _register_metabolic_network(sub) -> None:
    p = add_command(
        sub, "metabolic-network",
        help="whole-body metabolic covariance network (SegAnyPET Fig. 4c): organ-to-organ uptake correlations",
        description="Per patient the SUVmean of each organ (lesion voxels excluded) from the ground-truth organ maps "
        "of a harmonized dataset (--data) or from per-case organs.csv tables (--tables); log, residualized on the "
        "covariates, z-scored; Pearson and Ledoit-Wolf partial correlation, FDR-corrected edges, bootstrap edge "
        "stability; with --group-by a network per group, per-edge group differences by permutation test and a "
        "null check on random halves. Writes edges.csv, matrix CSVs, heatmap.png, network.png and results.md. "
        "With --model the organ maps are predicted by an organ model. "
        "Exit codes: 2 bad options, 3 bad input (a missing or wrong --model too), 4 output not writable, 5 done "
        "but the model failed on some cases (failed.csv). See docs/metabolic-network.md.",
        examples=METABOLIC_NETWORK_EXAMPLES,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DATASET", help="harmonized dataset folder (its ground-truth organ maps)")
    src.add_argument("--tables", metavar="DIR", help="folder of per-case tables DIR/<case_id>/organs.csv "
                     "(columns organ, suv_mean)")
    p.add_argument("--model", metavar="RUN", help="with --data: an organ model (petctfm finetune --task organs) "
                   "whose predicted organ maps of every case replace the ground truth (ground-truth lesion voxels "
                   "still excluded); a case it fails on is left out (failed.csv, exit 5)")
    p.add_argument("--metadata", metavar="CSV", help="with --tables: metadata CSV with a case_id column (default "
                   "DIR/metadata.csv or DIR/manifest.csv)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--group-by", metavar="COLUMN", help="metadata column: a network per group and group differences")
    p.add_argument("--groups", metavar="A,B[+C]", help="the groups of --group-by to compare; + joins values into one "
                   "group (default: every value with --min-group cases)")
    p.add_argument("--covariates", metavar="C,C,...", help="metadata columns regressed out (numeric as is, others "
                   "one-hot; default: those of age,sex,site,tracer the metadata has)")
    p.add_argument("--organs", metavar="O,O,...", help="organs to analyse (default: those with a value in at least "
                   "half the cases)")
    p.add_argument("--planted", metavar="JSON", help="organ_covariance.json of petctfm synth --metabolic-structure: "
                   "report precision/recall of the planted edges and the planted group differences")
    p.add_argument("--alpha", type=float, action=api_default(METNET, "alpha"),
                   help="FDR level, in (0, 0.5] (default {default})")
    p.add_argument("--min-r", type=float, metavar="R", action=api_default(METNET, "min_r"),
                   help="an edge also needs |r| >= R (an effect-size floor for large cohorts, where tiny correlations "
                   "pass the FDR), in [0, 1) (default {default}: the FDR alone)")
    p.add_argument("--permutations", type=int, metavar="N", action=api_default(METNET, "permutations"),
                   help="permutations per group comparison, >= 1000 (default {default})")
    p.add_argument("--bootstrap", type=int, metavar="N", action=api_default(METNET, "bootstrap"),
                   help="bootstrap resamples for edge stability, >= 0 (default {default})")
    p.add_argument("--null-splits", type=int, metavar="N", action=api_default(METNET, "null_splits"),
                   help="random halves tested like two groups (false-positive check), >= 0 (default {default})")
    p.add_argument("--min-group", type=int, metavar="N", action=api_default(METNET, "min_group"),
                   help="smallest group with its own network, >= 5 (default {default})")
    p.add_argument("--erode", type=int, metavar="N", action=api_default(METNET, "erode"),
                   help="with --data: erode each organ by N voxels before its SUVmean (edge voxels carry the "
                   "neighbours' uptake), 0-5 (default {default})")
    p.add_argument("--seed", type=int, action=api_default(METNET, "seed"), help="random seed, >= 0 (default {default})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while --model predicts")
    p.set_defaults(func=_run_metabolic_network)


def _run_metabolic_network(args: argparse.Namespace) -> int:
    from petctfm.cli._api import given
    from petctfm.experiments.metabolic_network.run import run_metabolic_network

    out = run_metabolic_network(args.out, **given(args, ("data", "model", "tables", "metadata", "group_by", "groups",
                                                         "covariates", "organs", "planted", "alpha", "min_r", "permutations",
                                                         "bootstrap", "null_splits", "min_group", "seed", "erode")),
                                progress=bool(args.model) and not args.no_progress)
    extra = ""
    if out["planted"]:
        t = out["planted"]
        extra = f"; planted edges: precision {t['precision']:.2f}, recall {t['recall']:.2f}"
    print(f"experiment metabolic-network: {out['n_cases']} cases, {len(out['organs'])} organs, {out['n_edges']} edges, "
          f"{out['n_group_differences']} group differences{extra}; results in {out['results_md']}")
    if out["failed"]:
        print(f"experiment metabolic-network: the organ model failed on {len(out['failed'])} case(s), left out "
              f"(listed in {out['failed_csv']})", file=sys.stderr)
        return int(ExitCode.PARTIAL)
    return 0


RESPONSE_EXAMPLES = """
# the response logic alone: ground-truth lesion and organ masks of the follow-up phantoms
petctfm synth --out data/fu --cases 8 --seed 0 --size tiny --followup
petctfm experiment response --data data/fu --masks truth --out exp/response_truth

# a lesion model (and an organ model for PERCIST's liver reference) on the same pairs
petctfm experiment response --data data/fu --model runs/seg --organs runs/organs --out exp/response_model
"""


def _register_response(sub) -> None:
    p = add_command(
        sub, "response",
        help="treatment response on follow-up phantoms: PERCIST category accuracy, lesion-matching F1",
        description="Run `petctfm response` on every pair of `petctfm synth --followup` (with the phantoms' "
        "ground-truth masks, --masks truth, or a lesion model's predictions, --model) and compare with "
        "response_truth.json: category accuracy with bootstrap and exact CIs, confusion matrix, lesion-matching F1 "
        "(matched, disappeared, new), SULpeak % change error; summary.json, pairs.csv, results.md, "
        "response_experiment.png. A pair that fails is quarantined (quarantine.csv, exit 5) and the batch goes "
        "on. Synthetic data only. See docs/response.md.",
        examples=RESPONSE_EXAMPLES)
    p.add_argument("--data", required=True, metavar="PAIRS", help="`petctfm synth --followup` output (or its pairs/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (summary.json written last)")
    p.add_argument("--model", metavar="RUN", help="lesion model (a `petctfm finetune` run)")
    p.add_argument("--masks", metavar="truth", help="'truth': the phantoms' lesion and organ masks")
    p.add_argument("--organs", metavar="RUN", help="organ model for the PERCIST references (with --model)")
    p.add_argument("--device", default="auto", help="device for --model: auto, cpu, cuda, cuda:N")
    p.add_argument("--min-overlap", type=float, action=api_default(RESPONSE, "min_overlap"),
                   help="as petctfm response (default {default})")
    p.add_argument("--max-distance", type=float, dest="max_distance_mm",
                   action=api_default(RESPONSE, "max_distance_mm"), help="as petctfm response, mm (default {default})")
    p.add_argument("--bootstrap", type=int, action=api_default(RESPONSE, "bootstrap"),
                   help="bootstrap resamples of the accuracy CI, >= 0 (default {default})")
    p.add_argument("--seed", type=int, action=api_default(RESPONSE, "seed"), help="bootstrap and registration seed "
                   "(default {default})")
    p.add_argument("--limit", type=int, metavar="N", help="the first N pairs only")
    p.add_argument("--report-png", action="store_true", help="also each pair's response.png (slower)")
    p.set_defaults(func=_run_response)


RESPONSE = "petctfm.experiments.response.run:run_response_experiment"


def _run_response(args: argparse.Namespace) -> int:
    from petctfm.cli._api import flags, given
    from petctfm.experiments.response.run import run_response_experiment

    with flags({"max_distance_mm": "--max-distance"}):
        s = run_response_experiment(args.out, args.data, **given(args, ("model", "masks", "organs", "device",
                                    "min_overlap", "max_distance_mm", "bootstrap", "seed", "limit")),
                                    report_png=args.report_png)
    print(f"experiment response: {s['n_pairs']} pairs, category accuracy {s['category_accuracy']:.3f} "
          f"(95 % CI {s['accuracy_ci_exact'][0]:.3f}-{s['accuracy_ci_exact'][1]:.3f}), matching F1 "
          f"{s['matching_f1']}; results in {s['results_md']}")
    if s["quarantined"]:
        print(f"experiment response: {len(s['quarantined'])} pair(s) quarantined (quarantine.csv)", file=sys.stderr)
        return int(ExitCode.PARTIAL)
    return 0


#: Experiment name -> function adding its sub-subcommand.
EXPERIMENTS = {"label-efficiency": _register_label_efficiency, "fratmae-ablation": _register_fratmae_ablation,
               "interactive": _register_interactive, "vs-nnunet": _register_vs_nnunet,
               "metabolic-network": _register_metabolic_network, "response": _register_response}


def register(subparsers) -> None:
    p = add_command(
        subparsers, "experiment",
        help="run a whole experiment (several trainings, evaluation, report)",
        description="Experiments that combine fine-tuning, probing and evaluation into one report. "
        f"Available: {', '.join(EXPERIMENTS)}.",
        examples="petctfm experiment label-efficiency --data dataset/ --pretrained runs/mae --out exp/le --preset tiny",
    )
    sub = p.add_subparsers(dest="experiment", metavar="<experiment>")
    for reg in EXPERIMENTS.values():
        reg(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
