"""Backbone registry: every backbone builds and runs at tiny size; encoder weights round-trip."""

from __future__ import annotations

import pytest
import torch

from petctfm.core.errors import InputError
from petctfm.models.backbones import BACKBONES, build_backbone, count_parameters
from petctfm.models.encoders import encoder_features, encoder_state_dict, load_encoder


def test_registry_names():
    assert {"swinunetr-small", "swinunetr-base", "swinunetr-large", "unet-resenc"} <= set(BACKBONES)
    with pytest.raises(InputError, match="unknown backbone"):
        build_backbone("resnet-9000", 2, 2)


def test_swinunetr_sizes_are_v2_with_stated_feature_sizes():
    m = build_backbone("swinunetr-small", 2, 2)
    assert m.swinViT.use_v2 is True
    assert m.encoder1.layer.conv1.conv.out_channels == 24
    assert 15e6 < count_parameters(m) < 25e6


def test_unet_resenc_is_residual_dynunet():
    from monai.networks.blocks.dynunet_block import UnetResBlock
    from monai.networks.nets import DynUNet

    m = build_backbone("unet-resenc", 2, 2)
    assert isinstance(m, DynUNet)
    assert isinstance(m.input_block, UnetResBlock)
    assert list(m.filters) == [32, 64, 128, 256, 320]


def test_unet_resenc_tiny_forward_backward():
    """Forward shape; backward: every gradient present and finite, two of them checked by value (float64)."""
    torch.manual_seed(0)
    m = build_backbone("unet-resenc-tiny", 2, 2).double()
    x = torch.randn(2, 2, 32, 32, 32, dtype=torch.float64)
    y = m(x)
    assert y.shape == (2, 2, 32, 32, 32)
    y.mean().backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # each output channel's bias adds to half of the elements averaged: d mean(y) / d bias = 1/2
    torch.testing.assert_close(grads["output_block.conv.conv.bias"], torch.full((2,), 0.5, dtype=torch.float64))
    # the gradient reaches the first convolution, and is the right one: a central finite difference
    w, idx, eps = m.input_block.conv1.conv.weight, (3, 1, 1, 1, 1), 1e-7
    with torch.no_grad():
        w[idx] += eps
        up = m(x).mean().item()
        w[idx] -= 2 * eps
        down = m(x).mean().item()
        w[idx] += eps
    g = grads["input_block.conv1.conv.weight"][idx].item()
    assert g != 0 and (up - down) / (2 * eps) == pytest.approx(g, rel=1e-4, abs=1e-9)


def test_swinunetr_tiny_forward_features_and_encoder_round_trip():
    """SwinUNETR at its smallest trainable size (64^3): output shape, 6 encoder scales, weights round-trip."""
    torch.manual_seed(1)
    a = build_backbone("swinunetr-tiny", 2, 2).eval()
    torch.manual_seed(2)
    b = build_backbone("swinunetr-tiny", 2, 2).eval()
    x = torch.randn(1, 2, 64, 64, 64)
    with torch.no_grad():
        y = a(x)
        fa = encoder_features(a, x)
    assert y.shape == (1, 2, 64, 64, 64) and torch.isfinite(y).all()
    assert [f.shape[1] for f in fa] == [12, 12, 24, 48, 96, 192]
    assert [64 // f.shape[2] for f in fa] == [1, 2, 4, 8, 16, 32]
    sa = encoder_state_dict(a)
    assert any(k.startswith("swinViT.") for k in sa) and not any(k.startswith("decoder") for k in sa)
    dec_before = {k: v.clone() for k, v in b.state_dict().items() if k not in sa}
    load_encoder(b, sa)
    with torch.no_grad():
        fb = encoder_features(b, x)
    assert all(torch.equal(u, v) for u, v in zip(fa, fb))
    assert all(torch.equal(v, dec_before[k]) for k, v in b.state_dict().items() if k not in sa)


def test_unet_encoder_features_shapes():
    m = build_backbone("unet-resenc-tiny", 2, 2).eval()
    with torch.no_grad():
        feats = encoder_features(m, torch.randn(1, 2, 32, 32, 32))
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]
    assert [32 // f.shape[2] for f in feats] == [1, 2, 4, 8]


def test_unet_encoder_state_round_trip():
    torch.manual_seed(1)
    a = build_backbone("unet-resenc-tiny", 2, 2).eval()
    torch.manual_seed(2)
    b = build_backbone("unet-resenc-tiny", 2, 2).eval()
    sa = encoder_state_dict(a)
    assert sa and all(k.startswith(("input_block.", "downsamples.", "bottleneck.")) for k in sa)
    dec_before = {k: v.clone() for k, v in b.state_dict().items() if k not in sa}
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        assert not torch.equal(encoder_features(a, x)[-1], encoder_features(b, x)[-1])
        load_encoder(b, {"backbone." + k: v for k, v in a.state_dict().items()})  # full MAE-style state
        for fa, fb in zip(encoder_features(a, x), encoder_features(b, x)):
            assert torch.equal(fa, fb)
    for k, v in b.state_dict().items():
        if k.startswith("skip_layers."):  # DynUNet aliases of the same modules
            continue
        assert torch.equal(v, sa[k]) if k in sa else torch.equal(v, dec_before[k])  # decoder untouched


def test_load_encoder_rejects_wrong_channels():
    a = build_backbone("unet-resenc-tiny", 1, 1)
    b = build_backbone("unet-resenc-tiny", 2, 2)
    with pytest.raises(InputError, match="do not fit"):
        load_encoder(b, encoder_state_dict(a))
    with pytest.raises(InputError, match="missing"):
        load_encoder(b, {})
