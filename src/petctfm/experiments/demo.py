"""The demo (``petctfm demo``): the whole story on synthetic data, in one call (:func:`run_demo`).

synth (multi-site phantoms, DICOM with DICOM-SEG) -> harmonize (SUV from DICOM tags, RAS, one spacing, QA,
splits) -> view (clinician pictures) -> pretrain (early-fusion MAE) -> the label-efficiency comparison in
its smallest form: fine-tune the pretrained encoder on 10% of the labels, and the same network from scratch
on 10% and on 100% (:func:`petctfm.experiments.label_efficiency.run.run_label_efficiency` with explicit runs) ->
predictions of the test split, evaluated (autoPET metrics, bootstrap CIs, paired Wilcoxon) -> report folder
(``README.md``, ``results.md``, the Dice-vs-fraction plot, test cases with predicted vs true contours).

Every stage calls the Python API a user would call (:func:`petctfm.synth.writers.synthesize`,
:func:`petctfm.harmonize.api.harmonize_folder`, :func:`petctfm.viz.render.render_case`,
:func:`petctfm.methods.early_fusion_mae.api.pretrain`, the label-efficiency experiment), the same functions
the command-line entry points call, so the demo exercises the real code paths. Each stage's console rule
shows the equivalent ``petctfm`` command.

Budgets (:data:`PRESETS`) are **step counts, not wall-clock caps**: every arm runs its fixed number of steps,
so the demo gives the same numbers on a busy machine, only later (with the earlier ``max_time`` caps, a loaded
2-core machine stopped pretraining at 10 of 600 steps and the models were noise). The report says how many
steps each run took (:func:`_steps_section`, from each run's ``summary.json``). The CPU demo must finish in
<= 15 minutes on an idle 2-core CPU. Measured stage
times on the 2-core VM (24 ``small`` cases, before fine-tuning joined): synth ~160 s, harmonize ~95 s (at
2 x 2 x 3 mm), views ~10 s, so ~10 minutes are left for learning and evaluation. The budget:

- **harmonize at 4 mm** (the PET resolution of ``small`` phantoms; ``tiny``: 8 mm). At the default
  2 x 2 x 3 mm a whole-body ``small`` case is ~15 M voxels and one sliding-window pass of the tiny UNet
  (48^3 windows, overlap 0.5) took ~90 s on the shared VM; fine-tuning validates on the val cases and
  predicts every test case, so that would take the whole budget. At 4 mm (150 x 78 x 298 voxels) with
  overlap 0.25 one pass takes ~5 s (measured, 1 thread).
- **pretrain 400 steps** (~165 s idle on an Intel VM with AMX, 230-280 s on an AMD one without native bf16):
  the tiny residual UNet at 48^3, ~0.4-0.6 s per step; a checkpoint and a reconstruction figure every 100 steps (the
  tiny preset's every 10 cost ~0.55 s each, ~20 s of the demo; the figure hook keeps the RNG, so the losses are
  the same). (The earlier 150 s cap
  gave 362 and 372 of its nominal 600 steps on the idle VM, docs/results.md; 400 fixed steps keep that.)
- **fine-tune 3 runs at once** (:func:`finetune_jobs`; one thread each on 2 cores): the segmentation recipe
  (``plan="cpu"``: bf16 where the CPU has it natively, else fp32; AdamW 1e-2 with the poly schedule, lesion-balanced oversampling, and the organ map that
  the synthetic DICOM-SEG carries as auxiliary classes) on the pretrained tiny network at 32^3 patches (at 4 mm
  13 cm), 600 steps (~0.6 s each, three runs on two cores), validation on the val cases every 300 steps keeping
  the best checkpoint, and the minimum lesion volume chosen on validation (``postprocess.choose_min_lesion_ml``).
  Chosen on the validation split of development cohort 2468 (docs/results.md, "The demo, second attempt"): the
  old settings (500 steps, ``data.fg_prob=0.67``, no plan) over-segmented physiological uptake (577 ml of false
  positives per validation case); 2000 steps did not fit the 15 minutes. Then test predictions and evaluation.
- views of 3 harmonized cases and 3 test predictions, report: ~20 s. The phantoms are written as DICOM only
  (the autoPET copy, used for nothing but the three views, cost about a fifth of the synth stage).

The measured totals are in docs/results.md (cohort 1217: 911 and 1087 s on the 2-core AMD VM, 2026-12-06).
The tiny preset (CI) runs the same story (the recipe and the minimum-volume choice included) on 8 ``tiny``
cases at 8 mm (5 train / 1 val / 2 test; the 10% subset is one case, a lesion case by construction of the
splits) with 30 pretraining and 20 fine-tuning steps per run, at 32^3 patches as the cpu preset (the plan alone would
choose 64 x 32 x 144 there: 1.4 s per step, a minute and a half of the test suite).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

#: Per preset: number of cases, phantom size, pretraining preset (+ overrides) and its steps, fine-tuning preset
#: (+ overrides) and steps per run. Steps only: no wall-clock cap (a busy machine is slower, not different).
#: The CPU demo pretrains the tiny residual UNet on 48^3 patches: on a 2-core machine the full nnU-Net-sized
#: UNet takes 5-20 s per step at 64^3 (measured), far too slow to learn anything in a few minutes, while the
#: tiny one runs about 0.6 s per step at 48^3. Fine-tuning uses the same network (the backbone always comes
#: from the pretraining run; convolution weights do not depend on the patch size) with the recipe
#: (``finetune_plan``) on 32^3 patches and validates every 300 steps, keeping the best checkpoint.
PRESETS = {
    "tiny": {"cases": 8, "size": "tiny", "spacing": [8, 8, 8], "pretrain_preset": "tiny", "pretrain_set": [],
             "max_steps": 30, "finetune_preset": "tiny", "finetune_plan": "cpu",
             "finetune_set": ["data.patch_size=[32,32,32]", "val.overlap=0.25",
                              "postprocess.choose_min_lesion_ml=[0,0.5]"],
             "ft_max_steps": 20},
    "cpu": {"cases": 24, "size": "small", "spacing": [4, 4, 4], "pretrain_preset": "tiny",
            "pretrain_set": ["data.patch_size=[48,48,48]", "train.checkpoint_every=100", "train.figure_every=100"],
            "max_steps": 400,
            "finetune_preset": "tiny", "finetune_plan": "cpu",
            "finetune_set": ["data.patch_size=[32,32,32]", "val.overlap=0.25", "train.figure_every=300",
                             "train.checkpoint_every=300", "train.warmup_steps=20",
                             "postprocess.choose_min_lesion_ml=[0,0.1,0.25,0.5,1,2]"],
            "ft_max_steps": 600},
    "gpu": {"cases": 60, "size": "small", "spacing": None, "pretrain_preset": "gpu", "pretrain_set": [],
            "max_steps": 2000, "finetune_preset": "gpu", "finetune_set": ["train.figure_every=250"],
            "ft_max_steps": 1500},
}
#: The three fine-tuning runs of the demo: (arm, percent of the labeled training cases).
DEMO_RUNS = [("pretrained", 10.0), ("scratch", 10.0), ("scratch", 100.0)]
#: Test cases drawn with predicted vs true contours in the report.
N_PRED_VIEWS = 3



def _stage(name: str, argv: list[str], fn: Callable[[], Any], timings: dict[str, float], console) -> Any:
    """Run one stage (``fn``), timed; the rule shows the equivalent ``petctfm`` command (``argv``)."""
    console.rule(f"[bold]{name}[/]: petctfm {' '.join(argv)}")
    t0 = time.perf_counter()
    result = fn()
    timings[name] = round(time.perf_counter() - t0, 1)
    console.print(f"[green]{name} done[/] in {timings[name]:.1f} s")
    return result


def _render(inputs: list[Path], png: Path, pred: Path | None = None, title: str | None = None) -> Path:
    """What ``petctfm view INPUTS [--pred PRED] [--title T] --out PNG`` draws."""
    from petctfm.io.images import read_image
    from petctfm.io.layouts.read import describe_case, read_case_images
    from petctfm.viz.render import render_case

    images = read_case_images(inputs)
    render_case(images["pet"], images.get("ct"), seg=images.get("seg"), organs=images.get("organs"),
                pred=read_image(pred) if pred else None,
                title=title if title is not None else describe_case(inputs), out_png=png)
    print(f"wrote {png}")
    return png


def run_demo(out: str | Path = "demo_out", preset: str | None = None, cases: int | None = None, seed: int = 0,
             workers: int = 2) -> dict[str, Any]:
    """synth -> harmonize -> views -> pretrain -> fine-tune + evaluate -> report, in ``out``.

    ``preset``: ``tiny`` | ``cpu`` | ``gpu`` (:data:`PRESETS`; None: gpu when CUDA is available, else cpu);
    ``cases`` overrides the preset's number of cases. Writes ``out/{synth,dataset,pretrain,finetune,report}``
    and returns ``{"report": OUT/report/README.md, "experiment": the label-efficiency result, "timings"}``.
    A rerun keeps a finished pretraining run and skips finished fine-tuning runs.
    """
    import logging

    import torch
    from rich.console import Console

    from petctfm.core.checks import check_choice, check_int
    from petctfm.harmonize.api import harmonize_folder
    from petctfm.methods.early_fusion_mae.api import pretrain
    from petctfm.synth.writers import synthesize

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # as `petctfm synth`: it logs every copied module
    console = Console()
    preset_name = preset or ("gpu" if torch.cuda.is_available() else "cpu")
    check_choice("preset", preset_name, sorted(PRESETS))
    check_int("seed", seed, lo=0)
    check_int("workers", workers, lo=1)
    cfg = dict(PRESETS[preset_name])
    if cases is not None:
        cfg["cases"] = check_int("cases", cases, lo=1)
    out = Path(out)
    synth_dir, data_dir, run_dir, report = out / "synth", out / "dataset", out / "pretrain", out / "report"
    exp_dir = out / "finetune"
    report.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    _stage("synth", ["synth", "--out", str(synth_dir), "--cases", str(cfg["cases"]), "--seed", str(seed), "--size",
                     cfg["size"], "--formats", "dicom", "--workers", str(workers)],
           lambda: synthesize(synth_dir, n_cases=cfg["cases"], seed=seed, size=cfg["size"],
                              formats=["dicom"], workers=workers), timings, console)
    spacing = ["--spacing", *map(str, cfg["spacing"])] if cfg.get("spacing") else []
    _stage("harmonize", ["harmonize", "--in", str(synth_dir / "dicom"), "--out", str(data_dir),
                         "--workers", str(workers), *spacing],
           lambda: harmonize_folder(synth_dir / "dicom", data_dir, spacing=cfg.get("spacing"), workers=workers,
                                    progress=True), timings, console)

    _case_views(data_dir, report, timings, console)

    pretrained = _finished(run_dir, cfg["max_steps"])
    if pretrained:  # a rerun of a finished demo: keep the encoder the fine-tuning runs were made from
        console.print(f"[dim]pretrain: finished earlier ({pretrained.get('steps')} steps), kept[/]")
    else:
        resume = (run_dir / "checkpoints").exists()
        _stage("pretrain", ["pretrain", "--data", str(data_dir), "--out", str(run_dir), "--preset",
                            cfg["pretrain_preset"], "--max-steps", str(cfg["max_steps"]),
                            "--seed", str(seed), *(["--resume"] if resume else []),
                            *[a for kv in cfg["pretrain_set"] for a in ("--set", kv)]],
               lambda: pretrain(data_dir, run_dir, cfg["pretrain_preset"], max_steps=cfg["max_steps"],
                                resume=resume, overrides=cfg["pretrain_set"], seed=seed), timings, console)

    experiment = _finetune_and_evaluate(data_dir, run_dir, exp_dir, cfg, seed, timings, console,
                                        jobs=finetune_jobs(workers))
    pred_views = _prediction_views(data_dir, exp_dir, report, experiment, timings, console)

    _write_report(report, data_dir, run_dir, preset_name, cfg, timings, time.perf_counter() - t_start,
                  experiment, pred_views)
    console.rule("[bold green]demo finished")
    console.print(f"report: [bold]{report / 'README.md'}[/] ({time.perf_counter() - t_start:.0f} s in all)")
    return {"report": report / "README.md", "experiment": experiment, "timings": timings}


def _case_views(data_dir: Path, report: Path, timings: dict[str, float], console, n: int = 3) -> None:
    """``view`` PNGs of the first ``n`` harmonized cases (their NIfTI export, ``DATASET/nifti/<id>``: SUV, CT,
    lesions and organs on the harmonized grid). The synthetic cases are written as DICOM only: an autoPET copy of
    every case, for three pictures, cost about a fifth of the synth stage."""
    from petctfm.harmonize.export import export_nifti

    for cid in sorted(p.name for p in (data_dir / "cases").iterdir() if p.is_dir())[:n]:
        folder = export_nifti(data_dir, cid)
        png = report / f"case_{cid}.png"
        _stage(f"view {cid}", ["view", str(folder), "--out", str(png)], lambda: _render([folder], png), timings,
               console)


def finetune_jobs(workers: int) -> int:
    """How many of the :data:`DEMO_RUNS` fine-tune at once: all of them when ``workers`` > 1, else one.

    The three runs have the same steps and nearly the same cost, so two at a time on 2 cores leaves the third
    alone on one thread with a core idle (cohort 1217: 265 s for the first two side by side, then 256 s for the
    third); all three at once share both cores to the end (:func:`petctfm.experiments.common.threads_per_job`
    gives each ``cores // 3`` threads, at least one)."""
    return len(DEMO_RUNS) if workers > 1 else 1


def _summary(run_dir: Path) -> dict | None:
    """A run's ``summary.json`` (the trainer's: steps, stopped, time_s, ...), None when missing or unreadable."""
    p = run_dir / "summary.json"
    try:
        s = json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return s if isinstance(s, dict) else None


def _finished(run_dir: Path, steps: int) -> dict | None:
    """The pretraining summary when a previous demo's pretraining ran all its ``steps``, else None (a run an
    older demo stopped on its wall-clock cap is resumed to its steps)."""
    s = _summary(run_dir)
    return s if s and s.get("stopped") == "max_steps" and int(s.get("steps") or 0) >= steps else None


def _finetune_and_evaluate(data_dir: Path, run_dir: Path, exp_dir: Path, preset: dict, seed: int,
                           timings: dict[str, float], console, jobs: int = 1) -> dict:
    """pretrained@10%, scratch@10%, scratch@100% -> test predictions -> evaluation (label-efficiency API),
    ``jobs`` runs at once (the demo's ``workers``: the same steps, the cores shared)."""
    from petctfm.experiments.label_efficiency.run import run_label_efficiency

    console.rule("[bold]fine-tune + evaluate[/]: " + ", ".join(f"{a} {p:g}%" for a, p in DEMO_RUNS))
    t0 = time.perf_counter()
    out = run_label_efficiency(data_dir, run_dir, exp_dir, runs=DEMO_RUNS, seeds=[seed],
                               preset=preset["finetune_preset"], overrides=preset["finetune_set"],
                               max_steps=preset["ft_max_steps"], max_time=None, probe_kshot=None,
                               plan=preset.get("finetune_plan"), jobs=jobs, progress=True)
    for rec in out["records"]:
        timings[f"fine-tune + test {rec['arm']} {rec['fraction']:g}%"] = float(rec.get("time_s") or 0.0)
    timings["fine-tune + evaluate (all)"] = round(time.perf_counter() - t0, 1)
    return out


def _prediction_views(data_dir: Path, exp_dir: Path, report: Path, experiment: dict, timings: dict[str, float],
                      console) -> list[tuple[str, str]]:
    """``view`` PNGs of a few test cases (lesion cases first): truth green, pretrained@10% prediction magenta."""
    from petctfm.data import format as fmt
    from petctfm.harmonize.export import export_nifti

    first = next(r for r in experiment["plan"] if r.kind == "finetune")  # pretrained at 10%
    dice = next(r for r in experiment["records"] if r["name"] == first.name)["case_dice"]
    test = fmt.load_splits(data_dir).get("test") or []
    ordered = sorted(test, key=lambda c: (dice.get(c) is None, c))[:N_PRED_VIEWS]
    views = []
    for cid in ordered:
        folder = export_nifti(data_dir, cid)  # DATASET/nifti/<id>: SUV, CTres, SEG on the evaluated grid
        pred = exp_dir / first.name / "pred_test" / f"{cid}.nii.gz"
        d = dice.get(cid)
        title = (f"{cid} (test): truth green, {first.arm} {first.fraction:g}% prediction magenta"
                 + (f", Dice {d:.2f}" if d is not None else ", no lesion") + " - synthetic")
        png = report / f"pred_{cid}.png"
        _stage(f"view prediction {cid}",
               ["view", str(folder), "--pred", str(pred), "--title", title, "--out", str(png)],
               lambda: _render([folder], png, pred=pred, title=title), timings, console)
        views.append((png.name, title))
    return views


def _loss_curve(run_dir: Path, png: Path) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petctfm.io.atomic import atomic_path

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and "step" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.5)
    ax.set_yscale("log")  # heavy-tailed: a patch with the bladder or brain in it costs 10x one without
    ax.set_xlabel("step")
    ax.set_ylabel(f"reconstruction loss (mean of {rows[1]['step'] - rows[0]['step'] if len(rows) > 1 else 1} steps)")
    ax.set_title("Early-fusion MAE pretraining (synthetic data)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return rows


def _copy(src: Path, dst: Path) -> None:
    from petctfm.io.atomic import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _steps_section(run_dir: Path, preset: dict, experiment: dict | None) -> list[str]:
    """Report lines: how many steps each arm ran (pretraining and every fine-tuning run), read from each run's
    ``summary.json`` (the trainer's), against the steps the preset asks for."""
    rows = [("pretraining (early-fusion MAE)", run_dir, preset["max_steps"], None)]
    for rec in (experiment or {}).get("records", []):
        rows.append((f"fine-tuning {rec['arm']} {rec['fraction']:g}%", Path(experiment["exp_dir"]) / rec["name"],
                     preset["ft_max_steps"], rec.get("train")))
    lines = ["## Training steps", "",
             "Every arm runs a fixed number of steps (no wall-clock cap): a busy machine takes longer but trains "
             "the same models. Steps each run took, from its `summary.json`:", "",
             "| run | steps run | steps planned | stopped by | training time (s) |", "| --- | ---: | ---: | --- | ---: |"]
    short = []
    for label, folder, planned, fallback in rows:
        s = _summary(folder) or fallback or {}
        steps = s.get("steps")
        t = s.get("time_s")
        lines.append(f"| {label} | {steps if steps is not None else '?'} | {planned} | {s.get('stopped') or '?'} | "
                     f"{f'{t:.0f}' if isinstance(t, (int, float)) else '?'} |")
        if steps is None or int(steps) < int(planned):
            short.append(label)
    if short:
        lines += ["", f"**Not every run reached its steps** ({', '.join(short)}): its numbers are not comparable "
                      "with a complete demo."]
    return lines + [""]


def _finetune_section(report: Path, experiment: dict, pred_views: list[tuple[str, str]], tiny: bool) -> list[str]:
    """Report lines for the fine-tuning runs; copies results.md and the plot into the report folder."""
    from petctfm.experiments.label_efficiency.report import format_dice, fmt_num

    _copy(experiment["results_md"], report / "results.md")
    _copy(experiment["plot"], report / "label_efficiency.png")
    groups = [g for g in experiment["summary"]["groups"] if g["kind"] == "finetune"]
    n_test = experiment["records"][0]["n_test_cases"] if experiment["records"] else 0
    lines = ["## Fine-tuning: does pretraining save labels?", "",
             f"The pretrained encoder fine-tuned on 10% of the labeled training cases, and the same network from "
             f"scratch on 10% and on 100%, each evaluated on the {n_test} test cases (best checkpoint by val Dice; "
             "Dice over cases with lesions, mean [95% bootstrap CI]). A demo-sized run on synthetic phantoms: "
             "a few minutes of CPU training and a handful of test cases, so wide CIs; see `results.md` for the "
             "paired tests and the exact command, and `docs/label-efficiency.md` for the full experiment."
             + (" The `tiny` preset only checks that every stage runs: 20 fine-tuning steps learn nothing yet."
                if tiny else ""), "",
             "| model | labeled training cases | test Dice [95% CI] | FP volume (ml) | FN volume (ml) | lesion F1 |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for g in groups:
        lines.append(f"| {g['arm']} {g['fraction']:g}% | {g['n_train_cases']} | {format_dice(g)} | "
                     f"{fmt_num(g['fp_volume_ml'], 2)} | {fmt_num(g['fn_volume_ml'], 2)} | {fmt_num(g['lesion_f1'])} |")
    for c in experiment["summary"]["comparisons"]:
        lines += ["", f"{c['a']} - {c['b']}: mean Dice difference {fmt_num(c['mean_diff'])} "
                      f"[{fmt_num(c['ci_low'])}, {fmt_num(c['ci_high'])}], Wilcoxon p = {fmt_num(c['p_value'], 3)} "
                      f"(n = {c['n']} test cases)."]
    lines += ["", "![Dice vs label fraction](label_efficiency.png)", "",
              f"Run folders (config, checkpoints, `pred_test/` NIfTI predictions, `eval_test/` per-case metrics): "
              f"`{experiment['exp_dir']}`.", ""]
    if pred_views:
        lines += ["## Test cases: prediction vs truth", ""]
        for name, title in pred_views:
            lines += [f"{title}:", "", f"![{Path(name).stem}]({name})", ""]
    return lines


def _write_report(report: Path, data_dir: Path, run_dir: Path, preset_name: str, preset: dict,
                  timings: dict[str, float], total_s: float, experiment: dict | None = None,
                  pred_views: list[tuple[str, str]] = ()) -> None:
    import csv

    from petctfm.io.atomic import atomic_write_text

    lines = [
        "# petctfm demo report",
        "",
        "**All data here is synthetic** (petctfm's multi-center phantom generator). Nothing in this folder is a "
        "clinical result.",
        "",
        f"Preset `{preset_name}`: {preset['cases']} `{preset['size']}` cases, pretraining preset "
        f"`{preset['pretrain_preset']}`, fine-tuning preset `{preset['finetune_preset']}` "
        f"({preset['max_steps']} pretraining steps, {preset['ft_max_steps']} fine-tuning steps per run; fixed "
        f"steps, no time cap). Total time {total_s:.0f} s.",
        "",
        "Files: `README.md` (this page), `results.md` (the fine-tuning results table, paired tests, exact "
        "command, steps each run took), `label_efficiency.png` (test Dice vs label fraction), `pred_<case>.png` (test cases, "
        "predicted vs true lesion contours), `case_<case>.png` (synthetic cases as harmonized), "
        "`pretrain_loss.png`, `reconstruction.png`, QA histograms.",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
        "",
    ]
    manifest = data_dir / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        sites = sorted({r.get("site", "") for r in rows})
        pos = sum(1 for r in rows if str(r.get("lesion_count", r.get("n_lesions", "0"))) not in ("", "0"))
        lines += ["## Dataset", "", f"{len(rows)} harmonized cases from {len(sites)} sites "
                  f"({', '.join(sites)}); {pos} with lesions. Manifest: `{manifest}`.", ""]
    quarantine = data_dir / "quarantine.csv"
    if quarantine.exists():
        n_bad = max(0, len(quarantine.read_text().strip().splitlines()) - 1)
        lines += [f"Quarantined cases: {n_bad} (`{quarantine}`).", ""]
    for qa_png in sorted((data_dir / "qa").glob("*.png"))[:4] if (data_dir / "qa").exists() else []:
        if "hist" in qa_png.name or "site" in qa_png.name:
            shutil.copy(qa_png, report / qa_png.name)
            lines += [f"![{qa_png.stem}]({qa_png.name})", ""]
    if (run_dir / "metrics.jsonl").exists():
        rows = _loss_curve(run_dir, report / "pretrain_loss.png")
        if rows:
            lines += ["## Pretraining", "", f"{rows[-1]['step']} steps; loss {rows[0]['loss']:.4f} -> "
                      f"{rows[-1]['loss']:.4f}. Run folder: `{run_dir}`.", "", "![loss](pretrain_loss.png)", ""]
        figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").exists() else []
        if figs:
            shutil.copy(figs[-1], report / "reconstruction.png")
            lines += ["Input / masked input / reconstruction (PET and CT, coronal):", "",
                      "![reconstruction](reconstruction.png)", ""]
    steps = _steps_section(run_dir, preset, experiment)
    lines += steps
    if experiment is not None:
        lines += _finetune_section(report, experiment, list(pred_views), preset_name == "tiny")
        # the demo's copy of results.md also says how many steps every arm ran
        atomic_write_text(report / "results.md", (report / "results.md").read_text() + "\n" + "\n".join(steps))
    lines += ["## Cases (as harmonized: SUV and CT on the dataset's grid, lesions and organs)", ""]
    for png in sorted(report.glob("case_*.png")):
        lines += [f"![{png.stem}]({png.name})", ""]
    atomic_write_text(report / "README.md", "\n".join(lines) + "\n")


__all__ = ["PRESETS", "DEMO_RUNS", "N_PRED_VIEWS", "run_demo"]
