"""Lesion-segmentation fine-tuning from a FratMAE run (``petctfm finetune --init FRATMAE_RUN``), as a TrainTask.

The network and the stacks are in :mod:`.segment`. What is reused, not repeated: the loss (MONAI
``DiceCELoss``), validation on the val split with the best checkpoint by val Dice (``RUN/best/``), freezing,
layer-wise LR decay and the stored label subsets are those of :mod:`petctfm.methods.segmentation`
(:class:`FratMAEFinetuneTask` subclasses its ``FinetuneTask``); inference is :mod:`petctfm.inference` (the
sliding window over stack-shaped windows for native crops; for resized stacks the model predicts whole
volumes, ``data.patch_size = [-1, -1, -1]``).

Config (saved beside the run and in every checkpoint; ``load_model`` rebuilds the segmenter from it):
``model`` (``backbone = "fratmae-unetr"``, the pretrained run's ``arch``/``patch``/``dim``/``depth``/``heads``,
``feature_size``), ``data`` (:class:`~.segment.SegStackConfig`: the pretrained run's grid / stack / depth / k,
``crop`` (``native``: stack-shaped crops of the harmonized grid, the paper's; ``resized``: whole-body stacks as
in pretraining), ``fg_prob``, batch size), ``init``, ``subset``, ``optim``, ``loss``, ``val``, ``preprocessing``.

``init``: a FratMAE pretraining run (any variant, coronal or axial) or ``"scratch"`` (the no-pretraining arm:
the same network from the FratMAE preset's sizes, random weights).

    from petctfm.methods.fratmae.finetune import finetune_fratmae
    finetune_fratmae("dataset/", "runs/frat_seg", init="runs/frat", preset="tiny", fraction=20, max_steps=30)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from petctfm.core.config import Overrides, build_config, deep_merge, pick_preset
from petctfm.core.errors import InputError, UsageError
from petctfm.data.loader import LabeledPatchDataset, PatchConfig, bind_dataset, patch_loader
from petctfm.methods.fratmae.config import FINETUNE_CONFIG, FratMAEFinetuneConfig
from petctfm.methods.fratmae.presets import get_preset as pretrain_preset
from petctfm.methods.fratmae.schedule import epoch_steps, world_size
from petctfm.methods.fratmae.segment import LabeledStackDataset, build_model
from petctfm.methods.segmentation.model import freeze_encoder
from petctfm.methods.segmentation.task import FinetuneTask, resolve_subset
from petctfm.train.checkpoint import read_weights, resolve_weights
from petctfm.train.config import TrainConfig, base_configs, bind_dataset_path, finish_configs, run_options

PRETRAIN_METHOD = "fratmae"
MODEL_KEYS = ("arch", "patch", "dim", "depth", "heads")
STACK_KEYS = ("grid", "stack", "depth", "k")

# The typed config (sections, allowed values, cross-field checks) is in config.py.
DEFAULT_CONFIG: dict[str, Any] = FINETUNE_CONFIG().to_dict()

#: Fine-tuning presets (the paper: AdamW lr 1e-4, batch 16, Dice + CE; warm-up ours). Model sizes of a
#: scratch run come from the FratMAE pretraining preset of the same name.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"task": {"model": {"feature_size": 8}, "data": {"batch_size": 2}},
             "train": {"lr": 2e-3, "warmup_steps": 2, "max_steps": 30, "checkpoint_every": 10, "figure_every": 10,
                       "log_every": 5, "num_workers": 0}},
    "cpu": {"task": {"model": {"feature_size": 16}, "data": {"batch_size": 2}},
            "train": {"lr": 3e-4, "warmup_steps": 50, "max_steps": 2000, "checkpoint_every": 200,
                      "figure_every": 200, "num_workers": 2}},
    "gpu": {"task": {"model": {"feature_size": 16}, "data": {"batch_size": 16, "cache_cases": 8}},
            "train": {"lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 200, "max_steps": 10000,
                      "checkpoint_every": 500, "figure_every": 500, "num_workers": 8}},
}

#: ``recipe="paper"``: the paper's segmentation fine-tuning (Sec. 2.4, Stage 2): UNETR on 4 taps, native crops
#: ("randomly cropped from the original scans without resizing"), Dice + CE, AdamW lr 1e-4, global batch 16,
#: 200 epochs of the training subset; laid over a preset (default ``gpu``). docs/fratmae.md has the table.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "task": {"data": {"crop": "native"}, "loss": {"lambda_dice": 1.0, "lambda_ce": 1.0}, "epochs": 200,
                 "recipe": "paper"},
        "train": {"optimizer": "adamw", "lr": 1e-4, "lr_schedule": "cosine"},
        "global_batch": 16,
    },
}

#: Named options of :func:`finetune_fratmae` -> dotted config key.
NAMED_OPTIONS: dict[str, str] = {
    "fg_prob": "data.fg_prob", "freeze_encoder": "optim.freeze_encoder", "layer_decay": "optim.layer_decay",
    "stack": "data.stack", "feature_size": "model.feature_size", "crop": "data.crop", "epochs": "epochs",
}


def get_preset(name: str) -> dict[str, Any]:
    """Fine-tuning preset ``name`` with the model / stack sizes of the FratMAE preset of the same name."""
    p = pick_preset(PRESETS, name)
    pre = pretrain_preset(name)["task"]
    base = {"model": {k: v for k, v in pre["model"].items() if k in MODEL_KEYS},
            "data": {k: v for k, v in pre["data"].items() if k in STACK_KEYS}}
    p["task"] = deep_merge(base, p["task"])
    return p


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a full fine-tuning config dict against :data:`FINETUNE_CONFIG`; returns it, normalized in place
    (``data.patch_size`` follows ``data.crop``). One-line ConfigErrors (UsageError, exit 2)."""
    cfg.update(build_config(FINETUNE_CONFIG, cfg).to_dict())
    return cfg


class FratMAEFinetuneTask(FinetuneTask):
    """FratMAE fine-tuning as a TrainTask (module docstring); loss and validation from ``FinetuneTask``."""

    def __init__(self, config: dict[str, Any] | FratMAEFinetuneConfig, dataset: str | Path | None = None):
        if isinstance(config, FratMAEFinetuneConfig):
            config = config.to_dict()
        cfg, info = bind_dataset(config, dataset, validate_config)
        if info is not None and not cfg["subset"]["cases"]:
            cfg["subset"]["name"], cfg["subset"]["cases"] = resolve_subset(cfg["dataset"])
        self.config = cfg
        self.cfg = FINETUNE_CONFIG.from_dict(cfg)  # typed; its data section is a SegStackConfig
        self.data_cfg = self.cfg.data
        self._loss = None

    def build_model(self) -> nn.Module:
        """Fresh segmenter; the pretrained twin encoders loaded when ``init.source`` is a run; frozen if asked."""
        from petctfm.models.encoders import load_encoder

        model = build_model(self.config)
        src = self.cfg.init.source
        if src != "scratch":
            state, pcfg, _ = read_weights(resolve_weights(src))
            check_compatible(self.config, pcfg, src)
            load_encoder(model, state)
        if self.cfg.optim.freeze_encoder:
            freeze_encoder(model)
        return model

    def dataset(self, rank: int = 0) -> LabeledStackDataset | LabeledPatchDataset:
        """Native crops: the fine-tuning patch stream with stack-shaped patches; resized: whole-body stacks."""
        if not self.cfg.dataset:
            raise InputError("no dataset given (config 'dataset' or --data)")
        d = self.data_cfg
        if d.crop == "native":
            patches = PatchConfig(patch_size=d.stack_shape(), mode="joint", split=d.split, fg_prob=d.fg_prob,
                                  pet_transform=d.pet_transform, augment=d.augment, batch_size=d.batch_size,
                                  num_workers=d.num_workers)
            return LabeledPatchDataset(self.cfg.dataset, patches, self.cfg.subset.cases, seed=self.cfg.seed,
                                       rank=rank)
        return LabeledStackDataset(self.cfg.dataset, self.data_cfg, self.cfg.subset.cases,
                                   self.cfg.preprocessing["normalization"], seed=self.cfg.seed, rank=rank)

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        """``{"image": (B, 2, *stack), "label": (B, 1, *stack) int64, "index": (B,)}``."""
        return iter(patch_loader(self.dataset(rank), start_sample=start_sample))

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"], stacks=True)
        loss = self.loss_fn()(logits.float(), batch["label"])
        return loss, {"fg_fraction": batch["label"].float().mean().detach()}


def check_compatible(cfg: dict[str, Any], pcfg: dict[str, Any], where: Any) -> None:
    """The pretrained run must be FratMAE with this config's encoder sizes (one-line InputError)."""
    if pcfg.get("method") != PRETRAIN_METHOD:
        raise InputError(f"{where}: not a FratMAE pretraining run (method {pcfg.get('method')!r})")
    for k in MODEL_KEYS:
        if pcfg["model"][k] != cfg["model"][k]:
            raise InputError(f"{where}: pretrained model.{k} {pcfg['model'][k]!r} != fine-tuning {cfg['model'][k]!r}")


def finetune_configs(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
                     preset: str | None = None, fraction: float | None = None, *, kshot: int | None = None,
                     max_steps: int | None = None, max_time: float | None = None, resume: bool = False,
                     overrides: Overrides = None, recipe: str | None = None,
                     **config: Any) -> tuple[dict[str, Any], TrainConfig]:
    """(task config, TrainConfig) of a FratMAE fine-tuning run; arguments as :func:`finetune_fratmae`."""
    if max_steps is not None and config.get("epochs") is not None:
        raise UsageError("give the schedule as epochs or as max_steps, not both", arg="epochs")
    if recipe is not None and recipe not in RECIPES:
        raise UsageError(f"recipe={recipe!r}: must be one of {', '.join(RECIPES)}", arg="recipe")
    if config.get("plan") is not None:
        raise UsageError(f"plan={config['plan']!r}: the segmentation recipe plans convolutional UNets "
                         "(docs/segmentation-recipe.md); FratMAE's UNETR fine-tunes with its presets (--preset)",
                         arg="plan")
    config.pop("plan", None)
    named = {k: (NAMED_OPTIONS[k], config.pop(k)) for k in list(config) if k in NAMED_OPTIONS}
    task_cfg, train_base, resumed = base_configs(out, resume, preset or ("gpu" if recipe else None), get_preset,
                                                 FINETUNE_CONFIG)
    if recipe is not None and not resumed:
        r = copy.deepcopy(RECIPES[recipe])
        task_cfg.update(deep_merge(task_cfg, r["task"]))
        train_base.update(r["train"])
        if r["global_batch"] % world_size():
            raise UsageError(f"recipe={recipe!r}: the global batch {r['global_batch']} does not split over "
                             f"{world_size()} processes; give --batch-size (per process)", arg="recipe")
        task_cfg["data"]["batch_size"] = r["global_batch"] // world_size()
    if max_steps is not None and not resumed:
        task_cfg["epochs"] = None  # an explicit step count wins over a recipe's epochs
    if not resumed:
        if init is None or str(init) == "scratch":
            task_cfg["init"] = {"source": "scratch", "method": None, "step": None}
        else:
            path = resolve_weights(init)
            _, pcfg, meta = read_weights(path)
            check_compatible({"model": {k: pcfg.get("model", {}).get(k) for k in MODEL_KEYS}}, pcfg, path)
            task_cfg["model"].update({k: pcfg["model"][k] for k in MODEL_KEYS})
            task_cfg["data"].update({k: copy.deepcopy(pcfg["data"][k]) for k in STACK_KEYS})
            if named.get("stack", (None, None))[1] not in (None, pcfg["data"]["stack"]):
                raise InputError(f"{path}: pretrained on {pcfg['data']['stack']} stacks; fine-tune on the same")
            task_cfg["init"] = {"source": str(path), "method": PRETRAIN_METHOD, "step": meta.get("step")}
    bind_dataset_path(task_cfg, dataset)
    if not resumed or fraction is not None or kshot is not None:
        name, cases = resolve_subset(task_cfg["dataset"], fraction, kshot)
        task_cfg["subset"] = {"name": name, "cases": cases}
    out_cfg, train_cfg = finish_configs(FINETUNE_CONFIG, task_cfg, train_base, named, overrides,
                                        run_options(config, max_steps, max_time))
    if out_cfg.get("epochs") is not None and not resumed:  # one epoch = the subset's cases, as in pretraining
        train_cfg.max_steps = epoch_steps(float(out_cfg["epochs"]), len(out_cfg["subset"]["cases"]), train_cfg)
        train_cfg.schedule_steps = train_cfg.max_steps
        train_cfg.warmup_steps = min(train_cfg.warmup_steps, train_cfg.max_steps - 1)
    return out_cfg, train_cfg


def finetune_fratmae(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
                     preset: str | None = None, fraction: float | None = None, *, kshot: int | None = None,
                     max_steps: int | None = None, max_time: float | None = None, resume: bool = False,
                     overrides: Overrides = None, recipe: str | None = None, **config: Any) -> dict[str, Any]:
    """Fine-tune a FratMAE encoder (or the same network from scratch, ``init=None`` / ``"scratch"``) for lesion
    segmentation into ``out``; the trainer's summary; ``out/best/model.safetensors`` is the best by val Dice
    (``petctfm predict --model out`` and ``petctfm finetune --out out --predict test`` use it).

    ``recipe="paper"``: the paper's fine-tuning (:data:`RECIPES`: native crops, Dice + CE, lr 1e-4, global
    batch 16, 200 epochs). ``config``: named options (``crop`` = native | resized, ``fg_prob``,
    ``freeze_encoder``, ``layer_decay``, ``stack`` (scratch only), ``feature_size``, ``epochs``: the schedule
    in epochs of the training subset) and trainer settings (``lr``, ``seed``...); other arguments as
    :func:`petctfm.methods.segmentation.api.finetune`.
    """
    from petctfm.train import trainer

    task_cfg, train_cfg = finetune_configs(dataset, out, init, preset, fraction, kshot=kshot, max_steps=max_steps,
                                           max_time=max_time, resume=resume, overrides=overrides, recipe=recipe,
                                           **config)
    return trainer.train(FratMAEFinetuneTask(task_cfg), train_cfg, out, resume=resume)


__all__ = ["PRETRAIN_METHOD", "DEFAULT_CONFIG", "PRESETS", "RECIPES", "NAMED_OPTIONS", "get_preset", "validate_config",
           "FratMAEFinetuneTask", "check_compatible", "finetune_configs", "finetune_fratmae"]
