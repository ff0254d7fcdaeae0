"""The Python API of FratMAE pretraining: :func:`pretrain_fratmae` (what ``petctfm pretrain --method fratmae``
calls).

Config = preset (``tiny`` | ``cpu`` | ``gpu``; with ``resume`` the run's saved ``config.yaml``) -> ``variant``
(the paper's Table 3 rows: ``mae``, ``mae+ca``, ``fratmae-noca``, ``fratmae``) -> named options
(:data:`NAMED_OPTIONS`) -> ``overrides`` (``{"context_align.weight": 0.5, "train.lr": 1e-4}``) -> trainer
options (any :class:`~petctfm.train.config.TrainConfig` field). One seed drives weights, stacks and masks.

    from petctfm.methods.fratmae.api import pretrain_fratmae
    summary = pretrain_fratmae("dataset/", "runs/frat_tiny", preset="tiny", max_steps=5, variant="fratmae-noca")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petctfm.core.config import ConfigError, Overrides
from petctfm.methods.fratmae.presets import get_preset
from petctfm.train.config import base_configs, bind_dataset_path, TrainConfig, finish_configs, run_options

#: Named options -> dotted config key.
NAMED_OPTIONS: dict[str, str] = {
    "mask_ratio": "mask.ratio", "patch": "model.patch", "stack": "data.stack", "k": "data.k",
    "norm_pix": "loss.norm_pix", "context_weight": "context_align.weight",
}


def pretrain_configs(dataset: str | Path | None, out: str | Path, preset: str | None = None, *,
                     variant: str | None = None, max_steps: int | None = None, max_time: float | None = None,
                     resume: bool = False, overrides: Overrides = None, **config: Any) -> tuple[dict[str, Any], TrainConfig]:
    """(task config, TrainConfig) of a FratMAE run; arguments as :func:`pretrain_fratmae`."""
    from petctfm.methods.fratmae.config import CONFIG
    from petctfm.methods.fratmae.fratmae import VARIANTS

    named = {k: (NAMED_OPTIONS[k], config.pop(k)) for k in list(config) if k in NAMED_OPTIONS}
    task_cfg, train_base, _ = base_configs(out, resume, preset, get_preset, CONFIG)
    if variant is not None:
        if variant not in VARIANTS:
            raise ConfigError("variant", variant, f"must be one of {', '.join(VARIANTS)}", arg="variant")
        task_cfg["model"]["arch"], task_cfg["context_align"]["enabled"] = VARIANTS[variant]
    bind_dataset_path(task_cfg, dataset)
    return finish_configs(CONFIG, task_cfg, train_base, named, overrides, run_options(config, max_steps, max_time))


def pretrain_fratmae(dataset: str | Path | None, out: str | Path, preset: str | None = None, *,
                     variant: str | None = None, max_steps: int | None = None, max_time: float | None = None,
                     resume: bool = False, overrides: Overrides = None, **config: Any) -> dict[str, Any]:
    """Pretrain FratMAE (or one of its ablations, ``variant``) on a harmonized ``dataset`` into ``out``;
    returns the trainer's summary. Writes ``config.yaml`` (with the metadata vocabulary), ``metrics.jsonl``
    (``recon``, ``recon_pet``, ``recon_ct``, ``info_nce``, ``retrieval_acc``, ``tau``), safetensors
    checkpoints and coronal reconstruction figures. ``config``: named options (``mask_ratio``, ``patch``,
    ``stack="axial"``, ``k``, ``norm_pix``, ``context_weight``) and trainer settings (``lr``, ``seed``...)."""
    from petctfm.methods.fratmae.fratmae import FratMAETask
    from petctfm.train import trainer

    task_cfg, train_cfg = pretrain_configs(dataset, out, preset, variant=variant, max_steps=max_steps,
                                           max_time=max_time, resume=resume, overrides=overrides, **config)
    return trainer.train(FratMAETask(task_cfg), train_cfg, out, resume=resume)


__all__ = ["NAMED_OPTIONS", "pretrain_configs", "pretrain_fratmae"]
