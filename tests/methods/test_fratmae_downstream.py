"""A FratMAE encoder downstream: the TwinViT adapter (features, channels, stages), ``petctfm probe`` and
``petctfm stage`` end to end on a tiny FratMAE checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from petctfm.cli.main import main
from petctfm.core.config import deep_merge
from petctfm.methods.fratmae.fratmae import DEFAULT_CONFIG, FratMAETask
from petctfm.methods.fratmae.presets import get_preset
from petctfm.models.encoders import encoder_features, encoder_stages, encoder_state_dict, get_encoder
from quick_train import train_and_save
from toy_data import write_toy_dataset


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fratdown")
    data = write_toy_dataset(root / "data", n_cases=6, shape=(32, 32, 48))
    splits = json.loads((data / "splits.json").read_text())
    splits.update(train=["toy000", "toy001", "toy002", "toy003"], val=["toy004"], test=["toy005"],
                  kshot={"2": ["toy000", "toy001"]})
    (data / "splits.json").write_text(json.dumps(splits))
    stages = ["early", "advanced"] * 3
    lines = ["case_id,split,site,stage"] + [f"toy{i:03d},x,toy,{s}" for i, s in enumerate(stages)]
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    return data, train_and_save(FratMAETask(cfg, data), root / "frat", steps=2)


def test_twin_vit_adapter(env):
    from petctfm.train.checkpoint import load_model

    model, _ = load_model(env[1] / "model.safetensors")
    enc = get_encoder(model)
    feats = encoder_features(model, torch.zeros(1, 2, 16, 24, 32))  # any multiple of the 8^3 patch
    assert [tuple(f.shape) for f in feats] == [(1, 96, 2, 3, 4)] * 2 and enc.channels() == [96, 96]
    params = {id(p) for s in encoder_stages(model) for m in s for p in m.parameters()}
    assert params == {id(p) for p in model.backbone.encoders.parameters()}
    assert set(encoder_state_dict(model)) == set(model.backbone.state_dict())


def test_probe_and_stage_accept_a_fratmae_encoder(env, tmp_path):
    data, run = env
    assert main(["probe", "--data", str(data), "--encoder", str(run), "--out", str(tmp_path / "probe"),
                 "--kshot", "2", "--steps", "2", "--patch", "16", "--bootstrap", "20", "--no-progress"]) == 0
    assert json.loads((tmp_path / "probe" / "summary.json").read_text())["dice"]["n"] == 1
    assert main(["stage", "--data", str(data), "--encoder", str(run), "--out", str(tmp_path / "stage"),
                 "--patch", "16", "--bootstrap", "20", "--max-epochs", "5", "--no-progress"]) == 0
    m = json.loads((tmp_path / "stage" / "metrics.json").read_text())
    assert m["feature_dim"] % 96 == 0 and m["n"] == 1  # pooled PET+CT token maps of the two deepest layers
