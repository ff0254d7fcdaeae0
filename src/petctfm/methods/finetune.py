"""Lesion-segmentation fine-tuning of any method's run: :func:`finetune` (what ``petctfm finetune`` and
``petctfm.finetune`` call) finds the method that fine-tunes it in the registry and hands the run over.

Which method (:func:`finetuning_method`), first that applies:

1. ``resume``: the method whose checkpoint kind the run folder's saved ``config.yaml`` names;
2. ``init`` a run folder or checkpoint: the method that wrote it (its config's ``"method"``, read from the
   safetensors metadata alone); its :attr:`~petctfm.core.registry.Method.finetune` does the work (the
   early-fusion MAE's is the UNet fine-tuning of :mod:`petctfm.methods.segmentation`);
3. ``init`` None or ``"scratch"``: the method that builds ``backbone`` from scratch
   (:attr:`~petctfm.core.registry.Method.backbones`); without ``backbone``, the one ``preset`` names in the
   lesion-segmentation method's presets (:func:`preset_backbone`).

Beyond that default backbone nothing here names a method: a plugin's runs are fine-tuned by the plugin's own
``finetune``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petctfm.core.config import Overrides
from petctfm.core.errors import UsageError
from petctfm.core.registry import Method, backbone_owner, owner_of


def finetuning_method(out: str | Path, init: str | Path | None = None, backbone: str | None = None,
                      resume: bool = False) -> Method:
    """The registered method that fine-tunes this run (module docstring); one-line errors naming the argument
    (``init``, ``backbone``) or the file."""
    from petctfm.train.checkpoint import read_checkpoint_config
    from petctfm.train.config import saved_run_configs

    saved = saved_run_configs(out) if resume else None
    if saved is not None:
        method = owner_of(saved[0].get("method"), Path(out) / "config.yaml")
    elif init is not None and str(init) != "scratch":
        cfg, path = read_checkpoint_config(init)
        method = owner_of(cfg.get("method"), path)
    else:
        if not backbone:
            raise UsageError("backbone: required when init is None or 'scratch' (e.g. unet-resenc-tiny, "
                             "swinunetr-base)", arg="backbone")
        owner = backbone_owner(backbone)
        if owner is None:
            raise UsageError(f"backbone={backbone!r}: no registered method builds this backbone", arg="backbone")
        return owner
    if method.finetune is None:
        raise UsageError(f"init={init}: a {method.name} run cannot be fine-tuned for lesion segmentation", arg="init")
    return method


def finetune(dataset: str | Path | None, out: str | Path, init: str | Path | None = None,
             preset: str | None = None, fraction: float | None = None, *, kshot: int | None = None,
             backbone: str | None = None, max_steps: int | None = None, max_time: float | None = None,
             resume: bool = False, overrides: Overrides = None, **config: Any) -> dict[str, Any]:
    """Fine-tune a lesion segmenter on a harmonized ``dataset`` into the run folder ``out`` with the method
    that owns ``init`` (see the module docstring); the trainer's summary (``steps``, ``loss``, ``stopped``...;
    the best checkpoint by val Dice is ``out/best/``).

    ``init``: a pretraining run folder or checkpoint (its encoder is used), or None / ``"scratch"`` for random
    weights (then ``backbone`` is required, or taken from ``preset``). ``preset``: ``tiny`` | ``cpu`` | ``gpu`` (None: gpu when CUDA is
    available, else cpu). ``fraction`` (0.1 or 10 = 10 %) or ``kshot``: the stored label subset of
    ``splits.json``; neither: the whole train split. ``max_steps`` / ``max_time`` (seconds): stop with a
    checkpoint. ``resume``: continue the run in ``out``. ``overrides``: ``{"data.fg_prob": 0.5, "train.lr":
    5e-5}`` or ``["data.fg_prob=0.5"]``. ``config``: the method's named options (``patch=32``,
    ``freeze_encoder=True``...) and trainer settings (``lr``, ``seed``, ``progress``...).
    """
    if backbone is None and preset is not None and not resume and (init is None or str(init) == "scratch"):
        backbone = preset_backbone(preset)  # --init scratch --preset tiny: the preset names the network
    method = finetuning_method(out, init, backbone, resume)
    return method.finetune(dataset, out, init, preset, fraction, kshot=kshot, backbone=backbone,
                           max_steps=max_steps, max_time=max_time, resume=resume, overrides=overrides, **config)


def preset_backbone(preset: str) -> str:
    """The backbone fine-tuning preset ``preset`` names (the lesion-segmentation method's presets, which own
    it): what ``--init scratch --preset tiny`` builds when no ``--backbone`` is given."""
    from petctfm.core.registry import get_method

    return get_method("segmentation").default_config(preset)["task"]["model"]["backbone"]


__all__ = ["finetuning_method", "finetune", "preset_backbone"]
