"""Lesion segmentation fine-tuning of a pretrained encoder (``petctfm finetune``), as a TrainTask.

The method, top to bottom:

1. **Architecture**: the backbone of the pretrained run (its config ``model.backbone``, e.g. SwinUNETR-v2 or
   the residual UNet), rebuilt with ``out_channels = 2`` (background, lesion) and the same input channels
   (``joint`` [PET, CT] = 2, ``pet`` / ``ct`` = 1). Wrapped in :class:`LesionSegmenter` (``.backbone``), the
   same attribute the MAE uses, so encoder helpers work on both.
2. **Initialization** (``init``): ``"scratch"`` (random, needs a backbone name) or a petctfm checkpoint / run
   folder: ONLY the encoder is transferred (:func:`petctfm.models.backbones.load_encoder`); the decoder and the
   output head keep their fresh random weights. Mode and backbone must match the pretrained run.
3. **Training data**: EXACTLY the dataset's stored label subset (``splits.json["fractions"][pct]`` or
   ``["kshot"][K]``; default the whole training split). Patches come from :class:`LabeledPatchDataset`
   (a :class:`petctfm.data.loader.PatchDataset` that also returns the label): item ``i`` of rank ``r`` is a
   pure function of ``(seed, r, i)``; with probability ``fg_prob`` (0.33, nnU-Net) the patch is centred on a
   lesion voxel, otherwise uniform; MONAI dictionary transforms augment image and label jointly (flips,
   small affine with nearest-neighbour labels, intensity jitter on the image only).
4. **Loss**: MONAI ``DiceCELoss(softmax=True, to_onehot_y=True)`` on logits (B, 2, X, Y, Z) and labels
   (B, 1, X, Y, Z); Dice over the batch (``batch=True``) so a patch without lesion does not give a 0/0 Dice.
5. **Optimization**: the generic trainer (``petctfm.train.trainer.train``: DDP, bf16, resume). Optional
   ``freeze_encoder`` (encoder ``requires_grad = False``: the trainer's AdamW only sees the decoder).
   Layer-wise LR decay (``layer_decay`` < 1): :meth:`FinetuneTask.param_groups` hands the trainer the groups
   of :func:`layer_decay_groups` (deeper encoder stages keep more of the LR, decoder/head the full LR).
6. **Validation** (:meth:`FinetuneTask.on_checkpoint`, rank 0 every ``figure_every`` steps): sliding-window
   inference (:func:`petctfm.inference.sliding_window.predict_case`) on every case of the val split, per-case
   metrics from :func:`petctfm.evaluate.metrics.case_metrics` (autoPET convention: Dice undefined on cases
   without lesions, false-positive volume counted), mean Dice -> ``RUN/val.jsonl``; the best model by val
   Dice -> ``RUN/best/model.safetensors`` (config in the metadata; ``load_model`` rebuilds it).

Shapes: image (B, C, px, py, pz) float32 normalized; label (B, 1, px, py, pz) int64 in {0, 1};
logits (B, 2, px, py, pz).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from petctfm.data import format as fmt
from petctfm.data.loader import MODES, PatchConfig, PatchDataset, patch_loader, preprocessing_record
from petctfm.core.errors import InputError
from petctfm.io.atomic import json_safe
from petctfm.models.backbones import build_backbone, load_encoder, patch_divisor
from petctfm.train.checkpoint import read_weights, register_model_builder, resolve_weights, save_weights

METHOD = "finetune_segmentation"
N_CLASSES = 2  # background, lesion
VAL_FILE = "val.jsonl"
BEST_DIR = "best"

DEFAULT_CONFIG: dict[str, Any] = {
    "method": METHOD,
    "seed": 0,
    "dataset": None,  # harmonized dataset (training only; not needed to rebuild the model)
    "model": {"backbone": "swinunetr-base", "overrides": {}},
    "init": {"source": "scratch", "method": None, "step": None},  # source: "scratch" or a checkpoint path
    "subset": {"name": "train", "cases": []},  # filled from splits.json: the exact training cases
    "optim": {"freeze_encoder": False, "layer_decay": 1.0},
    "loss": {"lambda_dice": 1.0, "lambda_ce": 1.0},
    "val": {"split": "val", "overlap": 0.5, "sw_batch_size": 2},
    "data": PatchConfig().to_dict(),
    "preprocessing": None,  # channels, normalization statistics, harmonize spacing/ct_window (dataset.json)
}


# ------------------------------------------------------------------------------------------------ config


def in_channels(cfg: dict[str, Any]) -> int:
    return len(MODES[cfg["data"]["mode"]])


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a full config (after presets and overrides); returns it. Errors are one-line InputErrors."""
    data = PatchConfig.from_dict(cfg["data"])
    backbone = cfg["model"]["backbone"]
    div = patch_divisor(backbone)
    if any(p % div for p in data.patch_size):
        raise InputError(f"patch size {list(data.patch_size)} must be a multiple of {div} for backbone {backbone}")
    if backbone.startswith("swinunetr") and min(data.patch_size) < 64:
        raise InputError(f"patch size {list(data.patch_size)}: SwinUNETR backbones need sides >= 64")
    if not 0.0 <= data.fg_prob <= 1.0:
        raise InputError(f"data.fg_prob must be in [0, 1], got {data.fg_prob}")
    if not 0.0 < float(cfg["optim"]["layer_decay"]) <= 1.0:
        raise InputError(f"layer decay must be in (0, 1], got {cfg['optim']['layer_decay']}")
    if not 0.0 <= float(cfg["val"]["overlap"]) < 1.0:
        raise InputError(f"val overlap must be in [0, 1), got {cfg['val']['overlap']}")
    if float(cfg["loss"]["lambda_dice"]) < 0 or float(cfg["loss"]["lambda_ce"]) < 0:
        raise InputError("loss weights must be >= 0")
    cfg["data"] = data.to_dict()
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


# ------------------------------------------------------------------------------------------------ model


class LesionSegmenter(nn.Module):
    """``forward(x (B, C, X, Y, Z)) -> logits (B, 2, X, Y, Z)``; the network is ``self.backbone``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def build_model(cfg: dict[str, Any]) -> LesionSegmenter:
    """The (untrained) segmentation model a config describes; what ``load_model`` calls for a checkpoint."""
    backbone = build_backbone(cfg["model"]["backbone"], in_channels(cfg), N_CLASSES,
                              **cfg["model"].get("overrides", {}))
    return LesionSegmenter(backbone)


register_model_builder(METHOD, build_model)


def encoder_stages(model: nn.Module) -> list[list[nn.Module]]:
    """The encoder as a list of stages, finest (input) first, each a list of modules.

    DynUNet: input block, each down-sampling stage, bottleneck. SwinUNETR: (patch embedding, encoder1),
    then per Swin stage k (layers k, its v2 residual conv block, the skip encoder of that scale).
    """
    from monai.networks.nets import DynUNet, SwinUNETR

    m = model.backbone if isinstance(model, LesionSegmenter) else model
    if isinstance(m, DynUNet):
        return [[m.input_block], *[[d] for d in m.downsamples], [m.bottleneck]]
    if isinstance(m, SwinUNETR):
        v = m.swinViT
        stages = [[v.patch_embed, m.encoder1]]
        skips = [m.encoder2, m.encoder3, m.encoder4, m.encoder10]
        for k in range(1, 5):
            mods = [getattr(v, f"layers{k}")]
            if hasattr(v, f"layers{k}c"):
                mods.append(getattr(v, f"layers{k}c"))
            stages.append(mods + [skips[k - 1]])
        return stages
    raise TypeError(f"not a petctfm backbone: {type(m).__name__}")


def freeze_encoder(model: nn.Module) -> int:
    """Set ``requires_grad = False`` on every encoder parameter; returns how many tensors were frozen."""
    n = 0
    for stage in encoder_stages(model):
        for mod in stage:
            for p in mod.parameters():
                p.requires_grad_(False)
                n += 1
    return n


def layer_decay_groups(model: nn.Module, lr: float, decay: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """AdamW param groups with layer-wise LR decay.

    With S encoder stages (finest first, index s = 0 .. S-1), stage s gets ``lr * decay ** (S - s)``: the
    bottleneck ``lr * decay``, the input stage ``lr * decay ** S``; decoder and head get ``lr``. Trainable
    parameters only; weight decay only on >= 2-D tensors (as the trainer). Each group has ``lr_scale``.
    """
    stages = encoder_stages(model)
    scale: dict[int, float] = {}
    for s, mods in enumerate(stages):
        for mod in mods:
            for p in mod.parameters():
                scale[id(p)] = decay ** (len(stages) - s)
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((scale.get(id(p), 1.0), p.dim() >= 2), []).append(p)
    return [{"params": ps, "lr": lr * sc, "lr_scale": sc, "weight_decay": weight_decay if wd else 0.0}
            for (sc, wd), ps in sorted(groups.items(), key=lambda kv: kv[0])]


# ------------------------------------------------------------------------------------------------ data


def build_joint_augment(cfg: PatchConfig):
    """MONAI dictionary transforms on ``{"image": (C, X, Y, Z), "label": (1, X, Y, Z)}``: spatial ones on both
    (label resampled nearest-neighbour), intensity ones on the image only. Same parameters as the
    pretraining loader (:func:`petctfm.data.loader.build_augment`)."""
    from monai.transforms import Compose, RandAffined, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    keys = ["image", "label"]
    rot = np.deg2rad(cfg.rotate_deg)
    return Compose([
        RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=0),
        RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=1),
        RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=2),
        RandAffined(keys, prob=cfg.affine_prob, rotate_range=(rot, rot, rot), scale_range=cfg.scale_range,
                    mode=("bilinear", "nearest"), padding_mode=("border", "zeros")),
        RandScaleIntensityd("image", factors=cfg.intensity_scale, prob=cfg.intensity_prob, channel_wise=True),
        RandShiftIntensityd("image", offsets=cfg.intensity_shift, prob=cfg.intensity_prob, channel_wise=True),
    ])


class LabeledPatchDataset(PatchDataset):
    """:class:`PatchDataset` over a fixed case list that returns ``{"image", "label", "index"}``.

    Item ``i``: ``rng = default_rng([seed, rank, i])`` -> case (uniform over ``case_ids``) -> patch centred on
    a *lesion* voxel with probability ``fg_prob`` (hot non-lesion voxels are not foreground here), otherwise
    uniform -> image and label cropped identically (padded with background / 0) -> normalized -> joint MONAI
    augmentation seeded from ``rng`` -> channels by mode. image (C, p, p, p) float32, label (1, p, p, p) int64.
    """

    def __init__(self, root: str | Path, cfg: PatchConfig, case_ids: list[str], seed: int, rank: int = 0):
        super().__init__(root, cfg, seed=seed, rank=rank)
        self._augment = None  # the parent's image-only pipeline is replaced by the joint one
        self._joint = build_joint_augment(cfg) if cfg.augment else None
        if not case_ids:
            raise InputError(f"{root}: empty training subset")
        self.case_ids = list(case_ids)

    def foreground(self, case_id: str) -> np.ndarray:
        """(N, 3) lesion voxel coordinates (N <= 4096, case-seeded sub-sample; may be empty)."""
        if case_id not in self._fg:
            coords = np.argwhere(np.asarray(fmt.load_case(self.root, case_id)["label"]) > 0)
            if len(coords) > 4096:
                import zlib

                sub = np.random.default_rng(zlib.crc32(case_id.encode()))
                coords = coords[np.sort(sub.choice(len(coords), 4096, replace=False))]
            self._fg[case_id] = coords
        return self._fg[case_id]

    def read_pair(self, case_id: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Raw [SUV, HU] patch (2, p, p, p) float32 and label (p, p, p) uint8, same crop, padded centred."""
        d = fmt.case_dir(self.root, case_id)
        try:
            img = np.load(d / "image.npy", mmap_mode="r")
            lab = np.load(d / "label.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(f"{d}: cannot read image.npy / label.npy ({exc})") from None
        box = self.crop(case_id, img.shape[1:], rng)
        x = self.pad_centred(np.asarray(img[(slice(None), *box)], dtype=np.float32), self._pad)
        y = self.pad_centred(np.asarray(lab[box], dtype=np.uint8)[None], [0])[0]
        return x, y

    def case_of(self, i: int) -> str:
        """The case item ``i`` is drawn from (the first draw of its generator)."""
        return self.case_ids[int(self.rng(i).integers(len(self.case_ids)))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = self.rng(i)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]  # == self.case_of(i)
        raw, lab = self.read_pair(case_id, rng)
        x = torch.from_numpy(fmt.normalize(raw, self.info))
        y = torch.from_numpy(lab[None].astype(np.float32))
        if self._joint is not None:
            self._joint.set_random_state(seed=int(rng.integers(2**31)))
            out = self._joint({"image": x, "label": y})
            x = torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32)
            y = torch.as_tensor(np.asarray(out["label"]))
        x = x[list(MODES[self.cfg.mode])].contiguous()
        return {"image": x, "label": (y > 0.5).to(torch.int64), "index": torch.tensor(int(i))}


# ------------------------------------------------------------------------------------------------ task


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


class FinetuneTask:
    """Fine-tuning as a TrainTask. ``config`` fully describes the model, the init, the exact training cases,
    the loss, the data and the preprocessing; it is saved beside the run and in every checkpoint."""

    def __init__(self, config: dict[str, Any], dataset: str | Path | None = None):
        cfg = copy.deepcopy(config)
        if dataset is not None:
            cfg["dataset"] = str(dataset)
        validate_config(cfg)
        if cfg.get("dataset"):
            info = fmt.load_dataset_info(cfg["dataset"], require_normalization=True)
            cfg["preprocessing"] = {
                **preprocessing_record(info, cfg["data"]["mode"]),
                # the harmonization the dataset was built with: `petctfm predict` resamples new cases alike
                "harmonize": {"spacing": info.get("spacing"), "ct_window": info.get("ct_window")},
            }
            if not cfg["subset"]["cases"]:
                cfg["subset"]["name"], cfg["subset"]["cases"] = resolve_subset(cfg["dataset"])
        self.config = cfg
        self.data_cfg = PatchConfig.from_dict(cfg["data"])
        self._loss = None

    # -- TrainTask -----------------------------------------------------------------------------------

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict[str, Any]] | None:
        """Layer-wise LR decay groups (:func:`layer_decay_groups`) when ``optim.layer_decay`` < 1, else None
        (the trainer's default two groups)."""
        decay = float(self.config["optim"]["layer_decay"])
        if decay == 1.0:
            return None
        return layer_decay_groups(model, float(cfg.lr), decay, float(cfg.weight_decay))

    def build_model(self) -> nn.Module:
        """Fresh model; the pretrained encoder loaded when ``init.source`` is a checkpoint; frozen if asked."""
        model = build_model(self.config)
        src = self.config["init"]["source"]
        if src != "scratch":
            pcfg, state, path = pretrained_config(src)
            check_compatible(self.config, pcfg, path)
            load_encoder(model, state)
        if self.config["optim"]["freeze_encoder"]:
            freeze_encoder(model)
        return model

    def dataset(self, rank: int = 0) -> LabeledPatchDataset:
        if not self.config.get("dataset"):
            raise InputError("no dataset given (config 'dataset' or --data)")
        return LabeledPatchDataset(self.config["dataset"], self.data_cfg, self.config["subset"]["cases"],
                                   seed=int(self.config["seed"]), rank=rank)

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``{"image": (B, C, p, p, p), "label": (B, 1, p, p, p) int64, "index": (B,)}``."""
        return iter(patch_loader(self.dataset(rank), start_sample=start_sample))

    def loss_fn(self):
        if self._loss is None:
            from monai.losses import DiceCELoss

            lc = self.config["loss"]
            self._loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True,
                                    lambda_dice=float(lc["lambda_dice"]), lambda_ce=float(lc["lambda_ce"]))
        return self._loss

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["image"])
        loss = self.loss_fn()(logits.float(), batch["label"])
        return loss, {"fg_fraction": batch["label"].float().mean().detach()}

    @torch.no_grad()
    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        """Validate on the val split, append to ``val.jsonl``, keep the best checkpoint by mean val Dice."""
        if not self.config.get("dataset"):
            return
        result = validate(model, self.config, self.config["dataset"], split=self.config["val"]["split"])
        if result is None:
            return
        run_dir = Path(run_dir)
        best_file = run_dir / BEST_DIR / "best.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        dice = result["dice"]
        improved = math.isfinite(dice) and (best is None or best["step"] >= step or dice > best["dice"])
        _append_jsonl(run_dir / VAL_FILE, json_safe({"step": step, **result, "best": improved}))
        if improved:
            from petctfm.io.atomic import atomic_write_json

            save_weights(model, run_dir / BEST_DIR / "model.safetensors", self.config, step=step)
            atomic_write_json(best_file, {"step": step, "dice": dice, "metric": "mean val Dice"})


def check_compatible(cfg: dict[str, Any], pcfg: dict[str, Any], where: Path) -> None:
    """The pretrained run's backbone and input mode must be this run's."""
    if pcfg["model"]["backbone"] != cfg["model"]["backbone"]:
        raise InputError(f"{where}: pretrained backbone {pcfg['model']['backbone']!r} != fine-tuning backbone "
                         f"{cfg['model']['backbone']!r}")
    if pcfg["data"]["mode"] != cfg["data"]["mode"]:
        raise InputError(f"{where}: pretrained with mode {pcfg['data']['mode']!r} "
                         f"({len(MODES[pcfg['data']['mode']])} input channels), fine-tuning asks for mode "
                         f"{cfg['data']['mode']!r}")


def validate(model: nn.Module, cfg: dict[str, Any], dataset: str | Path, split: str = "val") -> dict[str, Any] | None:
    """Mean per-case metrics of sliding-window predictions on ``split``; None if the split is empty.

    Returns ``{"dice": mean Dice over cases with lesions (NaN if none), "n_cases", "n_dice",
    "fp_volume_ml": mean, "fn_volume_ml": mean, "cases": {case_id: dice}}``.
    """
    from petctfm.evaluate.metrics import case_metrics
    from petctfm.inference.sliding_window import normalized_input, predict_case

    ids = (fmt.load_splits(dataset).get(split) or [])
    if not ids:
        return None
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = {}
    try:
        for cid in ids:
            case = fmt.load_case(dataset, cid, mmap=True)
            x, bg = normalized_input(np.asarray(case["image"]), cfg)
            _, label = predict_case(model, x, cfg["data"]["patch_size"], float(cfg["val"]["overlap"]), device,
                                    bg=bg, sw_batch_size=int(cfg["val"]["sw_batch_size"]))
            rows[cid] = case_metrics(label, np.asarray(case["label"]), case["meta"]["spacing"])
    finally:
        model.train(was_training)
    dices = [r["dice"] for r in rows.values() if math.isfinite(r["dice"])]
    return {"dice": float(np.mean(dices)) if dices else float("nan"), "n_cases": len(rows), "n_dice": len(dices),
            "fp_volume_ml": float(np.mean([r["fp_volume_ml"] for r in rows.values()])),
            "fn_volume_ml": float(np.mean([r["fn_volume_ml"] for r in rows.values()])),
            "cases": {k: r["dice"] for k, r in rows.items()}}


__all__ = [
    "METHOD", "N_CLASSES", "DEFAULT_CONFIG", "VAL_FILE", "BEST_DIR", "validate_config", "resolve_subset",
    "pretrained_config", "LesionSegmenter", "build_model", "encoder_stages", "freeze_encoder",
    "layer_decay_groups", "build_joint_augment", "LabeledPatchDataset", "FinetuneTask", "check_compatible",
    "validate",
]
