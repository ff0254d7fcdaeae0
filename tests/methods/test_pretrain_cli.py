"""``petctfm pretrain`` end to end on a tiny dataset with the real trainer: learning, files, safetensors
reload, encoder reuse, exact resume, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from toy_data import write_toy_dataset
from petctfm.models.encoders import encoder_features, encoder_state_dict
from petctfm.methods.early_fusion_mae.mae import EarlyFusionMAE
from petctfm.train.checkpoint import load_model

ARGS = ["--preset", "tiny", "--no-progress", "--log-every", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(48, 48, 64))


def _losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_pretrain_tiny_learns_and_reloads(toy, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(toy), "--out", str(run), *ARGS, "--max-steps", "24",
                 "--checkpoint-every", "12", "--figure-every", "12"]) == 0
    losses = _losses(run)
    first = np.mean([losses[s] for s in range(1, 7)])
    last = np.mean([losses[s] for s in range(19, 25)])
    assert last < 0.75 * first, losses
    assert (run / "figures" / "recon_step0000012.png").read_bytes()[:4] == b"\x89PNG"
    # the checkpoint rebuilds with safetensors only (config in the metadata) and reproduces the weights
    model, cfg = load_model(run)
    assert isinstance(model, EarlyFusionMAE) and cfg["method"] == "early_fusion_mae"
    assert cfg["preprocessing"]["channels"] == ["PET", "CT"] and cfg["seed"] == 3
    from safetensors.torch import load_file

    state = load_file(str(run / "checkpoints" / "step_0000024" / "model.safetensors"))
    assert torch.equal(state["backbone.input_block.conv1.conv.weight"],
                       model.backbone.input_block.conv1.conv.weight)
    # the encoder is reusable downstream
    enc = encoder_state_dict(model)
    assert enc and all(torch.equal(v, state["backbone." + k]) for k, v in enc.items())
    with torch.no_grad():
        feats = encoder_features(model, torch.zeros(1, 2, 32, 32, 32))
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]


@pytest.mark.slow
def test_kill_and_resume_gives_same_losses(toy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--data", str(toy), *ARGS, "--checkpoint-every", "4", "--figure-every", "0"]
    assert main(["pretrain", "--out", str(full), *common, "--max-steps", "8"]) == 0
    assert main(["pretrain", "--out", str(part), *common, "--max-steps", "8", "--max-time", "1e-9"]) == 0
    stopped = max(_losses(part))
    assert stopped < 8
    assert main(["pretrain", "--out", str(part), "--resume", *ARGS, "--checkpoint-every", "4",
                 "--figure-every", "0", "--max-steps", "8", "--set", "train.max_time_s=none"]) == 0
    a, b = _losses(full), _losses(part)
    assert sorted(b) == list(range(1, 9))
    for s in range(1, 9):
        assert b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-6), (s, a, b)


def test_wrong_dataset_path_is_one_line_error(tmp_path, capsys):
    rc = main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--preset", "tiny"])
    err = capsys.readouterr().err.strip()
    assert rc == 3
    assert err.startswith("error: ") and "missing" in err and "\n" not in err


def test_bad_option_values_are_one_line_errors(toy, tmp_path, capsys):
    rc = main(["pretrain", "--data", str(toy), "--out", str(tmp_path / "r"), "--preset", "tiny",
               "--set", "mask.ratoi=0.5"])
    assert rc == 2 and "mask.ratoi=0.5: unknown config key" in capsys.readouterr().err  # usage error (exit 2)
    rc = main(["pretrain", "--data", str(toy), "--out", str(tmp_path / "r"), "--preset", "tiny",
               "--mask-block", "64"])
    assert rc == 2 and "mask.block=64: must be <= every side of data.patch_size" in capsys.readouterr().err
