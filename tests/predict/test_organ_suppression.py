"""Organ suppression (``postprocess.suppress_organs``, docs/predict.md, docs/segmentation-recipe.md round eight):
lesion components that lie mostly in the organs the same network predicts (its auxiliary classes) are removed,
in every prediction path."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.core.config import ConfigError
from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.inference.postprocess import (aux_organ_map, organ_map_suppression, suppress_components,
                                           suppress_in_organ_map, suppress_in_organs, suppression)

AUX = {"liver": ORGAN_LABELS["liver"], "spleen": ORGAN_LABELS["spleen"], "bone": ORGAN_LABELS["bone"]}


def _cfg(names, fraction=0.5, aux=AUX):
    return {"task": {"name": "lesions", "aux_classes": dict(aux)},
            "postprocess": {"suppress_organs": list(names), "suppress_fraction": fraction}}


def test_suppression_reads_the_config_and_checks_the_names():
    assert suppression({}) is None and suppression(_cfg([])) is None  # old runs, and off
    sup = suppression(_cfg(["spleen", "bone"], 0.7))
    assert sup == {"organs": ["spleen", "bone"], "channels": [3, 4], "aux_channels": 3, "fraction": 0.7}
    with pytest.raises(ValueError, match="heart"):
        suppression(_cfg(["heart"]))
    with pytest.raises(ValueError, match="none"):
        suppression(_cfg(["liver"], aux={}))


def test_aux_organ_map_leaves_the_lesion_channel_out():
    probs = np.zeros((5, 4, 1, 1), np.float32)  # background, lesion, liver, spleen, bone
    probs[:, 0, 0, 0] = [0.2, 0.5, 0.1, 0.15, 0.05]  # lesion wins; among the rest background
    probs[:, 1, 0, 0] = [0.1, 0.6, 0.05, 0.2, 0.05]  # lesion wins; among the rest the spleen
    probs[:, 2, 0, 0] = [0.1, 0.1, 0.7, 0.05, 0.05]  # the liver
    probs[:, 3, 0, 0] = [0.3, 0.3, 0.1, 0.1, 0.2]  # background beats bone
    np.testing.assert_array_equal(aux_organ_map(probs)[:, 0, 0], [0, 3, 2, 0])
    with pytest.raises(ValueError, match="K >= 3"):
        aux_organ_map(probs[:2])


def _two_lesions():
    """Class probabilities (5, 12, 6, 6): lesion A (x 0..3, 4 x 3 x 3 = 36 voxels), three quarters of it on a
    spleen-like region; lesion B (x 7..10) half on the spleen; everything else background."""
    probs = np.zeros((5, 12, 6, 6), np.float32)
    probs[0] = 1.0
    for xs in (slice(0, 4), slice(7, 11)):
        probs[:, xs, 1:4, 1:4] = 0.0
        probs[1, xs, 1:4, 1:4] = 0.8
        probs[0, xs, 1:4, 1:4] = 0.1
        probs[3, xs, 1:4, 1:4] = 0.05  # not the spleen: background beats it
    probs[3, 0:3, 1:4, 1:4] = 0.15  # A: x 0..2 (27 of 36 voxels) spleen over background
    probs[3, 7:9, 1:4, 1:4] = 0.15  # B: x 7..8 (18 of 36 voxels)
    probs[0, 0:3, 1:4, 1:4] = probs[0, 7:9, 1:4, 1:4] = 0.02
    return probs


def test_components_mostly_in_the_organs_are_removed():
    probs = _two_lesions()
    assert (probs[1] > 0.5).sum() == 72
    out = suppress_in_organs(probs, suppression(_cfg(["spleen"], 0.5)))
    assert out.dtype == np.float32 and out.shape == probs.shape[1:]
    assert (out > 0.5).sum() == 0  # A: 75 % >= 50 %; B: exactly 50 % >= 50 %
    out = suppress_in_organs(probs, suppression(_cfg(["spleen"], 0.6)))
    assert (out[0:4] > 0.5).sum() == 0 and (out[7:11] > 0.5).sum() == 36  # only A
    np.testing.assert_array_equal(out[7:11], probs[1, 7:11])  # a kept component keeps its probabilities
    out = suppress_in_organs(probs, suppression(_cfg(["liver", "bone"])))  # not these organs: nothing removed
    np.testing.assert_array_equal(out, probs[1])
    out = suppress_in_organs(probs, suppression(_cfg(["spleen"], 0.6)), threshold=0.9)  # no component above 0.9
    np.testing.assert_array_equal(out, probs[1])
    with pytest.raises(ValueError, match="outputs 4 classes"):
        suppress_in_organs(probs[:4], suppression(_cfg(["spleen"])))


def test_a_separate_organ_maps_rule_is_the_same_rule():
    """Round nine: the organs from another model's label map. The same two lesions as above, the spleen now a
    label map: the same components go at the same fractions, and the names are the organ model's."""
    probs = _two_lesions()
    organs = np.where(aux_organ_map(probs) == 3, ORGAN_LABELS["spleen"], 0).astype(np.uint8)
    mask = (probs[1] > 0.5).astype(np.uint8)
    table = {"liver": ORGAN_LABELS["liver"], "spleen": ORGAN_LABELS["spleen"]}
    for fraction in (0.5, 0.6, 0.8):
        sup = organ_map_suppression(["spleen"], table, fraction)
        assert sup == {"organs": ["spleen"], "labels": [ORGAN_LABELS["spleen"]], "fraction": fraction,
                       "source": "organ_model"}
        out = suppress_in_organ_map(mask, organs, sup)
        want = suppress_in_organs(probs, suppression(_cfg(["spleen"], fraction))) > 0.5
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out > 0, want)
    assert suppress_in_organ_map(mask, organs, organ_map_suppression(["spleen"], table, 0.8)).sum() == 72  # 75 % < 80 %
    assert suppress_in_organ_map(mask, organs, organ_map_suppression(["liver"], table)).sum() == 72
    with pytest.raises(ValueError, match="heart"):
        organ_map_suppression(["heart"], table)
    with pytest.raises(ValueError, match="suppress_fraction"):
        organ_map_suppression(["liver"], table, 0.0)
    with pytest.raises(ValueError, match="shape"):
        suppress_components(mask, organs[:-1] > 0, 0.5)
    assert not suppress_components(np.zeros((3, 3, 3)), np.ones((3, 3, 3), bool), 0.5).any()


def test_finetune_config_refuses_organs_the_network_does_not_predict():
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG, validate_config

    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["task"] = {"name": "lesions", "classes": {}, "aux_classes": dict(AUX)}
    cfg["postprocess"] = {"suppress_organs": ["liver"], "suppress_fraction": 0.5}
    validate_config(cfg)
    cfg["postprocess"]["suppress_organs"] = ["heart"]
    with pytest.raises(ConfigError, match="heart"):
        validate_config(cfg)
    cfg["postprocess"] = {"suppress_organs": ["liver"], "suppress_fraction": 0.0}
    with pytest.raises(ConfigError, match="suppress_fraction"):
        validate_config(cfg)


@pytest.fixture(scope="module")
def aux_model(tmp_path_factory):
    from quick_train import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("aux_run"), tmp_path_factory.mktemp("aux_data"), aux=AUX)


def test_every_prediction_path_applies_the_configs_suppression(aux_model, tmp_path):
    """predict_case (what validation and predict_split call) and the Predictor remove only what the rule
    removes: with the suppression, the mask is the plain mask without its components mostly in the organ."""
    import torch

    from petctfm.data import format as fmt
    from petctfm.inference.normalize import normalized_input
    from petctfm.inference.postprocess import lesion_mask
    from petctfm.inference.sliding_window import lesion_probability, predict_case
    from petctfm.predict.predictor import Predictor
    from petctfm.train.checkpoint import load_model

    model, cfg = load_model(aux_model / "model.safetensors")
    data = cfg["dataset"]
    case = fmt.load_case(data, fmt.load_splits(data)["train"][0])
    x, bg = normalized_input(np.asarray(case["image"]), cfg)
    probs = lesion_probability(model, x, 16, 0.25, "cpu", bg=bg, channel=None)
    # the lowest threshold at which the plain mask has a component: the rule then has something to judge
    thr = float(np.quantile(probs[1], 0.99))
    for names in (["liver"], ["liver", "spleen", "bone"]):
        sup = suppression({**cfg, "postprocess": {"suppress_organs": names}})
        prob, mask = predict_case(model, torch.from_numpy(x), 16, 0.25, "cpu", bg=bg, suppress=sup, threshold=thr)
        expect = suppress_in_organs(probs, sup, thr)
        np.testing.assert_allclose(prob, expect, atol=1e-6)
        assert set(np.unique(prob[prob != probs[1]])) <= {0.0}  # only zeroed, nothing else changed
    pred = Predictor.load(aux_model, "cpu", overlap=0.25, suppress_organs=["liver", "spleen"])
    assert pred.suppress["organs"] == ["liver", "spleen"]
    assert pred.describe()["inference"]["suppress_organs"] == ["liver", "spleen"]
    assert Predictor.load(aux_model, "cpu").suppress is None  # the config names none
    with pytest.raises(InputError, match="heart"):
        Predictor.load(aux_model, "cpu", suppress_organs=["heart"])
    plain = lesion_mask(probs[1], [8, 8, 8], threshold=thr)
    kept = lesion_mask(suppress_in_organs(probs, pred.suppress, thr), [8, 8, 8], threshold=thr)
    assert (kept <= plain).all()


def test_predict_split_and_validation_follow_the_config(aux_model, tmp_path):
    import nibabel as nib

    from petctfm.methods.segmentation.validation import validate
    from petctfm.predict.split import predict_split
    from petctfm.train.checkpoint import load_model, save_weights

    model, cfg = load_model(aux_model / "model.safetensors")
    cfg2 = {**cfg, "postprocess": {**(cfg.get("postprocess") or {}), "suppress_organs": ["liver", "spleen", "bone"],
                                   "suppress_fraction": 0.01}}  # any voxel in an organ removes a component
    save_weights(model, tmp_path / "sup" / "model.safetensors", cfg2, step=5)
    data = cfg["dataset"]
    ids = fmt_ids(data)
    plain = predict_split(aux_model, data, split="train", out_dir=tmp_path / "p0", device="cpu")
    sup = predict_split(tmp_path / "sup", data, split="train", out_dir=tmp_path / "p1", device="cpu")
    assert [p.name for p in plain] == [p.name for p in sup] == [f"{c}.nii.gz" for c in ids]
    for a, b in zip(plain, sup):
        assert (np.asarray(nib.load(b).dataobj) <= np.asarray(nib.load(a).dataobj)).all()
    res, res0 = validate(model, cfg2, data, split="train"), validate(model, cfg, data, split="train")
    assert res["n_cases"] == res0["n_cases"] == len(ids)
    assert res["fp_volume_ml"] <= res0["fp_volume_ml"] + 1e-9 and res["fn_volume_ml"] >= res0["fn_volume_ml"] - 1e-9


def fmt_ids(data):
    from petctfm.data import format as fmt

    return list(fmt.load_splits(data)["train"])


def test_cli_suppress_organs_usage(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    code = main(["predict", "--model", str(tmp_path / "m"), "--pet", "a.nii.gz", "--ct", "b.nii.gz",
                 "--out", str(tmp_path / "out"), "--suppress-organs", ","])
    assert code == 2 and "--suppress-organs" in capsys.readouterr().err
