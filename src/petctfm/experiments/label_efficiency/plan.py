"""The label-efficiency plan: the runs (names, arms, exact stored subsets), the settings that decide what a run
computes, and the command line that reproduces the experiment. See :mod:`petctfm.experiments.label_efficiency`."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from petctfm.core.errors import InputError

ARMS = ("pretrained", "scratch")
PROBE_ARMS = ("joint", "separated")
DEFAULT_FRACTIONS = (10.0, 20.0, 40.0, 100.0)
DONE_FILE = "done.json"
EXPERIMENT_FILE = "experiment.yaml"
EVAL_DIR = "eval_test"
PRED_DIR = "pred_test"
SPLIT = "test"
#: The split of the held-out site (``petctfm harmonize --holdout-site``), evaluated beside ``test``.
HOLDOUT_SPLIT = "holdout"
HOLDOUT_EVAL_DIR = "eval_holdout"
HOLDOUT_PRED_DIR = "pred_holdout"
N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: Linear-probe head training steps per preset (the probe's patch is the encoder's pretraining patch).
PROBE_STEPS = {"tiny": 100, "cpu": 200, "gpu": 200}
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


def fmt_pct(x: float) -> str:
    """A percentage as written in run names and tables: ``10.0`` -> ``"10"``."""
    return f"{float(x):g}"


def parse_runs(spec: str | Sequence) -> list[tuple[str, float]]:
    """``"pretrained:10,scratch:10,scratch:100"`` (or a list of such items / pairs) -> [(arm, percent)]; a bad
    item is a UsageError about ``runs``."""
    from petctfm.core.checks import fail

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
            raise fail("runs", spec, f"bad item {it!r}; must be ARM:PERCENT, e.g. pretrained:10") from None
        if arm not in ARMS:
            raise fail("runs", spec, f"unknown arm {arm!r} in {it!r}; must be one of {', '.join(ARMS)}")
        if not 0 < pct <= 100:
            raise fail("runs", spec, f"percent {pct:g} in {it!r} must be in (0, 100]")
        if (arm, pct) not in out:
            out.append((arm, pct))
    if not out:
        raise fail("runs", spec, "no runs given; must be ARM:PERCENT,...")
    return out


def _fraction_subset(data: str | Path, pct: float) -> tuple[str, list[str]]:
    from petctfm.methods.segmentation.task import resolve_subset

    if not 0 < pct <= 100:
        raise InputError(f"label fraction {pct:g}% must be in (0, 100]")
    return resolve_subset(data, fraction=pct / 100.0)  # a ratio, so that 1 means 1% (not 100%)


def build_plan(data: str | Path, arms: Sequence[str] = ARMS, fractions: Sequence[float] = DEFAULT_FRACTIONS,
               seeds: Sequence[int] = (0,), runs: Sequence[tuple[str, float]] | None = None,
               probe_kshot: int | None = 5, joint_encoder: str | None = None,
               separated: Sequence[str] | None = None, holdout: Sequence[str] = ()) -> list[PlannedRun]:
    """The experiment's runs, fine-tuning first (by fraction, arm, seed), then probes (by seed).

    ``runs`` (explicit ``(arm, percent)`` pairs) replaces the ``arms`` x ``fractions`` product. Probes are
    planned when ``probe_kshot`` is set: ``joint`` with ``joint_encoder``, ``separated`` only when the two
    runs ``separated = (PET_RUN, CT_RUN)`` are given. Subsets come from ``data/splits.json`` (one-line
    errors for a fraction or k-shot subset that is not stored). ``holdout``: case ids that no run may train
    on (the held-out site); a subset holding one is an InputError.
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
            plan.append(PlannedRun(f"finetune_{arm}_f{fmt_pct(pct)}_s{int(s)}", "finetune", arm, int(s), subset,
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
    leaked = sorted({c for r in plan for c in r.cases} & set(holdout))
    if leaked:
        raise InputError(f"{data}: held-out case(s) {', '.join(leaked[:3])} in a training subset; re-finalize the "
                         "dataset with 'petctfm harmonize --finalize DATASET --holdout-site NAME'")
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
    holdout_site: str | None = None
    plan: str | None = None  # the segmentation recipe's compute target (cpu | gpu) for every fine-tuning run
    # a timed target's voxel budget, timed once before the first run and given to every fine-tuning run (each run
    # timing its own plan would give the arms different patches on a machine whose load changes); None: untimed,
    # or a folder written before it (its runs timed their own)
    plan_voxels: int | None = None
    # with a plan, every fine-tuning run trains on a grid no finer than this (mm; ``finetune(plan_spacing=...)``):
    # None, the target's rule (which keeps a given network's grid: the dataset's), 0 the dataset's spacing
    plan_spacing: float | None = None


def check_pretrained(pretrained: str | Path) -> tuple[Path, dict[str, Any]]:
    """(weights file, config) of the pretraining run; one-line InputError when it is not one."""
    from petctfm.methods.segmentation.task import pretrained_config

    cfg, _, path = pretrained_config(pretrained)
    return Path(path), cfg


def check_holdout(data: str | Path, pcfg: dict[str, Any], where: str | Path, site: str) -> list[str]:
    """The ``holdout`` case ids of ``data`` for ``--holdout-site site``, after checking that the dataset was
    finalized with that held-out site and that the pretraining run (config ``pcfg``, from ``where``) cannot
    have seen it: it sampled the ``train`` split (not ``all``) and normalized with this dataset's statistics
    (computed over ``train`` only), i.e. it was pretrained on this held-out version of the dataset."""
    from petctfm.data import format as fmt

    splits = fmt.load_splits(data)
    if splits.get("holdout_site") != site:
        raise InputError(f"{data}: splits.json holds no held-out site {site!r} (held out: "
                         f"{splits.get('holdout_site')!r}); run 'petctfm harmonize --finalize {data} --holdout-site "
                         f"{site}' and pretrain on that dataset")
    if pcfg.get("data", {}).get("split", "train") == "all":
        raise InputError(f"{where}: pretrained on every case folder (data.split 'all'), the held-out site included")
    norm = (pcfg.get("preprocessing") or {}).get("normalization")
    info = fmt.load_dataset_info(data, require_normalization=True)
    want = fmt.select_pet_transform(info["normalization"], pcfg["data"].get("pet_transform", "clip"))
    if not norm or any(abs(float(norm[c][k]) - float(want[c][k])) > 1e-5 for c in fmt.CHANNELS
                       for k in ("mean", "std")):
        raise InputError(f"{where}: pretrained with other normalization statistics than {data} with site {site!r} "
                         "held out (pretrained on a dataset that includes it?); pretrain on the held-out dataset")
    return list(splits.get("holdout") or [])


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
        argv += ["--runs", ",".join(f"{a}:{fmt_pct(p)}" for a, p in runs)]
    else:
        argv += ["--arms", ",".join(arms or ARMS), "--fractions", ",".join(fmt_pct(f) for f in fractions or ())]
    argv += ["--probe-kshot", str(settings.probe_kshot or 0)]
    if settings.probe_steps is not None:
        argv += ["--probe-steps", str(settings.probe_steps)]
    if settings.separated:
        argv += ["--separated", *settings.separated]
    if settings.max_steps is not None:
        argv += ["--max-steps", str(settings.max_steps)]
    if settings.max_time is not None:
        argv += ["--max-time", f"{settings.max_time:g}"]
    if settings.holdout_site is not None:
        argv += ["--holdout-site", settings.holdout_site]
    if settings.plan is not None:
        argv += ["--plan", settings.plan]
    if settings.plan_spacing is not None:
        argv += ["--plan-spacing", f"{settings.plan_spacing:g}"]
    for kv in settings.overrides:
        argv += ["--set", kv]
    return " ".join(shlex.quote(a) for a in argv)


__all__ = ["ARMS", "PROBE_ARMS", "DEFAULT_FRACTIONS", "DONE_FILE", "EXPERIMENT_FILE", "EVAL_DIR", "PRED_DIR",
           "SPLIT", "HOLDOUT_SPLIT", "HOLDOUT_EVAL_DIR", "HOLDOUT_PRED_DIR", "N_RESAMPLES", "BOOTSTRAP_SEED",
           "PROBE_STEPS", "RUN_METRICS", "PlannedRun", "fmt_pct",
           "parse_runs", "build_plan", "Settings", "check_pretrained", "check_holdout",
           "check_separated",
           "command_line"]
