"""The Python API of lesion-segmentation fine-tuning: :func:`finetune` (what ``petctfm finetune`` calls).

Config = preset (``tiny`` | ``cpu`` | ``gpu``) -> the pretrained run's backbone, model overrides and mode ->
named options (``patch``, ``fg_prob``, ``freeze_encoder``...) -> ``overrides`` (task keys such as
``data.fg_prob``, ``val.overlap``; trainer keys prefixed ``train.``) -> trainer options (any
:class:`~petctfm.train.config.TrainConfig` field). With ``resume`` the run folder's saved ``config.yaml`` is
the base instead. The run trains on exactly one stored label subset (``fraction`` / ``kshot`` from
``splits.json``; neither: the whole train split).

    from petctfm.methods.segmentation.api import finetune
    summary = finetune("dataset/", "runs/ft10", init="runs/mae_tiny", preset="tiny", fraction=0.1)
    scratch = finetune("dataset/", "runs/scratch10", preset="tiny", fraction=0.1, backbone="unet-resenc-tiny")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petctfm.core.config import Overrides, parse_overrides
from petctfm.core.errors import UsageError
from petctfm.methods.segmentation.plan import TARGETS
from petctfm.methods.segmentation.presets import get_preset
from petctfm.train.config import base_configs, bind_dataset_path, TrainConfig, finish_configs, run_options

#: Named options of :func:`finetune` (the ``petctfm finetune`` flags) -> dotted config key. ``mode`` is
#: applied only from scratch or on resume (a pretrained run brings its own mode, checked). A wrong value is a
#: one-line ConfigError naming the argument (``overlap=1.0: must be in [0, 1)``).
NAMED_OPTIONS: dict[str, str] = {
    "mode": "data.mode", "patch": "data.patch_size", "fg_prob": "data.fg_prob",
    "freeze_encoder": "optim.freeze_encoder", "layer_decay": "optim.layer_decay", "overlap": "val.overlap",
}


def apply_plan(task_cfg: dict[str, Any], train_base: dict[str, Any], target: str, *,
               scratch: bool, rule: dict[str, Any] | None = None, run_dir: str | Path | None = None
               ) -> dict[str, Any]:
    """Plan the run for compute ``target`` (``cpu`` | ``gpu``; :mod:`~petctfm.methods.segmentation.plan`) from
    the fingerprint of its training cases, in place: ``plan`` (the plan and the fingerprint), the patch, the
    batch and, from scratch, the network (an nnU-Net backbone without constructor overrides gets the planned depth,
    strides, widths and deep supervision). A pretrained init keeps its network: only the
    patch is planned, fitting it. ``rule``: the target's numbers overridden (``plan.TARGETS``; e.g.
    ``{"step_seconds": None}``: untimed, ``{"patch_voxels": 38652}``). With a step-time budget (the ``cpu``
    target's default for a lesion run; an organ run only when ``rule`` gives one) the patch shrinks until a timed
    step of the run's own network fits it (``plan.make_plan``). With a ``min_spacing`` (mm; the target's for a
    lesion run whose network is planned, otherwise only from ``rule``) coarser than the dataset's spacing, the
    run trains on the dataset's copy at that grid (``plan.train_spacing``,
    :func:`training_grid`: ``DATASET/respaced/<tag>``, or ``run_dir/respaced/<tag>`` when the dataset's folder is
    read-only): ``task_cfg["dataset"]`` becomes the copy, and ``plan.dataset`` records both.
    A lesion run also gets the plan's sliding-window overlap (``val.overlap``). Returns the train settings with
    the plan's precision, LR and poly schedule (explicit options and overrides still win: they are applied
    after)."""
    from petctfm.methods.segmentation.model import in_channels, n_classes
    from petctfm.methods.segmentation.plan import fingerprint, make_plan

    rule = dict(rule or {})
    lesions = task_cfg.setdefault("task", {}).get("name", "lesions") == "lesions"
    source = task_cfg["dataset"]
    # the target's training grid was chosen on lesion runs with a planned network; an organ run, a pretrained init
    # or a given network (which learned, or is compared, at the dataset's grid) gets one only when asked
    min_spacing = rule["min_spacing"] if "min_spacing" in rule else (
        (TARGETS.get(target) or {}).get("min_spacing") if lesions and scratch else None)
    task_cfg["dataset"] = str(training_grid(source, min_spacing, run_dir))
    fp = fingerprint(task_cfg["dataset"], task_cfg["subset"]["cases"])
    backbone = task_cfg["model"]["backbone"]
    keep = dict(task_cfg["model"].get("overrides") or {})
    net = None if (scratch and not keep) else keep
    p = make_plan(fp, target, backbone=backbone, overrides=net, **{**rule, "step_seconds": None,
                                                                   "min_spacing": min_spacing})
    if p["aux_organs"] and lesions:
        task_cfg["task"]["aux_classes"] = organ_task(task_cfg["dataset"], None)["classes"]
    # the target's step-time budget was chosen on lesion runs; an organ run is timed only when asked to be (its
    # patch shrank to 40 x 20 x 80 on the AMD VM and the organs lost their context: segmentation-recipe.md, round nine)
    step = rule["step_seconds"] if "step_seconds" in rule else (TARGETS[target]["step_seconds"] if lesions else None)
    if step is not None:
        # timed with the run's own channels (the auxiliary organs included)
        p = make_plan(fp, target, backbone=backbone, overrides=net,
                      channels=(in_channels(task_cfg), n_classes(task_cfg)),
                      **{**rule, "step_seconds": step, "min_spacing": min_spacing})
    if p["planned_network"]:
        task_cfg["model"]["overrides"] = p["model_overrides"]
    task_cfg["data"]["patch_size"] = p["patch_size"]
    task_cfg["data"]["batch_size"] = p["batch_size"]
    task_cfg["data"]["fg_prob"] = p["fg_prob"]
    task_cfg["data"]["fg_balance"] = p["fg_balance"]
    if lesions:  # the plan's sliding-window overlap (organs: not measured)
        task_cfg.setdefault("val", {})["overlap"] = p["overlap"]
    task_cfg["plan"] = {**p, "fingerprint": fp, "dataset": {"source": str(source), "trained_on": task_cfg["dataset"]}}
    return {**train_base, "precision": p["precision"], "lr_schedule": p["lr_schedule"],
            "batch_size": p["batch_size"], "lr": p["lr"]}


def training_grid(dataset: str | Path, min_spacing: float | None, run_dir: str | Path | None = None) -> Path:
    """The dataset a planned run trains on: ``dataset`` itself, or its copy at the coarser grid the rule's
    ``min_spacing`` asks for (:func:`apply_plan`; made once, then reused)."""
    import os

    from petctfm.data import format as fmt
    from petctfm.harmonize.respace import respace_dataset, respaced_dir
    from petctfm.methods.segmentation.plan import train_spacing

    if min_spacing is None:  # no grid rule: the dataset is never opened here
        return Path(dataset)
    spacing = train_spacing(fmt.load_dataset_info(dataset).get("spacing") or [1.0, 1.0, 1.0], min_spacing)
    if spacing is None:
        return Path(dataset)
    out = respaced_dir(dataset, spacing)
    if not os.access(dataset, os.W_OK) and run_dir is not None:  # a read-only dataset: the copy goes in the run
        out = respaced_dir(run_dir, spacing)
    return respace_dataset(dataset, spacing, out, progress=True)


def given_network(overrides: Overrides) -> dict[str, Any] | None:
    """The network constructor overrides given explicitly as ``model.overrides`` in ``overrides`` (the last one;
    ``{}`` counts: the backbone's defaults), else None. With a plan, a given network is kept (only the patch is
    planned to fit it), as a pretrained one is: e.g. the scratch arm of a label-efficiency experiment, the same
    network as its pretrained arm."""
    nets = [v for k, v in parse_overrides(overrides) if k.strip() == "model.overrides"]
    if not nets or not isinstance(nets[-1], (dict, type(None))):
        return None  # not given, or not a mapping (the typed config refuses it with its own message)
    return dict(nets[-1] or {})


def lateral_classes(classes: dict[str, int]) -> list[str]:
    """The class names that say a side (``kidney_left``, ``Lung Right``...): a left-right flip of the image
    must not keep their labels."""
    import re

    return [n for n in classes if re.search(r"(^|[^a-z])(left|right)([^a-z]|$)", n.lower())]


def organ_task(dataset: str | Path, labels: str | Path | None) -> dict[str, Any]:
    """The ``task`` section of an organ run: the classes of ``labels``
    (:func:`petctfm.io.label_table.read_label_table`), else the
    dataset's ``dataset.json["organ_labels"]`` (what harmonize records), else
    :data:`petctfm.core.labels.ORGAN_LABELS`; background left out."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.data import format as fmt

    if labels is not None:
        from petctfm.io.label_table import read_label_table

        classes = read_label_table(labels)
    else:
        table = fmt.load_dataset_info(dataset).get("organ_labels") or ORGAN_LABELS
        classes = {str(k): int(v) for k, v in table.items() if int(v) != 0 and k != "background"}
    return {"name": "organs", "classes": classes}


def with_organ_labels(root: str | Path, cases: list[str]) -> list[str]:
    """The cases of ``cases`` that have an organ label map (``organs.npy``); none is a one-line InputError."""
    from petctfm.core.errors import InputError
    from petctfm.data import format as fmt

    kept = [c for c in cases if (fmt.case_dir(root, c) / "organs.npy").is_file()]
    if not kept:
        raise InputError(f"{root}: none of the {len(cases)} training cases has organ labels (organs.npy); "
                         "harmonize cases with an ORGANS.nii.gz (or *organs* label map) to train --task organs")
    return kept


def finetune_configs(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
                     preset: str | None = None, fraction: float | None = None, *, kshot: int | None = None,
                     backbone: str | None = None, max_steps: int | None = None, max_time: float | None = None,
                     resume: bool = False, overrides: Overrides = None, plan: str | None = None,
                     plan_step_seconds: float | None = None, plan_rule: dict[str, Any] | None = None,
                     plan_spacing: float | None = None, **config: Any) -> tuple[dict[str, Any], TrainConfig]:
    """(task config, TrainConfig) of a fine-tuning run; the arguments are those of :func:`finetune`."""
    from petctfm.methods.segmentation.config import CONFIG
    from petctfm.methods.segmentation.task import check_compatible, pretrained_config, resolve_subset

    given = {k: config.pop(k) for k in list(config) if k in NAMED_OPTIONS}
    task, labels = config.pop("task", None), config.pop("labels", None)
    if task not in (None, "lesions", "organs"):
        raise UsageError(f"task={task!r}: choose lesions or organs", arg="task")
    if labels is not None and task != "organs":
        raise UsageError(f"labels={labels}: an organ name table is only used with task organs", arg="labels")
    mode = given.get("mode")
    scratch = init is None or str(init) == "scratch"
    task_cfg, train_base, resumed = base_configs(out, resume, preset, get_preset, CONFIG)
    if not resumed:
        if scratch:
            if not backbone:
                raise UsageError("backbone: required when init is None or 'scratch' (e.g. unet-resenc-tiny, "
                                 "swinunetr-base)", arg="backbone")
            task_cfg["model"]["backbone"] = backbone
            task_cfg["init"] = {"source": "scratch", "method": None, "step": None}
        else:
            pcfg, _, path = pretrained_config(init)
            task_cfg["model"] = {"backbone": pcfg["model"]["backbone"],
                                 "overrides": dict(pcfg["model"].get("overrides") or {})}
            task_cfg["data"]["mode"] = pcfg["data"]["mode"]
            # the encoder learned on its PET intensity scale: fine-tune on the same (absent: "clip")
            task_cfg["data"]["pet_transform"] = pcfg["data"].get("pet_transform", "clip")
            want = {"model": {"backbone": backbone or pcfg["model"]["backbone"]},
                    "data": {"mode": mode or pcfg["data"]["mode"],
                             "pet_transform": task_cfg["data"]["pet_transform"]}}
            check_compatible(want, pcfg, path)
            task_cfg["init"] = {"source": str(path), "method": pcfg.get("method"), "step": None}
    bind_dataset_path(task_cfg, dataset)
    if resumed and task is not None and task != (task_cfg.get("task") or {}).get("name", "lesions"):
        raise UsageError(f"task={task!r}: the run in {out} was trained for "
                         f"{(task_cfg.get('task') or {}).get('name', 'lesions')}", arg="task")
    if not resumed and task == "organs":
        task_cfg["task"] = organ_task(task_cfg["dataset"], labels)
        if lateral_classes(task_cfg["task"]["classes"]):  # no left-right flips: they would swap the labels
            task_cfg["data"]["flip_axes"] = [1, 2]
    if not resumed or fraction is not None or kshot is not None:
        name, cases = resolve_subset(task_cfg["dataset"], fraction, kshot)
        if (task_cfg.get("task") or {}).get("name") == "organs":
            cases = with_organ_labels(task_cfg["dataset"], cases)
        task_cfg["subset"] = {"name": name, "cases": cases}
    for arg, v in (("plan_step_seconds", plan_step_seconds), ("plan_rule", plan_rule), ("plan_spacing", plan_spacing)):
        if v is not None and plan is None:
            raise UsageError(f"{arg}={v}: needs a plan (--plan cpu)", arg=arg)
    rule = dict(plan_rule or {})
    if plan_step_seconds is not None:
        rule["step_seconds"] = float(plan_step_seconds) or None  # 0: untimed
    if plan_spacing is not None:
        rule["min_spacing"] = float(plan_spacing) or None  # 0: the dataset's own spacing
    if given.get("patch") is not None or any(k.strip() == "data.patch_size" for k, _ in parse_overrides(overrides)):
        rule.setdefault("step_seconds", None)  # the plan's patch is replaced: nothing to time (unless asked)
    if plan is not None and not resumed:
        given_net = given_network(overrides)
        if given_net is not None:  # an explicit network (even {}): the plan keeps it and fits only the patch
            task_cfg["model"]["overrides"] = given_net
        train_base = apply_plan(task_cfg, dict(train_base), plan, scratch=scratch and given_net is None, rule=rule,
                                run_dir=out)
    named = {k: (NAMED_OPTIONS[k], v) for k, v in given.items()}
    named["mode"] = ("data.mode", mode if resumed or scratch else None)
    return finish_configs(CONFIG, task_cfg, train_base, named, overrides, run_options(config, max_steps, max_time))


def finetune(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
             preset: str | None = None, fraction: float | None = None, *, kshot: int | None = None,
             backbone: str | None = None, max_steps: int | None = None, max_time: float | None = None,
             resume: bool = False, overrides: Overrides = None, plan: str | None = None,
             plan_step_seconds: float | None = None, plan_rule: dict[str, Any] | None = None,
             plan_spacing: float | None = None, **config: Any) -> dict[str, Any]:
    """Fine-tune a lesion (or, with ``task="organs"``, a multi-organ) segmenter on a harmonized ``dataset`` into the run folder ``out``; the trainer's
    summary (``steps``, ``loss``, ``stopped``...; the best checkpoint by val Dice is ``out/best/``).

    This is the UNet fine-tuning (the ``segmentation`` method's, and the early-fusion MAE's); users call
    :func:`petctfm.methods.finetune.finetune`, which picks the method that fine-tunes ``init``.

    ``init``: a pretraining run folder or checkpoint (its encoder, backbone and mode are used), or None /
    ``"scratch"`` for random weights (then ``backbone`` is required). ``preset``: ``tiny`` | ``cpu`` | ``gpu``
    (None: gpu when CUDA is available, else cpu). ``fraction`` (0.1 or 10 = 10 %) or ``kshot``: the stored
    label subset of ``splits.json``; neither: the whole train split. ``max_steps`` / ``max_time`` (seconds):
    stop with a checkpoint. ``resume``: continue the run in ``out`` (its saved config is the base).
    ``plan``: ``cpu`` | ``gpu``: the recipe (:func:`apply_plan`): patch, network, batch, precision and
    schedule planned from the training cases' fingerprint and written into the run's config (``plan``);
    ``plan_step_seconds``: with a plan, the step-time budget on this machine (the patch shrinks until a timed
    step fits; docs/segmentation-recipe.md); None: the target's (``cpu``: 1 s; none when the patch is given
    explicitly), 0: untimed; ``plan_rule``: the plan target's numbers overridden
    (``plan.TARGETS``; e.g. ``{"patch_voxels": 39483}``); ``plan_spacing``: with a plan, train on a grid no finer
    than this many mm (the rule's ``min_spacing``: a copy of the dataset at that grid, made once beside it;
    ``petctfm predict`` resamples to the model's grid); 0: the dataset's own spacing. ``overrides``: ``{"data.fg_prob": 0.5, "train.lr": 5e-5}`` or ``["data.fg_prob=0.5"]``. ``config``: named
    options (:data:`NAMED_OPTIONS`: ``patch=32``, ``freeze_encoder=True``, ``layer_decay=0.75``...) and trainer
    settings (``lr``, ``seed``, ``progress``...). ``task``: ``"lesions"`` (default) or ``"organs"`` (the
    dataset's ``organs.npy``; cases without one are left out); ``labels``: with organs, a JSON name table
    (:func:`petctfm.io.label_table.read_label_table`; default the dataset's organ labels). docs/organs.md.
    """
    from petctfm.methods.segmentation.task import FinetuneTask
    from petctfm.train import trainer

    task_cfg, train_cfg = finetune_configs(dataset, out, init, preset, fraction, kshot=kshot, backbone=backbone,
                                           max_steps=max_steps, max_time=max_time, resume=resume,
                                           overrides=overrides, plan=plan, plan_step_seconds=plan_step_seconds,
                                           plan_rule=plan_rule, plan_spacing=plan_spacing, **config)
    return trainer.train(FinetuneTask(task_cfg), train_cfg, out, resume=resume)


__all__ = ["NAMED_OPTIONS", "given_network", "lateral_classes", "organ_task", "with_organ_labels", "apply_plan", "finetune_configs", "finetune"]
