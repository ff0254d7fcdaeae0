"""nnU-Net v2's own networks as backbones (``nnunet-plain[-tiny]`` = ``PlainConvUNet``, ``nnunet-resenc[-tiny]`` =
``ResidualEncoderUNet``): configuration, the encoder adapter, and every place that uses it — MAE pretraining,
fine-tuning from the MAE's weights, the linear probe's frozen encoder, the promptable model (tiny variants,
32^3 patches, CPU, one or two steps)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from petctfm.core.config import deep_merge
from petctfm.core.errors import InputError
from petctfm.models.backbones import (
    BACKBONES, DeepSupervisionOutputs, build_backbone, check_patch_size, count_parameters, patch_divisor,
)
from petctfm.models.encoders import (
    decoder_features, encoder_features, encoder_stages, encoder_state_dict, get_encoder, load_encoder, output_layer,
)
from toy_data import write_toy_dataset

TINY = ["nnunet-plain-tiny", "nnunet-resenc-tiny"]


def _net(name, cin=2, cout=2, seed=0, **over):
    torch.manual_seed(seed)
    return build_backbone(name, cin, cout, **over)


# ------------------------------------------------------------------------------------------------ configuration


def test_configured_as_nnunet_plans_3d_fullres():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    plain, res = _net("nnunet-plain"), _net("nnunet-resenc")
    assert isinstance(plain, PlainConvUNet) and isinstance(res, ResidualEncoderUNet)
    for net in (plain, res):
        enc = net.encoder
        assert list(enc.output_channels) == [32, 64, 128, 256, 320]
        assert [list(s) for s in enc.strides] == [[1, 1, 1]] + [[2, 2, 2]] * 4
        assert [list(k) for k in enc.kernel_sizes] == [[3, 3, 3]] * 5
        assert not net.decoder.deep_supervision
        norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
        assert norms and all(m.eps == 1e-5 and m.affine for m in norms)
        acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
        assert acts and all(m.inplace and m.negative_slope == 0.01 for m in acts)
        convs = [m for k, m in net.named_modules() if isinstance(m, nn.Conv3d) and ".skip." not in k]
        assert all(m.bias is not None for m in convs)  # (nnU-Net's residual 1x1 projections have none)
    assert [len(s[-1].convs) for s in plain.encoder.stages] == [2] * 5  # 2 convs per stage
    assert [len(s.blocks) for s in res.encoder.stages] == [1, 3, 4, 6, 6]  # ResEnc-M
    assert [len(s.convs) for s in res.decoder.stages] == [1] * 4
    for name in TINY:
        assert list(_net(name).encoder.output_channels) == [8, 16, 32, 64]
    # the DynUNet stand-ins keep their names
    assert {"unet-resenc", "unet-resenc-tiny"} <= set(BACKBONES)
    assert type(_net("unet-resenc-tiny")).__name__ == "DynUNet"


def test_patch_divisor_and_state_dict_without_aliases():
    assert patch_divisor("nnunet-plain") == patch_divisor("nnunet-resenc") == 16
    assert patch_divisor("nnunet-plain-tiny") == patch_divisor("nnunet-resenc-tiny") == 8
    check_patch_size("nnunet-resenc", [64, 64, 128])
    with pytest.raises(InputError, match="multiple of 16 for backbone nnunet-plain"):
        check_patch_size("nnunet-plain", [64, 64, 40])
    for name in TINY:
        net = _net(name)
        sd = net.state_dict()
        # every tensor once: no decoder.encoder.* / *.all_modules.* aliases
        assert sum(v.numel() for v in sd.values()) == count_parameters(net)
        assert not any(".all_modules." in k or k.startswith("decoder.encoder.") for k in sd)
        assert net.decoder.encoder is net.encoder  # still there for nnU-Net's helpers, just unregistered


def test_n_stages_override_replans():
    net = _net("nnunet-plain-tiny", n_stages=3)
    assert list(net.encoder.output_channels) == [8, 16, 32]
    assert net(torch.randn(1, 2, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


# ------------------------------------------------------------------------------------------------ encoder adapter


@pytest.mark.parametrize("name", TINY)
def test_encoder_adapter(name):
    net = _net(name).eval()
    enc = get_encoder(net)
    assert enc.prefixes == ("encoder.",) and enc.channels() == [8, 16, 32, 64]
    x = torch.randn(1, 2, 32, 32, 32)
    feats = encoder_features(net, x)
    assert [tuple(f.shape) for f in feats] == [(1, c, 32 // 2 ** s, 32 // 2 ** s, 32 // 2 ** s)
                                               for s, c in enumerate(enc.channels())]
    # stages: finest first, together exactly the encoder's parameters (the residual stem with stage 0)
    stages = encoder_stages(net)
    assert len(stages) == 4
    ids = [id(p) for mods in stages for m in mods for p in m.parameters()]
    own = [id(p) for k, p in net.named_parameters() if k.startswith("encoder.")]
    assert sorted(ids) == sorted(own)
    if name.startswith("nnunet-resenc"):
        assert stages[0][0] is net.encoder.stem
    # the output layer is decoder.seg_layers[-1]; its input is the last decoder features, full resolution
    assert output_layer(net) is net.decoder.seg_layers[-1]
    dec = decoder_features(net, x)
    assert dec.shape == (1, 8, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net.decoder.seg_layers[-1](dec), net(x), atol=1e-6)


@pytest.mark.parametrize("name", TINY)
def test_encoder_state_dict_round_trip(name):
    a, b = _net(name, seed=0), _net(name, seed=1)
    dec_before = {k: v.clone() for k, v in b.state_dict().items() if k.startswith("decoder.")}
    state = encoder_state_dict(a)
    assert state and all(k.startswith("encoder.") for k in state)
    load_encoder(b, {"backbone." + k: v for k, v in a.state_dict().items()})  # a full MAE-style state dict
    for k, v in state.items():
        assert torch.equal(b.state_dict()[k], v), k
    for k, v in dec_before.items():
        assert torch.equal(b.state_dict()[k], v), k  # the decoder keeps its weights
    with pytest.raises(InputError, match="encoder weights incomplete"):
        load_encoder(b, {k: v for k, v in state.items() if "stages.0" not in k})
    with pytest.raises(InputError, match="do not fit this backbone"):
        load_encoder(_net(name, cin=1), state)  # one input channel


def test_deep_supervision_is_selectable_and_refused_where_one_tensor_is_needed():
    net = _net("nnunet-plain-tiny", deep_supervision=True).train()
    x = torch.randn(1, 2, 32, 32, 32)
    out = net(x)
    assert isinstance(out, DeepSupervisionOutputs)
    assert [tuple(o.shape[2:]) for o in out] == [(32,) * 3, (16,) * 3, (8,) * 3]  # full resolution first
    with pytest.raises(AttributeError, match="deep_supervision"):
        out.float()
    with pytest.raises(TypeError, match="deep_supervision"):
        out - x
    assert decoder_features(net, x).shape == (1, 8, 32, 32, 32)  # works in training mode too
    net.eval()
    assert net(x).shape == (1, 2, 32, 32, 32)  # inference: one tensor


# ------------------------------------------------------------------------------------------------ the methods


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("nnunet_toy"), n_cases=4, shape=(40, 40, 36))
    splits = json.loads((root / "splits.json").read_text())
    splits["fractions"] = {"50": splits["train"][:2], "100": splits["train"]}
    splits["kshot"] = {"1": splits["train"][:1]}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def _mae_task(toy, name, **model):
    from petctfm.methods.early_fusion_mae.mae import DEFAULT_CONFIG, EarlyFusionMAETask
    from petctfm.methods.early_fusion_mae.presets import get_preset

    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["model"].update(backbone=name, **model)
    cfg["data"].update(augment=False)
    return EarlyFusionMAETask(cfg, toy)


@pytest.fixture(scope="module")
def maes(toy, tmp_path_factory):
    """One tiny MAE run (2 steps, 32^3 patches) per nnU-Net backbone."""
    from quick_train import train_and_save

    return {name: train_and_save(_mae_task(toy, name), tmp_path_factory.mktemp(name), 2) for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_mae_pretraining_step(toy, maes, name):
    from petctfm.train.checkpoint import load_model, read_weights

    task = _mae_task(toy, name)
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(task.batches(0, 1, 0))
    assert batch["image"].shape == (2, 2, 32, 32, 32)
    loss, logs = task.training_step(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and get_encoder(model).net.encoder.stages[0].parameters().__next__().grad is not None
    # the saved run rebuilds through the registry with the same backbone
    state, cfg, _ = read_weights(maes[name] / "model.safetensors")
    assert cfg["model"]["backbone"] == name
    loaded, _ = load_model(maes[name])
    assert type(get_encoder(loaded).net).__name__ == type(get_encoder(model).net).__name__


def test_mae_with_deep_supervision_is_a_one_line_error(toy):
    task = _mae_task(toy, "nnunet-plain-tiny", overrides={"deep_supervision": True})
    model = task.build_model().train()
    with pytest.raises((AttributeError, TypeError), match="deep_supervision"):
        task.training_step(model, next(task.batches(0, 1, 0)))


@pytest.mark.parametrize("name", TINY)
def test_finetune_step_from_the_mae(toy, maes, name, tmp_path):
    from petctfm.methods.segmentation.api import finetune_configs
    from petctfm.methods.segmentation.task import FinetuneTask
    from petctfm.train.checkpoint import read_weights

    cfg, _ = finetune_configs(toy, tmp_path / "ft", maes[name], "tiny", 0.5)  # what `petctfm finetune` builds
    assert cfg["model"]["backbone"] == name  # the pretrained run brings its backbone
    task = FinetuneTask(cfg, toy)
    torch.manual_seed(0)
    model = task.build_model()
    mae_state, _, _ = read_weights(maes[name] / "model.safetensors")
    own = model.state_dict()
    enc = [k for k in own if k.startswith("backbone.encoder.")]
    assert enc and all(torch.equal(own[k], mae_state[k]) for k in enc)
    assert own["backbone.decoder.seg_layers.2.weight"].shape[0] == 2  # background / lesion head
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(task.batches(0, 1, 0))
    assert batch["image"].shape[2:] == (32, 32, 32)
    loss, _ = task.training_step(model.train(), batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        assert model(batch["image"]).shape == (2, 2, 32, 32, 32)


@pytest.mark.parametrize("name", TINY)
def test_linear_probe_frozen_encoder(toy, maes, name):
    from petctfm.data.format import load_dataset_info
    from petctfm.methods import probe as P

    probe, patch = P.build_probe([maes[name]], load_dataset_info(toy), None)
    assert patch == 32
    frozen = probe.encoders[0]
    assert frozen.backbone_name == name and not any(p.requires_grad for p in frozen.backbone.parameters())
    assert frozen.points == [0, 1, 2, 3, "dec"]  # every encoder scale + the decoder features
    assert frozen.feature_channels(patch) == [8, 16, 32, 64, 8]
    cfg = P.ProbeConfig(steps=2, fg_prob=1.0, seed=0, voxels_per_patch=32)
    sampler = P.PatchSampler(toy, json.loads((toy / "splits.json").read_text())["train"], patch, cfg.fg_prob, 0)
    fit = P.train_head(probe, sampler, cfg, torch.device("cpu"), prevalence=0.01)
    assert fit["n_voxels"] > 0 and probe.head.weight.detach()[1].abs().sum() > 0


def _prompt_cfg(name):
    from toy_data import tiny_prompt_config

    cfg = tiny_prompt_config(patch=None)
    cfg["model"]["backbone"] = name
    cfg["data"]["mode"] = "pet"
    return cfg


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("design", ["cached", "channels"])
def test_promptable_model_on_the_backbone(maes, name, design):
    from petctfm.methods.promptable.model import build_model, load_pretrained_encoder
    from petctfm.methods.segmentation.task import pretrained_config

    cfg = _prompt_cfg(name)
    cfg["model"]["design"] = design
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.design == design
    pcfg, state, _ = pretrained_config(maes[name])
    inflated = load_pretrained_encoder(model, state, pcfg["data"]["mode"], "pet")  # joint MAE -> PET model
    k = "encoder.stem.convs.0.conv.weight" if "resenc" in name else "encoder.stages.0.0.convs.0.conv.weight"
    assert inflated == [k]
    w = model.backbone.state_dict()[k]
    assert torch.equal(w[:, 0], state["backbone." + k][:, 0])  # PET copied (prompt channels, if any, zero)
    assert (w[:, 1:] == 0).all()
    image, prompts = torch.randn(1, 1, 32, 32, 32), torch.zeros(1, 4, 32, 32, 32)
    prompts[0, 0, 16, 16, 16] = 1
    out = model(image, prompts)
    assert out.shape == (1, 1, 32, 32, 32)
    out.float().mean().backward()
    emb = model.embed(image)
    assert emb.shape[1] == (cfg["model"]["embed_channels"] if design == "cached" else 1)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(image, prompts), model.decode(model.embed(image), prompts), atol=1e-6)


def test_cli_pretrain_and_finetune_with_the_real_trainer(toy, tmp_path):
    """``petctfm pretrain --set model.backbone=nnunet-resenc-tiny`` and ``petctfm finetune --init`` it, 2 steps each
    through the real trainer (checkpoints written and rebuilt through the registry)."""
    from petctfm.cli.main import main
    from petctfm.train.checkpoint import load_model, read_weights

    mae, ft = tmp_path / "mae", tmp_path / "ft"
    common = ["--preset", "tiny", "--no-progress", "--max-steps", "2", "--checkpoint-every", "2", "--figure-every", "0"]
    assert main(["pretrain", "--data", str(toy), "--out", str(mae), "--set", "model.backbone=nnunet-resenc-tiny",
                 *common]) == 0
    model, cfg = load_model(mae)
    assert cfg["model"]["backbone"] == "nnunet-resenc-tiny"
    assert type(get_encoder(model).net).__name__ == "NNUNetResidualEncoderUNet"
    assert main(["finetune", "--data", str(toy), "--out", str(ft), "--init", str(mae), "--fraction", "50", *common]) == 0
    seg, fcfg = load_model(ft)
    assert fcfg["model"]["backbone"] == "nnunet-resenc-tiny"
    steps = json.loads((ft / "summary.json").read_text())
    assert steps["steps"] == 2 and steps["stopped"] == "max_steps"
    first = read_weights(ft / "checkpoints" / "step_0000002" / "model.safetensors")[0]
    assert not any(".all_modules." in k or ".decoder.encoder." in k for k in first)  # each tensor stored once
