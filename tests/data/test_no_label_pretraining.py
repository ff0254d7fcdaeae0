"""Self-supervised pretraining never reads a label: an instrumented run of the early-fusion MAE (patches,
training steps, checkpoints, reconstruction figures, resume) fails if anything opens ``label.npy``; the
image-only patch-centre candidates (``data.sampling``) behave as configured."""

from __future__ import annotations

import builtins
import io
import os

import numpy as np
import pytest

from petctfm.core.errors import UsageError
from petctfm.data import format as fmt
from petctfm.data.loader import LabeledPatchDataset, PatchConfig, PatchDataset
from toy_data import write_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(40, 40, 36))


@pytest.fixture
def no_labels(monkeypatch):
    """Every way petctfm reads a case (``open``, ``io.open``, ``os.open``, ``numpy.load``, ``format.load_case``)
    records and refuses ``label.npy``. Yields the list of attempted reads."""
    seen: list[str] = []

    def guard(name):
        if isinstance(name, (str, bytes, os.PathLike)) and "label.npy" in os.fsdecode(name):
            seen.append(os.fsdecode(name))
            raise AssertionError(f"pretraining opened a label: {name}")

    def wrap(fn):
        def inner(file, *a, **k):
            guard(file)
            return fn(file, *a, **k)
        return inner

    monkeypatch.setattr(builtins, "open", wrap(builtins.open))
    monkeypatch.setattr(io, "open", wrap(io.open))
    monkeypatch.setattr(os, "open", wrap(os.open))
    monkeypatch.setattr(np, "load", wrap(np.load))

    def load_case(root, case_id, mmap=True):
        seen.append(f"load_case({case_id})")
        raise AssertionError("pretraining called format.load_case (it opens label.npy)")

    monkeypatch.setattr(fmt, "load_case", load_case)
    yield seen


def test_guard_catches_a_label_read(toy, no_labels):
    """The instrument itself: a supervised dataset, which does read labels, trips it."""
    ds = LabeledPatchDataset(toy, PatchConfig.from_dict({"patch_size": 16, "fg_prob": 1.0}), ["toy000"], seed=0)
    with pytest.raises(AssertionError):
        ds[0]
    assert no_labels


@pytest.mark.parametrize("sampling", ["suv", "body"])
def test_pretraining_run_reads_no_label(toy, no_labels, tmp_path, sampling):
    from petctfm.methods.early_fusion_mae.api import pretrain

    out = tmp_path / "run"
    # fg_prob 1: every patch is centred on an image-derived candidate (the code path that used to read labels)
    summary = pretrain(toy, out, "tiny", max_steps=4, progress=False,
                       overrides={"data.fg_prob": 1.0, "data.sampling": sampling, "train.checkpoint_every": 2,
                                  "train.figure_every": 2, "train.log_every": 1})
    assert summary["steps"] == 4
    assert list((out / "figures").glob("recon_step*.png")) and (out / "checkpoints").is_dir()
    summary = pretrain(None, out, "tiny", max_steps=6, resume=True, progress=False)
    assert summary["steps"] == 6
    assert no_labels == []


def test_suv_sampling_centres_on_hot_voxels_and_body_on_body(toy):
    def ds(**kw):
        return PatchDataset(toy, PatchConfig.from_dict({"patch_size": 8, "augment": False, "fg_prob": 1.0, **kw}),
                            seed=0)

    img = np.load(fmt.case_dir(toy, "toy000") / "image.npy")
    hot = ds(sampling="suv").foreground("toy000")
    assert len(hot) and (img[0][tuple(hot.T)] >= 4.0).all()
    n_hot = ds(sampling="suv").foreground_mask("toy000").sum()
    n_q = ds(sampling="suv", hot_quantile=0.5).foreground_mask("toy000").sum()
    n_body = ds(sampling="body").foreground_mask("toy000").sum()
    assert n_body == (img[1] > -500).sum() and n_body > n_q > n_hot > 0  # the body's median SUV is far below 4
    assert abs(n_q / n_body - 0.5) < 0.05
    body = ds(sampling="body").foreground("toy000")
    assert len(body) == 4096 and (img[1][tuple(body.T)] > -500).all()
    with pytest.raises(UsageError, match="data.sampling='lesion': must be one of suv, body"):
        PatchConfig.from_dict({"sampling": "lesion"})
    with pytest.raises(UsageError, match=r"data.hot_quantile=1.5: must be in \(0, 1\)"):
        PatchConfig.from_dict({"hot_quantile": 1.5})
