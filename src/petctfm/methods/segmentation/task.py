"""Lesion segmentation fine-tuning of a pretrained encoder (``petctfm finetune``), as a TrainTask.

The method, top to bottom (the network is in ``model.py``, validation in ``validation.py``, the Python API in
``api.py``, presets in ``presets.py``, all in this folder):

1. **Config** (:data:`DEFAULT_CONFIG`, :func:`validate_config`): model, init, the exact training cases, optim,
   loss, validation, patch stream and preprocessing; saved beside the run and in every checkpoint.
2. **Initialization** (``init``): ``"scratch"`` (random, needs a backbone name) or a petctfm checkpoint / run
   folder (:func:`pretrained_config`): ONLY the encoder is transferred
   (:func:`petctfm.models.encoders.load_encoder`); the decoder and the output head keep their fresh random
   weights. Mode and backbone must match the pretrained run (:func:`check_compatible`).
3. **Training data**: EXACTLY the dataset's stored label subset (:func:`resolve_subset`:
   ``splits.json["fractions"][pct]`` or ``["kshot"][K]``; default the whole training split). Patches come from
   :class:`petctfm.data.loader.LabeledPatchDataset`: item ``i`` of rank ``r`` is a pure function of
   ``(seed, r, i)``; with probability ``fg_prob`` (0.33, nnU-Net) the patch is centred on a lesion voxel,
   otherwise uniform; image and label are augmented jointly (flips, small affine with nearest-neighbour
   labels, intensity jitter on the image only).
4. **Loss**: MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)`` on logits (B, 2, X, Y, Z) and labels
   (B, 1, X, Y, Z); Dice over the batch (``batch=True``) so a patch without lesion does not give a 0/0 Dice.
   A deep-supervised network (``model.overrides.deep_supervision: true``, nnU-Net backbones) returns a list of
   logits in training (full resolution, 1/2, 1/4, ...): MONAI's ``DeepSupervisionLoss`` sums the DiceCE of
   each with nnU-Net's weights (:func:`deep_supervision_weights`) against the label resized (nearest-exact).
5. **Optimization**: the generic trainer (``petctfm.train.trainer.train``: DDP, bf16, resume). Optional
   ``freeze_encoder`` (encoder ``requires_grad = False``: the trainer's AdamW only sees the decoder).
   Layer-wise LR decay (``layer_decay`` < 1): :meth:`FinetuneTask.param_groups` hands the trainer the groups
   of :func:`petctfm.methods.segmentation.model.layer_decay_groups`.
6. **Validation** (:meth:`FinetuneTask.on_checkpoint`, rank 0 every ``figure_every`` steps):
   :func:`petctfm.methods.segmentation.validation.validate` on the val split, mean Dice -> ``RUN/val.jsonl``;
   the best model by val Dice -> ``RUN/best/model.safetensors`` (config in the metadata; ``load_model``
   rebuilds it).

7. **Organs** (``task.name: organs``, ``petctfm finetune --task organs``; docs/organs.md): the same, with
   ``organs.npy`` as the label (its values ``task.classes`` -> classes 1..K), K + 1 output channels, multi-class
   DiceCE (the same MONAI loss: one-hot of K + 1 classes, softmax), class-balanced foreground patches, and
   validation by mean per-organ Dice (:func:`~petctfm.methods.segmentation.validation.validate_organs`).

Shapes: image (B, C, px, py, pz) float32 normalized; label (B, 1, px, py, pz) int64 in {0, 1} (organs:
{0..K}); logits (B, 2, px, py, pz) (organs: (B, K + 1, px, py, pz)).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from petctfm.core.config import build_config
from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.data.loader import MODES, LabeledPatchDataset, bind_dataset, patch_loader
from petctfm.inference.model import BEST_DIR  # RUN/best/: the best checkpoint by val Dice
from petctfm.io.atomic import json_safe
from petctfm.methods.segmentation.config import CONFIG, FinetuneConfig
from petctfm.methods.segmentation.model import build_model, freeze_encoder, layer_decay_groups
from petctfm.methods.segmentation.validation import validate
from petctfm.models.encoders import load_encoder
from petctfm.train.checkpoint import keep_best, read_weights, resolve_weights

VAL_FILE = "val.jsonl"
ORGANS_FILE = "organs.npy"  # task organs: the label map of each case (docs/data-format.md)

# ------------------------------------------------------------------------------------------------ config

# The typed config (sections, allowed values, cross-field checks) is in config.py.
DEFAULT_CONFIG: dict[str, Any] = CONFIG().to_dict()


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a full config dict against :data:`CONFIG`; returns it, normalized in place. Errors are one-line
    ConfigErrors (UsageError, exit 2)."""
    cfg.update(build_config(CONFIG, cfg).to_dict())
    return cfg


def resolve_subset(root: str | Path, fraction: float | None = None, kshot: int | None = None) -> tuple[str, list[str]]:
    """(name, case ids) of the stored training subset.

    ``fraction`` may be a ratio (0.1) or a percentage (10); it must be one of ``splits.json["fractions"]``.
    ``kshot`` must be a key of ``splits.json["kshot"]``. Neither: the whole ``train`` split.
    """
    where = Path(root) / fmt.SPLITS_JSON
    splits = fmt.load_splits(root)
    if fraction is not None and kshot is not None:
        raise InputError("give --fraction or --kshot, not both")
    if fraction is not None:
        pct = float(fraction) * 100 if 0 < float(fraction) <= 1 else float(fraction)
        key = f"{pct:g}"
        stored = splits.get("fractions") or {}
        if key not in stored or not stored[key]:
            raise InputError(f"{where}: no stored {key}% label fraction (stored: "
                             f"{', '.join(f'{k}%' for k in stored if stored[k]) or 'none'})")
        return f"fraction{key}", list(stored[key])
    if kshot is not None:
        stored = splits.get("kshot") or {}
        if str(kshot) not in stored or not stored[str(kshot)]:
            raise InputError(f"{where}: no stored {kshot}-shot subset (stored: "
                             f"{', '.join(k for k in stored if stored[k]) or 'none'})")
        return f"kshot{kshot}", list(stored[str(kshot)])
    if not splits.get("train"):
        raise InputError(f"{where}: no training cases in split 'train'")
    return "train", list(splits["train"])


def pretrained_config(source: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(config, state dict, weights file) of a petctfm checkpoint or run folder; one-line errors."""
    path = resolve_weights(source)
    state, cfg, _ = read_weights(path)  # InputError on a non-petctfm / non-safetensors file
    if not isinstance(cfg.get("model"), dict) or "backbone" not in cfg["model"] or "mode" not in cfg.get("data", {}):
        raise InputError(f"{path}: checkpoint config has no model.backbone / data.mode (not a backbone checkpoint)")
    return cfg, state, path


def check_compatible(cfg: dict[str, Any], pcfg: dict[str, Any], where: Path) -> None:
    """The pretrained run's backbone, input mode and PET intensity transform must be this run's."""
    if pcfg["model"]["backbone"] != cfg["model"]["backbone"]:
        raise InputError(f"{where}: pretrained backbone {pcfg['model']['backbone']!r} != fine-tuning backbone "
                         f"{cfg['model']['backbone']!r}")
    if pcfg["data"]["mode"] != cfg["data"]["mode"]:
        raise InputError(f"{where}: pretrained with mode {pcfg['data']['mode']!r} "
                         f"({len(MODES[pcfg['data']['mode']])} input channels), fine-tuning asks for mode "
                         f"{cfg['data']['mode']!r}")
    want, have = cfg["data"].get("pet_transform", "clip"), pcfg["data"].get("pet_transform", "clip")
    if want != have:
        raise InputError(f"{where}: pretrained with data.pet_transform {have!r}, fine-tuning asks for {want!r} "
                         "(the encoder would see another PET intensity scale)")


# ------------------------------------------------------------------------------------------------ task


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net v2's deep-supervision weights for ``n`` outputs (full resolution first): ``1 / 2^i``, the
    coarsest output weighted 0 (when ``n`` > 1), normalized to sum 1."""
    w = [0.5 ** i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Rewrite ``path`` atomically with the old lines of earlier steps plus ``record`` (small file)."""
    from petctfm.io.atomic import atomic_write_text

    lines = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["step"]) < int(record["step"]):
                    lines.append(line)
            except (ValueError, KeyError, TypeError):
                continue
    lines.append(json.dumps(record))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


class AuxOrganLoss(nn.Module):
    """Dice + cross-entropy of a lesion network with ``k`` auxiliary organ classes (``task.aux_classes``):
    logits (B, k + 2, X, Y, Z), label (B, 1, X, Y, Z) in {0 background, 1 lesion, 2.. organs}.

    MONAI ``DiceLoss`` (softmax, one-hot, batch Dice, background included, as the 2-class loss) with class
    weights proportional to background 1, lesion 2, each organ ``1 / k``, scaled by ``(k + 2) / 4`` so that
    MONAI's mean over classes gives ``(dice_bg + 2 dice_lesion + mean organ dice) / 4``: the lesion term is
    ``dice_lesion / 2``, exactly as in the 2-class loss, and the organs share the background's half, so adding
    organs neither dilutes the lesion's Dice nor rescales it against the cross-entropy. The cross-entropy (torch,
    unweighted) is over all classes. ``lambda_dice * dice + lambda_ce * ce``."""

    def __init__(self, k: int, lambda_dice: float = 1.0, lambda_ce: float = 1.0):
        super().__init__()
        from monai.losses import DiceLoss

        weight = torch.tensor([1.0, 2.0] + [1.0 / k] * k) * (k + 2) / 4.0
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True, weight=weight)
        self.ce = nn.CrossEntropyLoss()
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        ce = self.ce(logits, label[:, 0].long())
        return self.lambda_dice * self.dice(logits, label) + self.lambda_ce * ce


class FinetuneTask:
    """Fine-tuning as a TrainTask. ``config`` (a dict or a :class:`~.config.FinetuneConfig`) fully describes
    the model, the init, the exact training cases, the loss, the data and the preprocessing. ``self.cfg`` is the
    typed config the task reads; ``self.config`` its dict form, saved beside the run and in every checkpoint."""

    def __init__(self, config: dict[str, Any] | FinetuneConfig, dataset: str | Path | None = None):
        if isinstance(config, FinetuneConfig):
            config = config.to_dict()
        cfg, info = bind_dataset(config, dataset, validate_config)
        # cfg["preprocessing"]["harmonize"]: the dataset's spacing / CT window; `petctfm predict` resamples alike
        if info is not None:
            if not cfg["subset"]["cases"]:
                cfg["subset"]["name"], cfg["subset"]["cases"] = resolve_subset(cfg["dataset"])
        self.config = cfg
        self.cfg = CONFIG.from_dict(cfg)
        self.data_cfg = self.cfg.data
        self._loss = None

    # -- TrainTask -----------------------------------------------------------------------------------

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict[str, Any]] | None:
        """Layer-wise LR decay groups (:func:`layer_decay_groups`) when ``optim.layer_decay`` < 1, else None
        (the trainer's default two groups)."""
        decay = self.cfg.optim.layer_decay
        if decay == 1.0:
            return None
        return layer_decay_groups(model, float(cfg.lr), decay, float(cfg.weight_decay))

    def build_model(self) -> nn.Module:
        """Fresh model; the pretrained encoder loaded when ``init.source`` is a checkpoint; frozen if asked."""
        model = build_model(self.config)
        src = self.cfg.init.source
        if src != "scratch":
            pcfg, state, path = pretrained_config(src)
            check_compatible(self.config, pcfg, path)
            load_encoder(model, state)
        if self.cfg.optim.freeze_encoder:
            freeze_encoder(model)
        return model

    @property
    def organs(self) -> bool:
        """A multi-organ run (``task.name == "organs"``); a subclass whose config has no ``task`` section
        (FratMAE's) segments lesions."""
        task = getattr(self.cfg, "task", None)
        return task is not None and task.name == "organs"

    def dataset(self, rank: int = 0) -> LabeledPatchDataset:
        if not self.cfg.dataset:
            raise InputError("no dataset given (config 'dataset' or --data)")
        if self.organs:  # organs.npy, its values in task.classes order -> classes 1..K
            return LabeledPatchDataset(self.cfg.dataset, self.data_cfg, self.cfg.subset.cases, seed=self.cfg.seed,
                                       rank=rank, label_file=ORGANS_FILE,
                                       label_values=list(self.cfg.task.classes.values()))
        return LabeledPatchDataset(self.cfg.dataset, self.data_cfg, self.cfg.subset.cases, seed=self.cfg.seed,
                                   rank=rank, aux_values=list(self.aux_classes.values()) or None)

    @property
    def aux_classes(self) -> dict[str, int]:
        """Auxiliary organ classes of a lesion run (``task.aux_classes``; empty: none)."""
        task = getattr(self.cfg, "task", None)
        return dict(task.aux_classes) if task is not None and not self.organs else {}

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``{"image": (B, C, p, p, p), "label": (B, 1, p, p, p) int64, "index": (B,)}``."""
        return iter(patch_loader(self.dataset(rank), start_sample=start_sample))

    def loss_fn(self):
        """MONAI ``DiceCELoss`` on the logits; for a deep-supervised network (a list of outputs) wrapped in MONAI's
        ``DeepSupervisionLoss`` with nnU-Net's weights (:func:`deep_supervision_weights`)."""
        if self._loss is None:
            from monai.losses import DiceCELoss

            lc = self.cfg.loss
            if self.aux_classes:
                self._loss = AuxOrganLoss(len(self.aux_classes), lc.lambda_dice, lc.lambda_ce)
            else:
                self._loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, lambda_dice=lc.lambda_dice,
                                        lambda_ce=lc.lambda_ce)
        return self._loss

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["image"])
        label = batch["label"]
        if isinstance(out, (list, tuple)):  # deep supervision: full resolution first, then 1/2, 1/4, ...
            from monai.losses import DeepSupervisionLoss

            ds = DeepSupervisionLoss(self.loss_fn(), weights=deep_supervision_weights(len(out)))
            loss = ds([o.float() for o in out], label.float())  # MONAI resizes the label (nearest-exact)
        else:
            loss = self.loss_fn()(out.float(), label)
        fg = (label == 1) if self.aux_classes else (label > 0)  # lesion voxels; organ runs: any class
        return loss, {"fg_fraction": fg.float().mean().detach()}

    @torch.no_grad()
    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        """Validate on the val split, append to ``val.jsonl``, keep the best checkpoint by mean val Dice."""
        if not self.cfg.dataset:
            return
        if self.organs:
            from petctfm.methods.segmentation.validation import validate_organs

            result = validate_organs(model, self.config, self.cfg.dataset, split=self.cfg.val.split)
        else:
            result = validate(model, self.config, self.cfg.dataset, split=self.cfg.val.split)
        if result is None:
            return
        config, extra = self.config, None
        if "min_lesion_ml" in result:  # post-processing chosen on this validation: the checkpoint carries it
            extra = {"min_lesion_ml": result["min_lesion_ml"]}
            config = {**config, "postprocess": {**(config.get("postprocess") or {}), **extra}}
        improved = keep_best(model, config, run_dir, step, result["dice"], "mean val Dice", extra)
        _append_jsonl(Path(run_dir) / VAL_FILE, json_safe({"step": step, **result, "best": improved}))


__all__ = [
    "DEFAULT_CONFIG", "VAL_FILE", "ORGANS_FILE", "AuxOrganLoss", "deep_supervision_weights", "BEST_DIR", "validate_config", "resolve_subset", "pretrained_config",
    "check_compatible", "FinetuneTask",
]
