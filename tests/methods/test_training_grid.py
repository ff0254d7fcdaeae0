"""The segmentation plan's training grid (``--plan-spacing``, round ten of docs/segmentation-recipe.md): a dataset
copied once to a coarser spacing by harmonize's rules, a planned run that trains on it, and predictions that come
back on the dataset's own grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from toy_data import write_toy_dataset

from petctfm.core.config import ConfigError
from petctfm.core.errors import InputError, UsageError
from petctfm.data import format as fmt
from petctfm.harmonize.respace import respace_dataset, respaced_dir, spacing_tag
from petctfm.methods.segmentation import plan as P


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("grid") / "toy", n_cases=4, shape=(40, 24, 56), organs=True)


def test_train_spacing_rule():
    assert P.train_spacing([2.0, 2.0, 3.0], 6) == [6.0, 6.0, 6.0]
    assert P.train_spacing([4.0, 4.0, 8.0], 6) == [6.0, 6.0, 8.0]  # an axis already coarser keeps its spacing
    assert P.train_spacing([6.0, 6.0, 6.0], 6) is None and P.train_spacing([4.0, 4.0, 4.0], None) is None
    with pytest.raises(ConfigError, match="min_spacing"):
        P.train_spacing([4.0, 4.0, 4.0], 0)
    assert P.TARGETS["cpu"]["min_spacing"] == P.MIN_SPACING_CPU and P.TARGETS["gpu"]["min_spacing"] is None
    assert spacing_tag([6, 6, 6]) == "6x6x6" and spacing_tag([1.5, 1.5, 3]) == "1.5x1.5x3"


def test_respace_dataset_keeps_cases_splits_and_normalization(toy):
    out = respace_dataset(toy, [4, 4, 4])
    assert out == respaced_dir(toy, [4, 4, 4]) == toy / "respaced" / "4x4x4"
    src, dst = fmt.load_dataset_info(toy), fmt.load_dataset_info(out)
    assert dst["spacing"] == [4.0, 4.0, 4.0] and dst["normalization"] == src["normalization"]
    assert dst["respaced_from"] == {"dataset": str(toy.resolve()), "spacing": src["spacing"]}
    assert dst["organ_labels"] == src["organ_labels"] and dst["num_cases"] == 4
    assert fmt.load_splits(out) == fmt.load_splits(toy)
    for cid in ("toy000", "toy003"):
        a, b = fmt.load_case(toy, cid), fmt.load_case(out, cid)
        assert b["meta"]["spacing"] == [4.0, 4.0, 4.0] and b["meta"]["respaced_from"] == {"spacing": [2.0, 2.0, 2.0]}
        assert b["meta"]["harmonize"]["spacing"] == [4.0, 4.0, 4.0]
        # half the voxels per axis (harmonize recrops to the body, so at most half plus its margin)
        assert all(s2 <= s1 // 2 + 4 for s1, s2 in zip(a["image"].shape[1:], b["image"].shape[1:]))
        assert b["label"].shape == b["organs"].shape == b["image"].shape[1:]
        # the lesions survive (toy lesions are spheres of radius >= 2 voxels at 2 mm), about 1/8 of the voxels
        assert 0.05 < b["label"].sum() / a["label"].sum() < 0.3
        assert set(np.unique(b["organs"])) <= set(np.unique(a["organs"]))
        # the body's SUV is kept (linear resampling): the mean PET inside the body within 10 %
        body_a, body_b = a["image"][1] > -500, b["image"][1] > -500
        assert abs(a["image"][0][body_a].mean() / b["image"][0][body_b].mean() - 1) < 0.1
    # made once: a second call reuses the copy
    stamp = (out / "dataset.json").stat().st_mtime_ns
    assert respace_dataset(toy, [4, 4, 4]) == out and (out / "dataset.json").stat().st_mtime_ns == stamp
    assert respace_dataset(toy, [2, 2, 2]) == toy  # already at that grid
    with pytest.raises(InputError, match="three positive numbers"):
        respace_dataset(toy, [4, 4])


def test_a_planned_run_trains_on_the_coarser_grid_and_predicts_on_the_datasets(toy, tmp_path):
    from petctfm.methods.segmentation.api import finetune, finetune_configs
    from petctfm.predict.split import predict_split

    with pytest.raises(UsageError, match="needs a plan"):
        finetune_configs(toy, tmp_path / "x", init="scratch", backbone="nnunet-plain", preset="tiny", plan_spacing=4)
    run = tmp_path / "run"
    summary = finetune(toy, run, backbone="nnunet-plain", preset="tiny", plan="cpu", plan_spacing=4,
                       plan_step_seconds=0, max_steps=2, progress=False, figure_every=0, checkpoint_every=2,
                       overrides={"val.sw_batch_size": 1})
    assert summary["steps"] == 2
    task = yaml.safe_load((run / "config.yaml").read_text())["task"]
    assert task["dataset"] == str(respaced_dir(toy, [4, 4, 4]))
    assert task["plan"]["dataset"] == {"source": str(toy), "trained_on": task["dataset"]}
    assert task["plan"]["rule"]["min_spacing"] == 4.0 and task["plan"]["fingerprint"]["spacing"] == [4.0, 4.0, 4.0]
    assert task["preprocessing"]["harmonize"]["spacing"] == [4.0, 4.0, 4.0]  # what petctfm predict resamples to
    # predictions on the source dataset come back on its 2 mm grid, one per case of the split
    paths = predict_split(run, toy, split="val", out_dir=tmp_path / "pred")
    import nibabel as nib

    case = fmt.load_case(toy, "toy003")
    img = nib.load(str(paths[0]))
    assert paths[0].name == "toy003.nii.gz" and img.shape == case["label"].shape
    np.testing.assert_allclose(img.affine, np.asarray(case["meta"]["affine"]))
    # on the copy itself the model predicts directly (its own grid)
    own = predict_split(run, task["dataset"], split="val", out_dir=tmp_path / "pred4")
    assert nib.load(str(own[0])).shape == fmt.load_case(task["dataset"], "toy003")["label"].shape
    # 0 = the dataset's own spacing
    cfg0, _ = finetune_configs(toy, tmp_path / "y", init="scratch", backbone="nnunet-plain", preset="tiny",
                               plan="cpu", plan_step_seconds=0, plan_spacing=0)
    assert cfg0["dataset"] == str(toy) and cfg0["plan"]["rule"]["min_spacing"] is None


def test_a_read_only_dataset_gets_its_copy_in_the_run_folder(toy, tmp_path, monkeypatch):
    import os

    from petctfm.methods.segmentation.api import finetune_configs

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(toy) else real(p, mode, *a, **k))
    cfg, _ = finetune_configs(toy, tmp_path / "run", init="scratch", backbone="nnunet-plain", preset="tiny",
                              plan="cpu", plan_step_seconds=0, plan_spacing=8)
    assert cfg["dataset"] == str(tmp_path / "run" / "respaced" / "8x8x8")
    assert json.loads((tmp_path / "run" / "respaced" / "8x8x8" / "dataset.json").read_text())["spacing"] == [8.0] * 3


def test_the_cpu_target_trains_a_planned_lesion_network_at_6_mm(toy, tmp_path):
    """The ``cpu`` target's default grid (round ten, confirmed at equal CPU time): a planned lesion run trains on
    the dataset's 6 mm copy; the ``gpu`` target keeps the dataset's grid."""
    from petctfm.methods.segmentation.api import finetune_configs

    cfg, _ = finetune_configs(toy, tmp_path / "cpu", init="scratch", backbone="nnunet-plain", preset="tiny",
                              plan="cpu", plan_step_seconds=0)
    assert cfg["dataset"] == str(respaced_dir(toy, [6, 6, 6])) and cfg["plan"]["rule"]["min_spacing"] == 6.0
    assert fmt.load_dataset_info(cfg["dataset"])["spacing"] == [6.0, 6.0, 6.0]
    gpu, _ = finetune_configs(toy, tmp_path / "gpu", init="scratch", backbone="nnunet-plain", preset="tiny",
                              plan="gpu")
    assert gpu["dataset"] == str(toy) and gpu["plan"]["rule"]["min_spacing"] is None


def test_a_given_patch_is_not_timed_on_the_coarser_grid_either(toy, tmp_path, monkeypatch):
    """An explicit patch replaces the plan's, so nothing is timed, with or without ``plan_spacing``."""
    from petctfm.methods.segmentation.api import finetune_configs

    def no_timing(*a, **k):
        raise AssertionError("a given patch must not be timed")

    monkeypatch.setattr(P, "measure_step", no_timing)
    cfg, _ = finetune_configs(toy, tmp_path / "run", init="scratch", backbone="nnunet-plain", preset="tiny",
                              plan="cpu", plan_spacing=4, overrides=[("data.patch_size", [16, 16, 16])])
    assert cfg["data"]["patch_size"] == [16, 16, 16] and "timing" not in cfg["plan"]
    assert cfg["dataset"] == str(respaced_dir(toy, [4, 4, 4]))


def test_a_held_out_sites_cases_are_respaced_too(toy, tmp_path):
    import shutil

    from petctfm.io.atomic import atomic_write_json

    src = tmp_path / "held"
    shutil.copytree(toy, src, ignore=shutil.ignore_patterns("respaced"))
    sp = fmt.load_splits(src)
    # toy002 only in the held-out split (toy003 is val and test)
    sp["train"], sp["holdout"], sp["holdout_site"] = ["toy000", "toy001"], ["toy002"], "site_x"
    atomic_write_json(src / fmt.SPLITS_JSON, sp)
    out = respace_dataset(src, [4, 4, 4])
    assert fmt.load_splits(out)["holdout"] == sp["holdout"]
    assert fmt.load_case(out, sp["holdout"][0])["meta"]["spacing"] == [4.0, 4.0, 4.0]
    assert fmt.load_dataset_info(out)["num_cases"] == 4


def test_the_targets_default_grid_applies_to_planned_lesion_networks_only(toy, tmp_path, monkeypatch):
    """A target's ``min_spacing`` (``cpu``: 6 mm; set to 4 mm here) reaches a lesion run whose network the plan
    plans; an organ run, or a given network (as a label-efficiency experiment's scratch arm), keeps the dataset's
    grid unless the run asks (``plan_spacing``)."""
    from petctfm.methods.segmentation.api import finetune_configs

    monkeypatch.setitem(P.TARGETS["cpu"], "min_spacing", 4.0)

    def trained_on(**kw):
        cfg, _ = finetune_configs(toy, tmp_path / "run", init="scratch", backbone="nnunet-plain", preset="tiny",
                                  plan="cpu", plan_step_seconds=0, **kw)
        return cfg["dataset"]

    assert trained_on() == str(respaced_dir(toy, [4, 4, 4]))
    assert trained_on(overrides=[("model.overrides", {})]) == str(toy)
    assert trained_on(task="organs") == str(toy)
    assert trained_on(task="organs", plan_spacing=4) == str(respaced_dir(toy, [4, 4, 4]))
    assert trained_on(plan_spacing=0) == str(toy)


def test_harmonize_respace_command(toy, capsys):
    """``petctfm harmonize --respace DATASET --spacing X Y Z``: the same copy a plan makes (reused when it exists);
    without --spacing, a usage error (exit 2)."""
    from petctfm.cli.main import main

    assert main(["harmonize", "--respace", str(toy), "--spacing", "4", "4", "4"]) == 0
    assert str(respaced_dir(toy, [4, 4, 4])) in capsys.readouterr().out
    assert fmt.load_dataset_info(respaced_dir(toy, [4, 4, 4]))["spacing"] == [4.0, 4.0, 4.0]
    assert main(["harmonize", "--respace", str(toy)]) == 2
    assert "--spacing X Y Z" in capsys.readouterr().err
