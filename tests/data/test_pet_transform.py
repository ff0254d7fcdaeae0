"""PET intensity transform (``data.pet_transform``): clip (the original) vs log1p, one normalization path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petctfm.core.errors import InputError, UsageError
from petctfm.data import format as fmt
from petctfm.data.loader import PatchConfig, PatchDataset, preprocessing_record
from petctfm.harmonize.manifest import normalization_stats
from petctfm.inference.normalize import normalized_input
from toy_data import write_toy_dataset

NORM = {"PET": {"mean": 0.5, "std": 2.0, "clip": [0.0, 20.0], "log1p": {"mean": 0.2, "std": 0.4}},
        "CT": {"mean": -400.0, "std": 500.0, "clip": [-1000.0, 1000.0]}}


def _raw(seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.gamma(0.5, 4.0, (6, 5, 4)) * (1 + 10 * (rng.random((6, 5, 4)) > 0.9)),
                     rng.uniform(-1200, 1500, (6, 5, 4))]).astype(np.float32)


def test_absent_transform_is_the_original_clip_zscore():
    old = {k: {kk: v for kk, v in NORM[k].items() if kk != "log1p"} for k in NORM}  # an old checkpoint's record
    table = fmt.norm_table(old)
    assert table.shape == (2, 5) and not table[:, 4].any()
    x = _raw()
    want = (np.clip(x[0], 0, 20) - 0.5) / 2.0
    np.testing.assert_allclose(fmt.apply_normalization(x, table)[0], want, rtol=1e-6)
    np.testing.assert_allclose(fmt.normalize(x, {"normalization": NORM})[0], want, rtol=1e-6)


def test_log1p_numpy_and_torch_agree_and_ct_is_untouched():
    norm = fmt.select_pet_transform(NORM, "log1p")
    assert norm["PET"] == {"mean": 0.2, "std": 0.4, "clip": [0.0, 20.0], "transform": "log1p"}
    assert norm["CT"]["transform"] == "clip" and norm["CT"]["mean"] == -400.0
    table = fmt.norm_table(norm)
    x = _raw(1)
    y = fmt.apply_normalization(x, table)
    np.testing.assert_allclose(y[0], (np.log1p(np.clip(x[0], 0, 20)) - 0.2) / 0.4, rtol=1e-5)
    np.testing.assert_allclose(y[1], (np.clip(x[1], -1000, 1000) + 400) / 500, rtol=1e-5)
    yt = fmt.apply_normalization(torch.from_numpy(x[None]), table, channel_axis=1)
    np.testing.assert_allclose(yt[0].numpy(), y, rtol=1e-5, atol=1e-6)
    assert abs(y[0]).max() < abs(fmt.apply_normalization(x, fmt.norm_table(NORM))[0]).max()  # tail shrinks


def test_select_pet_transform_errors():
    with pytest.raises(InputError, match="pet_transform"):
        fmt.select_pet_transform(NORM, "sqrt")
    no_stats = {k: {kk: v for kk, v in NORM[k].items() if kk != "log1p"} for k in NORM}
    with pytest.raises(InputError, match="harmonize --finalize"):
        fmt.select_pet_transform(no_stats, "log1p", "ds/dataset.json")
    with pytest.raises(UsageError, match="data.pet_transform='log': must be one of clip, log1p"):
        PatchConfig.from_dict({"pet_transform": "log"})


def test_harmonize_statistics_carry_log1p(tmp_path):
    root = write_toy_dataset(tmp_path / "toy", n_cases=2, shape=(16, 16, 20))
    ids = ["toy000", "toy001"]
    stats = normalization_stats(root, ids, (-1000.0, 1000.0))
    pet = np.concatenate([np.load(root / "cases" / c / "image.npy")[0].ravel() for c in ids]).astype(np.float64)
    lv = np.log1p(np.clip(pet, 0, 20))
    assert stats["PET"]["log1p"]["mean"] == pytest.approx(lv.mean(), abs=1e-5)
    assert stats["PET"]["log1p"]["std"] == pytest.approx(lv.std(), abs=1e-5)
    assert stats["PET"]["mean"] == pytest.approx(np.clip(pet, 0, 20).mean(), abs=1e-5)
    assert "log1p" not in stats["CT"]


def test_patches_and_predict_input_use_the_same_transform(tmp_path):
    root = write_toy_dataset(tmp_path / "toy", n_cases=2, shape=(32, 32, 32))
    info = fmt.load_dataset_info(root)
    info["normalization"]["PET"]["log1p"] = {"mean": 0.3, "std": 0.5}
    fmt.write_dataset_info(root, {k: v for k, v in info.items() if k not in ("format_version", "channels")})
    cfg = PatchConfig.from_dict({"patch_size": 32, "augment": False, "fg_prob": 0.0, "pet_transform": "log1p"})
    ds = PatchDataset(root, cfg, seed=0)
    raw = np.load(root / "cases" / "toy000" / "image.npy")  # the patch is the whole 32^3 volume
    assert ds.case_ids == ["toy000"]  # the toy train split
    item = ds[0]["image"].numpy()
    model_cfg = {"data": {"mode": "joint"}, "preprocessing": preprocessing_record(info, "joint", "log1p")}
    x, bg = normalized_input(raw, model_cfg)
    np.testing.assert_allclose(item, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x[0], (np.log1p(np.clip(raw[0], 0, 30)) - 0.3) / 0.5, rtol=1e-5, atol=1e-6)
    assert bg[0] == pytest.approx(-0.6)  # background (0 SUV) -> (log1p(0) - 0.3) / 0.5
