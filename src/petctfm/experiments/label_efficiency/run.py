"""The label-efficiency runs: execution, resumable (``RUN/done.json``), through the Python API (fine-tuning:
:func:`petctfm.methods.segmentation.api.finetune`; probes: :func:`petctfm.methods.probe.run_probe`).
:func:`run_label_efficiency` is the experiment's entry point. See :mod:`petctfm.experiments.label_efficiency`."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from petctfm.core.errors import InputError, UsageError
from petctfm.experiments.common import check_settings
from petctfm.experiments.label_efficiency.plan import (ARMS, BOOTSTRAP_SEED, DEFAULT_FRACTIONS, DONE_FILE,
                                                       EVAL_DIR, EXPERIMENT_FILE, HOLDOUT_EVAL_DIR,
                                                       HOLDOUT_PRED_DIR, HOLDOUT_SPLIT, N_RESAMPLES, PRED_DIR,
                                                       PROBE_STEPS, RUN_METRICS, SPLIT, PlannedRun, Settings,
                                                       build_plan, check_holdout, check_pretrained,
                                                       check_separated,
                                                       command_line, parse_runs)
from petctfm.experiments.label_efficiency.report import fmt_num, write_results


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing or unreadable (files are written atomically, so
    an unreadable one was never finished)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finetune_kwargs(run: PlannedRun, settings: Settings, run_dir: Path, progress: bool) -> dict[str, Any]:
    """The :func:`petctfm.methods.segmentation.api.finetune` arguments of a fine-tuning run (what
    ``petctfm finetune`` gets from a user typing the run by hand)."""
    kw: dict[str, Any] = {"dataset": settings.data, "out": run_dir, "preset": settings.preset,
                          "fraction": float(f"{run.fraction / 100.0:g}"), "seed": run.seed,
                          "max_steps": settings.max_steps, "max_time": settings.max_time}
    overrides: list[Any] = []
    if run.arm == "pretrained":
        kw["init"] = settings.pretrained
    else:  # the same network as the pretrained arm, randomly initialized
        kw.update(init=None, backbone=settings.backbone, mode=settings.mode)
        if settings.model_overrides or settings.plan:  # given explicitly, the recipe's plan keeps this network
            overrides.append(("model.overrides", dict(settings.model_overrides)))
        overrides.append(("data.pet_transform", _pretrained_transform(settings)))  # the same input scale
    if settings.plan is not None:  # the recipe, planned from each run's own training cases (both arms alike)
        kw["plan"] = settings.plan
        if settings.plan_voxels is not None:  # the budget timed once for every run: no run times its own
            kw["plan_rule"] = {"patch_voxels": int(settings.plan_voxels), "step_seconds": None}
        if settings.plan_spacing is not None:  # every run on the same training grid
            kw["plan_spacing"] = float(settings.plan_spacing)
    if not progress:
        kw["progress"] = False
    kw["overrides"] = overrides + list(settings.overrides)
    return kw


def timed_plan_voxels(exp_file: Path, settings: Settings, planned: list[PlannedRun], exp_dir: Path) -> int | None:
    """The voxel budget of a timed plan target (``settings.plan``), timed once for every fine-tuning run of the
    experiment: the one saved in ``exp_file`` when the folder has one (a folder written before the budget was
    shared keeps None: its runs timed their own), else the first fine-tuning run's plan, timed now
    (:func:`petctfm.methods.segmentation.api.finetune_configs`; nothing is trained or written). None for an
    untimed target or an experiment without fine-tuning runs."""
    import yaml

    from petctfm.methods.segmentation.api import finetune_configs
    from petctfm.methods.segmentation.plan import TARGETS

    if settings.plan is None or TARGETS[settings.plan]["step_seconds"] is None:
        return None
    if exp_file.is_file():
        saved = (yaml.safe_load(exp_file.read_text()) or {}).get("settings") or {}
        if saved:
            return saved.get("plan_voxels")
    first = next((r for r in planned if r.kind == "finetune"), None)
    if first is None:
        return None
    kw = finetune_kwargs(first, settings, exp_dir / first.name, progress=False)
    task_cfg, _ = finetune_configs(**kw)
    return int(task_cfg["plan"]["rule"]["patch_voxels"])


def _pretrained_transform(settings: Settings) -> str:
    """The pretraining run's PET intensity transform (absent in older runs: ``clip``)."""
    return check_pretrained(settings.pretrained)[1]["data"].get("pet_transform", "clip")


def run_finetune(run: PlannedRun, settings: Settings, run_dir: Path, progress: bool) -> dict[str, Any]:
    """Train (or resume / skip training), predict the test split, evaluate. Returns the run record."""
    from petctfm.evaluate import evaluate_folder, write_report
    from petctfm.methods.finetune import finetune
    from petctfm.predict.split import predict_split
    from petctfm.train import checkpoint as ck
    from petctfm.train.run_dir import finished_summary

    train_summary = finished_summary(run_dir)  # training ended by its budget (not killed / interrupted)
    if train_summary is None:
        resume = ck.latest_checkpoint(run_dir / "checkpoints") is not None
        train_summary = finetune(**finetune_kwargs(run, settings, run_dir, progress), resume=resume)
    splits = [(SPLIT, PRED_DIR, EVAL_DIR)]
    if settings.holdout_site is not None:
        splits.append((HOLDOUT_SPLIT, HOLDOUT_PRED_DIR, HOLDOUT_EVAL_DIR))
    results = {}
    for split, pred_dir, eval_dir in splits:
        predict_split(run_dir, settings.data, split=split, out_dir=run_dir / pred_dir, progress=progress)
        results[split] = evaluate_folder(run_dir / pred_dir, settings.data, split=split, n_resamples=N_RESAMPLES,
                                         seed=BOOTSTRAP_SEED, progress=progress)
        write_report(results[split], run_dir / eval_dir)
    best = run_dir / "best" / "best.json"
    return {"train": {k: train_summary.get(k) for k in ("steps", "stopped", "time_s", "loss")},
            "best": json.loads(best.read_text()) if best.is_file() else None, "result": results[SPLIT],
            **({"holdout": results[HOLDOUT_SPLIT]} if HOLDOUT_SPLIT in results else {})}


def _parse_case_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == "case_id":
            out[k] = v
        elif k == "negative":
            out[k] = v.strip().lower() == "true"
        else:
            try:
                out[k] = float(v) if v != "" else float("nan")
            except ValueError:
                out[k] = v
    return out


def run_probe_arm(run: PlannedRun, settings: Settings, run_dir: Path, progress: bool) -> dict[str, Any]:
    """The k-shot linear probe (head training + test metrics by ``run_probe``), reported like a fine-tune run.
    With a held-out site, the same probe (same seed, same subset: the same head) is run again on the
    ``holdout`` split in ``RUN/holdout/`` (``run_probe`` evaluates one split per call)."""
    out = _probe_split(run, settings, run_dir, SPLIT, EVAL_DIR, progress)
    if settings.holdout_site is not None:
        held = _probe_split(run, settings, run_dir / HOLDOUT_SPLIT, HOLDOUT_SPLIT, HOLDOUT_EVAL_DIR, progress)
        out.update(holdout=held["result"], holdout_case_ap=held["case_ap"])
    return out


def _probe_split(run: PlannedRun, settings: Settings, run_dir: Path, split: str, eval_dir: str,
                 progress: bool) -> dict[str, Any]:
    from petctfm.evaluate import build_result, write_report
    from petctfm.evaluate.cases import BREAKDOWN_COLUMNS, auto_manifest, read_manifest
    from petctfm.methods.probe import ProbeConfig, run_probe

    steps = settings.probe_steps or PROBE_STEPS.get(settings.preset, 300)
    cfg = ProbeConfig(kshot=run.kshot, steps=int(steps), seed=run.seed, n_resamples=N_RESAMPLES, split=split)
    summary = run_probe(settings.data, run.encoders, run_dir, cfg, progress=progress)
    with open(run_dir / "per_case.csv", newline="") as f:
        rows = [_parse_case_row(r) for r in csv.DictReader(f)]
    manifest = auto_manifest(settings.data)
    meta = read_manifest(manifest) if manifest else {}
    columns = [c for c in BREAKDOWN_COLUMNS if any(c in m for m in meta.values())]
    rows = [{"case_id": r["case_id"], **{c: meta.get(r["case_id"], {}).get(c, "") for c in columns},
             **{k: v for k, v in r.items() if k != "case_id"}} for r in rows]
    result = build_result(rows, None, columns, N_RESAMPLES, BOOTSTRAP_SEED,
                          {"pred": f"linear probe {run.name}", "gt": settings.data, "split": split,
                           "manifest": str(manifest) if manifest else None})
    write_report(result, run_dir / eval_dir)
    return {"train": {"steps": summary["steps"], "stopped": "max_steps", "loss": summary.get("loss_last10")},
            "best": None, "result": result, "case_ap": {r["case_id"]: r.get("ap") for r in rows}}


def execute_run(run: PlannedRun, settings: Settings, exp_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Run one planned run to completion and write ``RUN/done.json`` (last, atomically); returns its record."""
    from petctfm.io.atomic import atomic_write_json

    run_dir = exp_dir / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = (run_finetune if run.kind == "finetune" else run_probe_arm)(run, settings, run_dir, progress)
    result = out["result"]

    def run_metrics(res: dict[str, Any]) -> dict[str, Any]:
        return {s["metric"]: {k: s[k] for k in ("n", "mean", "ci_low", "ci_high", "std")}
                for s in res["summary"] if s["group_by"] == "all" and s["metric"] in RUN_METRICS}

    metrics = run_metrics(result)
    held = out.get("holdout")
    record = {
        **run.to_dict(), "n_train_cases": len(run.cases), "split": SPLIT, "n_test_cases": len(result["cases"]),
        "metrics": metrics, "case_dice": {r["case_id"]: r["dice"] for r in result["cases"]},
        **({"case_ap": out["case_ap"]} if "case_ap" in out else {}),
        **({"holdout": {"site": settings.holdout_site, "split": HOLDOUT_SPLIT, "n_test_cases": len(held["cases"]),
                        "metrics": run_metrics(held), "case_dice": {r["case_id"]: r["dice"] for r in held["cases"]},
                        **({"case_ap": out["holdout_case_ap"]} if "holdout_case_ap" in out else {})}}
           if held is not None else {}),
        "train": out["train"], "best": out["best"], "per_case": f"{EVAL_DIR}/per_case.csv",
        "time_s": round(time.perf_counter() - t0, 1),
    }
    from petctfm.io.atomic import json_safe

    record = json_safe(record)  # NaN (undefined Dice) -> None, as a rerun reads it back from done.json
    atomic_write_json(run_dir / DONE_FILE, record)
    return record


def load_done(run_dir: Path) -> dict[str, Any] | None:
    """The record of a finished run (``RUN/done.json``), None when the run is not done."""
    return _read_json(run_dir / DONE_FILE)


def run_plan(plan: list, exp_dir: Path, execute: Callable[[Any], dict[str, Any]], console: Any,
             announce: Callable[[Any], str] | None = None,
             report: Callable[[Any, dict[str, Any]], None] | None = None, jobs: int = 1
             ) -> tuple[list[dict[str, Any]], int]:
    """Run every planned run (anything with a ``name``) in order, resumably: a run whose ``RUN/done.json``
    exists is read back and skipped, the others are ``execute``d (which writes their ``done.json``). Prints a
    header per run (``announce(run)`` adds to it, with an estimate of the time left) and ``report(run, record)``
    after each. ``jobs`` > 1: that many runs at once, each in a spawned process with the machine's cores shared
    among them (:func:`petctfm.experiments.common.threads_per_job`; ``execute`` must then be picklable, e.g. a
    ``functools.partial`` of a module-level function); a run's record is the same either way. Returns (records
    in plan order, number of runs executed now). Shared by every experiment."""
    records: list[dict[str, Any] | None] = []
    todo: list[tuple[int, Any]] = []
    for i, run in enumerate(plan, 1):
        done = load_done(exp_dir / run.name)
        if done is not None:
            console.print(f"[dim][{i}/{len(plan)}] {run.name}: finished earlier, skipped[/]")
        else:
            todo.append((i, run))
        records.append(done)
    if jobs > 1 and len(todo) > 1:
        _run_parallel(plan, todo, records, execute, console, report, jobs)
        return [r for r in records if r is not None], len(todo)
    t0 = time.perf_counter()
    for ran, (i, run) in enumerate(todo):
        elapsed = time.perf_counter() - t0
        eta = f"about {elapsed / ran * (len(todo) - ran) / 60:.1f} min left" if ran else ""
        info = ", ".join(x for x in ((announce(run) if announce else ""), eta) if x)
        console.rule(f"[bold][{i}/{len(plan)}] {run.name}[/]" + (f" ({info})" if info else ""))
        rec = execute(run)
        if report:
            report(run, rec)
        records[i - 1] = rec
    return [r for r in records if r is not None], len(todo)


def _run_parallel(plan: list, todo: list[tuple[int, Any]], records: list[dict[str, Any] | None],
                  execute: Callable[[Any], dict[str, Any]], console: Any,
                  report: Callable[[Any, dict[str, Any]], None] | None, jobs: int) -> None:
    """:func:`run_plan`'s ``jobs`` > 1 branch: ``todo`` in a spawn process pool, ``records`` filled in place."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from petctfm.experiments.common import call_with_threads, threads_per_job

    threads = threads_per_job(jobs)
    console.rule(f"[bold]{len(todo)} of {len(plan)} runs, {jobs} at a time ({threads} torch threads each)[/]")
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
        futures = {ex.submit(call_with_threads, execute, threads, run): (i, run) for i, run in todo}
        for fut in as_completed(futures):
            i, run = futures[fut]
            records[i - 1] = rec = fut.result()
            console.print(f"[{i}/{len(plan)}] {run.name} finished")
            if report:
                report(run, rec)


# ------------------------------------------------------------------------------------------------ the experiment


def check_arguments(seeds: str | Sequence[int] = (0,), arms: str | Sequence[str] = ARMS,
                    fractions: str | Sequence[float] = DEFAULT_FRACTIONS,
                    runs: Sequence[tuple[str, float]] | str | None = None, preset: str | None = None,
                    probe_kshot: int | None = 5, probe_steps: int | None = None,
                    separated: Sequence[str] | None = None, max_steps: int | None = None,
                    max_time: float | None = None, plan: str | None = None, plan_spacing: float | None = None
                    ) -> tuple[list[int], list[str], list[float]]:
    """:func:`run_label_efficiency`'s arguments, before anything is read: a value out of range is a UsageError
    naming the argument. ``seeds`` / ``arms`` / ``fractions`` may be comma-separated text; returns them as lists."""
    from petctfm.core.checks import check_choice, check_choices, check_float, check_int, parse_list
    from petctfm.methods.segmentation.presets import PRESETS

    seeds = [check_int("seeds", s, lo=0) for s in parse_list("seeds", seeds, int, "an integer")]
    arms = check_choices("arms", parse_list("arms", arms, str, "an arm"), ARMS)
    fractions = [check_float("fractions", f, lo=0, hi=100, lo_open=True)
                 for f in parse_list("fractions", fractions, float, "a number")]
    if runs:
        parse_runs(runs)
    if preset is not None:
        check_choice("preset", preset, sorted(PRESETS))
    if probe_kshot is not None:
        check_int("probe_kshot", probe_kshot, lo=0)
    if probe_steps is not None:
        check_int("probe_steps", probe_steps, lo=1)
    if max_steps is not None:
        check_int("max_steps", max_steps, lo=1)
    if max_time is not None:
        check_float("max_time", max_time, lo=0, lo_open=True)
    if separated is not None and len(separated) != 2:
        raise UsageError(f"separated={list(separated)}: must be two runs, PET_RUN CT_RUN", arg="separated")
    if plan is not None:
        from petctfm.methods.segmentation.plan import TARGETS

        check_choice("plan", plan, sorted(TARGETS))
    if plan_spacing is not None:
        if plan is None:
            raise UsageError(f"plan_spacing={plan_spacing}: needs a plan (--plan cpu)", arg="plan_spacing")
        check_float("plan_spacing", plan_spacing, lo=0)
    return seeds, arms, fractions


def run_label_efficiency(data: str | Path, pretrained: str | Path, out: str | Path,
                         runs: Sequence[tuple[str, float]] | str | None = None, seeds: Sequence[int] = (0,),
                         preset: str | None = None, overrides: Sequence[str] = (),
                         arms: Sequence[str] = ARMS, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                         probe_kshot: int | None = 5, probe_steps: int | None = None,
                         separated: Sequence[str] | None = None, max_steps: int | None = None,
                         max_time: float | None = None, holdout_site: str | None = None,
                         plan: str | None = None, plan_spacing: float | None = None, jobs: int = 1,
                         progress: bool = True) -> dict[str, Any]:
    """Plan, run (skipping finished runs), evaluate and report the experiment in ``out``.

    ``runs``: explicit ``[(arm, percent)]`` or ``"pretrained:10,scratch:100"`` instead of ``arms`` x
    ``fractions`` (``seeds``, ``arms``, ``fractions`` may also be comma-separated text; arguments out of range:
    :func:`check_arguments`). ``probe_kshot`` None / 0: no probes. ``separated``: (PET_RUN, CT_RUN). ``max_steps`` /
    ``max_time``: per fine-tuning run. ``overrides``: ``--set`` strings for every fine-tuning run.
    ``holdout_site``: the site the dataset keeps out of training (``petctfm harmonize --holdout-site``); every
    run is also evaluated on it (``RUN/eval_holdout``) and the report shows it beside the in-domain test.
    ``plan`` (``cpu`` | ``gpu``): every fine-tuning run uses the segmentation recipe (``finetune(plan=...)``,
    docs/segmentation-recipe.md) planned from its own training cases, keeping the pretrained network in both
    arms (only the patch, batch, numerics, schedule, oversampling and auxiliary organs are planned).
    ``plan_spacing`` (mm, with ``plan``): every fine-tuning run trains on the dataset's copy at a grid no finer
    (``finetune(plan_spacing=...)``; 0: the dataset's own); the test split is still predicted and scored on the
    dataset's grid (predictions are resampled back).
    ``jobs``: runs trained at once, each in its own process with the cores shared among them (the same steps and
    records; only the wall time changes).
    Returns ``{"exp_dir", "plan", "records", "summary", "results_md", "results_csv", "plot", "command"}``.
    """
    import yaml
    from rich.console import Console

    from petctfm.core.checks import check_int
    from petctfm.core.version import __version__
    from petctfm.data import format as fmt
    from petctfm.io.atomic import atomic_write_text
    from petctfm.methods.segmentation.presets import PRESETS
    from petctfm.train.config import default_preset

    seeds, arms, fractions = check_arguments(seeds=seeds, arms=arms, fractions=fractions, runs=runs, preset=preset,
                                             probe_kshot=probe_kshot, probe_steps=probe_steps, separated=separated,
                                             max_steps=max_steps, max_time=max_time, plan=plan,
                                             plan_spacing=plan_spacing)
    check_int("jobs", jobs, lo=1)
    console = Console(quiet=not progress)
    data = Path(data)
    if not (data / fmt.SPLITS_JSON).is_file():
        raise InputError(f"{data}: not a harmonized dataset (no {fmt.SPLITS_JSON}; run 'petctfm harmonize')")
    weights, pcfg = check_pretrained(pretrained)
    holdout = check_holdout(data, pcfg, weights, holdout_site) if holdout_site is not None else []
    preset = preset or default_preset()
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if separated is not None and len(separated) != 2:
        raise InputError("--separated takes two runs: PET_RUN CT_RUN")
    sep = check_separated(*separated) if separated else []
    for enc in sep if holdout_site is not None else []:
        check_holdout(data, check_pretrained(enc)[1], enc, holdout_site)
    explicit = parse_runs(runs) if runs else None
    seeds = [int(s) for s in seeds]
    settings = Settings(data=str(data), pretrained=str(weights), preset=preset,
                        backbone=pcfg["model"]["backbone"], mode=pcfg["data"]["mode"],
                        model_overrides=dict(pcfg["model"].get("overrides") or {}), max_steps=max_steps,
                        max_time=max_time, overrides=list(overrides), probe_kshot=int(probe_kshot or 0) or None,
                        probe_steps=probe_steps, separated=sep, holdout_site=holdout_site, plan=plan,
                        plan_spacing=None if plan_spacing is None else float(plan_spacing))
    planned = build_plan(data, arms, fractions, seeds, explicit, settings.probe_kshot, str(weights), sep or None,
                      holdout)
    exp_dir = Path(out)
    exp_dir.mkdir(parents=True, exist_ok=True)
    settings.plan_voxels = timed_plan_voxels(exp_dir / EXPERIMENT_FILE, settings, planned, exp_dir)
    check_settings(exp_dir / EXPERIMENT_FILE, settings)
    command = command_line(settings, exp_dir, seeds, None if explicit else list(arms),
                           None if explicit else [float(f) for f in fractions], explicit)
    atomic_write_text(exp_dir / EXPERIMENT_FILE, yaml.safe_dump({
        "experiment": "label-efficiency", "petctfm": __version__, "command": command, "settings": asdict(settings),
        "seeds": seeds, "runs": [r.to_dict() for r in planned]}, sort_keys=False))

    def announce(run: PlannedRun) -> str:
        return f"{len(run.cases)} training cases"

    def report(run: PlannedRun, rec: dict[str, Any]) -> None:
        d = rec["metrics"]["dice"]
        console.print(f"[green]{run.name}[/]: test Dice {fmt_num(d['mean'])} [{fmt_num(d['ci_low'])}, "
                      f"{fmt_num(d['ci_high'])}] in {rec['time_s']:.0f} s")

    execute = (partial(execute_run, settings=settings, exp_dir=exp_dir, progress=False) if jobs > 1
               else lambda run: execute_run(run, settings, exp_dir, progress))
    records, ran = run_plan(planned, exp_dir, execute, console, announce, report, jobs=jobs)
    summary = write_results(exp_dir, records, planned, settings, command)
    console.print(f"label-efficiency: {len(records)} runs ({ran} run now); results in {exp_dir / 'results.md'}")
    return {"exp_dir": exp_dir, "plan": planned, "records": records, "summary": summary,
            "results_md": exp_dir / "results.md", "results_csv": exp_dir / "results.csv",
            "plot": exp_dir / "label_efficiency.png", "command": command}


__all__ = ["finetune_kwargs", "timed_plan_voxels", "run_finetune", "run_probe_arm", "execute_run", "load_done", "run_plan",
           "check_arguments", "run_label_efficiency"]
