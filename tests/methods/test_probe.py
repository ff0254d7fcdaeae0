"""``petctfm probe``: frozen checkpoint encoders, exact k-shot subset, a 1x1x1 head on multi-scale (and
decoder) features, separated (PET-only + CT-only) encoders, the random-init control, mismatched encoders
refused, and the head fit: above chance where lesions are linearly decodable, at chance where they are not."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from toy_data import write_toy_dataset
from petctfm.core.errors import InputError
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


def test_encoder_is_the_checkpoint_and_stays_frozen_while_head_fits(env):
    data, runs = env
    probe, patch = P.build_probe([runs["joint"]], _info(data), None)
    assert patch == 32
    state, cfg, _ = read_weights(runs["joint"] / "model.safetensors")
    enc = probe.encoders[0].backbone
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    assert before and all(torch.equal(v, state["backbone." + k]) for k, v in before.items())
    assert not any(p.requires_grad for p in enc.parameters())

    cfg = P.ProbeConfig(steps=6, fg_prob=1.0, seed=0, voxels_per_patch=64)
    sampler = P.PatchSampler(data, KSHOT5, patch, cfg.fg_prob, cfg.seed)
    x, y = sampler.batch(0, 2)
    assert x.shape == (2, 2, patch, patch, patch) and y.shape == (2, 1, patch, patch, patch) and y.dtype == torch.int64
    assert y.sum() > 0  # fg_prob 1: centred on lesions
    x2, y2 = sampler.batch(0, 2)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a pure function of (seed, step)
    assert x[:, 1].min() < -500  # raw HU, not normalized (each encoder normalizes its own channels)
    fit = P.train_head(probe, sampler, cfg, torch.device("cpu"), prevalence=0.01)
    assert not enc.training
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert fit["n_lesion_voxels"] > 0 and fit["n_voxels"] > fit["n_lesion_voxels"]
    assert fit["train_ap_sampled"] > 0.9  # toy lesions are hot spheres: PET intensity alone separates them
    w = probe.head.weight.detach()
    assert w[0].abs().sum() == 0 and w[1].abs().sum() > 0  # class 0 logit 0, class 1 the fitted regression


def test_sampled_features_equal_the_upsampled_maps(env):
    data, runs = env
    probe, _ = P.build_probe([runs["joint"]], _info(data), 32)
    x = torch.randn(2, 2, 32, 32, 32) * torch.tensor([2.0, 400.0]).view(1, 2, 1, 1, 1)
    coords = [torch.tensor([[0, 0, 0], [31, 31, 31], [5, 17, 30]]), torch.tensor([[10, 3, 7]])]
    with torch.no_grad():
        cat = probe.concat_features(x)
        got = probe.sample_features(x, coords)
    want = torch.cat([cat[b][:, c[:, 0], c[:, 1], c[:, 2]].T for b, c in enumerate(coords)])
    assert got.shape == (4, 128)  # 8+16+32+64 encoder channels + 8 decoder channels
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_head_is_one_linear_1x1x1_conv_on_upsampled_concatenated_scales(env):
    data, runs = env
    probe, patch = P.build_probe([runs["joint"]], _info(data), 32, points="enc")
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    assert isinstance(probe.head, torch.nn.Conv3d) and probe.head.kernel_size == (1, 1, 1)
    assert probe.scale_channels == [[8, 16, 32, 64]] and probe.head.weight.shape == (2, 120, 1, 1, 1)
    assert P.build_probe([runs["joint"]], _info(data), 32, points="enc0,dec")[0].scale_channels == [[8, 8]]
    torch.nn.init.normal_(probe.head.weight)
    x = torch.randn(1, 2, 32, 32, 32) * torch.tensor([2.0, 400.0]).view(1, 2, 1, 1, 1)
    with torch.no_grad():
        cat = probe.concat_features(x)
        assert cat.shape == (1, 120, 32, 32, 32)
        torch.testing.assert_close(probe(x), probe.head(cat), rtol=1e-4, atol=1e-4)


def test_separated_uses_pet_only_and_ct_only_encoders_on_their_channels(env):
    data, runs = env
    info = _info(data)
    probe, _ = P.build_probe([runs["pet"], runs["ct"]], info, 32, points="enc")
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
    assert float(rows[0]["ap"]) > 10 * float(rows[0]["prevalence"])  # hot toy lesions: far above chance
    assert 0 <= summary["dice_pooled"] <= 1 and summary["fit"]["iterations"] > 0
    head, cfg, _ = read_weights(out / "head.safetensors")
    assert head["weight"].shape == (2, 128, 1, 1, 1) and cfg["train_cases"] == KSHOT5
    assert cfg["encoders"][0]["mode"] == "joint" and cfg["probe"]["steps"] == 3
    # one seed drives head initialization and patches: a second run gives the same head
    assert main(["probe", "--data", str(data), "--encoder", str(runs["joint"]), "--out", str(tmp_path / "again"),
                 "--kshot", "5", "--steps", "3", "--bootstrap", "50", "--no-progress"]) == 0
    assert torch.equal(read_weights(tmp_path / "again" / "head.safetensors")[0]["weight"], head["weight"])


def test_one_line_errors(env, tmp_path, capsys):
    data, runs = env
    assert main(["probe", "--data", str(data), "--encoder", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err
    assert main(["probe", "--data", str(data), "--encoder", str(runs["joint"]), "--out", str(tmp_path / "o"),
                 "--kshot", "10", "--no-progress"]) == 3
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
        table = torch.from_numpy(P.norm_table(norm, P.MODES[mode]))
        mine = P.apply_normalization(torch.from_numpy(raw)[None][:, list(P.MODES[mode])], table, channel_axis=1)[0]
        mine = mine.numpy()
        theirs, _ = normalized_input(raw, {"preprocessing": {"normalization": norm}, "data": {"mode": mode}})
        np.testing.assert_array_equal(mine, theirs)


# ---- the head fit on constructed feature sets (no network): can the probe tell? ----


def _features(decodable: bool, n: int = 40000, prevalence: float = 0.01, seed: int = 0):
    """(x (n, 16), y (n,)): 16 features, lesion voxels ~1 %; with ``decodable`` feature 3 is shifted by +2 SD on
    lesion voxels (and on a different scale from the rest), otherwise every feature is independent of y."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int8)
    x = rng.normal(0, 1, (n, 16)) * rng.uniform(0.1, 50, 16) + rng.normal(0, 100, 16)
    if decodable:
        x[:, 3] += 2.0 * y * x[:, 3].std()
    return x.astype(np.float32), y


@pytest.mark.parametrize("decodable", [True, False])
def test_head_beats_chance_only_where_the_signal_is_linearly_decodable(decodable):
    from petctfm.evaluate.metrics import average_precision

    x, y = _features(decodable)
    xt, yt = _features(decodable, seed=1)  # held-out voxels, same construction
    fit = P.fit_logistic(x, y)
    ap = average_precision(P.decision_scores(fit, xt), yt)
    prevalence = yt.mean()
    if decodable:
        assert ap > 20 * prevalence, (ap, prevalence)
        assert int(np.argmax(np.abs(fit["w"]))) == 3
        thr, dice = P.dice_threshold(P.decision_scores(fit, x), y, y.mean())
        assert dice > 0.2
    else:
        assert ap < 2.5 * prevalence, (ap, prevalence)


def test_class_balance_matters_at_low_prevalence():
    """Unbalanced at 0.1 % prevalence, a weak signal is ranked like the balanced fit; the balanced fit's
    intercept sits near 0 (equal priors), the threshold then restores the true prevalence."""
    x, y = _features(True, n=60000, prevalence=0.002)
    fit = P.fit_logistic(x, y)
    s = P.decision_scores(fit, x)
    assert abs(np.median(s[y == 1]) + np.median(s[y == 0])) < 4  # centred between the classes
    thr, _ = P.dice_threshold(s, y, y.mean())
    assert thr > 0  # rare class: the Dice-optimal threshold is above the equal-prior boundary


def test_fold_head_reproduces_the_fitted_scores_and_threshold(env):
    data, runs = env
    probe, _ = P.build_probe([runs["joint"]], _info(data), 32, points="enc0")
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (500, 8)).astype(np.float32)
    y = (x[:, 0] > 5).astype(np.int8)
    fit = P.fit_logistic(x, y)
    P.fold_head(probe, fit, threshold=0.7)
    w, b = probe.head.weight.detach()[:, :, 0, 0, 0].double().numpy(), probe.head.bias.detach().double().numpy()
    logits = x @ w.T + b
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], P.decision_scores(fit, x) - 0.7, rtol=1e-5, atol=1e-4)


def test_one_class_only_is_a_clear_error():
    with pytest.raises(P.InputError, match="one class"):
        P.fit_logistic(np.zeros((10, 2)), np.zeros(10))


def test_random_control_and_width_matched_arms(env, tmp_path):
    data, runs = env
    info = _info(data)
    probe, _ = P.build_probe([f"random:{runs['joint']}"], info, 32, points="enc", seed=3)
    trained, _ = P.build_probe([runs["joint"]], info, 32, points="enc")
    a = probe.encoders[0].backbone.state_dict()
    b = trained.encoders[0].backbone.state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert probe.encoders[0].source.startswith("random:") and probe.encoders[0].mode == "joint"
    again, _ = P.build_probe([f"random:{runs['joint']}"], info, 32, points="enc", seed=3)
    assert all(torch.equal(v, again.encoders[0].backbone.state_dict()[k]) for k, v in a.items())  # seeded
    # width-matched: two joint networks side by side have the head width of PET-only + CT-only
    two, _ = P.build_probe([runs["joint"], f"random:{runs['joint']}"], info, 32)
    sep, _ = P.build_probe([runs["pet"], runs["ct"]], info, 32)
    assert two.in_channels == sep.in_channels == 256
    out = tmp_path / "rnd"
    assert main(["probe", "--data", str(data), "--encoder", f"random:{runs['joint']}", "--out", str(out),
                 "--kshot", "5", "--steps", "3", "--bootstrap", "20", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["encoders"][0]["source"].startswith("random:")


def test_mismatched_encoders_are_refused(env, tmp_path, tiny_mae_run, capsys):
    data, runs = env
    from petctfm.train.checkpoint import save_weights

    state, cfg, _ = read_weights(runs["pet"] / "model.safetensors")
    variants = {
        "patch": lambda c: c["data"].update(patch_size=[48, 48, 48]),
        "spacing": lambda c: c["preprocessing"]["harmonize"].update(spacing=[2.0, 2.0, 3.0]),
        "normalization": lambda c: c["preprocessing"]["normalization"]["CT"].update(mean=-123.0),
    }
    from petctfm.methods.early_fusion_mae.mae import build_model

    for name, change in variants.items():
        c = json.loads(json.dumps(cfg))
        change(c)
        model = build_model(c)
        model.load_state_dict({k: v for k, v in state.items()})
        save_weights(model, tmp_path / name / "model.safetensors", c, step=1)
        with pytest.raises(P.InputError, match={"patch": "patch size", "spacing": "voxel spacing",
                                                "normalization": "normalization"}[name]):
            P.build_probe([runs["joint"], tmp_path / name], _info(data), 32)
    assert main(["probe", "--data", str(data), "--encoder", str(runs["ct"]), "--encoder", str(tmp_path / "spacing"),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "voxel spacing" in err and "\n" not in err


def test_probe_points_are_parsed_strictly():
    assert P.parse_points("all", 4) == [0, 1, 2, 3, "dec"]
    assert P.parse_points("dec,enc2,enc2", 4) == ["dec", 2]
    for bad in ("enc7", "decoder", ""):
        with pytest.raises(P.InputError):
            P.parse_points(bad, 4)


def test_points_of_an_encoder_without_decoder():
    """'all' of an encoder-only backbone (FratMAE's twin ViT) is its encoder scales; 'dec' is refused."""
    assert P.parse_points("all", 3, has_decoder=False) == [0, 1, 2]
    assert P.parse_points("all", 3) == [0, 1, 2, "dec"]
    with pytest.raises(InputError, match="no decoder"):
        P.parse_points("enc0,dec", 3, has_decoder=False)
