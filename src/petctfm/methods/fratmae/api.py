"""The Python API of FratMAE pretraining: :func:`pretrain_fratmae` (what ``petctfm pretrain --method fratmae``
calls).

Config = preset (``tiny`` | ``cpu`` | ``gpu``; with ``resume`` the run's saved ``config.yaml``) -> ``recipe``
(``paper``: every hyperparameter the paper gives, :data:`~.presets.RECIPES`; its preset defaults to ``gpu``)
-> ``variant`` (the paper's Table 3 rows: ``mae``, ``mae+ca``, ``fratmae-noca``, ``fratmae``) -> named options
(:data:`NAMED_OPTIONS`) -> ``overrides`` (``{"context_align.weight": 0.5, "train.lr": 1e-4}``) -> trainer
options (any :class:`~petctfm.train.config.TrainConfig` field). One seed drives weights, stacks and masks.

**Schedule in epochs** (``epochs=30``, ``--epochs 30``; the paper recipe's default): the trainer counts optimizer
steps and samples, and the stack stream draws a case uniformly per sample (with replacement), so one epoch is
defined as ``len(split)`` samples: ``max_steps = ceil(epochs * len(split) / (batch_size * grad_accum *
world_size))``, also the cosine horizon. ``max_steps`` given explicitly wins over a recipe's epochs (the config
then records ``epochs: null``); both given explicitly is a usage error.

    from petctfm.methods.fratmae.api import pretrain_fratmae
    summary = pretrain_fratmae("dataset/", "runs/frat_tiny", preset="tiny", max_steps=5, variant="fratmae-noca")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petctfm.core.config import ConfigError, Overrides, deep_merge
from petctfm.core.errors import UsageError
from petctfm.methods.fratmae.presets import get_preset, get_recipe
from petctfm.methods.fratmae.schedule import epoch_steps, world_size
from petctfm.train.config import (TrainConfig, base_configs, bind_dataset_path, finish_configs, run_options,
                                  split_train_overrides)

#: Named options -> dotted config key.
NAMED_OPTIONS: dict[str, str] = {
    "mask_ratio": "mask.ratio", "patch": "model.patch", "stack": "data.stack", "k": "data.k",
    "norm_pix": "loss.norm_pix", "context_weight": "context_align.weight", "mask_mode": "mask.mode",
    "tokenizer": "context_align.tokenizer", "epochs": "epochs",
}


def _apply_recipe(recipe: str, task_cfg: dict[str, Any], train_base: dict[str, Any]) -> int:
    """Lay recipe ``recipe`` over the preset's configs (in place); returns its warm-up in epochs. The global
    batch is split over the ranks (a usage error when it does not divide)."""
    r = get_recipe(recipe)
    task_cfg.update(deep_merge(task_cfg, r["task"]))
    train_base.update(r["train"])
    n = world_size()
    if r["global_batch"] % n:
        raise UsageError(f"recipe={recipe!r}: the global batch {r['global_batch']} does not split over {n} "
                         "processes; give --batch-size (per process)", arg="recipe")
    task_cfg["data"]["batch_size"] = r["global_batch"] // n
    return int(r.get("warmup_epochs", 0))


def _given(name: str, config: dict[str, Any], overrides: Overrides) -> bool:
    """Whether trainer setting ``name`` was given as an option or a ``train.`` override."""
    if config.get(name) is not None:
        return True
    train_sets, _ = split_train_overrides(overrides or ())
    return any((a if isinstance(a, str) else str(a[0])).split("=")[0].strip() == f"train.{name}" for a in train_sets)


def pretrain_configs(dataset: str | Path | None, out: str | Path, preset: str | None = None, *,
                     variant: str | None = None, recipe: str | None = None, max_steps: int | None = None,
                     max_time: float | None = None, resume: bool = False, overrides: Overrides = None,
                     **config: Any) -> tuple[dict[str, Any], TrainConfig]:
    """(task config, TrainConfig) of a FratMAE run; arguments as :func:`pretrain_fratmae`."""
    from petctfm.data.loader import list_cases
    from petctfm.methods.fratmae.config import CONFIG
    from petctfm.methods.fratmae.fratmae import VARIANTS

    if max_steps is not None and config.get("epochs") is not None:
        raise UsageError("give the schedule as epochs or as max_steps, not both", arg="epochs")
    named = {k: (NAMED_OPTIONS[k], config.pop(k)) for k in list(config) if k in NAMED_OPTIONS}
    task_cfg, train_base, resumed = base_configs(out, resume, preset or ("gpu" if recipe else None), get_preset, CONFIG)
    warmup_epochs = 0
    if recipe is not None and not resumed:
        warmup_epochs = _apply_recipe(recipe, task_cfg, train_base)
    if variant is not None:
        if variant not in VARIANTS:
            raise ConfigError("variant", variant, f"must be one of {', '.join(VARIANTS)}", arg="variant")
        task_cfg["model"]["arch"], task_cfg["context_align"]["enabled"] = VARIANTS[variant]
    if max_steps is not None and not resumed:
        task_cfg["epochs"] = None  # an explicit step count wins over a recipe's epochs
    bind_dataset_path(task_cfg, dataset)
    explicit_warmup = _given("warmup_steps", config, overrides)
    out_cfg, train_cfg = finish_configs(CONFIG, task_cfg, train_base, named, overrides,
                                        run_options(config, max_steps, max_time))
    if out_cfg.get("epochs") is not None and not resumed:
        n_cases = len(list_cases(out_cfg["dataset"], out_cfg["data"]["split"]))
        train_cfg.max_steps = epoch_steps(float(out_cfg["epochs"]), n_cases, train_cfg)
        train_cfg.schedule_steps = train_cfg.max_steps
        if warmup_epochs and not explicit_warmup:
            train_cfg.warmup_steps = min(epoch_steps(warmup_epochs, n_cases, train_cfg), train_cfg.max_steps - 1)
    return out_cfg, train_cfg


def pretrain_fratmae(dataset: str | Path | None, out: str | Path, preset: str | None = None, *,
                     variant: str | None = None, recipe: str | None = None, max_steps: int | None = None,
                     max_time: float | None = None, resume: bool = False, overrides: Overrides = None,
                     **config: Any) -> dict[str, Any]:
    """Pretrain FratMAE (or one of its ablations, ``variant``) on a harmonized ``dataset`` into ``out``;
    returns the trainer's summary. Writes ``config.yaml`` (with the metadata vocabulary), ``metrics.jsonl``
    (``recon``, ``recon_pet``, ``recon_ct``, ``info_nce``, ``retrieval_acc``, ``tau``), safetensors
    checkpoints and coronal reconstruction figures. ``recipe="paper"``: the paper's hyperparameters (module
    docstring). ``config``: named options (``mask_ratio``, ``mask_mode`` (``drop`` | ``zero``), ``patch``,
    ``stack="axial"``, ``k``, ``norm_pix``, ``context_weight``, ``tokenizer``, ``epochs``) and trainer settings
    (``lr``, ``seed``...)."""
    from petctfm.methods.fratmae.fratmae import FratMAETask
    from petctfm.train import trainer

    task_cfg, train_cfg = pretrain_configs(dataset, out, preset, variant=variant, recipe=recipe,
                                           max_steps=max_steps, max_time=max_time, resume=resume,
                                           overrides=overrides, **config)
    return trainer.train(FratMAETask(task_cfg), train_cfg, out, resume=resume)


__all__ = ["NAMED_OPTIONS", "pretrain_configs", "pretrain_fratmae"]
