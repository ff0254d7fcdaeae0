"""The vs-nnU-Net experiment: export, nnU-Net planning, the runs (resumable: ``RUN/done.json``), the report.
:func:`run_vs_nnunet` is the entry point (what ``petctfm experiment vs-nnunet`` calls).
See :mod:`petctfm.experiments.vs_nnunet` and docs/vs-nnunet.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from petctfm.core.errors import InputError
from petctfm.experiments.common import check_settings, threads_per_job
from petctfm.experiments.vs_nnunet.plan import (BOOTSTRAP_SEED, CONFIGURATION, DONE_FILE, EVAL_DIR, EXPERIMENT_FILE,
                                                HOLDOUT_SPLIT, N_RESAMPLES, PLANS, PRED_DIR, SPLIT,
                                                TARGET_VALIDATIONS, Arm, Settings, build_plan, child_env,
                                                command_line, dataset_folder_name)

#: The module the nnU-Net child process runs (``python -m``).
CHILD_MODULE = "petctfm.experiments.vs_nnunet.nnunet_job"
PLAN_RESULT = "plans_summary.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pred_eval_dirs(split: str) -> tuple[str, str]:
    return (PRED_DIR, EVAL_DIR) if split == SPLIT else (f"pred_{split}", f"eval_{split}")


def run_child(job: dict[str, Any], job_dir: Path, exp_dir: Path, results_dir: Path, device: str,
              name: str, threads: int | None = None) -> dict[str, Any]:
    """Run one nnU-Net job in a child process (nnU-Net's variables set there only); its log in
    ``job_dir/<name>.log``; one-line error with the log's tail when it fails. ``threads``: the child's torch /
    OpenMP threads (arms sharing the machine)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {**job, "result": str(job_dir / f"{name}_result.json")}
    job_file = job_dir / f"{name}_job.json"
    job_file.write_text(json.dumps(job, indent=2))
    env = child_env(exp_dir, results_dir, device)
    env.setdefault("nnUNet_def_n_proc", "1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    if job["action"] == "plan" and env.get("nnUNet_n_proc_DA") == "0":
        env["nnUNet_n_proc_DA"] = "1"  # nnU-Net's planner sets torch threads to this number (0 is refused)
    src = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    log = job_dir / f"{name}.log"
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", CHILD_MODULE, str(job_file)], env=env, stdout=f,
                            stderr=subprocess.STDOUT).returncode
    result = _read_json(Path(job["result"]))
    if rc != 0 or result is None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
        raise InputError(f"nnU-Net {job['action']} failed (exit {rc}); see {log}: {' '.join(tail)[:300]}")
    return result


def nnunet_plans(exp_dir: Path, settings: Settings) -> dict[str, Any]:
    """nnU-Net's fingerprint, plans and 3d_fullres preprocessing (once; ``nnunet/plans_summary.json``)."""
    base = exp_dir / "nnunet"
    done = _read_json(base / PLAN_RESULT)
    if done is not None and all(p in done for p in settings.plans):
        return done
    plans = {"default": {"name": PLANS["default"], "gpu_memory_gb": None},
             "cpu": {"name": PLANS["cpu"], "gpu_memory_gb": settings.cpu_plan_gpu_memory_gb}}
    job = {"action": "plan", "dataset_id": settings.dataset_id,
           "dataset_name": dataset_folder_name(settings.dataset_id), "configuration": CONFIGURATION,
           "plans": {k: plans[k] for k in settings.plans}}
    result = run_child(job, base / "jobs", exp_dir, base / "results_unused", settings.device, "plan")
    from petctfm.io.atomic import atomic_write_json

    atomic_write_json(base / PLAN_RESULT, result)
    return result


def _evaluate(pred_dir: Path, settings: Settings, split: str, out_dir: Path) -> dict[str, Any]:
    from petctfm.evaluate import evaluate_folder, write_report

    res = evaluate_folder(pred_dir, settings.data, split=split, n_resamples=N_RESAMPLES, seed=BOOTSTRAP_SEED)
    write_report(res, out_dir)
    return res


def _splits(settings: Settings) -> list[str]:
    return [SPLIT] + ([HOLDOUT_SPLIT] if settings.holdout_site else [])


def run_floor(arm: Arm, settings: Settings, run_dir: Path) -> dict[str, Any]:
    from petctfm.experiments.vs_nnunet.floor import predict_floor

    out: dict[str, Any] = {"seconds_per_case": {}, "results": {}}
    for split in _splits(settings):
        pred, ev = _pred_eval_dirs(split)
        out["seconds_per_case"].update(predict_floor(settings.data, split, float(arm.threshold), run_dir / pred))
        out["results"][split] = _evaluate(run_dir / pred, settings, split, run_dir / ev)
    out["train"] = {"steps": 0, "epochs": 0, "stopped": "not trained", "train_s": 0.0}
    return out


def run_nnunet(arm: Arm, settings: Settings, run_dir: Path, exp_dir: Path, test_cases: dict[str, list[str]]
               ) -> dict[str, Any]:
    """Train nnU-Net (budget trainer) with ``arm.plan``, validate, predict test (and holdout), evaluate. A run
    killed before ``done.json`` starts again from scratch (its nnU-Net results folder is removed)."""
    results_dir = run_dir / "nnUNet_results"
    if results_dir.exists():
        shutil.rmtree(results_dir)
    raw = exp_dir / "nnunet" / "raw" / dataset_folder_name(settings.dataset_id)
    pred_tmp = run_dir / "pred_nnunet"
    cases = [c for s in _splits(settings) for c in test_cases[s]]
    job = {"action": "train", "dataset_id": settings.dataset_id,
           "dataset_name": dataset_folder_name(settings.dataset_id), "configuration": CONFIGURATION,
           "plans_name": PLANS[arm.plan], "budget_s": settings.minutes * 60.0, "seed": int(arm.seed),
           "device": settings.device, "target_validations": TARGET_VALIDATIONS,
           "mirroring": bool(settings.tta), "final_validation": len(settings.plans) > 1,
           "predict": {"images": str(raw / "imagesTs"), "cases": cases, "out": str(pred_tmp)}}
    res = run_child(job, run_dir, exp_dir, results_dir, settings.device, "nnunet",
                    threads=threads_per_job(settings.jobs) if settings.jobs > 1 else None)
    out: dict[str, Any] = {"results": {}, "seconds_per_case": res["predict"]["seconds_per_case"]}
    for split in _splits(settings):
        pred, ev = _pred_eval_dirs(split)
        (run_dir / pred).mkdir(parents=True, exist_ok=True)
        for cid in test_cases[split]:
            shutil.copyfile(pred_tmp / f"{cid}.nii.gz", run_dir / pred / f"{cid}.nii.gz")
        out["results"][split] = _evaluate(run_dir / pred, settings, split, run_dir / ev)
    budget = _read_json(Path(res["fold_dir"]) / "budget_log.json") or {}
    out["curve"] = [{"minutes": e["seconds"] / 60.0, "dice": e["pseudo_dice"], "ema": e["ema_pseudo_dice"],
                     "iterations": e["iterations"]} for e in budget.get("epochs", [])]
    out["train"] = {"steps": res["iterations"], "epochs": res["epochs"], "stopped": res["stopped"],
                    "train_s": res["train_s"], "iterations_per_epoch": res["iterations_per_epoch"],
                    "val_iterations_per_epoch": res["val_iterations_per_epoch"],
                    "seconds_per_iteration": res["seconds_per_iteration"], "validation_s": res["validation_s"]}
    out["val_dice"] = res["val_dice"]
    out["nnunet_split"] = res["split"]
    return out


def _petctfm_curve(run_dir: Path) -> list[dict[str, Any]]:
    """Val Dice vs minutes: ``val.jsonl`` (step, Dice) with each step's time from ``metrics.jsonl``
    (``time_s`` every ``log_every`` steps; linear interpolation between logged steps)."""
    import numpy as np

    def rows(name: str) -> list[dict]:
        p = run_dir / name
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []

    times = [(r["step"], r["time_s"]) for r in rows("metrics.jsonl") if "time_s" in r and "step" in r]
    if not times:
        return []
    steps, secs = np.array([t[0] for t in times], float), np.array([t[1] for t in times], float)
    out = []
    for r in rows("val.jsonl"):
        if r.get("dice") is None:
            continue
        s = float(r["step"])
        t = float(np.interp(s, steps, secs)) if s <= steps[-1] else float(secs[-1] * s / max(steps[-1], 1.0))
        out.append({"minutes": t / 60.0, "dice": float(r["dice"]), "steps": int(r["step"])})
    return out


#: petctfm's validations within the budget (the last at its end), and the share of the budget kept for them.
VALIDATIONS = 4
VALIDATION_SHARE = 0.12
CALIBRATION_FILE = "calibration.json"


def seconds_from_mtimes(paths: Sequence[Path], t0: float) -> dict[str, float]:
    """Per-case seconds of predictions written one after another since ``t0`` (``time.time()``): the gaps
    between the files' modification times (the first includes loading the model once)."""
    seconds, prev = {}, t0
    for p in paths:
        m = p.stat().st_mtime
        seconds[p.name.split(".")[0]] = max(0.0, m - prev)
        prev = m
    return seconds


def calibrate_steps(settings: Settings, run_dir: Path, seed: int, steps: int = 12) -> dict[str, Any]:
    """Seconds per training step of petctfm's planned run, measured on this machine now (``steps`` steps of the
    exact config in ``RUN/calibration/``, the median of steps 3..), and the steps that fill the budget less
    :data:`VALIDATION_SHARE`; written to ``RUN/calibration.json`` (the calibration counts outside the budget,
    as nnU-Net's planning and preprocessing do)."""
    from petctfm.io.atomic import atomic_write_json
    from petctfm.methods.finetune import finetune
    from petctfm.train.run_dir import median_step_seconds

    work = run_dir / "calibration"
    if work.exists():
        shutil.rmtree(work)
    finetune(settings.data, work, init="scratch", backbone=settings.backbone, preset=settings.preset,
             plan=settings.recipe, max_steps=steps, seed=seed, device=settings.device, progress=False, log_every=1,
             figure_every=0, checkpoint_every=10 ** 6)
    per_step = median_step_seconds(work)
    out = {"seconds_per_step": per_step, "calibration_steps": steps,
           "steps": max(1, int(settings.minutes * 60.0 * (1.0 - VALIDATION_SHARE) / per_step))}
    shutil.rmtree(work)
    atomic_write_json(run_dir / CALIBRATION_FILE, out)
    return out


def run_petctfm(arm: Arm, settings: Settings, run_dir: Path) -> dict[str, Any]:
    """petctfm's UNet fine-tuning from scratch for the same wall time, its best checkpoint by val Dice predicting
    the test split (``predict_split``), evaluated. With the recipe, the run's steps are calibrated to fill the
    budget (:func:`calibrate_steps`) and validated :data:`VALIDATIONS` times. A killed run resumes (the
    trainer's exact resume)."""
    from petctfm.methods.finetune import finetune
    from petctfm.predict.split import predict_split
    from petctfm.train import checkpoint as ck
    from petctfm.train.run_dir import finished_summary

    train_dir = run_dir / "run"
    summary = finished_summary(train_dir)
    calib = _read_json(run_dir / CALIBRATION_FILE)
    if summary is None:
        resume = ck.latest_checkpoint(train_dir / "checkpoints") is not None
        extra: dict[str, Any] = {}
        if settings.recipe and not resume:
            extra["plan"] = settings.recipe
            calib = calib or calibrate_steps(settings, run_dir, int(arm.seed))
            # the planned steps fill the budget (less a share for validation): the poly LR anneals to 0 at the
            # end of the budget instead of at a preset's max_steps; max_time stays the hard stop
            extra.update(max_steps=calib["steps"], figure_every=max(1, calib["steps"] // VALIDATIONS))
        if not resume:  # the same targets as nnU-Net's export: the organ classes, or explicitly none
            extra["overrides"] = {"task.aux_classes": dict(settings.organs or {})}
        t0 = time.perf_counter()
        summary = finetune(settings.data, train_dir, init="scratch", backbone=settings.backbone,
                           preset=settings.preset, max_time=settings.minutes * 60.0, seed=int(arm.seed),
                           device=settings.device, progress=False, resume=resume, **extra)
        summary = {**summary, "wall_s": time.perf_counter() - t0}
    out: dict[str, Any] = {"results": {}, "seconds_per_case": {}}
    for split in _splits(settings):
        pred, ev = _pred_eval_dirs(split)
        t0 = time.time()
        paths = predict_split(train_dir, settings.data, split=split, out_dir=run_dir / pred, device=settings.device)
        out["seconds_per_case"].update(seconds_from_mtimes(paths, t0))
        out["results"][split] = _evaluate(run_dir / pred, settings, split, run_dir / ev)
    best = _read_json(train_dir / "best" / "best.json")
    out["val_dice"] = best.get("dice") if best else None
    out["curve"] = _petctfm_curve(train_dir)
    out["train"] = {"steps": summary.get("steps"), "stopped": summary.get("stopped"),
                    "train_s": summary.get("time_s"), "best_step": best.get("step") if best else None,
                    **({"planned_steps": calib["steps"], "seconds_per_step": calib["seconds_per_step"]}
                       if calib else {})}
    return out


def execute_arm(arm: Arm, settings: Settings, exp_dir: Path, test_cases: dict[str, list[str]]) -> dict[str, Any]:
    """Run one arm and write ``RUN/done.json`` last (atomically); returns its record. With ``settings.jobs`` > 1
    (arms sharing the machine) this process uses :func:`threads_per_job` torch threads."""
    from petctfm.io.atomic import atomic_write_json, json_safe

    if settings.jobs > 1:
        import torch

        torch.set_num_threads(threads_per_job(settings.jobs))

    run_dir = exp_dir / arm.name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if arm.kind == "floor":
        out = run_floor(arm, settings, run_dir)
    elif arm.kind == "nnunet":
        out = run_nnunet(arm, settings, run_dir, exp_dir, test_cases)
    else:
        out = run_petctfm(arm, settings, run_dir)
    record = {**arm.to_dict(), "train": out["train"], "val_dice": out.get("val_dice"), "curve": out.get("curve", []),
              "seconds_per_case": out["seconds_per_case"], "time_s": round(time.perf_counter() - t0, 1),
              **({"nnunet_split": out["nnunet_split"]} if "nnunet_split" in out else {})}
    for split, res in out["results"].items():
        record[split] = {"cases": [{k: r.get(k) for k in ("case_id", "dice", "fp_volume_ml", "fn_volume_ml",
                                                          "lesion_f1", "negative")} for r in res["cases"]],
                         "per_case": f"{_pred_eval_dirs(split)[1]}/per_case.csv"}
    record = json_safe(record)
    atomic_write_json(run_dir / DONE_FILE, record)
    return record


def adopt_petctfm_runs(settings: Settings, exp_dir: Path, seeds: Sequence[int]) -> list[Path]:
    """Copy finished petctfm fine-tuning runs (``settings.petctfm_runs`` with ``{seed}`` = each seed) into
    ``E/petctfm_s<seed>/run``, where :func:`run_petctfm` then only predicts and scores them (a copy: the source
    run is never written to; one already in place is kept). Each must be finished (``summary.json`` stopped at
    its steps or time), a lesion run trained on exactly the dataset's train split, with the same targets as
    nnU-Net's export (``task.aux_classes`` = the organ classes, or none): otherwise one-line InputError, before
    anything is copied. Returns the run folders in ``E``."""
    from petctfm.data import format as fmt
    from petctfm.train.config import saved_run_configs
    from petctfm.train.run_dir import finished_summary

    train = set(fmt.load_splits(settings.data).get("train") or [])
    sources = []
    for seed in seeds:
        src = Path(str(settings.petctfm_runs).replace("{seed}", str(seed))).resolve()
        saved = saved_run_configs(src) if finished_summary(src) is not None else None
        if saved is None:
            raise InputError(f"{src}: not a finished petctfm fine-tuning run (no summary.json and config.yaml of a "
                             "run that reached its steps or time); --petctfm-runs takes finished runs, '{seed}' "
                             "standing for the seed")
        task = saved[0]
        head = task.get("task") or {}
        if head.get("name", "lesions") != "lesions":
            raise InputError(f"{src}: a {head.get('name')!r} run; vs-nnunet compares lesion models")
        cases = set((task.get("subset") or {}).get("cases") or [])
        if cases != train:
            raise InputError(f"{src}: trained on {len(cases)} cases, not the {len(train)} of {settings.data}'s train "
                             f"split ({len(cases - train)} outside it, {len(train - cases)} of it missing): nnU-Net "
                             "would train on other cases")
        aux = dict(head.get("aux_classes") or {})
        if aux != dict(settings.organs or {}):
            raise InputError(f"{src}: trained with {len(aux)} auxiliary organ classes, nnU-Net's export has "
                             f"{len(settings.organs or {})}: use --organs {'on' if aux else 'off'}")
        sources.append((seed, src))
    out = []
    for seed, src in sources:
        dst = exp_dir / f"petctfm_s{seed}" / "run"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(".run.copying")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, symlinks=True)
            tmp.rename(dst)
        out.append(dst)
    return out


def _check_holdout(data: Path, site: str) -> None:
    from petctfm.data import format as fmt

    splits = fmt.load_splits(data)
    if splits.get("holdout_site") != site or not splits.get(HOLDOUT_SPLIT):
        raise InputError(f"--holdout-site {site!r}: {data} does not hold that site out (its splits.json holdout_site "
                         f"is {splits.get('holdout_site')!r}); run 'petctfm harmonize --finalize {data} "
                         f"--holdout-site {site}' first")


def resolve_organs(data: Path, choice: str, recipe: str | None) -> dict[str, int] | None:
    """The organ classes both arms train (organ name -> value of ``organs.npy``: the dataset's organ table,
    :func:`petctfm.methods.segmentation.api.organ_task`), or None. ``choice``: ``off`` -> None; ``on`` -> the
    table, and every train and val case must have ``organs.npy`` (else a one-line InputError); ``auto`` -> the
    table when petctfm's ``recipe`` trains organs (:data:`petctfm.methods.segmentation.plan.TARGETS`) and every
    train and val case has an organ map, else None."""
    from petctfm.data import format as fmt
    from petctfm.methods.segmentation.api import organ_task
    from petctfm.methods.segmentation.plan import TARGETS

    if choice not in ("auto", "on", "off"):
        raise InputError(f"--organs must be auto, on or off, got {choice!r}")
    if choice == "off":
        return None
    splits = fmt.load_splits(data)
    ids = list(splits.get("train") or []) + list(splits.get("val") or [])
    missing = [c for c in ids if not (fmt.case_dir(data, c) / "organs.npy").is_file()]
    if choice == "auto" and (missing or not recipe or not TARGETS[recipe].get("aux_organs")):
        return None
    if missing:
        raise InputError(f"{fmt.case_dir(data, missing[0]) / 'organs.npy'}: missing ({len(missing)} of {len(ids)} "
                         "train and val cases have no organ map); --organs on needs every one (or --organs off)")
    return organ_task(data, None)["classes"] or None


def run_vs_nnunet(data: str | Path, out: str | Path, minutes: float, seeds: Sequence[int] = (0,),
                  device: str | None = None, preset: str | None = None, backbone: str | None = None,
                  plans: Sequence[str] = tuple(PLANS), holdout_site: str | None = None,
                  dataset_id: int | None = None, progress: bool = True, recipe: str | None = "auto",
                  tta: bool = True, jobs: int = 1, organs: str = "auto",
                  petctfm_runs: str | None = None) -> dict[str, Any]:
    """Plan, run (skipping finished arms) and report the experiment in ``out``.

    ``minutes``: the training wall time of every trained arm. ``device``: cpu | cuda (default: cuda when
    available). ``preset``: petctfm's fine-tuning preset (default gpu on CUDA, else cpu); ``backbone``: its
    backbone (default the preset's). ``plans``: nnU-Net plans to run (default ``default,cpu``); the stronger by
    nnU-Net's validation Dice is the one petctfm is compared with (nnU-Net's final full-volume validation runs
    only then). ``recipe``: petctfm's planned recipe (``cpu`` | ``gpu`` | None for the bare preset; ``auto``:
    the device's). ``tta``: nnU-Net's mirroring at inference (False: no test-time augmentation in either arm;
    petctfm's predictor has none). ``organs`` (``auto`` | ``on`` | ``off``): both arms learn the organ map as
    extra classes (petctfm's ``task.aux_classes``, nnU-Net's labels 2..; both scored on the lesion alone) or
    neither; ``auto`` = on when petctfm's recipe trains them and every train and val case has ``organs.npy``
    (:func:`resolve_organs`). ``petctfm_runs``: finished petctfm fine-tuning runs to compare instead of
    training them, a path with ``{seed}`` for each seed (:func:`adopt_petctfm_runs` checks and copies them in).
    ``jobs``: trained arms at once, each in its own process with the cores shared
    evenly (2 on a 2-core CPU: petctfm and nnU-Net side by side, one core each). A confirmation cohort is
    scored afterwards by :func:`petctfm.experiments.vs_nnunet.confirm.run_confirm` (``--confirm``). Returns ``{"exp_dir", "records", "summary",
    "results_md", "results_csv", "plot", "command"}``.
    """
    import yaml
    from rich.console import Console

    from petctfm.core.version import __version__
    from petctfm.data import format as fmt
    from petctfm.experiments.label_efficiency.run import run_plan
    from petctfm.experiments.vs_nnunet.export import export_splits
    from petctfm.experiments.vs_nnunet.plan import DATASET_ID
    from petctfm.experiments.vs_nnunet.report import write_results
    from petctfm.io.atomic import atomic_write_text
    from petctfm.methods.segmentation.presets import PRESETS

    console = Console(quiet=not progress)
    data = Path(data).resolve()
    if not (data / fmt.SPLITS_JSON).is_file():
        raise InputError(f"{data}: not a harmonized dataset (no {fmt.SPLITS_JSON}; run 'petctfm harmonize')")
    if not minutes or float(minutes) <= 0:
        raise InputError(f"--minutes must be > 0, got {minutes}")
    plans = [str(p) for p in plans]
    unknown = [p for p in plans if p not in PLANS]
    if unknown or not plans:
        raise InputError(f"--plans: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(PLANS)}")
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available")
    preset = preset or ("gpu" if device == "cuda" else "cpu")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if recipe == "auto":
        recipe = "gpu" if device == "cuda" else "cpu"
    if recipe not in (None, "none", "cpu", "gpu"):
        raise InputError(f"--recipe must be cpu, gpu or none, got {recipe!r}")
    recipe = None if recipe == "none" else recipe
    # the recipe plans nnU-Net's own PlainConvUNet; the bare preset brings its backbone
    backbone = backbone or ("nnunet-plain" if recipe else PRESETS[preset]["task"]["model"]["backbone"])
    if holdout_site is not None:
        _check_holdout(data, holdout_site)
    try:
        import importlib.util

        if importlib.util.find_spec("nnunetv2") is None:
            raise ImportError
    except ImportError:
        raise InputError("nnunetv2 is not installed: pip install 'petctfm[nnunet]' (nnunetv2==2.8.1)") from None
    seeds = [int(s) for s in seeds]
    if int(jobs) < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    settings = Settings(data=str(data), minutes=float(minutes), device=device, preset=preset, backbone=backbone,
                        plans=plans, dataset_id=int(dataset_id or DATASET_ID), holdout_site=holdout_site,
                        recipe=recipe, tta=bool(tta), jobs=int(jobs), organs=resolve_organs(data, organs, recipe),
                        petctfm_runs=str(petctfm_runs) if petctfm_runs else None)
    exp_dir = Path(out).resolve()
    exp_dir.mkdir(parents=True, exist_ok=True)
    check_settings(exp_dir / EXPERIMENT_FILE, settings)
    if settings.petctfm_runs:
        adopt_petctfm_runs(settings, exp_dir, seeds)
    plan = build_plan(seeds, plans)
    command = command_line(settings, exp_dir, seeds)
    atomic_write_text(exp_dir / EXPERIMENT_FILE, yaml.safe_dump({
        "experiment": "vs-nnunet", "petctfm": __version__, "command": command, "settings": asdict(settings),
        "seeds": seeds, "runs": [a.to_dict() for a in plan]}, sort_keys=False))

    console.rule("[bold]export to nnU-Net raw, nnU-Net planning and preprocessing[/]")
    export = export_splits(data, exp_dir, settings.dataset_id, tuple(_splits(settings)), organs=settings.organs)
    plan_summary = nnunet_plans(exp_dir, settings)
    for k, p in plan_summary.items():
        console.print(f"nnU-Net plan {k}: patch {p['patch_size']}, batch {p['batch_size']}, "
                      f"{p['parameters'] / 1e6:.1f} M parameters")

    def report(arm: Arm, rec: dict[str, Any]) -> None:
        from petctfm.evaluate.bootstrap import defined

        d = defined(c["dice"] for c in rec[SPLIT]["cases"])
        console.print(f"[green]{arm.name}[/]: test Dice {d.mean() if len(d) else float('nan'):.3f} "
                      f"({rec['train'].get('steps')} steps) in {rec['time_s']:.0f} s")

    # the floors first (seconds, in this process), then the trained arms, settings.jobs at a time (run_plan
    # spawns them with the cores shared; execute_arm is a module-level function, so the partial pickles)
    execute = partial(execute_arm, settings=settings, exp_dir=exp_dir, test_cases=export["test"])
    floors = [a for a in plan if a.kind == "floor"]
    trained = [a for a in plan if a.kind != "floor"]
    rec_f, ran_f = run_plan(floors, exp_dir, execute, console, None, report)
    rec_t, ran_t = run_plan(trained, exp_dir, execute, console, None, report, jobs=settings.jobs)
    by_name = {a.name: r for a, r in zip(floors + trained, rec_f + rec_t)}
    records, ran = [by_name[a.name] for a in plan], ran_f + ran_t
    summary = write_results(exp_dir, records, settings, seeds, plan_summary, export, command)
    console.print(f"vs-nnunet: {len(records)} runs ({ran} run now); results in {exp_dir / 'results.md'}")
    return {"exp_dir": exp_dir, "records": records, "summary": summary, "plan_summary": plan_summary,
            "export": export, "results_md": exp_dir / "results.md", "results_csv": exp_dir / "results.csv",
            "plot": exp_dir / "vs_nnunet.png", "command": command}


__all__ = ["resolve_organs", "adopt_petctfm_runs", "run_child", "nnunet_plans", "run_floor", "seconds_from_mtimes", "calibrate_steps", "run_nnunet", "run_petctfm", "execute_arm", "run_vs_nnunet"]
