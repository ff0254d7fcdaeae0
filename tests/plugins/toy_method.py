"""A toy method defined OUTSIDE petctfm, as a third-party package would write it (tests/test_plugins.py copies
this file into a temporary folder as the package ``toy_petctfm_plugin`` and declares it through an entry point
in the group ``petctfm.methods``; petctfm is not edited).

The method: a denoising autoencoder. The network is petctfm's tiny residual UNet under ``.backbone`` (so the
generic encoder adapters, the probe and the UNet fine-tuning reuse it); the input patch gets Gaussian noise
of ``noise.sigma`` (a ``--sigma`` option of ``petctfm pretrain --method toy-denoise``) and the loss is the MSE to
the clean patch. Shapes: image (B, 2, p, p, p) normalized [PET, CT]; output (B, 2, p, p, p).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from petctfm.core.registry import Method, ModelKind, Option

KIND = "toy_denoise"


class ToyDenoiser(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        from petctfm.models.backbones import build_backbone

        self.backbone = build_backbone(cfg["model"]["backbone"], 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def build(cfg: dict[str, Any]) -> ToyDenoiser:
    return ToyDenoiser(cfg)


class ToyTask:
    """The TrainTask (petctfm.train.task): patches from petctfm's patch stream, noise, MSE."""

    def __init__(self, config: dict[str, Any]):
        from petctfm.data.loader import PatchConfig, bind_dataset

        self.config, _ = bind_dataset(config, None, lambda cfg: cfg)
        self.data_cfg = PatchConfig.from_dict(self.config["data"])

    def build_model(self) -> nn.Module:
        return build(self.config)

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        from petctfm.data.loader import PatchDataset, patch_loader

        ds = PatchDataset(self.config["dataset"], self.data_cfg, seed=int(self.config["seed"]), rank=rank)
        return iter(patch_loader(ds, start_sample=start_sample))

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        x = batch["image"]
        g = torch.Generator().manual_seed(int(batch["index"][0]))
        noisy = x + float(self.config["noise"]["sigma"]) * torch.randn(x.shape, generator=g).to(x.device)
        loss = torch.nn.functional.mse_loss(model(noisy), x)
        return loss, {"mse": float(loss.detach())}

    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        pass


def pretrain(dataset, out, preset=None, *, max_steps=None, max_time=None, resume=False, overrides=None,
             sigma=None, **options: Any) -> dict[str, Any]:
    from petctfm.data.loader import PatchConfig
    from petctfm.train.config import train_config
    from petctfm.train.trainer import train

    cfg = {"method": KIND, "seed": 0, "dataset": str(dataset),
           "model": {"backbone": "unet-resenc-tiny", "overrides": {}},
           "noise": {"sigma": 0.5 if sigma is None else float(sigma)},
           "data": PatchConfig(patch_size=(16, 16, 16), batch_size=2, augment=False, num_workers=0).to_dict()}
    options.update({"max_steps": max_steps or 3, "lr": options.get("lr", 3e-3), "figure_every": 0})
    tc = train_config(None, options)
    cfg["seed"] = tc.seed
    return train(ToyTask(cfg), tc, out, resume=resume)


def _finetune(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from petctfm.methods.segmentation.api import finetune  # its encoder is UNet-shaped: petctfm's UNet fine-tuning

    return finetune(*args, **kwargs)


METHOD = Method(
    name="toy-denoise",
    summary="a toy denoising autoencoder from a third-party package",
    kinds=(ModelKind(KIND, build, "pretrained"),),
    pretrain=pretrain,
    options=(Option("--sigma", "sigma", float, help="noise standard deviation (default 0.5)", metavar="S"),),
    finetune=_finetune,
    order=50,
    examples="petctfm pretrain --method toy-denoise --data dataset/ --out runs/toy --sigma 0.3",
)
