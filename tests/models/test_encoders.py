"""Encoder adapters: channels match the features, stages hold exactly the encoder's parameters, wrappers are
unwrapped, a new family is one registry entry, and the one patch-size check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from petctfm.core.errors import InputError
from petctfm.models.backbones import build_backbone, check_patch_size
from petctfm.models.encoders import (
    DynUNetEncoder, SwinUNETREncoder, backbone_of, encoder_stages, get_encoder, register_encoder,
)


@pytest.mark.parametrize("name,side,adapter", [("unet-resenc-tiny", 32, DynUNetEncoder),
                                               ("swinunetr-tiny", 64, SwinUNETREncoder)])
def test_channels_stages_and_prefixes_agree_with_the_network(name, side, adapter):
    net = build_backbone(name, 2, 2).eval()
    enc = get_encoder(net)
    assert isinstance(enc, adapter) and enc.net is net
    with torch.no_grad():
        feats = enc.features(torch.zeros(1, 2, side, side, side))
    assert [f.shape[1] for f in feats] == enc.channels()
    assert [side // f.shape[2] for f in feats] == [2**s for s in range(len(feats))]
    in_stages = {id(p) for stage in enc.stages() for mod in stage for p in mod.parameters()}
    under_prefix = {id(p) for k, p in net.named_parameters() if k.startswith(enc.prefixes)}
    assert in_stages == under_prefix


class _Wrapper(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone


class _DDPLike(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_wrappers_are_unwrapped():
    net = build_backbone("unet-resenc-tiny", 2, 2)
    assert backbone_of(_DDPLike(_Wrapper(net))) is net
    assert get_encoder(_Wrapper(net)).net is net
    assert [len(s) for s in encoder_stages(_Wrapper(net))] == [1, 1, 1, 1]


def test_a_new_family_is_one_registry_entry():
    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv3d(2, 4, 3, padding=1)
            self.head = nn.Conv3d(4, 2, 1)

    class TinyEncoder:
        prefixes = ("stem.",)

        def __init__(self, net):
            self.net = net

        def features(self, x):
            return [self.net.stem(x)]

        def channels(self):
            return [4]

        def stages(self):
            return [[self.net.stem]]

    with pytest.raises(TypeError, match="not a petctfm backbone"):
        get_encoder(TinyNet())
    register_encoder("TinyNet", TinyEncoder)
    try:
        enc = get_encoder(_Wrapper(TinyNet()))
        assert enc.channels() == [4] and enc.features(torch.zeros(1, 2, 4, 4, 4))[0].shape == (1, 4, 4, 4, 4)
    finally:
        from petctfm.models.encoders import ENCODERS

        ENCODERS.pop("TinyNet")


def test_check_patch_size():
    check_patch_size("unet-resenc-tiny", (32, 32, 40))
    check_patch_size("swinunetr-small", (64, 96, 128))
    with pytest.raises(InputError, match="multiple of 8"):
        check_patch_size("unet-resenc-tiny", (32, 32, 36))
    with pytest.raises(InputError, match="multiple of 32"):
        check_patch_size("swinunetr-base", (96, 96, 80))
    with pytest.raises(InputError, match=">= 64"):
        check_patch_size("swinunetr-base", (32, 64, 64))
