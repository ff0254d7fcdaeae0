"""The vs-nnU-Net plan: run names, settings, the nnU-Net folders and the child-process environment.
See :mod:`petctfm.experiments.vs_nnunet`."""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DONE_FILE = "done.json"
EXPERIMENT_FILE = "experiment.yaml"
PRED_DIR = "pred_test"
EVAL_DIR = "eval_test"
SPLIT = "test"
HOLDOUT_SPLIT = "holdout"
N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: nnU-Net's dataset id and name of the export (``Dataset501_petctfm``).
DATASET_ID = 501
DATASET_NAME = "petctfm"
#: The two nnU-Net plans: nnU-Net's default ``ExperimentPlanner`` plan, and the same planner with a small GPU
#: memory target (its ``-gpu_memory_target`` option) under its own plans name (``-overwrite_plans_name``).
PLANS = {"default": "nnUNetPlans", "cpu": "nnUNetPlans_cpu"}
#: GPU memory target (GB) handed to nnU-Net's planner for the CPU-sized plan (default plan: nnU-Net's 8 GB).
CPU_PLAN_GPU_MEMORY_GB = 1.0
CONFIGURATION = "3d_fullres"
#: The fixed SUV thresholds of the non-learned floor, and its minimal component volume (ml).
FLOOR_THRESHOLDS = (2.5, 4.0)
FLOOR_MIN_ML = 1.0
#: How often the budget trainer validates within the budget (it sizes its epochs for this many validations).
TARGET_VALIDATIONS = 10
#: The headline metrics per arm (means over test cases with bootstrap CIs).
ARM_METRICS = ("dice", "fp_volume_ml", "fn_volume_ml", "lesion_f1")


def dataset_folder_name(dataset_id: int = DATASET_ID) -> str:
    return f"Dataset{int(dataset_id):03d}_{DATASET_NAME}"


def nnunet_dirs(exp_dir: str | Path) -> dict[str, Path]:
    """nnU-Net's three folders inside the experiment folder (raw and preprocessed shared by every nnU-Net run)."""
    base = Path(exp_dir).resolve() / "nnunet"
    return {"nnUNet_raw": base / "raw", "nnUNet_preprocessed": base / "preprocessed"}


def child_env(exp_dir: str | Path, results_dir: str | Path, device: str) -> dict[str, str]:
    """The environment of an nnU-Net child process: nnU-Net's folders inside ``exp_dir`` (never set in
    petctfm's own process), no torch.compile on a CPU, data augmentation in-process unless the caller's
    ``nnUNet_n_proc_DA`` says otherwise (a small CPU has no cores to spare for workers)."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in nnunet_dirs(exp_dir).items()})
    env["nnUNet_results"] = str(Path(results_dir).resolve())
    if not str(device).startswith("cuda"):
        env.setdefault("nnUNet_compile", "f")
        env.setdefault("nnUNet_n_proc_DA", str(max(0, min(4, (os.cpu_count() or 1) // 2 - 1))))
    return env


@dataclass
class Arm:
    """One run: ``kind`` petctfm | nnunet | floor; ``plan`` (nnunet: default | cpu); ``threshold`` (floor)."""

    name: str
    kind: str
    seed: int | None = None
    plan: str | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Settings:
    """What decides the numbers: a folder with other settings is refused (resume never mixes designs)."""

    data: str
    minutes: float
    device: str
    preset: str
    backbone: str
    plans: list[str] = field(default_factory=lambda: list(PLANS))
    dataset_id: int = DATASET_ID
    holdout_site: str | None = None
    cpu_plan_gpu_memory_gb: float = CPU_PLAN_GPU_MEMORY_GB
    recipe: str | None = None  # petctfm's planned recipe target (cpu | gpu; finetune(plan=...)), None: the preset
    tta: bool = True  # nnU-Net's mirroring at inference (petctfm's predict_split has none); False: neither arm
    jobs: int = 1  # trained arms run at once, each with cpu_count // jobs threads
    #: organ name -> organs.npy value, trained as extra classes by BOTH arms (petctfm's task.aux_classes, nnU-Net's
    #: labels 2..); None: the lesion alone in both (folders written before this setting: None)
    organs: dict[str, int] | None = None
    #: finished petctfm fine-tuning runs compared instead of training them (a path with ``{seed}``), None: trained
    petctfm_runs: str | None = None


def fmt_thr(t: float) -> str:
    return f"{float(t):g}"


def build_plan(seeds: list[int], plans: list[str]) -> list[Arm]:
    """Floors first (seconds), then per seed the nnU-Net runs (one per plan) and the petctfm run."""
    arms = [Arm(f"floor_suv{fmt_thr(t)}", "floor", threshold=float(t)) for t in FLOOR_THRESHOLDS]
    for s in seeds:
        arms += [Arm(f"nnunet_{p}_s{s}", "nnunet", seed=s, plan=p) for p in plans]
        arms.append(Arm(f"petctfm_s{s}", "petctfm", seed=s))
    return arms


def command_line(settings: Settings, exp_dir: Path, seeds: list[int]) -> str:
    parts = ["petctfm", "experiment", "vs-nnunet", "--data", settings.data, "--out", str(exp_dir),
             "--minutes", f"{settings.minutes:g}", "--seeds", ",".join(map(str, seeds)), "--device", settings.device,
             "--preset", settings.preset, "--plans", ",".join(settings.plans)]
    if settings.holdout_site:
        parts += ["--holdout-site", settings.holdout_site]
    if settings.backbone:
        parts += ["--backbone", settings.backbone]
    parts += ["--recipe", settings.recipe or "none", "--jobs", str(settings.jobs)]
    if not settings.tta:
        parts.append("--no-tta")
    parts += ["--organs", "on" if settings.organs else "off"]
    if settings.petctfm_runs:
        parts += ["--petctfm-runs", settings.petctfm_runs]
    return shlex.join(parts)


__all__ = ["DONE_FILE", "EXPERIMENT_FILE", "PRED_DIR", "EVAL_DIR", "SPLIT", "HOLDOUT_SPLIT", "N_RESAMPLES",
           "BOOTSTRAP_SEED", "DATASET_ID", "PLANS", "CONFIGURATION", "FLOOR_THRESHOLDS", "FLOOR_MIN_ML",
           "TARGET_VALIDATIONS", "ARM_METRICS", "dataset_folder_name", "nnunet_dirs", "child_env", "Arm", "Settings",
           "build_plan", "command_line"]
