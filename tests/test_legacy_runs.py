"""Old runs still load: one tiny run of each method, written by the ``petctfm`` commands of the commit named in
``tests/fixtures/legacy_runs/README.md`` (before the method registry), read back through public entry points
only (``load_model``, ``load_segmenter``, ``Predictor``, ``finetune``, ``load_frozen_encoders``,
``PromptSession``), so the test stays valid whatever the loading code looks like inside.

The fixtures are committed files: never regenerate them to make this test pass (a failure here means runs
already on users' disks stop loading).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

import petctfm
from petctfm.train.checkpoint import load_model

RUNS = Path(__file__).parent / "fixtures" / "legacy_runs"
METHODS = ["early_fusion_mae", "finetune_segmentation", "fratmae", "fratmae_segmentation", "promptable"]
SEGMENTERS = ["finetune_segmentation", "fratmae_segmentation"]
PRETRAINED = ["early_fusion_mae", "fratmae"]
STACK_AXIS = {"coronal": 1, "axial": 2}  # FratMAE: the stack axis of (X, Y, Z)


def _step_file(run: Path) -> Path:
    """The latest step folder's weights, found by reading the run folder by hand (not through petctfm)."""
    name = (run / "checkpoints" / "latest").read_text().strip()
    return run / "checkpoints" / name / "model.safetensors"


def _stack_shape(data: dict) -> tuple[int, ...]:
    """FratMAE: one whole-body stack = the grid with the stack axis replaced by ``depth``."""
    shape = [int(g) for g in data["grid"]]
    shape[STACK_AXIS[data.get("stack", "coronal")]] = int(data["depth"])
    return tuple(shape)


def _forward(model: torch.nn.Module, cfg: dict) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(output of one forward pass on a small random input shaped from the config, the expected shape)."""
    torch.manual_seed(0)
    method, data = cfg["method"], cfg["data"]
    with torch.no_grad():
        if method == "early_fusion_mae":
            c = {"joint": 2, "pet": 1, "ct": 1}[data["mode"]]
            patch = tuple(int(p) for p in data["patch_size"])
            block = int(cfg["mask"]["block"])
            grid = torch.rand(1, *(-(-p // block) for p in patch)) < float(cfg["mask"]["ratio"])
            return model(torch.randn(1, c, *patch), grid), (1, c, *patch)
        if method == "finetune_segmentation":
            c = {"joint": 2, "pet": 1, "ct": 1}[data["mode"]]
            patch = tuple(int(p) for p in data["patch_size"])
            return model(torch.randn(1, c, *patch)), (1, 2, *patch)
        if method == "fratmae":
            shape, p = _stack_shape(data), int(cfg["model"]["patch"])
            n = int(np.prod([s // p for s in shape]))
            out = model(torch.randn(2, 2, *shape), torch.tensor([0, 1]), torch.stack([torch.randperm(n)] * 2))
            return out["pred"], (2, n, p**3)
        if method == "fratmae_segmentation":
            shape = tuple(int(p) for p in data["patch_size"])  # the stack shape (native crops)
            assert shape == _stack_shape(data)
            return model(torch.randn(1, 2, *shape)), (1, 2, *shape)
        if method == "promptable":
            c = {"joint": 2, "pet": 1}[data["mode"]]
            patch = tuple(int(p) for p in data["patch_size"])
            prompts = torch.zeros(1, 4, *patch)  # positive clicks, negative clicks, box, previous mask
            prompts[0, 0, patch[0] // 2, patch[1] // 2, patch[2] // 2] = 1
            return model(torch.randn(1, c, *patch), prompts), (1, 1, *patch)
    raise AssertionError(f"no forward pass written for method {method!r}")


def _study(shape=(24, 20, 32), spacing=4.0):
    """A tiny in-memory PET (SUV) / CT (HU) pair on one grid: an elliptic body, one hot lesion."""
    g = np.indices(shape).astype(np.float32)
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    body = (((g[:2] - c[:2]) / (0.8 * c[:2])) ** 2).sum(0) <= 1
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    pet = np.where(body, 1.0, 0.0).astype(np.float32)
    pet[10:14, 8:12, 14:18] = 8.0
    aff = np.diag([spacing, spacing, spacing, 1.0])
    return nib.Nifti1Image(pet, aff), nib.Nifti1Image(ct, aff)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A toy harmonized dataset like the one the runs were trained on (3 cases, 8 mm spacing recorded)."""
    from toy_data import write_toy_dataset

    root = write_toy_dataset(tmp_path_factory.mktemp("legacy") / "data", n_cases=3, shape=(32, 32, 48))
    info = json.loads((root / "dataset.json").read_text())
    info.update(spacing=[8.0, 8.0, 8.0], ct_window=[-1000.0, 1000.0])
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def test_every_method_has_a_fixture():
    assert sorted(p.name for p in RUNS.iterdir() if p.is_dir()) == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_load_model_rebuilds_the_run(method):
    run = RUNS / method
    assert yaml.safe_load((run / "config.yaml").read_text())["task"]["method"] == method
    with safe_open(str(_step_file(run)), framework="pt") as f:
        meta = f.metadata()
    assert meta["petctfm_format"] == "petctfm-weights/1" and json.loads(meta["config"])["method"] == method

    model, cfg = load_model(run)
    assert cfg["method"] == method and not model.training
    want = load_file(str(_step_file(run)))
    have = model.state_dict()
    assert set(have) == set(want)
    for k in want:
        assert torch.equal(have[k], want[k]), k

    out, shape = _forward(model, cfg)
    assert tuple(out.shape) == shape and torch.isfinite(out).all()


@pytest.mark.parametrize("method", SEGMENTERS)
def test_segmenter_loads_best_and_predicts_a_study(method):
    from petctfm.inference.model import load_segmenter

    run = RUNS / method
    model, cfg, path = load_segmenter(run)
    assert cfg["method"] == method and path == run / "best" / "model.safetensors"
    want = load_file(str(path))
    have = model.state_dict()
    assert set(have) == set(want) and all(torch.equal(have[k], want[k]) for k in list(want)[:5])

    pet, ct = _study()
    mask, table, summary = petctfm.Predictor.from_run(run, device="cpu").predict(pet, ct)
    assert mask.shape == pet.shape and mask.dtype == np.uint8
    assert isinstance(table, list) and isinstance(summary, dict)


@pytest.mark.parametrize("method", PRETRAINED)
def test_pretraining_run_finetunes_one_step(method, dataset, tmp_path):
    out = tmp_path / "ft"
    summary = petctfm.finetune(dataset, out, init=RUNS / method, preset="tiny", max_steps=1, progress=False,
                               figure_every=0, device="cpu")
    assert summary["steps"] == 1 and np.isfinite(summary["loss"])
    _, cfg = load_model(out)
    assert cfg["method"] == {"early_fusion_mae": "finetune_segmentation", "fratmae": "fratmae_segmentation"}[method]


@pytest.mark.parametrize("method", PRETRAINED)
def test_pretraining_run_is_a_frozen_encoder(method, dataset):
    from petctfm.data.format import load_dataset_info
    from petctfm.methods.probe import load_frozen_encoders

    run = RUNS / method
    (enc,) = load_frozen_encoders([run], load_dataset_info(dataset))
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    want = load_file(str(_step_file(run)))
    have = enc.backbone.state_dict()
    assert have and all(torch.equal(v, want["backbone." + k]) for k, v in have.items())

    cfg = yaml.safe_load((run / "config.yaml").read_text())["task"]
    shape = _stack_shape(cfg["data"]) if method == "fratmae" else tuple(cfg["data"]["patch_size"])
    raw = torch.rand(1, 2, *shape) * torch.tensor([5.0, 1000.0]).view(1, 2, 1, 1, 1)
    feats = enc.scale_features(raw)
    assert feats and all(torch.isfinite(f).all() for f in feats)


def test_promptable_session_segments_one_click():
    pet, _ = _study()
    session = petctfm.PromptSession.from_run(RUNS / "promptable", pet)
    mask = session.add_point((12, 10, 16), True, object=1)
    assert mask.shape == pet.shape and mask.dtype == bool
    assert session.mask().shape == pet.shape
