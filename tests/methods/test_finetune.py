"""``petctfm finetune``: encoder transfer, exact label subsets, learning, validation + best checkpoint,
frozen encoder, NIfTI predictions scored by ``petctfm evaluate``, one-line errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from petctfm.data import format as fmt
from petctfm.data.loader import LabeledPatchDataset, PatchConfig
from petctfm.core.errors import InputError
from petctfm.inference.normalize import normalized_input
from petctfm.inference.sliding_window import predict_case
from petctfm.predict.split import predict_split
from petctfm.core.config import deep_merge
from petctfm.methods.segmentation.presets import get_preset
from petctfm.methods.segmentation.model import LesionSegmenter, build_model, layer_decay_groups
from petctfm.methods.segmentation.task import DEFAULT_CONFIG, FinetuneTask, resolve_subset
from petctfm.models.encoders import encoder_stages
from petctfm.io.atomic import atomic_write_json
from petctfm.train.checkpoint import load_model, read_weights
from toy_data import write_toy_dataset

FAST = ["--preset", "tiny", "--patch", "16", "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """5 cases (4 train, 1 val = test) with stored fractions 50/100 % and a 1-shot subset."""
    root = write_toy_dataset(tmp_path_factory.mktemp("ftdata"), n_cases=5, shape=(32, 32, 40))
    sp = json.loads((root / fmt.SPLITS_JSON).read_text())
    sp["fractions"] = {"50": ["toy001", "toy003"], "100": sp["train"]}
    sp["kshot"] = {"1": ["toy002"]}
    atomic_write_json(root / fmt.SPLITS_JSON, sp)
    return root


@pytest.fixture(scope="module")
def mae(toy, tmp_path_factory, tiny_mae_run):
    run = tiny_mae_run(tmp_path_factory.mktemp("mae"), toy, steps=1)
    return run / "model.safetensors"


def _task(toy, init, **over):
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"]["patch_size"] = [16, 16, 16]
    cfg["init"]["source"] = str(init)
    for k, v in over.items():
        cfg[k].update(v)
    return FinetuneTask(cfg, toy)


def _enc(state):
    return {k.removeprefix("backbone."): v for k, v in state.items()
            if k.removeprefix("backbone.").startswith(("input_block.", "downsamples.", "bottleneck."))}


def _dec(state):
    return {k.removeprefix("backbone."): v for k, v in state.items()
            if k.removeprefix("backbone.").startswith(("upsamples.", "output_block."))}


def test_pretrained_encoder_loaded_decoder_fresh(toy, mae):
    mae_state, _, _ = read_weights(mae)
    torch.manual_seed(0)
    model = _task(toy, mae).build_model()
    own = model.state_dict()
    enc, mae_enc = _enc(own), _enc(mae_state)
    assert enc and set(enc) == set(mae_enc)
    for k in enc:
        assert torch.equal(enc[k], mae_enc[k]), k
    dec, mae_dec = _dec(own), _dec(mae_state)
    same_shape = [k for k in dec if k in mae_dec and dec[k].shape == mae_dec[k].shape]
    assert same_shape and all(not torch.equal(dec[k], mae_dec[k]) for k in same_shape)
    assert own["backbone.output_block.conv.conv.weight"].shape[0] == 2  # background / lesion head
    scratch = _task(toy, "scratch").build_model().state_dict()
    assert not torch.equal(_enc(scratch)["input_block.conv1.conv.weight"], mae_enc["input_block.conv1.conv.weight"])


def test_subsets_are_exactly_the_stored_ones(toy):
    sp = fmt.load_splits(toy)
    assert resolve_subset(toy, 0.5) == ("fraction50", sp["fractions"]["50"])
    assert resolve_subset(toy, 50) == ("fraction50", sp["fractions"]["50"])
    assert resolve_subset(toy, kshot=1) == ("kshot1", ["toy002"])
    assert resolve_subset(toy) == ("train", sp["train"])
    for over, want in (({"name": "fraction50", "cases": sp["fractions"]["50"]}, {"toy001", "toy003"}),
                       ({"name": "kshot1", "cases": ["toy002"]}, {"toy002"})):
        ds = _task(toy, "scratch", subset=over).dataset()
        assert {ds.case_of(i) for i in range(64)} == want  # every draw from the subset, and all of it
    with pytest.raises(InputError, match=r"no stored 30% label fraction \(stored: 50%, 100%\)"):
        resolve_subset(toy, 0.3)
    with pytest.raises(InputError, match="no stored 5-shot subset"):
        resolve_subset(toy, kshot=5)


def test_labeled_patches_deterministic_and_aligned(toy):
    ds = _task(toy, "scratch", data={"fg_prob": 1.0, "affine_prob": 1.0}).dataset()
    a, b = ds[7], ds[7]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["image"].shape == (2, 16, 16, 16) and a["label"].shape == (1, 16, 16, 16)
    assert a["label"].dtype == torch.int64 and set(a["label"].unique().tolist()) <= {0, 1}
    hot_in, hot_out = [], []
    for i in range(8):  # lesion-centred patches; flips/affine applied to image and label together
        it = ds[i]
        m = it["label"][0].bool()
        assert m.any()
        hot_in.append(it["image"][0][m].mean())
        hot_out.append(it["image"][0][~m].mean())
    assert min(hot_in) > max(hot_out)  # lesions are the hot PET voxels in the toy data


def test_layer_decay_groups_and_stages():
    model = build_model(deep_merge(DEFAULT_CONFIG, {"model": {"backbone": "unet-resenc-tiny"}}))
    stages = encoder_stages(model)
    assert len(stages) == 4  # input block, 2 down-sampling stages, bottleneck (filters 8-16-32-64)
    groups = layer_decay_groups(model, lr=1.0, decay=0.5, weight_decay=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.backbone.input_block.conv1.conv.weight)]["lr"] == pytest.approx(0.5 ** 4)
    assert by_param[id(model.backbone.bottleneck.conv1.conv.weight)]["lr"] == pytest.approx(0.5)
    assert by_param[id(model.backbone.output_block.conv.conv.weight)]["lr"] == 1.0
    assert by_param[id(model.backbone.output_block.conv.conv.bias)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_finetune_learns_validates_keeps_best_and_predictions_score(toy, mae, tmp_path, capsys):
    run = tmp_path / "ft"
    assert main(["finetune", "--data", str(toy), "--out", str(run), "--init", str(mae), "--fraction", "1.0", *FAST,
                 "--max-steps", "24", "--log-every", "1", "--checkpoint-every", "12", "--figure-every", "10"]) == 0
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 24 and np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses
    val = [json.loads(x) for x in (run / "val.jsonl").read_text().splitlines()]
    # every 10 steps, and the final weights (the budget ended between two validations)
    assert [v["step"] for v in val] == [10, 20, 24] and all(0.0 <= v["dice"] <= 1.0 for v in val)
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["dice"] == max(v["dice"] for v in val)
    model, cfg = load_model(run / "best" / "model.safetensors")
    assert isinstance(model, LesionSegmenter) and cfg["subset"]["cases"] == fmt.load_splits(toy)["fractions"]["100"]
    assert read_weights(run / "best" / "model.safetensors")[2] is not None
    # the best weights reproduce the logged val Dice
    case = fmt.load_case(toy, "toy004")
    x, bg = normalized_input(np.asarray(case["image"]), cfg)
    prob, label = predict_case(model, x, 16, 0.5, "cpu", bg=bg)
    assert prob.shape == label.shape == (32, 32, 40) and prob.dtype == np.float32
    gt = np.asarray(case["label"]) > 0
    dice = 2 * (label.astype(bool) & gt).sum() / (label.sum() + gt.sum())
    assert dice == pytest.approx(best["dice"], abs=1e-6)
    # NIfTI predictions with the case affine, scored by petctfm evaluate on the test split
    pred = tmp_path / "pred"
    paths = predict_split(run, toy, "test", pred)
    assert [p.name for p in paths] == ["toy004.nii.gz"]
    img = nib.load(paths[0])
    np.testing.assert_allclose(img.affine, np.asarray(case["meta"]["affine"]))
    np.testing.assert_array_equal(np.asarray(img.dataobj), label)
    assert main(["finetune", "--out", str(run), "--data", str(toy), "--predict", "test"]) == 0  # the CLI route
    np.testing.assert_array_equal(np.asarray(nib.load(run / "pred_test" / "toy004.nii.gz").dataobj), label)
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(toy), "--split", "test", "--out", str(tmp_path / "ev"),
                 "--bootstrap", "10"]) == 0
    assert f"Dice {best['dice']:.3f}" in capsys.readouterr().out


def test_frozen_encoder_unchanged_after_training(toy, mae, tmp_path):
    run = tmp_path / "frozen"
    assert main(["finetune", "--data", str(toy), "--out", str(run), "--init", str(mae), "--kshot", "1", *FAST,
                 "--freeze-encoder", "--max-steps", "3", "--checkpoint-every", "1", "--keep-checkpoints", "0",
                 "--figure-every", "0"]) == 0
    mae_enc = _enc(read_weights(mae)[0])
    s1 = read_weights(run / "checkpoints" / "step_0000001" / "model.safetensors")[0]
    s3 = read_weights(run / "checkpoints" / "step_0000003" / "model.safetensors")[0]
    for k, v in _enc(s3).items():
        assert torch.equal(v, mae_enc[k]), k
    assert any(not torch.equal(v, _dec(s1)[k]) for k, v in _dec(s3).items())  # the decoder did train


def test_layer_decay_trains_with_scaled_groups(toy, mae, tmp_path):
    """--layer-decay 0.5: the trainer's AdamW holds the task's groups, the input stage at lr * 0.5**4 (4 encoder
    stages) under the same schedule as the head, and resume restores the same groups."""
    from petctfm.train.checkpoint import read_state

    run = tmp_path / "ld"
    argv = ["finetune", "--data", str(toy), "--out", str(run), "--init", str(mae), "--kshot", "1", *FAST,
            "--layer-decay", "0.5", "--checkpoint-every", "2", "--figure-every", "0", "--set", "train.lr=0.01",
            "--set", "train.warmup_steps=0", "--set", "train.schedule_steps=10"]
    assert main([*argv, "--max-steps", "2"]) == 0
    groups = read_state(run / "checkpoints" / "step_0000002")["optimizer"]["param_groups"]
    scales = sorted({round(g["lr_scale"], 6) for g in groups})
    assert scales == [0.0625, 0.125, 0.25, 0.5, 1.0]
    base = [g["lr"] for g in groups if g["lr_scale"] == 1.0][0]
    assert 0 < base < 0.01  # cosine-decayed
    for g in groups:
        assert g["lr"] == pytest.approx(base * g["lr_scale"])
    assert main([*argv, "--max-steps", "4", "--resume"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert rows[-1]["step"] == 4 and np.isfinite(rows[-1]["loss"])


def _err(capsys, argv, code=3):
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_one_line_errors(toy, mae, tmp_path, capsys):
    base = ["finetune", "--data", str(toy), "--preset", "tiny", "--no-progress"]
    err = _err(capsys, [*base, "--out", str(tmp_path / "a"), "--init", str(mae), "--fraction", "0.3"])
    assert "no stored 30% label fraction" in err and "50%, 100%" in err
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    assert "not a petctfm checkpoint" in _err(capsys, [*base, "--out", str(tmp_path / "b"), "--init", str(foreign)])
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello")
    assert str(junk) in _err(capsys, [*base, "--out", str(tmp_path / "c"), "--init", str(junk)])
    # a missing argument is a usage error (exit 2), worded as the flag (from scratch without a preset: no
    # backbone to take; with --preset the preset's is used, tests/train/test_stop_and_preset.py)
    assert "--backbone: required when" in _err(capsys, ["finetune", "--data", str(toy), "--no-progress", "--out",
                                                        str(tmp_path / "d"), "--init", "scratch"], 2)
    assert "mode" in _err(capsys, [*base, "--out", str(tmp_path / "e"), "--init", str(mae), "--mode", "pet"])
    # a config value out of range is a usage error (exit 2) naming the flag, the value and what is allowed
    assert "--layer-decay 1.5: must be in (0, 1]" in _err(capsys, [*base, "--out", str(tmp_path / "f"), "--init",
                                                                   str(mae), "--layer-decay", "1.5"], 2)


def test_labeled_patch_larger_than_volume_pads_image_and_label_alike(toy):
    """Toy volume 32x32x40, patch 48^3: the whole case, centred; image padded with background (0 SUV / air),
    label with 0, and the label still sits on the hot PET voxels."""
    cfg = PatchConfig(patch_size=(48, 48, 48), fg_prob=0.0, augment=False)
    ds = LabeledPatchDataset(toy, cfg, ["toy001"], seed=0)
    x, y = ds.read_pair("toy001", np.random.default_rng(0))
    case = fmt.load_case(toy, "toy001")
    img, lab = np.asarray(case["image"]), np.asarray(case["label"])
    assert x.shape == (2, 48, 48, 48) and y.shape == (48, 48, 48)
    box = (slice(8, 40), slice(8, 40), slice(4, 44))
    np.testing.assert_array_equal(x[(slice(None), *box)], img)
    np.testing.assert_array_equal(y[box], lab)
    assert y.sum() == lab.sum() > 0
    assert (x[0, :8] == 0).all() and (x[1, :, :, :4] == -1000).all()
