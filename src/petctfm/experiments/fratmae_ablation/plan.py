"""The FratMAE ablation plan (Oh et al. 2025, Tables 2 and 3): which pretraining runs, which fine-tuning and
staging runs, named how, with which settings. See :mod:`petctfm.experiments.fratmae_ablation`."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from petctfm.core.errors import InputError
from petctfm.experiments.label_efficiency.plan import fmt_pct

#: Fine-tuning arms -> (pretraining variant or None = no pretraining, stack axis). Order = the table's rows.
ARMS: dict[str, tuple[str | None, str]] = {
    "scratch": (None, "coronal"), "mae": ("mae", "coronal"), "mae+ca": ("mae+ca", "coronal"),
    "fratmae-noca": ("fratmae-noca", "coronal"), "fratmae": ("fratmae", "coronal"),
    "scratch-axial": (None, "axial"),
}
TABLE3 = ("scratch", "mae", "mae+ca", "fratmae-noca", "fratmae")  # at --fraction
MORE = ("scratch", "fratmae")  # at each of --more-fractions
TABLE2 = ("scratch-axial",)  # at --fraction, against "scratch" (coronal): both without pretraining
LABELS = {"scratch": "no pretraining", "mae": "MAE", "mae+ca": "MAE + ContextAlign",
          "fratmae-noca": "FratMAE w/o ContextAlign", "fratmae": "FratMAE",
          "scratch-axial": "no pretraining, axial stacks"}
EXPERIMENT_FILE = "experiment.yaml"
#: Staging: ``probe`` (an MLP on the frozen encoder's pooled features, the whole train split) or ``finetune``
#: (the paper's: encoder + MLP end to end, cross-entropy, lr 5e-5, batch 2, on the stored label fraction).
STAGE_MODES = ("probe", "finetune")
#: Staging arms: Table 3's pretrainings and Table 2's axial control (no pretraining, axial stacks).
STAGE_ARMS = TABLE3 + TABLE2
AXIAL_INIT = "init_axial"  # the experiment's random-weight axial FratMAE network (Table 2's staging control)


@dataclass
class Planned:
    """One run: ``kind`` pretrain | finetune | stage; ``variant`` the pretraining variant (None: none)."""

    name: str
    kind: str
    arm: str
    seed: int
    variant: str | None = None
    stack: str = "coronal"
    fraction: float | None = None
    pretrain: str | None = None  # name of the pretraining run it starts from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe(name: str) -> str:
    return name.replace("+", "_")


def pretrain_name(variant: str) -> str:
    return f"pretrain_{safe(variant)}"


def build_plan(fraction: float = 20.0, more_fractions: Sequence[float] = (40.0, 100.0), seeds: Sequence[int] = (0,),
               stage: bool = True) -> list[Planned]:
    """Pretraining (one per variant, seed = the first seed), then fine-tuning (rows x seeds), then staging (one
    per pretraining arm and the no-pretraining control: the FratMAE network with random weights, x seeds)."""
    if not 0 < float(fraction) <= 100 or any(not 0 < float(f) <= 100 for f in more_fractions):
        raise InputError("label fractions must be in (0, 100] percent")
    rows = [(a, float(fraction)) for a in TABLE3 + TABLE2]
    rows += [(a, float(f)) for f in more_fractions if float(f) != float(fraction) for a in MORE]
    variants = [v for v in ("mae", "mae+ca", "fratmae-noca", "fratmae") if any(ARMS[a][0] == v for a, _ in rows)]
    plan = [Planned(pretrain_name(v), "pretrain", v, int(seeds[0]), variant=v) for v in variants]
    for arm, pct in rows:
        variant, stack = ARMS[arm]
        for s in seeds:
            plan.append(Planned(f"finetune_{safe(arm)}_f{fmt_pct(pct)}_s{int(s)}", "finetune", arm, int(s), variant,
                                stack, pct, pretrain_name(variant) if variant else None))
    if stage:
        for arm in STAGE_ARMS:
            variant, stack = ARMS[arm]
            for s in seeds:  # no pretraining: FratMAE's encoders with random weights (axial: on axial stacks)
                plan.append(Planned(f"stage_{safe(arm)}_s{int(s)}", "stage", arm, int(s), variant, stack,
                                    pretrain=pretrain_name(variant or "fratmae")))
    return plan


@dataclass
class Settings:
    """Everything that decides what a run computes (experiment.yaml; must match on resume)."""

    data: str
    preset: str
    fraction: float = 20.0
    more_fractions: list[float] = field(default_factory=lambda: [40.0, 100.0])
    pretrain_steps: int | None = None
    max_steps: int | None = None
    overrides: list[str] = field(default_factory=list)
    pretrain_overrides: list[str] = field(default_factory=list)
    stage: bool = True
    stage_epochs: int = 500
    n_resamples: int = 1000
    stage_mode: str = "probe"
    stage_fraction: float | None = None  # finetune staging: the stored fraction it trains on (None: --fraction)


def command_line(settings: Settings, out: str, seeds: Sequence[int]) -> str:
    """The ``petctfm experiment fratmae-ablation`` command that reproduces this experiment."""
    argv = ["petctfm", "experiment", "fratmae-ablation", "--data", settings.data, "--out", str(out),
            "--preset", settings.preset, "--fraction", fmt_pct(settings.fraction),
            "--more-fractions", ",".join(fmt_pct(f) for f in settings.more_fractions) or "none",
            "--seeds", ",".join(str(s) for s in seeds), "--stage-epochs", str(settings.stage_epochs),
            "--bootstrap", str(settings.n_resamples)]
    if settings.stage_mode != "probe":
        argv += ["--stage-mode", settings.stage_mode]
    if settings.stage_fraction is not None:
        argv += ["--stage-fraction", fmt_pct(settings.stage_fraction)]
    if settings.pretrain_steps is not None:
        argv += ["--pretrain-steps", str(settings.pretrain_steps)]
    if settings.max_steps is not None:
        argv += ["--max-steps", str(settings.max_steps)]
    if not settings.stage:
        argv += ["--no-stage"]
    for kv in settings.overrides:
        argv += ["--set", kv]
    for kv in settings.pretrain_overrides:
        argv += ["--pretrain-set", kv]
    return " ".join(shlex.quote(a) for a in argv)


__all__ = ["ARMS", "TABLE3", "MORE", "TABLE2", "LABELS", "EXPERIMENT_FILE", "STAGE_MODES", "STAGE_ARMS", "AXIAL_INIT", "Planned", "safe", "pretrain_name",
           "build_plan", "Settings", "command_line"]
