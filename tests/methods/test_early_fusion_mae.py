"""Early-fusion MAE: masking, zero-mean imputation vs learnable token, loss weights, learning, figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toy_data import write_toy_dataset
from petctfm.core.errors import InputError, UsageError
from petctfm.methods.early_fusion_mae.mae import (
    DEFAULT_CONFIG, EarlyFusionMAETask, block_mask_grid, border_discontinuity, build_model, mask_grid_shape,
    reconstruction_loss, voxel_mask,
)
from petctfm.core.config import deep_merge, set_dotted
from petctfm.methods.early_fusion_mae.presets import get_preset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(48, 48, 64))


def tiny_config(**over):
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    return deep_merge(cfg, over)


@pytest.mark.parametrize("ratio", [0.4, 0.6, 0.75])
def test_masked_fraction_matches_ratio(ratio):
    rng = np.random.default_rng(0)
    grid = mask_grid_shape((96, 96, 96), 16)
    assert grid == (6, 6, 6)
    g = block_mask_grid(rng, grid, ratio)
    assert g.sum() == round(ratio * 216)
    vm = voxel_mask(torch.from_numpy(g)[None], 16, (96, 96, 96))
    assert vm.shape == (1, 1, 96, 96, 96)
    assert abs(vm.float().mean().item() - ratio) < 1 / 216
    # blocks are whole 16^3 cubes
    assert vm[0, 0, :16, :16, :16].all() == g[0, 0, 0] and vm[0, 0, :16, :16, :16].any() == g[0, 0, 0]


def test_masked_fraction_with_cropped_blocks():
    vm = voxel_mask(torch.from_numpy(block_mask_grid(np.random.default_rng(1), mask_grid_shape((40,) * 3, 16), 0.6))[None],
                    16, (40, 40, 40))
    assert vm.shape == (1, 1, 40, 40, 40)
    assert abs(vm.float().mean().item() - 0.6) < 0.12  # edge blocks are cropped


def _captured_input(model, x, grid):
    seen = {}
    h = model.backbone.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach().clone()))
    model(x, grid)
    h.remove()
    return seen["x"]


def test_zero_imputation_sets_masked_voxels_exactly_zero():
    torch.manual_seed(0)
    model = build_model(tiny_config())
    assert model.mask_token is None
    x = torch.randn(2, 2, 32, 32, 32) + 3.0  # no accidental zeros
    grid = torch.from_numpy(np.stack([block_mask_grid(np.random.default_rng(i), (4, 4, 4), 0.6) for i in range(2)]))
    x_in = _captured_input(model, x, grid)
    m = voxel_mask(grid, 8, (32, 32, 32)).expand_as(x)
    assert (x_in[m] == 0).all()  # all channels masked together
    assert torch.equal(x_in[~m], x[~m])  # visible voxels untouched
    assert m.float().mean().item() == pytest.approx(38 / 64)


def test_learnable_token_fills_masked_voxels_with_token():
    torch.manual_seed(0)
    model = build_model(tiny_config(mask={"token": "learnable"}))
    assert isinstance(model.mask_token, torch.nn.Parameter) and model.mask_token.shape == (2,)
    x = torch.randn(1, 2, 32, 32, 32) + 3.0
    grid = torch.from_numpy(block_mask_grid(np.random.default_rng(0), (4, 4, 4), 0.6))[None]
    x_in = _captured_input(model, x, grid)
    m = voxel_mask(grid, 8, (32, 32, 32))[0, 0]
    for c in range(2):
        assert (x_in[0, c][m] == model.mask_token[c]).all()
        assert (x_in[0, c][m] != 0).all()
    # the token is trained
    pred = model(x, grid)
    pred.mean().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


def test_loss_weights_hand_computed():
    # 1 sample, 1 channel, 4 voxels along x: voxels 0,1 masked; target 0; pred [1, 3, 2, 4]
    pred = torch.tensor([1.0, 3.0, 2.0, 4.0]).view(1, 1, 4, 1, 1)
    target = torch.zeros_like(pred)
    mask = torch.tensor([True, True, False, False]).view(1, 1, 4, 1, 1)
    loss, logs = reconstruction_loss(pred, target, mask, w_masked=1.0, w_visible=0.1, kind="l2")
    # masked mean (1 + 9) / 2 = 5; visible mean (4 + 16) / 2 = 10 -> 1*5 + 0.1*10 = 6
    assert loss.item() == pytest.approx(6.0)
    assert logs == {"loss_masked": pytest.approx(5.0), "loss_visible": pytest.approx(10.0)}
    loss, _ = reconstruction_loss(pred, target, mask, w_masked=2.0, w_visible=0.0, kind="l2")
    assert loss.item() == pytest.approx(10.0)  # classic MAE: masked only
    loss, _ = reconstruction_loss(pred, target, mask, w_masked=1.0, w_visible=0.5, kind="l1")
    assert loss.item() == pytest.approx((1 + 3) / 2 + 0.5 * (2 + 4) / 2)  # 2 + 1.5
    # two channels share the mask: means are over voxel x channel elements
    pred2 = torch.cat([pred, 2 * pred], dim=1)
    loss, logs = reconstruction_loss(pred2, torch.zeros_like(pred2), mask, 1.0, 0.0, "l2")
    assert loss.item() == pytest.approx((1 + 9 + 4 + 36) / 4)
    # per-modality masked means are logged, not weighted into the loss
    loss2, logs = reconstruction_loss(pred2, torch.zeros_like(pred2), mask, 1.0, 0.0, "l2", ["pet", "ct"])
    assert loss2.item() == loss.item()
    assert logs["loss_masked_pet"] == pytest.approx(5.0) and logs["loss_masked_ct"] == pytest.approx(20.0)
    assert "loss_masked_pet" not in reconstruction_loss(pred, target, mask, channels=["pet"])[1]  # one channel


def test_border_discontinuity_metric():
    mask = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    mask[..., :8, :, :] = True
    torch.manual_seed(0)
    noise = 0.1 * torch.randn(1, 2, 16, 16, 16)  # isotropic texture: borders look like the interior
    seamless = border_discontinuity(noise, mask)
    jump = border_discontinuity(noise + 0.5 * mask.float(), mask)  # constant offset inside the mask
    assert 0.8 < seamless < 1.25
    assert jump > 3 * seamless


def test_task_step_and_figure(toy, tmp_path):
    """One plain training step through the task API, then the checkpoint figure (learning itself is tested
    through the real trainer in test_pretrain_cli.py)."""
    torch.manual_seed(0)
    task = EarlyFusionMAETask(tiny_config(), toy)
    assert task.config["preprocessing"]["channels"] == ["PET", "CT"]
    assert task.config["preprocessing"]["normalization"]["CT"]["mean"] == -400.0
    model = task.build_model()
    batch = next(task.batches(0, 1, 0))
    assert batch["image"].shape == (2, 2, 32, 32, 32) and batch["mask"].shape == (2, 4, 4, 4)
    loss, logs = task.training_step(model, batch)
    assert loss.ndim == 0 and loss.item() == pytest.approx(logs["loss_masked"] + 0.1 * logs["loss_visible"], rel=1e-5)
    loss.backward()
    task.on_checkpoint(model, batch, 24, tmp_path)
    png = tmp_path / "figures" / "recon_step0000024.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > img.shape[0]  # 2 rows x 3 columns


def test_batches_resume_and_ranks(toy):
    task = EarlyFusionMAETask(tiny_config(), toy)
    full = task.batches(0, 1, 0)
    next(full)
    second = next(full)
    resumed = next(task.batches(0, 1, 2))  # per-rank sample 2 = second batch of size 2
    assert torch.equal(second["image"], resumed["image"]) and torch.equal(second["mask"], resumed["mask"])
    other = next(task.batches(1, 2, 2))
    assert not torch.equal(other["image"], resumed["image"])


def test_single_modality_modes(toy):
    task = EarlyFusionMAETask(tiny_config(data={"mode": "pet"}), toy)
    assert task.config["preprocessing"]["channels"] == ["PET"]
    model = task.build_model()
    batch = next(task.batches(0, 1, 0))
    assert batch["image"].shape[1] == 1
    assert model(batch["image"], batch["mask"]).shape == batch["image"].shape


def test_config_errors(toy, tmp_path):
    with pytest.raises(InputError, match="dataset folder not found"):
        EarlyFusionMAETask(tiny_config(), tmp_path / "missing")
    # a wrong config value is a usage error (exit 2) naming the key, the value and what is allowed
    with pytest.raises(UsageError, match=r"mask.ratio=1.5: must be in \[0, 1\)"):
        EarlyFusionMAETask(tiny_config(mask={"ratio": 1.5}), toy)
    with pytest.raises(UsageError, match=r"data.patch_size=\[48, 48, 48\]: .*multiple of 32"):
        EarlyFusionMAETask(tiny_config(model={"backbone": "swinunetr-base"}, data={"patch_size": [48, 48, 48]}), toy)
    with pytest.raises(UsageError, match=">= 64"):
        EarlyFusionMAETask(tiny_config(model={"backbone": "swinunetr-tiny"}), toy)
    cfg = tiny_config()
    set_dotted(cfg, "mask.ratio=0.75")
    set_dotted(cfg, "data.patch_size=[16,16,16]")
    assert cfg["mask"]["ratio"] == 0.75 and cfg["data"]["patch_size"] == [16, 16, 16]
    with pytest.raises(UsageError, match="mask.ratoi=0.5: unknown config key"):
        set_dotted(cfg, "mask.ratoi=0.5")
