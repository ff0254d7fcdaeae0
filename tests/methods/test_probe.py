"""``petctfm probe``: frozen checkpoint encoders, exact k-shot subset, a 1x1x1 head on multi-scale features,
separated (PET-only + CT-only) encoders, a decreasing loss, files, one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from toy_data import write_toy_dataset
from petctfm.methods import probe as P
from petctfm.train.checkpoint import read_weights

KSHOT5 = ["toy000", "toy002"]  # deliberately not a prefix of train, so "exactly the stored subset" can fail


@pytest.fixture(scope="module")
def env(tiny_mae_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    data = write_toy_dataset(root / "data", n_cases=4, shape=(40, 40, 36))
    splits = json.loads((data / "splits.json").read_text())
    splits["kshot"] = {"1": ["toy000"], "5": KSHOT5}
    (data / "splits.json").write_text(json.dumps(splits))
    runs = {m: tiny_mae_run(root / f"mae_{m}", data, m, steps=2) for m in ("joint", "pet", "ct")}
    return data, runs


def _info(data):
    from petctfm.data.format import load_dataset_info

    return load_dataset_info(data)


def test_encoder_is_the_checkpoint_and_stays_frozen_while_loss_decreases(env):
    data, runs = env
    probe, patch = P.build_probe([runs["joint"]], _info(data), None)
    assert patch == 32
    state, cfg, _ = read_weights(runs["joint"] / "model.safetensors")
    enc = probe.encoders[0].backbone
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    assert before and all(torch.equal(v, state["backbone." + k]) for k, v in before.items())
    assert not any(p.requires_grad for p in enc.parameters())
    head_before = probe.head.weight.detach().clone()

    cfg = P.ProbeConfig(steps=30, lr=2e-2, fg_prob=1.0, seed=0)
    sampler = P.PatchSampler(data, KSHOT5, patch, cfg.fg_prob, cfg.seed)
    x, y = sampler.batch(0, 2)
    assert x.shape == (2, 2, patch, patch, patch) and y.shape == (2, 1, patch, patch, patch) and y.dtype == torch.int64
    assert y.sum() > 0  # fg_prob 1: centred on lesions
    x2, y2 = sampler.batch(0, 2)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a pure function of (seed, step)
    assert x[:, 1].min() < -500  # raw HU, not normalized (each encoder normalizes its own channels)
    losses = P.train_head(probe, sampler, cfg, torch.device("cpu"))
    assert not enc.training  # eval mode even though the probe was put in train mode
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(probe.head.weight, head_before)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.02, losses


def test_head_is_one_linear_1x1x1_conv_on_upsampled_concatenated_scales(env):
    data, runs = env
    probe, patch = P.build_probe([runs["joint"]], _info(data), 32)
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    assert isinstance(probe.head, torch.nn.Conv3d) and probe.head.kernel_size == (1, 1, 1)
    assert probe.scale_channels == [[8, 16, 32, 64]] and probe.head.weight.shape == (2, 120, 1, 1, 1)
    torch.nn.init.normal_(probe.head.weight)
    x = torch.randn(1, 2, 32, 32, 32) * torch.tensor([2.0, 400.0]).view(1, 2, 1, 1, 1)
    with torch.no_grad():
        cat = probe.concat_features(x)
        assert cat.shape == (1, 120, 32, 32, 32)
        torch.testing.assert_close(probe(x), probe.head(cat), rtol=1e-4, atol=1e-4)


def test_separated_uses_pet_only_and_ct_only_encoders_on_their_channels(env):
    data, runs = env
    info = _info(data)
    probe, _ = P.build_probe([runs["pet"], runs["ct"]], info, 32)
    pet, ct = probe.encoders
    assert (pet.mode, pet.channels, ct.mode, ct.channels) == ("pet", [0], "ct", [1])
    assert probe.scale_channels == [[8, 16, 32, 64], [8, 16, 32, 64]] and probe.in_channels == 240
    seen = []
    for enc in (pet, ct):
        enc.backbone.input_block.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    x = torch.rand(1, 2, 32, 32, 32) * torch.tensor([8.0, 1500.0]).view(1, 2, 1, 1, 1) - torch.tensor(
        [0.0, 700.0]).view(1, 2, 1, 1, 1)
    with torch.no_grad():
        logits = probe(x)
    assert logits.shape == (1, 2, 32, 32, 32) and len(seen) == 2
    n = info["normalization"]
    exp_pet = (x[:, :1].clamp(*n["PET"]["clip"]) - n["PET"]["mean"]) / n["PET"]["std"]
    exp_ct = (x[:, 1:].clamp(*n["CT"]["clip"]) - n["CT"]["mean"]) / n["CT"]["std"]
    torch.testing.assert_close(seen[0], exp_pet)
    torch.testing.assert_close(seen[1], exp_ct)


def test_probe_cli_end_to_end_on_exactly_the_stored_kshot_subset(env, tmp_path, monkeypatch):
    data, runs = env
    used = []
    real = P.PatchSampler.__init__

    def spy(self, root, case_ids, *a, **k):
        used.append(list(case_ids))
        real(self, root, case_ids, *a, **k)

    monkeypatch.setattr(P.PatchSampler, "__init__", spy)
    out = tmp_path / "probe"
    assert main(["probe", "--data", str(data), "--encoder", str(runs["joint"]), "--out", str(out),
                 "--kshot", "5", "--steps", "3", "--bootstrap", "50", "--no-progress"]) == 0
    assert used == [KSHOT5]
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert [r["case_id"] for r in rows] == ["toy003"] and 0.0 <= float(rows[0]["dice"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["subset"] == "kshot5" and summary["n_train_cases"] == 2 and summary["dice"]["n"] == 1
    assert summary["dice"]["mean"] == pytest.approx(float(rows[0]["dice"]))
    assert 0.0 < float(rows[0]["ap"]) <= 1.0 and summary["ap"]["mean"] == pytest.approx(float(rows[0]["ap"]))
    head, cfg, _ = read_weights(out / "head.safetensors")
    assert head["weight"].shape == (2, 120, 1, 1, 1) and cfg["train_cases"] == KSHOT5
    assert cfg["encoders"][0]["mode"] == "joint" and cfg["probe"]["steps"] == 3
    # one seed drives head initialization and patches: a second run gives the same head
    assert main(["probe", "--data", str(data), "--encoder", str(runs["joint"]), "--out", str(tmp_path / "again"),
                 "--kshot", "5", "--steps", "3", "--bootstrap", "50", "--no-progress"]) == 0
    assert torch.equal(read_weights(tmp_path / "again" / "head.safetensors")[0]["weight"], head["weight"])


def test_one_line_errors(env, tmp_path, capsys):
    data, runs = env
    assert main(["probe", "--data", str(data), "--encoder", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    assert main(["probe", "--data", str(data), "--encoder", str(runs["joint"]), "--out", str(tmp_path / "o"),
                 "--kshot", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no stored 10-shot subset" in err and "splits.json" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_encoder_normalization_is_the_fine_tuned_models():
    """The probe's torch normalization and a fine-tuned model's NumPy input are one function: equal numbers."""
    from petctfm.inference.normalize import normalized_input

    norm = {"PET": {"clip": [0.0, 30.0], "mean": 1.23456, "std": 2.71828},
            "CT": {"clip": [-1000.0, 1000.0], "mean": -234.567, "std": 456.789}}
    raw = np.random.default_rng(0).normal(0, 500, (2, 6, 5, 4)).astype(np.float32)
    for mode in ("joint", "pet", "ct"):
        enc = P.FrozenEncoder(torch.nn.Identity(), mode, P._norm_table({"preprocessing": {"normalization": norm}},
                                                                         {}, mode), "x", "none")
        mine = enc.normalize(torch.from_numpy(raw)[None])[0].numpy()
        theirs, _ = normalized_input(raw, {"preprocessing": {"normalization": norm}, "data": {"mode": mode}})
        np.testing.assert_array_equal(mine, theirs)
