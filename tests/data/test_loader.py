"""Patch loader: deterministic per (seed, rank, i), ranks differ, shapes, normalization, padding, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petctfm.data import format as fmt
from petctfm.data.loader import PatchConfig, PatchDataset, patch_loader
from petctfm.core.errors import InputError, UsageError
from toy_data import write_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(48, 48, 64))


def _ds(root, seed=0, rank=0, **kw):
    return PatchDataset(root, PatchConfig.from_dict({"patch_size": 32, **kw}), seed=seed, rank=rank)


def test_deterministic_per_seed_rank_index(toy):
    a, b = _ds(toy), _ds(toy)
    for i in (0, 7, 123):
        assert torch.equal(a[i]["image"], b[i]["image"])  # fresh dataset, same (seed, rank, i)
    assert not torch.equal(a[0]["image"], a[1]["image"])
    assert not torch.equal(a[5]["image"], _ds(toy, rank=1)[5]["image"])  # ranks get different streams
    assert not torch.equal(a[5]["image"], _ds(toy, seed=1)[5]["image"])


def test_patch_shape_and_modes(toy):
    assert _ds(toy)[0]["image"].shape == (2, 32, 32, 32)
    pet = _ds(toy, mode="pet")[3]["image"]
    ct = _ds(toy, mode="ct")[3]["image"]
    joint = _ds(toy)[3]["image"]
    assert pet.shape == ct.shape == (1, 32, 32, 32)
    assert torch.equal(joint[0:1], pet) and torch.equal(joint[1:2], ct)  # same sample, channel selection


def test_normalization_applied_exactly(toy):
    """Patch = whole volume, no augmentation: item equals format.normalize(raw image)."""
    ds = PatchDataset(toy, PatchConfig.from_dict({"patch_size": [48, 48, 64], "augment": False, "fg_prob": 0}), seed=0)
    x = ds[0]["image"].numpy()
    info = fmt.load_dataset_info(toy)
    matches = [np.array_equal(x, fmt.normalize(np.asarray(fmt.load_case(toy, c)["image"]), info)) for c in ds.case_ids]
    assert sum(matches) == 1
    ct = x[1]
    assert ct.min() == pytest.approx((-1000 + 400) / 500, abs=1e-6)  # clipped air, normalized


def test_padding_with_background_when_volume_smaller(toy):
    ds = PatchDataset(toy, PatchConfig.from_dict({"patch_size": [64, 64, 64], "augment": False, "fg_prob": 0}), seed=0)
    x = ds[0]["image"].numpy()
    assert x.shape == (2, 64, 64, 64)
    # x: 48 of 64 -> 8 padded voxels on each side, background = lower clip (PET 0 SUV, CT -1000 HU)
    assert np.allclose(x[0, :8], (0 - 0.6) / 1.2) and np.allclose(x[1, :8], (-1000 + 400) / 500)
    assert np.allclose(x[1, -8:], (-1000 + 400) / 500)


def test_foreground_bias_hits_hot_voxels(toy):
    hot = (4.0 - 0.6) / 1.2
    fg = PatchDataset(toy, PatchConfig.from_dict({"patch_size": 16, "augment": False, "fg_prob": 1.0}), seed=0)
    assert all(fg[i]["image"][0].max() >= hot for i in range(10))


def test_augmentation_changes_patch_but_stays_deterministic(toy):
    plain = _ds(toy, augment=False)[4]["image"]
    aug = _ds(toy, augment=True, flip_prob=1.0)[4]["image"]
    assert not torch.equal(plain, aug)
    assert torch.equal(aug, _ds(toy, augment=True, flip_prob=1.0)[4]["image"])


def test_loader_start_sample_and_workers(toy):
    ds = _ds(toy, batch_size=2)
    it = iter(patch_loader(ds, start_sample=4))
    b = next(it)
    assert b["image"].shape == (2, 2, 32, 32, 32)
    assert b["index"].tolist() == [4, 5]
    assert torch.equal(b["image"][1], ds[5]["image"])
    it2 = iter(patch_loader(_ds(toy, batch_size=2), start_sample=4, num_workers=2))
    assert torch.equal(next(it2)["image"], b["image"])  # worker processes give the same stream
    assert torch.equal(next(it2)["image"], next(it)["image"])


def test_wrong_dataset_path_is_one_line_error(tmp_path):
    with pytest.raises(InputError) as e:
        _ds(tmp_path / "nope")
    assert "\n" not in str(e.value) and "nope" in str(e.value)
    with pytest.raises(UsageError, match="data.mode='mri': must be one of joint, pet, ct"):  # a config value: exit 2
        PatchConfig.from_dict({"mode": "mri"})


def test_hot_negative_sampling_centres_on_hot_voxels_outside_lesions(tmp_path):
    """``hot_neg_prob`` 1: every patch is centred on a hot body voxel (SUV >= hot_suv) that is not a lesion;
    with ``hot_neg_prob`` 0 the stream is what it was (same draws)."""
    from petctfm.data import format as fmt
    from petctfm.data.loader import LabeledPatchDataset, PatchConfig
    from toy_data import write_toy_dataset

    toy = write_toy_dataset(tmp_path / "toy", n_cases=2, shape=(40, 40, 36))
    case = fmt.load_case(toy, "toy000")
    img, lab = np.asarray(case["image"]), np.asarray(case["label"]) > 0
    hot = lab.copy()
    hot[:] = (img[0] >= 2.0) & (img[1] > -500) & ~lab  # the toy's "liver" (SUV ~2.5) is hot at 2.0
    assert hot.any() and lab.any()

    def ds(**kw):
        cfg = PatchConfig.from_dict({"patch_size": 8, "augment": False, "hot_suv": 2.0, **kw})
        return LabeledPatchDataset(toy, cfg, ["toy000"], seed=0)

    neg = ds(fg_prob=0.0, hot_neg_prob=1.0)
    cand = neg.hot_negatives("toy000")
    assert len(cand) and hot[tuple(cand.T)].all() and not lab[tuple(cand.T)].any()
    for i in range(20):
        box = neg.crop("toy000", img.shape[1:], neg.rng(i))
        centre = tuple(sl.start + 4 for sl in box)
        # centred on a candidate unless clipped at the border: the patch then still holds a hot negative
        assert hot[box].any()
        if all(4 <= c <= s - 4 for c, s in zip(centre, img.shape[1:])):
            assert hot[centre]
    plain, zero = ds(fg_prob=0.5), ds(fg_prob=0.5, hot_neg_prob=0.0)
    assert [plain.crop("toy000", img.shape[1:], plain.rng(i)) for i in range(10)] == \
        [zero.crop("toy000", img.shape[1:], zero.rng(i)) for i in range(10)]


def test_lesion_balanced_sampling_sees_a_small_lesion_as_often_as_a_large_one(tmp_path):
    """``fg_balance="lesion"``: a case with one 1000-voxel and one 8-voxel lesion gets about half of its
    lesion-centred patches on the small one; voxel balance (nnU-Net's) almost never centres there."""
    from petctfm.data.loader import LabeledPatchDataset

    toy = write_toy_dataset(tmp_path / "toy", n_cases=2, shape=(40, 40, 36))
    d = fmt.case_dir(toy, "toy000")
    lab = np.zeros((40, 40, 36), np.uint8)
    lab[5:15, 5:15, 5:15] = 1  # 1000 voxels
    lab[30:32, 30:32, 28:30] = 1  # 8 voxels, far away
    np.save(d / "label.npy", lab)
    small = np.zeros(lab.shape, bool)
    small[30:32, 30:32, 28:30] = True

    def share_small(balance):
        cfg = PatchConfig.from_dict({"patch_size": 4, "augment": False, "fg_prob": 1.0, "fg_balance": balance})
        ds = LabeledPatchDataset(toy, cfg, ["toy000"], seed=0)
        hits = []
        for i in range(200):
            box = ds.crop("toy000", lab.shape, ds.rng(i))
            hits.append(bool(small[tuple(slice(s.start + 2, s.start + 3) for s in box)].any()))
        return float(np.mean(hits)), ds

    lesion_share, ds = share_small("lesion")
    voxel_share, _ = share_small("voxel")
    assert [len(g) for g in ds.lesions("toy000")] == [512, 8]  # each lesion sub-sampled to at most 512 voxels
    assert 0.35 < lesion_share < 0.65
    assert voxel_share < 0.05
    with pytest.raises(UsageError, match="data.fg_balance"):
        PatchConfig.from_dict({"fg_balance": "organ"})
