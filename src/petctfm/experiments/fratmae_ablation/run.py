"""The FratMAE ablation runs, resumable, through the Python API: pretraining
(:func:`petctfm.methods.fratmae.api.pretrain_fratmae`), fine-tuning
(:func:`petctfm.methods.fratmae.finetune.finetune_fratmae`, then ``predict_split`` + ``evaluate_folder`` on
the test split), staging (:func:`petctfm.methods.staging.run_stage`). :func:`run_fratmae_ablation` is the entry
point. A finished run has ``RUN/done.json`` (written last, atomically, as in ``label_efficiency``) and is
skipped on a rerun; a killed training resumes from its last checkpoint."""

from __future__ import annotations

import csv
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from petctfm.core.errors import InputError
from petctfm.experiments.common import check_settings
from petctfm.experiments.fratmae_ablation.plan import (AXIAL_INIT, EXPERIMENT_FILE, STAGE_MODES, Planned, Settings,
                                                       build_plan, command_line)
from petctfm.experiments.fratmae_ablation.report import write_results
from petctfm.experiments.label_efficiency.plan import DONE_FILE, EVAL_DIR, PRED_DIR, SPLIT
from petctfm.experiments.label_efficiency.run import load_done, run_plan


def _train(run_dir: Path, fn, **kw: Any) -> dict[str, Any]:
    """Train with ``fn`` (a pretrain / finetune API) unless the run ended by its budget; resume a killed one."""
    from petctfm.io.atomic import json_safe
    from petctfm.train.checkpoint import latest_checkpoint
    from petctfm.train.run_dir import finished_summary

    done = load_done(run_dir)
    if done is not None:
        return done
    s = finished_summary(run_dir)
    if s is not None:
        return s
    resume = latest_checkpoint(run_dir / "checkpoints") is not None
    return json_safe(fn(out=run_dir, resume=resume, **kw))


def run_pretrain(p: Planned, s: Settings, exp_dir: Path, progress: bool) -> dict[str, Any]:
    from petctfm.io.atomic import atomic_write_json
    from petctfm.methods.fratmae.api import pretrain_fratmae

    run_dir = exp_dir / p.name
    summary = _train(run_dir, pretrain_fratmae, dataset=s.data, preset=s.preset, variant=p.variant,
                     max_steps=s.pretrain_steps, overrides=list(s.pretrain_overrides), seed=p.seed, progress=progress)
    record = {**p.to_dict(), "train": {k: summary.get(k) for k in ("steps", "stopped", "loss")}}
    if load_done(run_dir) is None:
        atomic_write_json(run_dir / DONE_FILE, record)
    return record


def run_finetune(p: Planned, s: Settings, exp_dir: Path, progress: bool) -> dict[str, Any]:
    """Fine-tune (or resume), predict the test split, evaluate; the record with per-case Dice and IoU."""
    from petctfm.evaluate import evaluate_folder, write_report
    from petctfm.methods.fratmae.finetune import finetune_fratmae
    from petctfm.predict.split import predict_split
    from petctfm.train.checkpoint import resolve_weights

    run_dir = exp_dir / p.name
    kw: dict[str, Any] = {"init": str(resolve_weights(exp_dir / p.pretrain)) if p.pretrain else None}
    if not p.pretrain:
        kw["stack"] = p.stack
    summary = _train(run_dir, finetune_fratmae, dataset=s.data, preset=s.preset, seed=p.seed,
                     fraction=float(f"{float(p.fraction) / 100:g}"), max_steps=s.max_steps,
                     overrides=list(s.overrides), progress=progress, **kw)
    predict_split(run_dir, s.data, split=SPLIT, out_dir=run_dir / PRED_DIR, progress=progress)
    result = evaluate_folder(run_dir / PRED_DIR, s.data, split=SPLIT, n_resamples=s.n_resamples, seed=0,
                             progress=progress)
    write_report(result, run_dir / EVAL_DIR)
    from petctfm.train.config import saved_run_configs

    cases = saved_run_configs(run_dir)[0]["subset"]["cases"]
    return {**p.to_dict(), "n_train_cases": len(cases),
            "train": {k: summary.get(k) for k in ("steps", "stopped", "loss")},
            "case_dice": {r["case_id"]: r["dice"] for r in result["cases"]},
            "case_iou": {r["case_id"]: r["iou"] for r in result["cases"]}}


def axial_init(exp_dir: Path, fratmae_run: Path) -> Path:
    """The FratMAE pretraining run's network on axial stacks, untrained (``EXP/init_axial/model.safetensors``,
    written once): what ``random:`` of Table 2's axial staging control reads its geometry from."""
    import copy

    from petctfm.train.checkpoint import build_from_config, read_weights, save_weights

    path = exp_dir / AXIAL_INIT / "model.safetensors"
    if not path.is_file():
        _, cfg, _ = read_weights(fratmae_run)
        cfg = copy.deepcopy(cfg)
        cfg["data"]["stack"] = "axial"
        save_weights(build_from_config(cfg, fratmae_run), path, cfg)
    return path


def run_staging(p: Planned, s: Settings, exp_dir: Path, progress: bool) -> dict[str, Any]:
    """Staging from the pretraining run's encoder (no pretraining: ``random:`` of the FratMAE run; axial: of
    :func:`axial_init`): ``probe`` = MLP on frozen features (:func:`petctfm.methods.staging.run_stage`),
    ``finetune`` = the paper's end-to-end fine-tuning
    (:func:`petctfm.methods.fratmae.stage_finetune.run_stage_finetune`)."""
    from petctfm.train.checkpoint import resolve_weights

    weights = resolve_weights(exp_dir / p.pretrain)
    if p.stack == "axial":
        weights = axial_init(exp_dir, weights)
    spec = str(weights) if p.variant else f"random:{weights}"
    run_dir = exp_dir / p.name
    if s.stage_mode == "finetune":
        from petctfm.methods.fratmae.stage_finetune import StageFinetuneConfig, run_stage_finetune

        m = run_stage_finetune(s.data, spec, run_dir, StageFinetuneConfig(
            epochs=s.stage_epochs, seed=p.seed, n_resamples=s.n_resamples, fraction=stage_fraction(s)))
    else:
        from petctfm.methods.staging import StageConfig, run_stage

        m = run_stage(s.data, [spec], run_dir, StageConfig(seed=p.seed, n_resamples=s.n_resamples,
                                                             max_epochs=s.stage_epochs), progress=progress)
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {**p.to_dict(), "balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"],
            "case_prob": {r["case_id"]: float(r["prob_advanced"]) for r in rows},
            "case_label": {r["case_id"]: int(r["label"]) for r in rows}}


def execute(p: Planned, s: Settings, exp_dir: Path, progress: bool) -> dict[str, Any]:
    """Run one planned run and write its ``done.json`` (last); returns the record."""
    from petctfm.io.atomic import atomic_write_json, json_safe

    if p.kind == "pretrain":
        return run_pretrain(p, s, exp_dir, progress)
    t0 = time.perf_counter()
    record = (run_finetune if p.kind == "finetune" else run_staging)(p, s, exp_dir, progress)
    record = json_safe({**record, "time_s": round(time.perf_counter() - t0, 1)})
    atomic_write_json(exp_dir / p.name / DONE_FILE, record)
    return record


def stage_fraction(s: Settings) -> float:
    """The stored fraction (ratio) fine-tuned staging trains on: ``stage_fraction``, else ``fraction``."""
    pct = s.stage_fraction if s.stage_fraction is not None else s.fraction
    return float(f"{float(pct) / 100:g}")


def staging_possible(data: str | Path, fraction: float | None = None) -> str | None:
    """None when the dataset supports staging (staged train cases of both classes, within the stored
    ``fraction`` (ratio) when given, and a staged test case), else the reason (the experiment then skips
    staging and says so)."""
    from petctfm.data import format as fmt
    from petctfm.methods.fratmae.stage_finetune import subset_cases
    from petctfm.methods.staging import staged_cases

    try:
        labels = staged_cases(data)
        cases = subset_cases(data, fraction)
    except InputError as exc:
        return str(exc)
    splits = fmt.load_splits(data)
    train = {labels[c] for c in cases if c in labels}
    if train != {0, 1} or not any(c in labels for c in splits.get("test", [])):
        where = "train cases" if fraction is None else f"train cases in the stored {fraction:g} fraction"
        return f"{data}: staging needs early and advanced {where} and a staged test case"
    return None


def check_arguments(fraction: float = 20.0, more_fractions: str | Sequence[float] = (40.0, 100.0),
                    seeds: str | Sequence[int] = (0,), preset: str | None = None, pretrain_steps: int | None = None,
                    max_steps: int | None = None, stage_epochs: int = 500, n_resamples: int = 1000,
                    stage_mode: str = "probe", stage_fraction: float | None = None) -> tuple[list[int], list[float]]:
    """:func:`run_fratmae_ablation`'s arguments, before anything is read: a value out of range is a UsageError
    naming the argument. ``seeds`` / ``more_fractions`` may be comma-separated text (``more_fractions``:
    ``"none"`` or empty = none); returns them as lists."""
    from petctfm.core.checks import check_choice, check_float, check_int, parse_list
    from petctfm.methods.fratmae.presets import PRESETS

    check_float("fraction", fraction, lo=0, hi=100, lo_open=True)
    none = (isinstance(more_fractions, str) and more_fractions.strip().lower() in ("", "none")) or (
        not isinstance(more_fractions, str) and len(more_fractions) == 0)
    more = [] if none else [check_float("more_fractions", f, lo=0, hi=100, lo_open=True)
                            for f in parse_list("more_fractions", more_fractions, float, "a number")]
    seeds = [check_int("seeds", s, lo=0) for s in parse_list("seeds", seeds, int, "an integer")]
    if preset is not None:
        check_choice("preset", preset, sorted(PRESETS))
    for name, value in (("pretrain_steps", pretrain_steps), ("max_steps", max_steps)):
        if value is not None:
            check_int(name, value, lo=1)
    check_int("stage_epochs", stage_epochs, lo=1)
    check_int("n_resamples", n_resamples, lo=0)
    check_choice("stage_mode", stage_mode, STAGE_MODES)
    if stage_fraction is not None:
        check_float("stage_fraction", stage_fraction, lo=0, hi=100, lo_open=True)
    return seeds, more


def run_fratmae_ablation(data: str | Path, out: str | Path, fraction: float = 20.0,
                         more_fractions: Sequence[float] = (40.0, 100.0), seeds: Sequence[int] = (0,),
                         preset: str | None = None, pretrain_steps: int | None = None, max_steps: int | None = None,
                         overrides: Sequence[str] = (), pretrain_overrides: Sequence[str] = (), stage: bool = True,
                         stage_epochs: int = 500, n_resamples: int = 1000, stage_mode: str = "probe",
                         stage_fraction: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Plan, run (skipping finished runs), evaluate and report the ablation in ``out``.

    ``fraction``: the stored label fraction (percent) of Table 3 and Table 2; ``more_fractions``: where no
    pretraining and FratMAE are compared again. ``pretrain_steps`` / ``max_steps``: per pretraining / fine-tuning
    run, the same for every arm (default: the preset's; ``pretrain_steps`` None = ``max_steps``). ``overrides`` /
    ``pretrain_overrides``: ``--set`` strings for every fine-tuning / pretraining run. ``seeds`` and
    ``more_fractions`` may be comma-separated text; arguments out of range: :func:`check_arguments`. ``stage``: also run
    staging (skipped with a note when the dataset has no staged cases); ``stage_mode``: ``probe`` (frozen encoder,
    MLP on the whole train split) or ``finetune`` (the paper's: end to end, lr 5e-5, batch 2, ``stage_epochs``
    epochs, on the stored ``stage_fraction``, default ``fraction``). Every staging mode also stages Table 2's
    axial control. Returns ``{"exp_dir", "plan", "records",
    "summary", "results_md", "results_csv", "plot", "command"}``.
    """
    import yaml
    from rich.console import Console

    from petctfm.core.version import __version__
    from petctfm.data import format as fmt
    from petctfm.io.atomic import atomic_write_text
    from petctfm.methods.fratmae.presets import PRESETS
    from petctfm.train.config import default_preset

    seeds, more_fractions = check_arguments(fraction=fraction, more_fractions=more_fractions, seeds=seeds,
                                            preset=preset, pretrain_steps=pretrain_steps, max_steps=max_steps,
                                            stage_epochs=stage_epochs, n_resamples=n_resamples,
                                            stage_mode=stage_mode, stage_fraction=stage_fraction)
    console = Console(quiet=not progress)
    data = Path(data)
    if not (data / fmt.SPLITS_JSON).is_file():
        raise InputError(f"{data}: not a harmonized dataset (no {fmt.SPLITS_JSON}; run 'petctfm harmonize')")
    preset = preset or default_preset()
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    notes = []
    s_frac = None if stage_mode == "probe" else float(f"{float(stage_fraction or fraction) / 100:g}")
    why = staging_possible(data, s_frac) if stage else None
    if why:
        notes.append(f"staging skipped: {why}")
    settings = Settings(data=str(data), preset=preset, fraction=float(fraction),
                        more_fractions=[float(f) for f in more_fractions],
                        pretrain_steps=pretrain_steps if pretrain_steps is not None else max_steps,
                        max_steps=max_steps, overrides=list(overrides), pretrain_overrides=list(pretrain_overrides),
                        stage=bool(stage and not why), stage_epochs=int(stage_epochs), n_resamples=int(n_resamples),
                        stage_mode=stage_mode,
                        stage_fraction=None if stage_fraction is None else float(stage_fraction))
    seeds = [int(s) for s in seeds]
    plan = build_plan(settings.fraction, settings.more_fractions, seeds, settings.stage)
    from petctfm.methods.segmentation.task import resolve_subset

    for pct in {settings.fraction, *settings.more_fractions}:  # a missing stored fraction fails now, not later
        resolve_subset(data, fraction=float(f"{pct / 100:g}"))
    exp_dir = Path(out)
    exp_dir.mkdir(parents=True, exist_ok=True)
    check_settings(exp_dir / EXPERIMENT_FILE, settings)
    command = command_line(settings, str(exp_dir), seeds)
    atomic_write_text(exp_dir / EXPERIMENT_FILE, yaml.safe_dump({
        "experiment": "fratmae-ablation", "petctfm": __version__, "command": command, "settings": asdict(settings),
        "seeds": seeds, "runs": [p.to_dict() for p in plan]}, sort_keys=False))
    records, ran = run_plan(plan, exp_dir, lambda p: execute(p, settings, exp_dir, progress), console)
    summary = write_results(exp_dir, [r for r in records if r["kind"] != "pretrain"], plan, settings, command, notes)
    console.print(f"fratmae-ablation: {len(records)} runs ({ran} run now); results in {exp_dir / 'results.md'}")
    return {"exp_dir": exp_dir, "plan": plan, "records": records, "summary": summary, "ran": ran,
            "results_md": exp_dir / "results.md", "results_csv": exp_dir / "results.csv",
            "plot": exp_dir / "fratmae_ablation.png", "command": command}


__all__ = ["run_pretrain", "run_finetune", "axial_init", "run_staging", "execute", "stage_fraction",
           "staging_possible", "check_arguments",
           "run_fratmae_ablation"]
