"""``petctfm stage``: Mann-Whitney AUC and balanced accuracy against hand-computed values, the whole-body
feature vector, and the command end to end (files, excluded negatives, feature cache)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from toy_data import write_toy_dataset
from petctfm.methods import staging as S


def test_auc_hand_computed_including_ties():
    # positives 0.35 (beats 0.1 only) and 0.8 (beats both): 3 of 4 pairs
    assert S.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts 1/2: pos 0.5 vs negs {0.5, 0.2} -> 0.5 + 1; pos 0.9 -> 2; (3.5) / 4
    assert S.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert S.roc_auc([0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert S.roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0 and S.roc_auc([0, 0, 1], [0.9, 0.2, 0.1]) == 0.0
    # 3 pos x 2 neg, one tie: pos {0.7, 0.4, 0.4} vs neg {0.4, 0.1}: 2 + 1.5 + 1.5 = 5 of 6
    assert S.roc_auc([1, 1, 1, 0, 0], [0.7, 0.4, 0.4, 0.4, 0.1]) == pytest.approx(5 / 6)
    assert math.isnan(S.roc_auc([1, 1], [0.2, 0.3]))


def test_accuracy_balanced_accuracy_and_bootstrap():
    y, pred = [0, 0, 0, 1], [0, 0, 1, 1]
    assert S.accuracy(y, pred) == 0.75
    assert S.balanced_accuracy(y, pred) == pytest.approx((2 / 3 + 1) / 2)
    m = S.classification_metrics(y, [0.1, 0.2, 0.6, 0.9], n_resamples=200, seed=1)
    assert m["accuracy"]["value"] == 0.75 and m["auc"]["value"] == 1.0
    assert m["accuracy"]["ci_low"] <= 0.75 <= m["accuracy"]["ci_high"]
    again = S.classification_metrics(y, [0.1, 0.2, 0.6, 0.9], n_resamples=200, seed=1)
    assert again == m  # seeded


STAGES = {"toy000": "early", "toy001": "advanced", "toy002": "early", "toy003": "advanced",
          "toy004": "early", "toy005": "advanced", "toy006": "early", "toy007": "advanced", "toy008": "none"}
SPLITS = {"train": ["toy000", "toy001", "toy002", "toy003"], "val": ["toy004", "toy005"],
          "test": ["toy006", "toy007", "toy008"], "fractions": {}, "kshot": {}}


@pytest.fixture(scope="module")
def env(tiny_mae_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    data = write_toy_dataset(root / "data", n_cases=9, shape=(32, 32, 40))
    (data / "splits.json").write_text(json.dumps(SPLITS))
    lines = ["case_id,split,site,stage"] + [f"{c},x,toy,{s}" for c, s in STAGES.items()]
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    return data, tiny_mae_run(root / "mae", data)


def test_case_vector_pools_two_deepest_scales(env):
    from petctfm.data.format import load_case, load_dataset_info
    from petctfm.methods.probe import background, load_frozen_encoders

    data, run = env
    info = load_dataset_info(data)
    encs = load_frozen_encoders([run], info)
    img = np.asarray(load_case(data, "toy000")["image"])
    v = S.case_vector(encs, img, 32, background(info), torch.device("cpu"), scales=2)
    assert v.shape == (2 * 2 * (64 + 32),) and np.isfinite(v).all()
    # layout [mean over tiles | max over tiles], each [avg64, max64, avg32, max32]: max-over-tiles >= mean
    half = len(v) // 2
    assert (v[half:] >= v[:half] - 1e-5).all()
    assert S.case_vector(encs, img, 32, background(info), torch.device("cpu"), scales=1).shape == (2 * 2 * 64,)


def _mlp_probabilities(weights, x: np.ndarray) -> np.ndarray:
    """P(advanced) of raw features ``x`` (N, D) by the saved stage MLP, in NumPy (standardize -> Linear -> ReLU
    -> Linear -> sigmoid; dropout is off at inference)."""
    from petctfm.train.checkpoint import read_weights

    sd = {k: v.double().numpy() for k, v in read_weights(weights)[0].items()}
    h = np.maximum((x - sd["mean"]) / sd["std"] @ sd["mlp.0.weight"].T + sd["mlp.0.bias"], 0.0)
    return 1.0 / (1.0 + np.exp(-(h @ sd["mlp.3.weight"].T + sd["mlp.3.bias"])[:, 0]))


def test_stage_end_to_end_files_and_cache(env, tmp_path, monkeypatch):
    from petctfm.data.format import load_case, load_dataset_info
    from petctfm.methods.probe import background, load_frozen_encoders

    data, run = env
    out = tmp_path / "stage"
    args = ["stage", "--data", str(data), "--encoder", str(run), "--out", str(out), "--bootstrap", "100",
            "--max-epochs", "60", "--no-progress"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert m["n"] == 2 and m["n_train"] == 4 and m["n_val"] == 2 and m["feature_dim"] == 384
    assert m["n_advanced"] == 1 and m["n_early"] == 1
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["case_id"] for r in rows] == ["toy006", "toy007"]  # the 'none' case is excluded
    assert [r["stage"] for r in rows] == ["early", "advanced"] and [r["label"] for r in rows] == ["0", "1"]
    probs = np.array([float(r["prob_advanced"]) for r in rows])
    pred = np.array([int(r["pred"]) for r in rows])
    assert ((probs > 0) & (probs < 1)).all() and (pred == (probs >= 0.5)).all()

    # the cached vectors are the encoder's: two (a train and a test case) recomputed here, outside the command
    with np.load(out / "features.npz") as z:
        cached = dict(zip(z["case_ids"].tolist(), z["features"]))
    assert sorted(cached) == sorted(c for c, s in STAGES.items() if s != "none")
    assert all(v.shape == (384,) for v in cached.values())
    info = load_dataset_info(data)
    encs = load_frozen_encoders([run], info)
    for cid in ("toy000", "toy007"):
        img = np.asarray(load_case(data, cid)["image"])
        np.testing.assert_allclose(cached[cid], S.case_vector(encs, img, 32, background(info), torch.device("cpu")),
                                   rtol=1e-4, atol=1e-5)
    # the saved MLP on the cached test vectors gives exactly the written probabilities (right vector, right row)
    np.testing.assert_allclose(_mlp_probabilities(out / "mlp.safetensors", np.stack([cached["toy006"],
                                                                                      cached["toy007"]])),
                               probs, rtol=1e-4, atol=1e-6)

    # the metrics, by hand from the predictions: early = toy006 (label 0), advanced = toy007 (label 1)
    right = pred == np.array([0, 1])
    assert m["accuracy"]["value"] == pytest.approx(right.mean())
    assert m["balanced_accuracy"]["value"] == pytest.approx((float(right[0]) + float(right[1])) / 2)
    assert m["sensitivity_early"] == float(right[0]) and m["sensitivity_advanced"] == float(right[1])
    auc = 1.0 if probs[1] > probs[0] else 0.5 if probs[1] == probs[0] else 0.0  # one positive, one negative
    assert m["auc"]["value"] == auc
    for k in ("accuracy", "balanced_accuracy", "auc"):
        assert m[k]["ci_low"] <= m[k]["value"] <= m[k]["ci_high"], (k, m[k])

    # early stopping on the val loss: the best epoch is the minimum of history.json; training stops `patience`
    # epochs after it, or at --max-epochs
    t, patience = m["training"], m["config"]["patience"]
    hist = json.loads((out / "history.json").read_text())
    val = [h["val_loss"] for h in hist]
    assert t["early_stopping"] is True and len(hist) == t["epochs_run"]
    assert t["best_epoch"] == int(np.argmin(val)) and t["best_val_loss"] == pytest.approx(min(val))
    assert m["config"]["max_epochs"] == 60 and t["epochs_run"] == min(60, t["best_epoch"] + 1 + patience)

    # re-run: every vector comes from the cache (computing one would fail) and the result is identical
    monkeypatch.setattr(S, "case_vector", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["accuracy"] == m["accuracy"] and again["auc"] == m["auc"]
    assert [float(r["prob_advanced"]) for r in csv.DictReader((out / "predictions.csv").open())] == probs.tolist()


def test_stage_errors(env, tmp_path, capsys):
    data, _ = env
    assert main(["stage", "--data", str(data), "--encoder", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing" in err and "\n" not in err
