"""The label-efficiency experiment (``petctfm experiment label-efficiency``): does pretraining save labels?

The seeds' claim: a PET/CT model pretrained self-supervised and fine-tuned on 10% of the labeled training
cases reaches the test Dice of the same network trained from scratch on 100%, and in 5-shot linear probing
a jointly (PET+CT) pretrained encoder beats "separated" PET-only + CT-only encoders. This module runs that
comparison on any harmonized dataset and reports it like the seed tables (FratMAE: Dice with 95% bootstrap
CIs, 1,000 resamples).

The method, top to bottom:

1. **Plan** (:func:`build_plan`): a list of :class:`PlannedRun`, each with a stable name that is also its
   folder in the experiment directory:

   - ``finetune_{arm}_f{percent}_s{seed}`` for arm ``pretrained`` (encoder of the pretraining run) or
     ``scratch`` (random weights, the pretraining run's backbone, model overrides and input mode), at each
     stored label fraction ``splits.json["fractions"][percent]`` (default 10, 20, 40, 100) and each seed;
     or exactly the ``(arm, percent)`` pairs given as ``runs`` (``--runs pretrained:10,scratch:100``);
   - ``probe_joint_k{K}_s{seed}`` (the pretraining run's frozen encoder) and ``probe_separated_k{K}_s{seed}``
     (a PET-only and a CT-only pretraining run side by side), 5-shot by default (``splits.json["kshot"]``).

   Every run records the exact stored subset it trains on (``cases``), resolved once, from splits.json.
2. **Fine-tuning runs** go through the ``petctfm finetune`` code: the command line is built
   (:func:`finetune_argv`), parsed by the real parser, turned into configs by
   :func:`petctfm.cli.finetune.build_configs` and trained by :class:`~petctfm.methods.segmentation.segmenter.FinetuneTask`
   with the generic trainer (best checkpoint by val Dice). The best checkpoint predicts the **test** split
   (:func:`petctfm.inference.sliding_window.predict_split`, NIfTI) and :func:`petctfm.evaluate.evaluate_folder`
   scores it (per-case CSV, summary with bootstrap CIs, plot in ``RUN/eval_test/``).
3. **Probe runs** use :func:`petctfm.methods.probe.run_probe`, which trains the linear head and computes the
   test per-case metrics in memory with the same :func:`petctfm.evaluate.metrics.case_metrics`; those rows
   go through :func:`petctfm.evaluate.build_result` / ``write_report`` into the same ``RUN/eval_test/``.
4. **Resume**: a run is finished when ``RUN/done.json`` exists (written atomically, last, after predictions
   and evaluation); finished runs are skipped. A fine-tuning run whose training ended (``summary.json``
   with ``stopped`` = ``max_steps`` / ``max_time``) is only predicted and evaluated again; one with
   checkpoints but no finished training (killed) continues with the trainer's exact resume. Probes are
   short and restart. The experiment's settings and plan are ``EXP_DIR/experiment.yaml``; a directory
   holding an experiment with other settings is refused.
5. **Results** (:func:`summarize`, :func:`write_results`): per run, the mean test Dice with a percentile
   bootstrap 95% CI over test cases (1,000 resamples, seed 0), FP / FN volume (autoPET), lesion F1. Per arm
   and fraction over seeds: per-case Dice averaged over seeds, its mean with a bootstrap CI over cases, and
   the SD of the per-seed means. Paired Wilcoxon signed-rank tests (over test cases, seed-averaged Dice):
   pretrained vs scratch at each fraction, and pretrained at the smallest fraction vs scratch at 100%
   (the seeds' headline). ``results.csv``, ``results.md``, ``label_efficiency.png`` (Dice vs label fraction,
   log-x, CI bands; probes in a second panel).

All data in petctfm is synthetic; ``results.md`` says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from petctfm.core.errors import InputError
from petctfm.io.tables import csv_text

ARMS = ("pretrained", "scratch")
PROBE_ARMS = ("joint", "separated")
DEFAULT_FRACTIONS = (10.0, 20.0, 40.0, 100.0)
DONE_FILE = "done.json"
EXPERIMENT_FILE = "experiment.yaml"
EVAL_DIR = "eval_test"
PRED_DIR = "pred_test"
SPLIT = "test"
N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: Linear-probe head training steps per preset (the probe's patch is the encoder's pretraining patch).
PROBE_STEPS = {"tiny": 20, "cpu": 200, "gpu": 1000}
#: Per-run metrics carried into results.csv (means over test cases with bootstrap CIs).
RUN_METRICS = ("dice", "fp_volume_ml", "fn_volume_ml", "lesion_f1")


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class PlannedRun:
    """One run of the experiment. ``fraction`` is a percentage (finetune), ``kshot`` the shots (probe);
    ``cases`` the exact stored training subset; ``encoders`` the probe's pretraining runs."""

    name: str
    kind: str  # "finetune" | "probe"
    arm: str  # "pretrained" | "scratch" | "joint" | "separated"
    seed: int
    subset: str
    cases: list[str]
    fraction: float | None = None
    kshot: int | None = None
    encoders: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(x: float) -> str:
    return f"{float(x):g}"


def parse_list(text: str | Sequence, cast=float, what: str = "value") -> list:
    """``"10,20,40"`` (or a list) -> ``[10.0, 20.0, 40.0]``; one-line error on a bad item."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for it in items:
        if isinstance(it, str) and not it.strip():
            continue
        try:
            out.append(cast(it.strip() if isinstance(it, str) else it))
        except (TypeError, ValueError):
            raise InputError(f"bad {what} {it!r} (expected a comma-separated list)") from None
    if not out:
        raise InputError(f"empty list of {what}s")
    return out


def parse_runs(spec: str | Sequence) -> list[tuple[str, float]]:
    """``"pretrained:10,scratch:10,scratch:100"`` (or a list of such items / pairs) -> [(arm, percent)]."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[tuple[str, float]] = []
    for it in items:
        if isinstance(it, (tuple, list)):
            arm, pct = it
        else:
            if not it.strip():
                continue
            arm, _, pct = it.strip().partition(":")
        try:
            pct = float(pct)
        except (TypeError, ValueError):
            raise InputError(f"--runs: bad item {it!r} (expected ARM:PERCENT, e.g. pretrained:10)") from None
        if arm not in ARMS:
            raise InputError(f"--runs: unknown arm {arm!r} in {it!r} (choose {', '.join(ARMS)})")
        if (arm, pct) not in out:
            out.append((arm, pct))
    if not out:
        raise InputError("--runs: no runs given")
    return out


def _fraction_subset(data: str | Path, pct: float) -> tuple[str, list[str]]:
    from petctfm.methods.segmentation.segmenter import resolve_subset

    if not 0 < pct <= 100:
        raise InputError(f"label fraction {pct:g}% must be in (0, 100]")
    return resolve_subset(data, fraction=pct / 100.0)  # a ratio, so that 1 means 1% (not 100%)


def build_plan(data: str | Path, arms: Sequence[str] = ARMS, fractions: Sequence[float] = DEFAULT_FRACTIONS,
               seeds: Sequence[int] = (0,), runs: Sequence[tuple[str, float]] | None = None,
               probe_kshot: int | None = 5, joint_encoder: str | None = None,
               separated: Sequence[str] | None = None) -> list[PlannedRun]:
    """The experiment's runs, fine-tuning first (by fraction, arm, seed), then probes (by seed).

    ``runs`` (explicit ``(arm, percent)`` pairs) replaces the ``arms`` x ``fractions`` product. Probes are
    planned when ``probe_kshot`` is set: ``joint`` with ``joint_encoder``, ``separated`` only when the two
    runs ``separated = (PET_RUN, CT_RUN)`` are given. Subsets come from ``data/splits.json`` (one-line
    errors for a fraction or k-shot subset that is not stored).
    """
    for a in arms:
        if a not in ARMS:
            raise InputError(f"unknown arm {a!r} (choose {', '.join(ARMS)})")
    pairs = list(runs) if runs else [(a, float(f)) for f in fractions for a in arms]
    pairs = sorted(pairs, key=lambda p: (p[1], ARMS.index(p[0])))
    plan: list[PlannedRun] = []
    for arm, pct in pairs:
        subset, cases = _fraction_subset(data, float(pct))
        for s in seeds:
            plan.append(PlannedRun(f"finetune_{arm}_f{_pct(pct)}_s{int(s)}", "finetune", arm, int(s), subset,
                                   list(cases), fraction=float(pct)))
    if probe_kshot:
        from petctfm.methods.probe import subset_cases

        subset, cases = subset_cases(data, int(probe_kshot), None)
        probes = [("joint", [str(joint_encoder)])] if joint_encoder else []
        if separated:
            probes.append(("separated", [str(p) for p in separated]))
        for s in seeds:
            for arm, enc in probes:
                plan.append(PlannedRun(f"probe_{arm}_k{int(probe_kshot)}_s{int(s)}", "probe", arm, int(s), subset,
                                       list(cases), kshot=int(probe_kshot), encoders=enc))
    return plan


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class Settings:
    """Everything that decides what a run computes (saved in experiment.yaml; must match on resume)."""

    data: str
    pretrained: str  # the resolved weights file of the pretraining run
    preset: str
    backbone: str
    mode: str
    model_overrides: dict[str, Any]
    max_steps: int | None = None
    max_time: float | None = None
    overrides: list[str] = field(default_factory=list)
    probe_kshot: int | None = 5
    probe_steps: int | None = None
    separated: list[str] = field(default_factory=list)


def check_pretrained(pretrained: str | Path) -> tuple[Path, dict[str, Any]]:
    """(weights file, config) of the pretraining run; one-line InputError when it is not one."""
    from petctfm.methods.segmentation.segmenter import pretrained_config

    cfg, _, path = pretrained_config(pretrained)
    return Path(path), cfg


def check_separated(pet_run: str | Path, ct_run: str | Path) -> list[str]:
    """Resolved weights of a PET-only and a CT-only pretraining run (modes checked)."""
    out = []
    for run, want in ((pet_run, "pet"), (ct_run, "ct")):
        path, cfg = check_pretrained(run)
        if cfg["data"]["mode"] != want:
            raise InputError(f"{path}: --separated expects a {want.upper()}-only pretraining run (mode {want!r}), "
                             f"this one has mode {cfg['data']['mode']!r}")
        out.append(str(path))
    return out


def command_line(settings: Settings, out: str | Path, seeds: Sequence[int], arms: Sequence[str] | None,
                 fractions: Sequence[float] | None, runs: Sequence[tuple[str, float]] | None) -> str:
    """The ``petctfm experiment label-efficiency`` command that reproduces this experiment."""
    argv = ["petctfm", "experiment", "label-efficiency", "--data", settings.data, "--pretrained",
            settings.pretrained, "--out", str(out), "--preset", settings.preset,
            "--seeds", ",".join(str(s) for s in seeds)]
    if runs:
        argv += ["--runs", ",".join(f"{a}:{_pct(p)}" for a, p in runs)]
    else:
        argv += ["--arms", ",".join(arms or ARMS), "--fractions", ",".join(_pct(f) for f in fractions or ())]
    argv += ["--probe-kshot", str(settings.probe_kshot or 0)]
    if settings.probe_steps is not None:
        argv += ["--probe-steps", str(settings.probe_steps)]
    if settings.separated:
        argv += ["--separated", *settings.separated]
    if settings.max_steps is not None:
        argv += ["--max-steps", str(settings.max_steps)]
    if settings.max_time is not None:
        argv += ["--max-time", f"{settings.max_time:g}"]
    for kv in settings.overrides:
        argv += ["--set", kv]
    return " ".join(shlex.quote(a) for a in argv)


# ------------------------------------------------------------------------------------------------ one run


def finetune_argv(run: PlannedRun, settings: Settings, run_dir: Path, progress: bool) -> list[str]:
    """The ``petctfm finetune`` arguments of a fine-tuning run (what a user would type)."""
    argv = ["finetune", "--data", settings.data, "--out", str(run_dir), "--preset", settings.preset,
            "--fraction", f"{run.fraction / 100.0:g}", "--seed", str(run.seed)]
    if run.arm == "pretrained":
        argv += ["--init", settings.pretrained]
    else:  # the same network as the pretrained arm, randomly initialized
        argv += ["--init", "scratch", "--backbone", settings.backbone, "--mode", settings.mode]
        if settings.model_overrides:
            argv += ["--set", "model.overrides=" + json.dumps(settings.model_overrides)]
    if settings.max_steps is not None:
        argv += ["--max-steps", str(settings.max_steps)]
    if settings.max_time is not None:
        argv += ["--max-time", f"{settings.max_time:g}"]
    if not progress:
        argv += ["--no-progress"]
    for kv in settings.overrides:
        argv += ["--set", kv]
    return argv


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing or unreadable (files are written atomically, so
    an unreadable one was never finished)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _training_finished(run_dir: Path) -> dict[str, Any] | None:
    """The trainer's summary when training ended by its budget (not killed / interrupted), else None."""
    from petctfm.train.trainer import SUMMARY_FILE

    s = _read_json(run_dir / SUMMARY_FILE)
    return s if s and s.get("stopped") in ("max_steps", "max_time") else None


def run_finetune(run: PlannedRun, settings: Settings, run_dir: Path, progress: bool) -> dict[str, Any]:
    """Train (or resume / skip training), predict the test split, evaluate. Returns the run record."""
    from petctfm.cli.finetune import build_configs
    from petctfm.cli.main import build_parser
    from petctfm.evaluate import evaluate_folder, write_report
    from petctfm.inference.sliding_window import predict_split
    from petctfm.methods.segmentation.segmenter import FinetuneTask
    from petctfm.train import checkpoint as ck
    from petctfm.train.trainer import train

    train_summary = _training_finished(run_dir)
    if train_summary is None:
        resume = ck.latest_checkpoint(run_dir / "checkpoints") is not None
        args = build_parser().parse_args(finetune_argv(run, settings, run_dir, progress))
        args.resume = resume
        task_cfg, train_cfg = build_configs(args)
        if task_cfg["subset"]["cases"] != run.cases:  # the plan and the fine-tuning CLI read the same splits
            raise InputError(f"{run_dir}: training subset differs from the experiment plan (splits.json changed?)")
        train_summary = train(FinetuneTask(task_cfg), train_cfg, run_dir, resume=resume)
    predict_split(run_dir, settings.data, split=SPLIT, out_dir=run_dir / PRED_DIR, progress=progress)
    result = evaluate_folder(run_dir / PRED_DIR, settings.data, split=SPLIT, n_resamples=N_RESAMPLES,
                             seed=BOOTSTRAP_SEED, progress=progress)
    write_report(result, run_dir / EVAL_DIR)
    best = run_dir / "best" / "best.json"
    return {"train": {k: train_summary.get(k) for k in ("steps", "stopped", "time_s", "loss")},
            "best": json.loads(best.read_text()) if best.is_file() else None, "result": result}


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
    """The k-shot linear probe (head training + test metrics by ``run_probe``), reported like a fine-tune run."""
    from petctfm.evaluate import build_result, write_report
    from petctfm.evaluate.cases import BREAKDOWN_COLUMNS, auto_manifest, read_manifest
    from petctfm.methods.probe import ProbeConfig, run_probe

    steps = settings.probe_steps or PROBE_STEPS.get(settings.preset, 300)
    cfg = ProbeConfig(kshot=run.kshot, steps=int(steps), seed=run.seed, n_resamples=N_RESAMPLES, split=SPLIT)
    summary = run_probe(settings.data, run.encoders, run_dir, cfg, progress=progress)
    with open(run_dir / "per_case.csv", newline="") as f:
        rows = [_parse_case_row(r) for r in csv.DictReader(f)]
    manifest = auto_manifest(settings.data)
    meta = read_manifest(manifest) if manifest else {}
    columns = [c for c in BREAKDOWN_COLUMNS if any(c in m for m in meta.values())]
    rows = [{"case_id": r["case_id"], **{c: meta.get(r["case_id"], {}).get(c, "") for c in columns},
             **{k: v for k, v in r.items() if k != "case_id"}} for r in rows]
    result = build_result(rows, None, columns, N_RESAMPLES, BOOTSTRAP_SEED,
                          {"pred": f"linear probe {run.name}", "gt": settings.data, "split": SPLIT,
                           "manifest": str(manifest) if manifest else None})
    write_report(result, run_dir / EVAL_DIR)
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
    metrics = {s["metric"]: {k: s[k] for k in ("n", "mean", "ci_low", "ci_high", "std")}
               for s in result["summary"] if s["group_by"] == "all" and s["metric"] in RUN_METRICS}
    record = {
        **run.to_dict(), "n_train_cases": len(run.cases), "split": SPLIT, "n_test_cases": len(result["cases"]),
        "metrics": metrics, "case_dice": {r["case_id"]: r["dice"] for r in result["cases"]},
        **({"case_ap": out["case_ap"]} if "case_ap" in out else {}),
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


# ------------------------------------------------------------------------------------------------ results


def _nan(x: Any) -> float:
    return float("nan") if x is None or x == "" else float(x)


def _case_matrix(records: list[dict[str, Any]], key: str = "case_dice") -> dict[str, float]:
    """Per test case, the metric ``key`` (``case_dice``, or ``case_ap`` for probes) averaged over the records
    (seeds); NaN where undefined (negative cases)."""
    cases = sorted({c for r in records for c in r.get(key, {})})
    out = {}
    for c in cases:
        vals = [_nan(r.get(key, {}).get(c)) for r in records]
        vals = [v for v in vals if math.isfinite(v)]
        out[c] = float(np.mean(vals)) if vals else float("nan")
    return out


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate finished runs: per (kind, arm, fraction|kshot) over seeds, and the paired comparisons.

    Returns ``{"groups": [...], "comparisons": [...]}``. A group's ``dice`` is the mean over test cases of
    the seed-averaged per-case Dice with its bootstrap CI over cases (:func:`mean_ci`), ``dice_sd`` the SD of
    the per-seed means (NaN with one seed); the other metrics are means over seeds of the per-run means.
    """
    from petctfm.evaluate.bootstrap import mean_ci, paired_comparison

    keyed: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        level = r["fraction"] if r["kind"] == "finetune" else r["kshot"]
        keyed.setdefault((r["kind"], r["arm"], level), []).append(r)
    groups = []
    for (kind, arm, level), rs in keyed.items():
        per_case = _case_matrix(rs)
        seed_means = [_nan(r["metrics"]["dice"]["mean"]) for r in rs]
        g = {"kind": kind, "arm": arm, "fraction": level if kind == "finetune" else None,
             "kshot": level if kind == "probe" else None, "n_seeds": len(rs), "seeds": [r["seed"] for r in rs],
             "n_train_cases": rs[0]["n_train_cases"], "n_test_cases": rs[0]["n_test_cases"],
             "dice": mean_ci(list(per_case.values()), N_RESAMPLES, BOOTSTRAP_SEED),
             "dice_sd": float(np.std(seed_means, ddof=1)) if len(rs) > 1 else float("nan"),
             "case_dice": per_case}
        if any("case_ap" in r for r in rs):  # probes: threshold-free voxel-wise average precision
            g["case_ap"] = _case_matrix(rs, "case_ap")
            g["ap"] = mean_ci(list(g["case_ap"].values()), N_RESAMPLES, BOOTSTRAP_SEED)
        for m in RUN_METRICS[1:]:
            g[m] = float(np.nanmean([_nan(r["metrics"][m]["mean"]) for r in rs])) if rs else float("nan")
        groups.append(g)
    groups.sort(key=lambda g: (g["kind"] != "finetune", ARMS.index(g["arm"]) if g["arm"] in ARMS
                               else PROBE_ARMS.index(g["arm"]), g["fraction"] or g["kshot"] or 0))
    find = {(g["kind"], g["arm"], g["fraction"] if g["kind"] == "finetune" else g["kshot"]): g for g in groups}

    def compare(a: dict, b: dict, label: str, key: str = "case_dice") -> dict[str, Any]:
        ids = sorted(set(a[key]) & set(b[key]))
        c = paired_comparison([a[key][i] for i in ids], [b[key][i] for i in ids], N_RESAMPLES, BOOTSTRAP_SEED)
        return {"comparison": label, "metric": "ap" if key == "case_ap" else "dice", "a": _group_label(a),
                "b": _group_label(b), **c}

    comps = []
    fracs = sorted({g["fraction"] for g in groups if g["kind"] == "finetune"})
    for f in fracs:
        if ("finetune", "pretrained", f) in find and ("finetune", "scratch", f) in find:
            comps.append(compare(find[("finetune", "pretrained", f)], find[("finetune", "scratch", f)],
                                 f"pretrained vs scratch at {_pct(f)}%"))
    pre = sorted(f for (k, a, f) in find if k == "finetune" and a == "pretrained")
    if pre and ("finetune", "scratch", 100.0) in find and pre[0] < 100:
        comps.append(compare(find[("finetune", "pretrained", pre[0])], find[("finetune", "scratch", 100.0)],
                             f"pretrained at {_pct(pre[0])}% vs scratch at 100%"))
    ks = sorted({g["kshot"] for g in groups if g["kind"] == "probe"})
    for k in ks:
        if ("probe", "joint", k) in find and ("probe", "separated", k) in find:
            joint, sep = find[("probe", "joint", k)], find[("probe", "separated", k)]
            comps.append(compare(joint, sep, f"{k}-shot probe: joint vs separated"))
            if "case_ap" in joint and "case_ap" in sep:
                comps.append(compare(joint, sep, f"{k}-shot probe: joint vs separated, AP", "case_ap"))
    return {"groups": groups, "comparisons": comps}


def _group_label(g: dict[str, Any]) -> str:
    if g["kind"] == "finetune":
        return f"{g['arm']} {_pct(g['fraction'])}%"
    return f"probe {g['arm']} {g['kshot']}-shot"


def fmt_num(x: Any, digits: int = 3) -> str:
    x = _nan(x)
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def format_dice(g: dict[str, Any]) -> str:
    d = g["dice"]
    if not d["n"]:
        return "n/a"
    sd = f" ± {fmt_num(g['dice_sd'])}" if g["n_seeds"] > 1 else ""
    return f"{fmt_num(d['mean'])}{sd} [{fmt_num(d['ci_low'])}, {fmt_num(d['ci_high'])}]"


RESULT_COLUMNS = [
    "row", "name", "kind", "arm", "fraction", "kshot", "seed", "n_seeds", "n_train_cases", "n_test_cases",
    "dice_n", "dice_mean", "dice_ci_low", "dice_ci_high", "dice_sd", "fp_volume_ml", "fn_volume_ml", "lesion_f1",
    "ap_mean", "ap_ci_low", "ap_ci_high",
    "steps", "stopped", "time_s", "a", "b", "mean_diff", "diff_ci_low", "diff_ci_high", "wins_a", "wins_b", "ties",
    "p_value",
]


def result_rows(records: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """results.csv rows: one per run (``row=run``), per group over seeds (``aggregate``), per test (``wilcoxon``)."""
    rows = []
    for r in records:
        m = r["metrics"]
        rows.append({"row": "run", "name": r["name"], "kind": r["kind"], "arm": r["arm"], "fraction": r["fraction"],
                     "kshot": r["kshot"], "seed": r["seed"], "n_seeds": 1, "n_train_cases": r["n_train_cases"],
                     "n_test_cases": r["n_test_cases"], "dice_n": m["dice"]["n"], "dice_mean": m["dice"]["mean"],
                     "dice_ci_low": m["dice"]["ci_low"], "dice_ci_high": m["dice"]["ci_high"],
                     **{k: m[k]["mean"] for k in RUN_METRICS[1:]},
                     "steps": (r.get("train") or {}).get("steps"), "stopped": (r.get("train") or {}).get("stopped"),
                     "time_s": r.get("time_s")})
    for g in summary["groups"]:
        rows.append({"row": "aggregate", "name": _group_label(g), "kind": g["kind"], "arm": g["arm"],
                     "fraction": g["fraction"], "kshot": g["kshot"], "seed": " ".join(map(str, g["seeds"])),
                     "n_seeds": g["n_seeds"], "n_train_cases": g["n_train_cases"], "n_test_cases": g["n_test_cases"],
                     "dice_n": g["dice"]["n"], "dice_mean": g["dice"]["mean"], "dice_ci_low": g["dice"]["ci_low"],
                     "dice_ci_high": g["dice"]["ci_high"], "dice_sd": g["dice_sd"],
                     **{k: g[k] for k in RUN_METRICS[1:]},
                     **({f"ap_{k}": g["ap"][k] for k in ("mean", "ci_low", "ci_high")} if "ap" in g else {})})
    for c in summary["comparisons"]:
        rows.append({"row": "wilcoxon", "name": c["comparison"],  # dice_n: cases compared (Dice or AP) "a": c["a"], "b": c["b"], "dice_n": c["n"],
                     "mean_diff": c["mean_diff"], "diff_ci_low": c["ci_low"], "diff_ci_high": c["ci_high"],
                     "wins_a": c["wins_a"], "wins_b": c["wins_b"], "ties": c["ties"], "p_value": c["p_value"]})
    return rows


def results_markdown(records: list[dict[str, Any]], summary: dict[str, Any], plan: list[PlannedRun],
                     settings: Settings, command: str, missing: list[str]) -> str:
    """The report: the seed-style table, secondary metrics, paired tests, the probe table, the runs."""
    ft = [g for g in summary["groups"] if g["kind"] == "finetune"]
    pr = [g for g in summary["groups"] if g["kind"] == "probe"]
    n_test = records[0]["n_test_cases"] if records else 0
    n_pos = next((g["dice"]["n"] for g in summary["groups"]), 0)
    lines = [
        "# Label-efficiency experiment",
        "",
        "**Synthetic data.** Every case comes from petctfm's phantom generator (`petctfm synth`); these numbers "
        "test the code and the experimental design, they are not clinical results and say nothing about real "
        "patients.",
        "",
        f"- dataset: `{settings.data}`; test split: {n_test} cases ({n_pos} with lesions; Dice is undefined on "
        "cases without lesions, autoPET convention, so those count only in the FP volume)",
        f"- pretrained encoder: `{settings.pretrained}` ({settings.backbone}, mode {settings.mode}); scratch = the "
        "same network with random weights",
        f"- fine-tuning preset `{settings.preset}`"
        + (f", at most {settings.max_steps} steps" if settings.max_steps is not None else "")
        + (f", at most {settings.max_time:g} s" if settings.max_time is not None else "") + " per run"
        + (f"; overrides {', '.join(f'`{o}`' for o in settings.overrides)}" if settings.overrides else "")
        + "; best checkpoint by val Dice predicts the test split",
        f"- Dice: mean over test cases with lesions [percentile bootstrap 95% CI over cases, {N_RESAMPLES} "
        f"resamples, seed {BOOTSTRAP_SEED}]; with several seeds, per-case Dice averaged over seeds first, "
        "± the SD of the per-seed means",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    if missing:
        lines += [f"**Unfinished runs** (not in the tables; rerun the command to resume): {', '.join(missing)}", ""]
    if ft:
        fracs = sorted({g["fraction"] for g in ft})
        by = {(g["arm"], g["fraction"]): g for g in ft}
        train_n = {g["fraction"]: g["n_train_cases"] for g in ft}
        lines += ["## Fine-tuning: test Dice by label fraction", "",
                  "| arm | " + " | ".join(f"{_pct(f)}% ({train_n[f]} cases)" for f in fracs) + " |",
                  "|---|" + "---|" * len(fracs)]
        for arm in [a for a in ARMS if any(g["arm"] == a for g in ft)]:
            lines.append(f"| {arm} | " + " | ".join(format_dice(by[(arm, f)]) if (arm, f) in by else "—"
                                                     for f in fracs) + " |")
        lines += ["", "Secondary metrics (means over test cases, averaged over seeds):", "",
                  "| arm | fraction | training cases | seeds | Dice | FP volume (ml) | FN volume (ml) | lesion F1 |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in ft:
            lines.append(f"| {g['arm']} | {_pct(g['fraction'])}% | {g['n_train_cases']} | {g['n_seeds']} | "
                         f"{fmt_num(g['dice']['mean'])} | {fmt_num(g['fp_volume_ml'], 2)} | "
                         f"{fmt_num(g['fn_volume_ml'], 2)} | "
                         f"{fmt_num(g['lesion_f1'])} |")
        lines.append("")
    comps = [c for c in summary["comparisons"] if "probe" not in c["comparison"]]
    if comps:
        lines += ["## Paired comparison (Dice, test cases)", "",
                  "Difference A - B per test case (seed-averaged Dice), bootstrap 95% CI of the mean difference, "
                  "two-sided Wilcoxon signed-rank test (zero differences dropped). With few test cases the test "
                  "has little power: read the CI.", "",
                  "| A vs B | n | mean diff [95% CI] | A better / B better / ties | Wilcoxon p |",
                  "|---|---|---|---|---|"]
        for c in comps:
            lines.append(f"| {c['a']} vs {c['b']} | {c['n']} | {fmt_num(c['mean_diff'])} [{fmt_num(c['ci_low'])}, "
                         f"{fmt_num(c['ci_high'])}] | {c['wins_a']} / {c['wins_b']} / {c['ties']} | "
                         f"{fmt_num(c['p_value'], 4)} |")
        lines.append("")
    k = settings.probe_kshot
    if k:
        lines += [f"## {k}-shot linear probe: joint vs separated pretraining", "",
                  "Frozen encoder(s), one voxel-wise linear head on all encoder scales (`petctfm probe`), trained on "
                  f"the stored {k}-shot subset, evaluated on the test split.", ""]
        if pr:
            lines += ["| encoders | training cases | seeds | Dice [95% CI] | AP [95% CI] | FP volume (ml) | lesion F1 |",
                      "|---|---|---|---|---|---|---|"]
            for g in pr:
                what = ("joint PET+CT (the pretrained run)" if g["arm"] == "joint"
                        else "separated: PET-only + CT-only side by side")
                ap = g.get("ap") or {"n": 0}
                ap_text = (f"{fmt_num(ap['mean'])} [{fmt_num(ap['ci_low'])}, {fmt_num(ap['ci_high'])}]"
                           if ap["n"] else "n/a")
                lines.append(f"| {what} | {g['n_train_cases']} | {g['n_seeds']} | {format_dice(g)} | {ap_text} | "
                             f"{fmt_num(g['fp_volume_ml'], 2)} | {fmt_num(g['lesion_f1'])} |")
            lines += ["", "AP: voxel-wise average precision of the head's lesion probability on each test case with "
                      "lesions (area under the precision-recall curve; chance level = the lesion prevalence, well "
                      "under 0.01 here). It is threshold-free: a head whose probabilities rank lesion voxels first "
                      "but never cross 0.5 has Dice 0 and a high AP, so AP is the fairer test of linear "
                      "separability."]
            for c in [c for c in summary["comparisons"] if "probe" in c["comparison"]]:
                lines += ["", f"Joint - separated ({'AP' if c.get('metric') == 'ap' else 'Dice'}): "
                          f"{fmt_num(c['mean_diff'])} [{fmt_num(c['ci_low'])}, {fmt_num(c['ci_high'])}]"
                          f", Wilcoxon p = {fmt_num(c['p_value'], 4)} (n = {c['n']})."]
            lines.append("")
        if not settings.separated:
            data = settings.data
            lines += ["The **separated** probe was skipped: it needs a PET-only and a CT-only pretraining run on the "
                      "same data, given as `--separated PET_RUN CT_RUN`. Produce them with the same preset as the "
                      "joint run, then rerun the command above with `--separated runs/mae_pet runs/mae_ct` "
                      "(finished runs are skipped):", "",
                      "```bash",
                      f"petctfm pretrain --data {shlex.quote(data)} --out runs/mae_pet --mode pet --preset PRESET",
                      f"petctfm pretrain --data {shlex.quote(data)} --out runs/mae_ct --mode ct --preset PRESET",
                      "```", ""]
    lines += ["## Runs", "",
              "| run | training cases | steps | stopped | Dice [95% CI] | seconds | per-case metrics |",
              "|---|---|---|---|---|---|---|"]
    for r in records:
        d = r["metrics"]["dice"]
        t = r.get("train") or {}
        lines.append(f"| `{r['name']}` | {r['n_train_cases']} | {t.get('steps', '')} | {t.get('stopped', '')} | "
                     f"{fmt_num(d['mean'])} [{fmt_num(d['ci_low'])}, {fmt_num(d['ci_high'])}] | "
                     f"{r.get('time_s', '')} | "
                     f"`{r['name']}/{r['per_case']}` |")
    lines += ["", "![Dice vs label fraction](label_efficiency.png)", ""]
    return "\n".join(lines)


def plot_results(summary: dict[str, Any], png: Path) -> Path:
    """Dice vs label fraction (log x), one line per arm with its CI band; probes (Dice filled, AP open
    markers) as a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from petctfm.io.atomic import atomic_path

    ft = [g for g in summary["groups"] if g["kind"] == "finetune"]
    pr = [g for g in summary["groups"] if g["kind"] == "probe"]
    fig = Figure(figsize=(9.5 if pr else 6.5, 4.0), dpi=110)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.3]}) if pr else [fig.subplots()]
    ax = axes[0]
    colors = {"pretrained": "C0", "scratch": "C1"}
    for arm in ARMS:
        gs = sorted([g for g in ft if g["arm"] == arm and g["dice"]["n"]], key=lambda g: g["fraction"])
        if not gs:
            continue
        x = np.array([g["fraction"] for g in gs])
        y, lo, hi = (np.array([g["dice"][k] for g in gs]) for k in ("mean", "ci_low", "ci_high"))
        ax.plot(x, y, "o-", color=colors[arm], label=f"{arm} ({gs[0]['n_seeds']} seed{'s' * (gs[0]['n_seeds'] > 1)})")
        if len(gs) > 1:
            ax.fill_between(x, lo, hi, color=colors[arm], alpha=0.2, lw=0)
        else:
            ax.errorbar(x, y, yerr=[y - lo, hi - y], color=colors[arm], capsize=4, ls="none")
    fr = sorted({g["fraction"] for g in ft})
    ax.set_xscale("log")
    if fr:
        ax.set_xticks(fr, [f"{_pct(f)}%" for f in fr])
        ax.set_xlim(min(fr) / 1.4, max(fr) * 1.4)
    ax.minorticks_off()
    ax.set_ylim(0, 1)
    ax.set_xlabel("labeled training cases (fraction of the train split, log scale)")
    ax.set_ylabel("test Dice (mean, 95% bootstrap CI)")
    ax.set_title("Fine-tuning: pretrained vs scratch (synthetic data)", fontsize=10)
    ax.grid(alpha=0.3)
    if ft:
        ax.legend(loc="best", fontsize=8)
    if pr:
        bx = axes[1]
        for i, g in enumerate(pr):
            color = "C2" if g["arm"] == "joint" else "C3"
            for metric, dx, marker in (("dice", -0.12, "s"), ("ap", 0.12, "o")):
                d = g.get(metric)
                if not d or not d["n"]:
                    continue
                y = _nan(d["mean"])
                bx.errorbar([i + dx], [y], yerr=[[y - _nan(d["ci_low"])], [_nan(d["ci_high"]) - y]], fmt=marker,
                            color=color, mfc="white" if metric == "ap" else color, capsize=4,
                            label=metric.replace("dice", "Dice").upper() if metric == "ap" else "Dice")
        handles, labels = bx.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(labels, handles))
            bx.legend(uniq.values(), uniq.keys(), loc="upper right", fontsize=8)
        bx.set_xticks(range(len(pr)), [f"{g['arm']}\n{g['kshot']}-shot" for g in pr])
        bx.set_xlim(-0.6, len(pr) - 0.4)
        bx.set_ylim(0, 1)
        bx.set_title("Linear probe", fontsize=10)
        bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    return png


def write_results(exp_dir: Path, records: list[dict[str, Any]], plan: list[PlannedRun], settings: Settings,
                  command: str) -> dict[str, Any]:
    """results.csv, results.md, label_efficiency.png from the finished runs; returns the summary."""
    from petctfm.io.atomic import atomic_write_text

    summary = summarize(records)
    done = {r["name"] for r in records}
    missing = [r.name for r in plan if r.name not in done]
    atomic_write_text(exp_dir / "results.csv", csv_text(result_rows(records, summary), RESULT_COLUMNS))
    atomic_write_text(exp_dir / "results.md", results_markdown(records, summary, plan, settings, command, missing))
    plot_results(summary, exp_dir / "label_efficiency.png")
    return summary


# ------------------------------------------------------------------------------------------------ the experiment


def _check_settings(exp_dir: Path, settings: Settings) -> None:
    import yaml

    p = exp_dir / EXPERIMENT_FILE
    if not p.is_file():
        return
    old = (yaml.safe_load(p.read_text()) or {}).get("settings") or {}
    new = asdict(settings)
    diff = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    if diff:
        raise InputError(f"{p}: this folder holds an experiment with other settings ({'; '.join(diff[:3])}); "
                         "use a new --out or the same settings")


def run_label_efficiency(data: str | Path, pretrained: str | Path, out: str | Path,
                         runs: Sequence[tuple[str, float]] | str | None = None, seeds: Sequence[int] = (0,),
                         preset: str | None = None, overrides: Sequence[str] = (),
                         arms: Sequence[str] = ARMS, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                         probe_kshot: int | None = 5, probe_steps: int | None = None,
                         separated: Sequence[str] | None = None, max_steps: int | None = None,
                         max_time: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Plan, run (skipping finished runs), evaluate and report the experiment in ``out``.

    ``runs``: explicit ``[(arm, percent)]`` or ``"pretrained:10,scratch:100"`` instead of ``arms`` x
    ``fractions``. ``probe_kshot`` None / 0: no probes. ``separated``: (PET_RUN, CT_RUN). ``max_steps`` /
    ``max_time``: per fine-tuning run. ``overrides``: ``--set`` strings for every fine-tuning run.
    Returns ``{"exp_dir", "plan", "records", "summary", "results_md", "results_csv", "plot", "command"}``.
    """
    import yaml
    from rich.console import Console

    from petctfm.core.version import __version__
    from petctfm.data import format as fmt
    from petctfm.methods.segmentation.presets import PRESETS
    from petctfm.io.atomic import atomic_write_text

    console = Console(quiet=not progress)
    data = Path(data)
    if not (data / fmt.SPLITS_JSON).is_file():
        raise InputError(f"{data}: not a harmonized dataset (no {fmt.SPLITS_JSON}; run 'petctfm harmonize')")
    weights, pcfg = check_pretrained(pretrained)
    if preset is None:
        import torch

        preset = "gpu" if torch.cuda.is_available() else "cpu"
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if separated is not None and len(separated) != 2:
        raise InputError("--separated takes two runs: PET_RUN CT_RUN")
    sep = check_separated(*separated) if separated else []
    explicit = parse_runs(runs) if runs else None
    seeds = [int(s) for s in seeds]
    settings = Settings(data=str(data), pretrained=str(weights), preset=preset,
                        backbone=pcfg["model"]["backbone"], mode=pcfg["data"]["mode"],
                        model_overrides=dict(pcfg["model"].get("overrides") or {}), max_steps=max_steps,
                        max_time=max_time, overrides=list(overrides), probe_kshot=int(probe_kshot or 0) or None,
                        probe_steps=probe_steps, separated=sep)
    plan = build_plan(data, arms, fractions, seeds, explicit, settings.probe_kshot, str(weights), sep or None)
    exp_dir = Path(out)
    exp_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(exp_dir, settings)
    command = command_line(settings, exp_dir, seeds, None if explicit else list(arms),
                           None if explicit else [float(f) for f in fractions], explicit)
    atomic_write_text(exp_dir / EXPERIMENT_FILE, yaml.safe_dump({
        "experiment": "label-efficiency", "petctfm": __version__, "command": command, "settings": asdict(settings),
        "seeds": seeds, "runs": [r.to_dict() for r in plan]}, sort_keys=False))

    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    ran = 0
    for i, run in enumerate(plan, 1):
        done = load_done(exp_dir / run.name)
        if done is not None:
            console.print(f"[dim][{i}/{len(plan)}] {run.name}: finished earlier, skipped[/]")
            records.append(done)
            continue
        elapsed = time.perf_counter() - t0
        eta = (f", about {elapsed / ran * (len(plan) - i + 1) / 60:.1f} min left" if ran else "")
        console.rule(f"[bold][{i}/{len(plan)}] {run.name}[/] ({len(run.cases)} training cases{eta})")
        rec = execute_run(run, settings, exp_dir, progress)
        ran += 1
        d = rec["metrics"]["dice"]
        console.print(f"[green]{run.name}[/]: test Dice {fmt_num(d['mean'])} [{fmt_num(d['ci_low'])}, "
                      f"{fmt_num(d['ci_high'])}] in {rec['time_s']:.0f} s")
        records.append(rec)
    summary = write_results(exp_dir, records, plan, settings, command)
    console.print(f"label-efficiency: {len(records)} runs ({ran} run now); results in {exp_dir / 'results.md'}")
    return {"exp_dir": exp_dir, "plan": plan, "records": records, "summary": summary,
            "results_md": exp_dir / "results.md", "results_csv": exp_dir / "results.csv",
            "plot": exp_dir / "label_efficiency.png", "command": command}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The experiment's command-line options (used by ``petctfm experiment label-efficiency``)."""
    from petctfm.methods.segmentation.presets import PRESETS

    p.add_argument("--data", required=True, metavar="DATASET", help="harmonized dataset folder")
    p.add_argument("--pretrained", required=True, metavar="RUN", help="joint pretraining run folder or checkpoint")
    p.add_argument("--out", required=True, metavar="EXP_DIR", help="experiment folder (resumable)")
    p.add_argument("--fractions", default="10,20,40,100", metavar="P,P,...",
                   help="stored label fractions in percent (default 10,20,40,100)")
    p.add_argument("--seeds", default="0", metavar="S,S,...", help="seeds (default 0); e.g. 0,1,2")
    p.add_argument("--arms", default="pretrained,scratch", metavar="A,A", help="pretrained,scratch (default both)")
    p.add_argument("--runs", metavar="ARM:P,...",
                   help="explicit runs instead of arms x fractions, e.g. pretrained:10,scratch:10,scratch:100")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="fine-tuning preset (default: gpu if CUDA is available, else cpu)")
    p.add_argument("--probe-kshot", type=int, default=5, metavar="K", help="k of the linear probes (0 = no probes)")
    p.add_argument("--probe-steps", type=int, default=None, metavar="N",
                   help=f"probe head steps (default per preset: {PROBE_STEPS})")
    p.add_argument("--separated", nargs=2, metavar=("PET_RUN", "CT_RUN"),
                   help="PET-only and CT-only pretraining runs for the separated probe")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="fine-tuning steps per run")
    p.add_argument("--max-time", type=float, default=None, metavar="S", help="fine-tuning seconds per run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every fine-tuning run (as in petctfm finetune: data.fg_prob=0.5, train.lr=1e-4)")
    p.add_argument("--no-progress", action="store_true", help="quiet: no progress display")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.probe_steps is not None and args.probe_steps < 1:
        raise InputError(f"--probe-steps must be >= 1, got {args.probe_steps}")
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    return run_label_efficiency(
        args.data, args.pretrained, args.out, runs=args.runs, seeds=parse_list(args.seeds, int, "seed"),
        preset=args.preset, overrides=args.set, arms=parse_list(args.arms, str, "arm"),
        fractions=parse_list(args.fractions, float, "fraction"), probe_kshot=args.probe_kshot,
        probe_steps=args.probe_steps, separated=args.separated, max_steps=args.max_steps, max_time=args.max_time,
        progress=not args.no_progress)


__all__ = ["ARMS", "DEFAULT_FRACTIONS", "DONE_FILE", "EXPERIMENT_FILE", "PlannedRun", "Settings", "parse_runs",
           "parse_list", "build_plan", "finetune_argv", "execute_run", "summarize", "result_rows", "write_results",
           "plot_results", "fmt_num", "format_dice", "run_label_efficiency", "add_arguments", "run_from_args"]
