"""Early-fusion masked autoencoder for PET/CT (Liu et al. 2026), as a :class:`petctfm.train.task.TrainTask`.

The method, top to bottom:

1. **Input** ``x``: (B, C, X, Y, Z) patches, C = 2 channels [PET, CT] (``joint``, early fusion: both
   modalities enter the first convolution / patch embedding together) or C = 1 (``pet`` / ``ct``, the
   "separated-modality" baseline). Each channel is normalized with the dataset statistics
   (:func:`petctfm.data.format.normalize`), so 0 is the training mean of that modality.
2. **Mask** ``m``: random 3D blocks. The patch is tiled by ``block``^3 cubes; exactly
   ``round(ratio * n_blocks)`` cubes are masked, chosen uniformly (SimMIM-style). The same mask covers all
   channels: a masked region is missing in PET *and* CT, so the network cannot copy one modality into the
   other at the same place; it must infer metabolism and anatomy from context. Drawn in the data loader
   from the sample's own generator, so masks are a pure function of (seed, rank, sample index).
3. **Imputation**: ``x_in = x * (1 - m)``: masked voxels are exactly 0, the training mean of each
   modality (zero-mean imputation: the masked input stays on the data's intensity scale, no non-physical
   value is introduced). Ablation ``mask_token="learnable"``: ``x_in = where(m, t, x)`` with a learnable
   per-channel value ``t`` (C,), the MAE/SimMIM mask token transposed to voxel space.
4. **Network**: a hierarchical UNet-shaped backbone (:mod:`petctfm.models.backbones`) with
   ``out_channels = in_channels`` predicts every voxel's normalized intensity: ``p = f(x_in)``.
5. **Loss** (weighted global reconstruction, over the whole volume): with the per-element error
   ``e = (p - x)^2`` (``loss="l2"``) or ``|p - x|`` (``loss="l1"``), summed over batch, channels, voxels::

       L = w_masked * sum(e * m) / max(sum(m), 1) + w_visible * sum(e * (1 - m)) / max(sum(1 - m), 1)

   i.e. a weighted sum of the mean error over masked voxels and the mean error over visible voxels
   (``m`` broadcast over channels; counts are voxel x channel elements). Defaults ``w_masked = 1``,
   ``w_visible = 0.1`` (see ``docs/pretrain.md`` for why). ``w_visible = 0`` is the classic MAE loss.

Shapes: ``x`` (B, C, X, Y, Z) float; mask grid (B, gx, gy, gz) bool with ``g = ceil(patch / block)``;
voxel mask (B, 1, X, Y, Z) bool; prediction (B, C, X, Y, Z) float.

Also here: :func:`border_discontinuity` (the seed's physics claim: intensity jumps at mask borders in the
reconstruction) and the reconstruction figure written at checkpoints.

The whole method is this one file, read top to bottom (as facebookresearch/mae's ``models_mae.py``): config
and its checks, masking, model, loss, the physics metric, the figure, then the :class:`EarlyFusionMAETask`
that the generic trainer runs. Its presets are in ``presets.py`` next to it; the backbones and their
encoders are shared (:mod:`petctfm.models`), and so is the patch stream (:mod:`petctfm.data.loader`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from petctfm.data import format as fmt
from petctfm.core.config import build_config
from petctfm.core.device import unwrap_model
from petctfm.core.errors import InputError
from petctfm.data.loader import MODES, PatchDataset, bind_dataset, patch_loader
from petctfm.methods.early_fusion_mae.config import CONFIG, METHOD, EarlyFusionMAEConfig
from petctfm.models.backbones import build_backbone

# ------------------------------------------------------------------------------------------------ config
# The typed config (sections, allowed values, cross-field checks) is in config.py; its dict form is the
# config saved with a run and read by the model builder.

DEFAULT_CONFIG: dict[str, Any] = CONFIG().to_dict()


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a full config dict (after presets and overrides) against :data:`CONFIG`; returns it, normalized
    in place (patch size as a list of 3). Errors are one-line ConfigErrors (UsageError, exit 2)."""
    cfg.update(build_config(CONFIG, cfg).to_dict())
    return cfg


def in_channels(cfg: dict[str, Any]) -> int:
    return len(MODES[cfg["data"]["mode"]])


# ------------------------------------------------------------------------------------------------ masking


def block_mask_grid(rng: np.random.Generator, grid: tuple[int, int, int], ratio: float) -> np.ndarray:
    """Bool (gx, gy, gz): exactly ``round(ratio * gx*gy*gz)`` blocks True, chosen uniformly."""
    n = int(np.prod(grid))
    k = int(round(ratio * n))
    flat = np.zeros(n, dtype=bool)
    flat[rng.permutation(n)[:k]] = True
    return flat.reshape(grid)


def mask_grid_shape(patch_size, block: int) -> tuple[int, int, int]:
    return tuple(math.ceil(p / block) for p in patch_size)  # type: ignore[return-value]


def voxel_mask(grid: torch.Tensor, block: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """(B, gx, gy, gz) bool -> (B, 1, X, Y, Z) bool: each grid cell becomes a ``block``^3 cube (cropped)."""
    m = grid[:, None]
    for axis in (2, 3, 4):
        m = m.repeat_interleave(block, dim=axis)
    return m[:, :, : spatial[0], : spatial[1], : spatial[2]]


def impute(x: torch.Tensor, mask: torch.Tensor, token: torch.Tensor | None = None) -> torch.Tensor:
    """Network input: masked voxels (``mask`` (B,1,X,Y,Z)) set to 0, or to ``token`` (C,) if given."""
    if token is None:
        return x.masked_fill(mask, 0.0)
    return torch.where(mask, token.to(x.dtype).view(1, -1, 1, 1, 1), x)


# ------------------------------------------------------------------------------------------------ model


class EarlyFusionMAE(nn.Module):
    """Backbone + masking. ``forward(x, mask_grid) -> prediction`` (B, C, X, Y, Z).

    ``mask_token`` (C,) exists only with ``token="learnable"`` (initialized N(0, 0.02^2) as in MAE).
    """

    def __init__(self, backbone: nn.Module, channels: int, block: int, token: str = "zero"):
        super().__init__()
        self.backbone = backbone
        self.block = int(block)
        self.mask_token = nn.Parameter(torch.randn(channels) * 0.02) if token == "learnable" else None

    def masked_input(self, x: torch.Tensor, mask_grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input (B, C, X, Y, Z), voxel mask (B, 1, X, Y, Z) bool)."""
        mask = voxel_mask(mask_grid, self.block, tuple(x.shape[2:]))
        return impute(x, mask, self.mask_token), mask

    def forward(self, x: torch.Tensor, mask_grid: torch.Tensor) -> torch.Tensor:
        x_in, _ = self.masked_input(x, mask_grid)
        return self.backbone(x_in)


def build_model(cfg: dict[str, Any]) -> EarlyFusionMAE:
    """The MAE model described by a config (what ``load_model`` calls to rebuild a checkpoint)."""
    c = in_channels(cfg)
    backbone = build_backbone(cfg["model"]["backbone"], c, c, **cfg["model"].get("overrides", {}))
    return EarlyFusionMAE(backbone, c, cfg["mask"]["block"], cfg["mask"]["token"])


# ------------------------------------------------------------------------------------------------ loss


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, w_masked: float = 1.0,
                        w_visible: float = 0.1, kind: str = "l2",
                        channels: Sequence[str] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = w_masked * mean_masked(e) + w_visible * mean_visible(e)`` (module docstring), in fp32.

    pred, target: (B, C, X, Y, Z); mask: (B, 1, X, Y, Z) bool. Returns (loss, logs with both means). With
    ``channels`` (C names, e.g. ``["pet", "ct"]``) and C > 1 the logs also hold each channel's masked mean
    ``loss_masked_<name>`` (not part of the loss: it shows which modality a joint model reconstructs well).
    """
    diff = pred.float() - target.float()
    err = diff.square() if kind == "l2" else diff.abs()
    m = mask.to(err.dtype).expand_as(err)
    n_m = m.sum()
    n_v = m.numel() - n_m
    err_m = (err * m).sum() / n_m.clamp_min(1)
    err_v = (err * (1 - m)).sum() / n_v.clamp_min(1)
    loss = w_masked * err_m + w_visible * err_v
    logs = {"loss_masked": float(err_m.detach()), "loss_visible": float(err_v.detach())}
    if channels is not None and err.shape[1] > 1:
        per_channel = (err * m).detach().sum(dim=(0, 2, 3, 4)) / m[:, 0].sum().clamp_min(1)
        logs.update({f"loss_masked_{name}": float(v) for name, v in zip(channels, per_channel.tolist())})
    return loss, logs


# ------------------------------------------------------------------------------------------------ physics


def border_discontinuity(recon: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |finite difference| of the reconstruction across mask borders / within regions (a ratio).

    recon: (B, C, X, Y, Z); mask: (B, 1, X, Y, Z) bool. For each axis, neighbour pairs (i, i+1) are
    "border" pairs when exactly one of the two voxels is masked, "interior" otherwise. A reconstruction
    that is seamless at the mask borders gives about the same ratio as the ground truth (~1 for random
    block positions); an intensity jump at block borders (the learnable-token failure the seed paper
    describes) gives a ratio > 1.
    """
    recon = recon.float()
    num_b = den_b = num_i = den_i = 0.0
    for axis in (2, 3, 4):
        n = recon.shape[axis]
        d = (recon.narrow(axis, 1, n - 1) - recon.narrow(axis, 0, n - 1)).abs()
        b = (mask.narrow(axis, 1, n - 1) != mask.narrow(axis, 0, n - 1)).to(d.dtype).expand_as(d)
        num_b += float((d * b).sum())
        den_b += float(b.sum())
        num_i += float((d * (1 - b)).sum())
        den_i += float((1 - b).sum())
    if den_b == 0 or den_i == 0 or num_i == 0:
        return float("nan")
    return (num_b / den_b) / (num_i / den_i)


# ------------------------------------------------------------------------------------------------ figure


def save_figure(x: torch.Tensor, x_in: torch.Tensor, pred: torch.Tensor, channels: list[str], path: Path,
                title: str = "") -> Path:
    """PNG: one row per channel (PET, CT), columns input / masked input / reconstruction.

    x, x_in, pred: (C, X, Y, Z) of one sample; the coronal slice (middle y) is shown with z (superior) up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petctfm.io.atomic import atomic_path

    y = x.shape[2] // 2
    cols = [("input", x), ("masked input", x_in), ("reconstruction", pred)]
    fig, axes = plt.subplots(len(channels), 3, figsize=(9, 3 * len(channels)), squeeze=False)
    for r, name in enumerate(channels):
        ref = x[r].float().cpu().numpy()  # display window from the whole input volume of this channel
        lo, hi = np.percentile(ref, [0.5, 99.5])
        hi = hi if hi > lo else lo + 1
        for c, (label, vol) in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(vol[r, :, y, :].float().cpu().numpy().T, origin="lower", cmap="gray_r" if name == "PET" else "gray",
                      vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {label}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ task


class EarlyFusionMAETask:
    """The early-fusion MAE as a TrainTask. ``config`` (a dict or an :class:`EarlyFusionMAEConfig`) fully
    describes model, masking, loss, data and preprocessing. ``self.cfg`` is the typed config the task reads;
    ``self.config`` its dict form, saved beside the run and in every checkpoint."""

    def __init__(self, config: dict[str, Any] | EarlyFusionMAEConfig, dataset: str | Path | None = None):
        if isinstance(config, EarlyFusionMAEConfig):
            config = config.to_dict()
        self.config, _ = bind_dataset(config, dataset, validate_config)  # + the dataset's normalization record
        self.cfg = CONFIG.from_dict(self.config)
        self.data_cfg = self.cfg.data

    # -- TrainTask -----------------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return build_model(self.config)

    def dataset(self, rank: int = 0) -> PatchDataset:
        if not self.cfg.dataset:
            raise InputError("no dataset given (config 'dataset' or --data)")
        grid = mask_grid_shape(self.data_cfg.patch_size, self.cfg.mask.block)
        ratio = self.cfg.mask.ratio

        def add_mask(rng: np.random.Generator, item: dict[str, Any]) -> None:
            item["mask"] = torch.from_numpy(block_mask_grid(rng, grid, ratio))

        return PatchDataset(self.cfg.dataset, self.data_cfg, seed=self.cfg.seed, rank=rank, extra=add_mask)

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``{"image": (B, C, px, py, pz), "mask": (B, gx, gy, gz) bool, "index": (B,)}``."""
        return iter(patch_loader(self.dataset(rank), start_sample=start_sample))

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["image"]  # the trainer moved it to the device (channels_last_3d if configured)
        pred = model(x, batch["mask"])
        mask = voxel_mask(batch["mask"], self.cfg.mask.block, tuple(x.shape[2:]))
        lc = self.cfg.loss
        names = [fmt.CHANNELS[i].lower() for i in MODES[self.data_cfg.mode]]
        return reconstruction_loss(pred, x, mask, lc.w_masked, lc.w_visible, lc.kind, names)

    @torch.no_grad()
    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        m = unwrap_model(model)
        was_training = m.training
        m.eval()
        try:
            x = batch["image"][:1]
            grid = batch["mask"][:1].to(x.device)
            x_in, _ = m.masked_input(x, grid)
            pred = m.backbone(x_in)
        finally:
            m.train(was_training)
        channels = (self.cfg.preprocessing or {}).get("channels") or [
            fmt.CHANNELS[i] for i in MODES[self.data_cfg.mode]]
        save_figure(x[0], x_in[0], pred[0], list(channels), Path(run_dir) / "figures" / f"recon_step{step:07d}.png",
                    title=f"step {step}")


__all__ = [
    "METHOD", "CONFIG", "DEFAULT_CONFIG", "validate_config", "block_mask_grid", "mask_grid_shape", "voxel_mask",
    "impute",
    "EarlyFusionMAE", "build_model", "reconstruction_loss", "border_discontinuity", "save_figure",
    "EarlyFusionMAETask",
]
