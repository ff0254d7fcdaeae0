"""Lesion post-processing: small components removed, the minimum volume chosen on validation and carried by the
best checkpoint into every prediction path."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.core.config import ConfigError
from petctfm.data import format as fmt
from petctfm.inference.normalize import normalized_input
from petctfm.inference.postprocess import (choose_min_ml, lesion_mask, min_lesion_ml, min_voxels,
                                           remove_small_components)
from petctfm.inference.sliding_window import predict_case
from petctfm.methods.segmentation.config import FinetuneConfig
from petctfm.predict.split import predict_split
from petctfm.train.checkpoint import load_model
from toy_data import write_toy_dataset


def test_min_voxels_from_spacing():
    assert min_voxels([2, 2, 2], 0.008) == 1  # one 8 mm^3 voxel
    assert min_voxels([2, 2, 2], 0.1) == 13  # 100 / 8 = 12.5 -> 13
    assert min_voxels([4, 4, 4], 1.0) == 16  # 1000 / 64 = 15.6 -> 16
    assert min_voxels([4, 4, 4], 0.0) == 1


def test_remove_small_components_keeps_large_ones_18_connected():
    m = np.zeros((20, 20, 20), np.uint8)
    m[1, 1, 1] = 1  # 1 voxel
    m[5:7, 5:7, 5:7] = 1  # 8 voxels
    m[10:13, 10:13, 10:13] = 1  # 27 voxels
    m[16, 16, 16] = m[17, 17, 17] = 1  # corner neighbours: two components of 1 under 18-connectivity
    m[16, 2, 2] = m[17, 3, 2] = 1  # edge neighbours: one component of 2
    sp = [2.0, 2.0, 2.0]  # 0.008 ml per voxel
    np.testing.assert_array_equal(remove_small_components(m, sp, 0.0), m)
    out = remove_small_components(m, sp, 0.05)  # >= 7 voxels
    assert out.dtype == np.uint8 and out.sum() == 8 + 27 and out[5, 5, 5] and out[11, 11, 11] and not out[1, 1, 1]
    out = remove_small_components(m, sp, 0.016)  # >= 2 voxels: the edge pair stays, the corner pair goes
    assert out[16, 2, 2] and out[17, 3, 2] and not out[16, 16, 16] and not out[17, 17, 17]
    assert remove_small_components(m, sp, 1.0).sum() == 0
    assert remove_small_components(np.zeros((4, 4, 4)), sp, 1.0).sum() == 0


def test_lesion_mask_thresholds_then_removes():
    prob = np.zeros((10, 10, 10), np.float32)
    prob[0, 0, 0] = 0.9
    prob[4:7, 4:7, 4:7] = 0.6
    prob[8, 8, 8] = 0.5  # not above the threshold
    assert lesion_mask(prob, [1, 1, 1]).sum() == 28
    assert lesion_mask(prob, [1, 1, 1], min_ml=0.002).sum() == 27
    assert lesion_mask(prob, [1, 1, 1], threshold=0.7).sum() == 1


def test_choose_min_ml_best_then_smallest():
    assert choose_min_ml({0.0: 0.3, 0.5: 0.4, 1.0: 0.35}) == 0.5
    assert choose_min_ml({1.0: 0.4, 0.25: 0.4, 0.0: 0.1}) == 0.25  # a tie: the least post-processing
    assert choose_min_ml({0.5: float("nan"), 0.1: float("nan")}) == 0.1  # no case with a lesion
    assert choose_min_ml({0.0: float("nan"), 2.0: 0.2}) == 2.0
    with pytest.raises(ValueError):
        choose_min_ml({})


def test_config_section_checked_and_old_configs_default_to_none():
    assert min_lesion_ml({}) == 0.0 and min_lesion_ml({"postprocess": {"min_lesion_ml": 0.5}}) == 0.5
    cfg = FinetuneConfig.from_dict({"postprocess": {"choose_min_lesion_ml": [0, 0.5]}}).check()
    assert cfg.postprocess.min_lesion_ml == 0.0 and cfg.postprocess.choose_min_lesion_ml == [0.0, 0.5]
    with pytest.raises(ConfigError, match="postprocess.min_lesion_ml"):
        FinetuneConfig.from_dict({"postprocess": {"min_lesion_ml": -1}}).check()
    with pytest.raises(ConfigError, match="choose_min_lesion_ml"):
        FinetuneConfig.from_dict({"postprocess": {"choose_min_lesion_ml": [0, -0.5]}}).check()
    with pytest.raises(ConfigError, match="postprocess"):
        FinetuneConfig.from_dict({"task": {"name": "organs", "classes": {"liver": 1}},
                                  "postprocess": {"min_lesion_ml": 1.0}}).check()


def test_finetune_chooses_min_volume_on_validation_and_predictions_apply_it(tmp_path):
    toy = write_toy_dataset(tmp_path / "data", n_cases=5, shape=(32, 32, 40))
    run = tmp_path / "ft"
    cands = [0.0, 0.05, 100.0]  # 100 ml removes every toy lesion: never the best while any lesion is found
    assert main(["finetune", "--data", str(toy), "--out", str(run), "--init", "scratch", "--backbone", "unet-resenc-tiny", "--preset",
                 "tiny", "--patch", "16", "--no-progress", "--seed", "1", "--max-steps", "12",
                 "--checkpoint-every", "6", "--figure-every", "6",
                 "--set", f"postprocess.choose_min_lesion_ml={json.dumps(cands)}"]) == 0
    val = [json.loads(x) for x in (run / "val.jsonl").read_text().splitlines()]
    assert val and all(set(map(float, v["dice_by_min_lesion_ml"])) == set(cands) for v in val)
    for v in val:  # the reported Dice is the chosen candidate's
        table = {float(k): d for k, d in v["dice_by_min_lesion_ml"].items()}
        assert v["min_lesion_ml"] == choose_min_ml(table)
        assert v["dice"] == pytest.approx(table[v["min_lesion_ml"]], nan_ok=True)
    best = json.loads((run / "best" / "best.json").read_text())
    chosen = next(v for v in val if v["step"] == best["step"])["min_lesion_ml"]
    model, cfg = load_model(run / "best" / "model.safetensors")
    assert cfg["postprocess"]["min_lesion_ml"] == chosen == best["min_lesion_ml"]  # the best checkpoint carries it
    assert cfg["postprocess"]["choose_min_lesion_ml"] == cands
    # predict_split applies it: equal to thresholding and removing the components by hand
    case = fmt.load_case(toy, "toy004")
    x, bg = normalized_input(np.asarray(case["image"]), cfg)
    prob, _ = predict_case(model, x, 16, float(cfg["val"]["overlap"]), "cpu", bg=bg)
    expect = remove_small_components(prob > 0.5, case["meta"]["spacing"], chosen)
    (path,) = predict_split(run, toy, "test", tmp_path / "pred")
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), expect)
    assert math.isfinite(best["dice"])
