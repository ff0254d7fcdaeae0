"""petctfm: PET/CT foundation models for oncologic imaging.

The public Python API (docs/python-api.md); every command of the ``petctfm`` CLI is a thin shell over it:

- :func:`synthesize` — synthetic multi-center whole-body PET/CT phantoms (autoPET, nnU-Net, DICOM layouts).
- :func:`harmonize_folder` — any mix of autoPET / nnU-Net / NIfTI pairs / DICOM -> one training-ready dataset.
- :func:`pretrain` — early-fusion masked-autoencoder pretraining on a harmonized dataset.
- :func:`finetune` — lesion segmentation from a pretrained encoder (or from scratch) on a label fraction.
- :class:`Predictor` — ``Predictor.from_run(run).predict(pet, ct) -> (mask, lesion_table, summary)``, in memory.
- :func:`evaluate_folder` — autoPET metrics per case with bootstrap confidence intervals.
- :func:`render_case` — the picture a clinician reads (PET MIP, fused slices, contours).
- :func:`pretrain_fratmae` — FratMAE (twin ViTs, cross-modal masking, ContextAlign) pretraining.
- :func:`prompt_train` / :class:`PromptSession` — promptable segmentation: train, then click, box, undo.
- :func:`register_method` / :class:`Method` / :class:`ModelKind` / :class:`Option` — plug a new method in
  (docs/architecture.md, "Adding a method"; a package can use the ``petctfm.methods`` entry-point group instead).

Names are imported on first use, so ``import petctfm`` loads neither torch nor MONAI. The package layers are
drawn in docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from petctfm.core.version import __version__

# public name -> "module:attribute", imported lazily
_API: dict[str, str] = {
    "synthesize": "petctfm.synth.writers:synthesize",
    "harmonize_folder": "petctfm.harmonize.api:harmonize_folder",
    "pretrain": "petctfm.methods.early_fusion_mae.api:pretrain",
    "finetune": "petctfm.methods.finetune:finetune",
    "Predictor": "petctfm.predict.predictor:Predictor",
    "evaluate_folder": "petctfm.evaluate.report:evaluate_folder",
    "render_case": "petctfm.viz:render_case",
    "pretrain_fratmae": "petctfm.methods.fratmae.api:pretrain_fratmae",
    "prompt_train": "petctfm.methods.promptable.api:prompt_train",
    "PromptSession": "petctfm.methods.promptable.session:PromptSession",
    "register_method": "petctfm.core.registry:register_method",
    "Method": "petctfm.core.registry:Method",
    "ModelKind": "petctfm.core.registry:ModelKind",
    "Option": "petctfm.core.registry:Option",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'petctfm' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # cache: the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
