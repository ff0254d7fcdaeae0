"""The Python API of promptable-segmentation training: :func:`prompt_train` (what ``petctfm prompt-train`` calls).

Config = preset -> the pretrained run's backbone (``init``) -> named options -> ``overrides`` -> trainer options;
with ``resume`` the run's saved ``config.yaml`` is the base.

    from petctfm.methods.promptable.api import prompt_train
    prompt_train("dataset/", "runs/prompt", init="runs/mae", preset="tiny")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petctfm.core.config import Overrides
from petctfm.core.errors import InputError
from petctfm.data.filters import describe, parse_filters, select_cases
from petctfm.methods.promptable.presets import get_preset
from petctfm.train.config import base_configs, bind_dataset_path, TrainConfig, finish_configs, run_options

#: Named options of :func:`prompt_train` -> dotted config key (``patch``: one side, cubic).
NAMED_OPTIONS: dict[str, str] = {"mode": "data.mode", "patch": "data.patch_size", "design": "model.design",
                                  "class_prompts": "model.class_prompts", "train_filter": "targets.train_filter"}


def prompt_train_configs(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
                         preset: str | None = None, *, backbone: str | None = None, held_out: list[str] | None = None,
                         max_steps: int | None = None, max_time: float | None = None, resume: bool = False,
                         overrides: Overrides = None, **config: Any) -> tuple[dict[str, Any], TrainConfig]:
    """(task config, TrainConfig) of a prompt-training run; arguments as :func:`prompt_train`."""
    from petctfm.methods.promptable.config import CONFIG
    from petctfm.methods.segmentation.task import pretrained_config

    given = {k: config.pop(k) for k in list(config) if k in NAMED_OPTIONS}
    if given.get("train_filter") is not None:  # checked as the argument (train_filter='x': ...), then recorded
        given["train_filter"] = describe(parse_filters(given["train_filter"], "train_filter"))
    task_cfg, train_base, resumed = base_configs(out, resume, preset, get_preset, CONFIG)
    if not resumed:
        if backbone:
            task_cfg["model"]["backbone"] = backbone
        if init is not None and str(init) != "scratch":
            pcfg, _, path = pretrained_config(init)
            if backbone and backbone != pcfg["model"]["backbone"]:
                raise InputError(f"{path}: pretrained backbone {pcfg['model']['backbone']!r} != --backbone {backbone!r}")
            task_cfg["model"].update(backbone=pcfg["model"]["backbone"],
                                     overrides=dict(pcfg["model"].get("overrides") or {}))
            task_cfg["init"] = {"source": str(path), "method": pcfg.get("method"), "mode": pcfg["data"]["mode"]}
    bind_dataset_path(task_cfg, dataset)
    named = {k: (NAMED_OPTIONS[k], v) for k, v in given.items()}
    named["held_out"] = ("targets.held_out", None if held_out is None else list(held_out))
    return finish_configs(CONFIG, task_cfg, train_base, named, overrides, run_options(config, max_steps, max_time))


def check_train_filter(task_cfg: dict[str, Any]) -> list[str]:
    """The train-split cases that ``targets.train_filter`` keeps (all without one), read before any training:
    a column or value the dataset's manifest lacks, or no case left, is a one-line InputError (exit 3)."""
    from petctfm.data.loader import list_cases

    filters = task_cfg.get("targets", {}).get("train_filter") or []
    if not task_cfg.get("dataset") or not filters:
        return []
    split = task_cfg["data"].get("split", "train")
    return select_cases(task_cfg["dataset"], list_cases(task_cfg["dataset"], split), filters, "train_filter",
                        f"split {split!r}")


def prompt_train(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
                 preset: str | None = None, *, backbone: str | None = None, held_out: list[str] | None = None,
                 max_steps: int | None = None, max_time: float | None = None, resume: bool = False,
                 overrides: Overrides = None, **config: Any) -> dict[str, Any]:
    """Train a promptable segmenter on a harmonized ``dataset`` into the run folder ``out``; the trainer's summary.

    ``init``: a pretrained petctfm run / checkpoint (its encoder and backbone; input convolutions inflated to
    the prompt channels) or None / ``"scratch"``. ``mode``: ``"pet"`` (default, as the paper) or ``"joint"``
    (PET + CT). ``design``: ``"cached"`` (default: image embedding once per crop, a light prompt decoder per
    click), ``"channels"`` (prompts as input channels of the whole network) or ``"sam"`` (a SAM-style prompt
    encoder and two-way-transformer mask decoder over the cached embedding). ``class_prompts``: a target class
    (lesion, an organ) steers the decoder (designs cached and sam; ``targets.class_dropout`` of the targets get
    none). ``held_out``: organ names never
    sampled (default spleen, kidney_left, kidney_right). ``train_filter``: ``manifest.csv`` filters
    (``["tracer=fdg"]``, ``["site!=north_valley"]``; AND-ed) selecting the train and val cases (the
    out-of-distribution protocol, docs/promptable.md). ``overrides``: ``{"clicks.max_iter": 5, "train.lr": 1e-4}``. Other keywords: trainer settings.
    """
    from petctfm.methods.promptable.task import PromptTask
    from petctfm.train import trainer

    task_cfg, train_cfg = prompt_train_configs(dataset, out, init, preset, backbone=backbone, held_out=held_out,
                                               max_steps=max_steps, max_time=max_time, resume=resume,
                                               overrides=overrides, **config)
    check_train_filter(task_cfg)
    return trainer.train(PromptTask(task_cfg), train_cfg, out, resume=resume)


__all__ = ["NAMED_OPTIONS", "prompt_train_configs", "check_train_filter", "prompt_train"]
