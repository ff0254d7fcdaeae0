"""The Python API of early-fusion MAE pretraining: :func:`pretrain` (what ``petctfm pretrain`` calls).

Config = preset (``tiny`` | ``cpu`` | ``gpu``; with ``resume`` the run folder's saved ``config.yaml``
instead) -> named options (``mode``, ``backbone``, ``patch``, ``mask_ratio``...) -> ``overrides`` (task keys
such as ``mask.ratio``, ``data.fg_prob``, ``model.overrides.use_checkpoint``; trainer keys prefixed
``train.``) -> trainer options (any :class:`~petctfm.train.config.TrainConfig` field: ``lr``, ``seed``,
``progress``...). One seed (``seed``, default 0) drives weights, masks, patches and augmentations.

    from petctfm.methods.early_fusion_mae.api import pretrain
    summary = pretrain("dataset/", "runs/mae_tiny", preset="tiny", max_steps=5, overrides={"mask.ratio": 0.75})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petctfm.core.config import Overrides
from petctfm.methods.early_fusion_mae.config import CONFIG
from petctfm.methods.early_fusion_mae.presets import get_preset
from petctfm.train.config import base_configs, bind_dataset_path, TrainConfig, finish_configs, run_options

#: Named options of :func:`pretrain` (the ``petctfm pretrain`` flags) -> dotted config key (``patch``: one
#: side, the patch is cubic). A wrong value is a one-line ConfigError naming the argument (``patch=-8: ...``).
NAMED_OPTIONS: dict[str, str] = {
    "mode": "data.mode", "backbone": "model.backbone", "patch": "data.patch_size", "mask_ratio": "mask.ratio",
    "mask_block": "mask.block", "mask_token": "mask.token", "w_masked": "loss.w_masked",
    "w_visible": "loss.w_visible", "loss": "loss.kind",
}


def pretrain_configs(dataset: str | Path | None, out: str | Path, preset: str | None = None, *,
                     max_steps: int | None = None, max_time: float | None = None, resume: bool = False,
                     overrides: Overrides = None, **config: Any) -> tuple[dict[str, Any], TrainConfig]:
    """(task config, TrainConfig) of a pretraining run; the arguments are those of :func:`pretrain`."""
    named = {k: (NAMED_OPTIONS[k], config.pop(k)) for k in list(config) if k in NAMED_OPTIONS}
    task_cfg, train_base, _ = base_configs(out, resume, preset, get_preset, CONFIG)
    bind_dataset_path(task_cfg, dataset)
    return finish_configs(CONFIG, task_cfg, train_base, named, overrides, run_options(config, max_steps, max_time))


def pretrain(dataset: str | Path | None, out: str | Path, preset: str | None = None, *,
             max_steps: int | None = None, max_time: float | None = None, resume: bool = False,
             overrides: Overrides = None, **config: Any) -> dict[str, Any]:
    """Pretrain an early-fusion MAE on a harmonized ``dataset`` into the run folder ``out``; the trainer's
    summary (``steps``, ``loss``, ``samples_per_s``, ``stopped``...; also ``out/summary.json``).

    ``preset``: ``tiny`` | ``cpu`` | ``gpu`` (None: gpu when CUDA is available, else cpu). ``max_steps`` /
    ``max_time`` (seconds): stop with a checkpoint. ``resume``: continue the run in ``out`` from its latest
    checkpoint (its saved config is the base; ``dataset`` may be None). ``overrides``: ``{"mask.ratio": 0.75,
    "train.lr": 1e-4}`` or ``["mask.ratio=0.75"]``. ``config``: named options (:data:`NAMED_OPTIONS`:
    ``mode="pet"``, ``patch=48``, ``mask_token="learnable"``...) and trainer settings (``lr``, ``seed``,
    ``progress``, ``batch_size``...). Writes ``config.yaml``, ``metrics.jsonl``, checkpoints and figures.
    """
    from petctfm.methods.early_fusion_mae.mae import EarlyFusionMAETask
    from petctfm.train import trainer

    task_cfg, train_cfg = pretrain_configs(dataset, out, preset, max_steps=max_steps, max_time=max_time,
                                           resume=resume, overrides=overrides, **config)
    task = EarlyFusionMAETask(task_cfg)  # validates; wrong dataset path -> one-line InputError
    return trainer.train(task, train_cfg, out, resume=resume)


__all__ = ["NAMED_OPTIONS", "pretrain_configs", "pretrain"]
