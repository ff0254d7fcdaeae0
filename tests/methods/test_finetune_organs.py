"""``petctfm finetune --task organs``: organ classes from organs.npy (or a --labels name table), class-balanced
patches, multi-class DiceCE with deep supervision, per-organ validation, organ predictions of a split, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from petctfm.cli.main import main
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data.loader import LabeledPatchDataset, PatchConfig
from petctfm.inference.model import output_classes
from toy_data import write_toy_dataset

TINY = ["--preset", "tiny", "--patch", "16", "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def organs_ds(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("orgdata"), n_cases=4, shape=(32, 32, 40), organs=True)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    p = tmp_path_factory.mktemp("labels") / "organs.json"
    # an nnU-Net dataset.json name table works as is (background dropped); the order sets the output channels
    p.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "bone": 11, "spleen": 2}}))
    return p


def test_organ_patches_are_class_indices_and_class_balanced(organs_ds):
    cfg = PatchConfig.from_dict({"patch_size": [16, 16, 16], "fg_prob": 1.0, "augment": False})
    ds = LabeledPatchDataset(organs_ds, cfg, ["toy000", "toy001"], seed=0, label_file="organs.npy",
                             label_values=[ORGAN_LABELS["liver"], ORGAN_LABELS["bone"], ORGAN_LABELS["spleen"]])
    item = ds[0]
    assert item["label"].dtype == torch.int64 and set(item["label"].unique().tolist()) <= {0, 1, 2, 3}
    # candidates: PER_CLASS per present class, so every class is a patch centre equally often
    cand = ds.foreground("toy000")
    lab = ds.case_label("toy000")
    classes = lab[tuple(cand.T)]
    counts = np.bincount(classes, minlength=4)[1:]
    assert counts.tolist() == [ds.PER_CLASS] * 3
    # stored values are mapped, values outside the table are background
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}


def test_organ_finetune_trains_validates_and_predicts_organ_values(organs_ds, table, tmp_path, capsys):
    run = tmp_path / "org"
    rc = main(["finetune", "--data", str(organs_ds), "--out", str(run), "--init", "scratch", "--task", "organs",
               "--labels", str(table), "--max-steps", "3", "--figure-every", "3", "--checkpoint-every", "3", *TINY])
    assert rc == 0, capsys.readouterr().err
    task = yaml.safe_load((run / "config.yaml").read_text())["task"]
    assert task["task"] == {"name": "organs", "classes": {"liver": 1, "bone": 11, "spleen": 2}, "aux_classes": {}}
    assert list(output_classes(task).values()) == [0, 1, 11, 2]
    val = [json.loads(x) for x in (run / "val.jsonl").read_text().splitlines()]
    assert set(val[-1]["organs"]) == {"liver", "bone", "spleen"} and val[-1]["n_cases"] == 1
    assert 0.0 <= val[-1]["dice"] <= 1.0
    from petctfm.train.checkpoint import load_model

    model, cfg = load_model(run / "best" / "model.safetensors")
    assert model(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 4, 16, 16, 16)  # background + 3 organs
    out = tmp_path / "pred"
    assert main(["finetune", "--out", str(run), "--predict", "test", "--pred-out", str(out),
                 "--data", str(organs_ds)]) == 0
    pred = np.asarray(nib.load(out / "toy003.nii.gz").dataobj)
    assert pred.shape == (32, 32, 40) and set(np.unique(pred).tolist()) <= {0, 1, 2, 11}


@pytest.mark.slow
def test_organ_finetune_with_deep_supervision_and_default_classes(organs_ds, tmp_path):
    from petctfm.methods.segmentation.api import finetune

    run = tmp_path / "ds"
    summary = finetune(organs_ds, run, backbone="nnunet-plain", preset="tiny", task="organs", max_steps=2,
                       progress=False, figure_every=0,
                       overrides={"data.patch_size": [16, 16, 16], "model.overrides.deep_supervision": True,
                                  "model.overrides.strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                  "model.overrides.n_stages": 3, "model.overrides.features_per_stage": [8, 16, 32],
                                  "model.overrides.kernel_sizes": [[3, 3, 3]] * 3})
    assert summary["steps"] == 2 and np.isfinite(summary["loss"])
    task = yaml.safe_load((run / "config.yaml").read_text())["task"]
    assert task["task"]["classes"] == {k: v for k, v in ORGAN_LABELS.items() if v}  # the dataset's organ labels
    assert task["data"]["flip_axes"] == [1, 2]  # kidney_left / lung_right...: no left-right flips


def test_left_right_classes_are_never_flipped_left_right(monkeypatch):
    """Organ classes that name a side: training augmentation and TTA flip only axes 1 and 2 (a left-right flip
    would turn the left kidney into the right one and keep its label)."""
    from monai.transforms import RandFlipd

    from petctfm.data.augment import build_augment
    from petctfm.data.loader import PatchConfig
    from petctfm.inference import sliding_window as sw
    from petctfm.methods.segmentation.api import lateral_classes

    assert lateral_classes({"liver": 1, "kidney_left": 3, "Lung Right": 5, "brightness": 9}) == ["kidney_left", "Lung Right"]
    axes = [t.flipper.spatial_axis for t in build_augment(PatchConfig.from_dict({"flip_axes": [1, 2]}), label=True).transforms
            if isinstance(t, RandFlipd)]
    assert axes == [1, 2]
    assert len([t for t in build_augment(PatchConfig.from_dict({}), label=True).transforms if isinstance(t, RandFlipd)]) == 3
    seen = []
    monkeypatch.setattr(sw, "_window_probability", lambda m, xin, *a, **k: seen.append(1) or np.zeros((3, *xin.shape[1:]), np.float32))
    model = torch.nn.Conv3d(2, 3, 1)
    sw.predict_labels(model, np.zeros((2, 8, 8, 8), np.float32), 8, [0, 1, 2], device="cpu", tta=8, flip_axes=(1, 2))
    assert len(seen) == 4  # identity, 1, 2, (1, 2): no flip with axis 0


@pytest.mark.parametrize("args, needle, code", [
    (["--labels", "X"], "--labels", 2),  # a name table without --task organs
    (["--task", "organs", "--labels", "MISSING.json"], "MISSING.json", 3),
    (["--task", "organs", "--labels", "BAD"], "region labels", 3),
    (["--task", "bones"], "--task", 2),
])
def test_organ_errors_are_one_line(organs_ds, tmp_path, capsys, args, needle, code):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": {"background": 0, "liver": [1, 2]}}))
    args = [str(bad) if a == "BAD" else str(tmp_path / a) if a == "MISSING.json" else a for a in args]
    with pytest.raises(SystemExit) if code == 2 and args[:1] == ["--task"] else _nothing():
        rc = main(["finetune", "--data", str(organs_ds), "--out", str(tmp_path / "r"), "--init", "scratch",
                   *args, "--max-steps", "1", *TINY])
        assert rc == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_organ_task_needs_organ_maps(tmp_path, capsys):
    plain = write_toy_dataset(tmp_path / "plain", n_cases=3, shape=(24, 24, 24))
    rc = main(["finetune", "--data", str(plain), "--out", str(tmp_path / "r"), "--init", "scratch", "--task", "organs",
               "--max-steps", "1", *TINY])
    err = capsys.readouterr().err
    assert rc == 3 and "organs.npy" in err and len(err.strip().splitlines()) == 1


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_class_probabilities_flip_tta_and_label_values():
    """predict_labels: the argmax of every class's probability, in the classes' label values; the 8-flip TTA of
    the class probabilities is exactly flip-equivariant on one window (the class axis is not flipped)."""
    from petctfm.inference.sliding_window import lesion_probability, predict_labels
    from petctfm.methods.segmentation.model import build_model
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG

    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
    cfg["model"]["backbone"] = "unet-resenc-tiny"
    cfg["task"] = {"name": "organs", "classes": {"liver": 1, "bone": 11, "spleen": 2}}
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = np.random.default_rng(0).normal(0, 1, (2, 16, 16, 16)).astype(np.float32)
    prob = lesion_probability(model, x, 16, device="cpu", channel=None)
    assert prob.shape == (4, 16, 16, 16) and np.allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    labels = predict_labels(model, x, 16, [0, 1, 11, 2], device="cpu")
    np.testing.assert_array_equal(labels, np.array([0, 1, 11, 2], np.uint8)[prob.argmax(axis=0)])
    flipped = np.ascontiguousarray(np.flip(x, (1, 3)))
    a = lesion_probability(model, x, 16, device="cpu", tta=8, channel=None)
    b = lesion_probability(model, flipped, 16, device="cpu", tta=8, channel=None)
    np.testing.assert_allclose(np.flip(b, (1, 3)), a, atol=1e-5)
    with pytest.raises(ValueError, match="4 classes"):
        predict_labels(model, x, 16, [0, 1], device="cpu")
