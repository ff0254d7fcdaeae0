"""FratMAE downstream on tiny ViTs (CPU): the UNETR segmenter (shapes, stack coverage, whole-volume stitching),
labeled stacks, ``petctfm finetune --init FRATMAE_RUN`` end to end (encoder transferred, loss falls, best
checkpoint, ``finetune --predict`` + ``evaluate``, ``petctfm predict --model`` on a synthetic study, resume),
scratch with ``--backbone fratmae-unetr``, and ``petctfm stage`` on the central whole-body stack."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from petctfm.core.config import deep_merge
from petctfm.core.errors import UsageError
from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_write_json
from petctfm.methods.fratmae.finetune import DEFAULT_CONFIG as FT_CONFIG, FratMAEFinetuneTask, get_preset as ft_preset
from petctfm.methods.fratmae.fratmae import DEFAULT_CONFIG, FratMAETask
from petctfm.methods.fratmae.presets import get_preset
from petctfm.methods.fratmae.segment import FratMAESegmenter, stack_indices, unetr_taps
from petctfm.train.checkpoint import load_model, read_weights
from quick_train import train_and_save
from toy_data import write_toy_dataset

FAST = ["--preset", "tiny", "--no-progress", "--seed", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """6 toy cases (4 train, 1 val, 1 test; 8 mm harmonize spacing so synthetic studies stay tiny), staged
    early/advanced, and a tiny FratMAE pretraining checkpoint (2 steps)."""
    root = tmp_path_factory.mktemp("fratft")
    data = write_toy_dataset(root / "data", n_cases=6, shape=(32, 32, 48))
    info = json.loads((data / fmt.DATASET_JSON).read_text())
    info.update(spacing=[8.0, 8.0, 8.0], ct_window=[-1000.0, 1000.0])
    atomic_write_json(data / fmt.DATASET_JSON, info)
    splits = json.loads((data / fmt.SPLITS_JSON).read_text())
    splits.update(train=[f"toy00{i}" for i in range(4)], val=["toy004"], test=["toy005"],
                  fractions={"50": ["toy000", "toy002"], "100": [f"toy00{i}" for i in range(4)]})
    atomic_write_json(data / fmt.SPLITS_JSON, splits)
    lines = ["case_id,split,site,stage"] + [f"toy{i:03d},x,toy,{s}" for i, s in enumerate(["early", "advanced"] * 3)]
    (data / fmt.MANIFEST_CSV).write_text("\n".join(lines) + "\n")
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    return data, train_and_save(FratMAETask(cfg, data), root / "frat", steps=2) / "model.safetensors"


def _seg_config(crop="resized", **model):
    cfg = deep_merge(FT_CONFIG, ft_preset("tiny")["task"])
    cfg["model"].update(model)
    cfg["data"]["crop"] = crop
    return cfg


def test_unetr_taps_and_stacks_cover_every_slice():
    assert unetr_taps(12) == [3, 6, 9, 12] and unetr_taps(2) == [1, 1, 2, 2]
    idx = stack_indices(32, 8, 2)  # blocks of 16 slices at 0 and 16, two offsets each
    assert [i.tolist()[:2] for i in idx] == [[0, 2], [1, 3], [16, 18], [17, 19]]
    assert sorted(torch.cat(idx).tolist()) == list(range(32))
    idx = stack_indices(40, 8, 2)  # 40 is not a multiple of 16: one more block ending at the last slice
    assert idx[-1].tolist()[-1] == 39 and set(torch.cat(idx).tolist()) == set(range(40))


def test_segmenter_shapes_stacks_and_whole_volumes():
    torch.manual_seed(0)
    model = FratMAESegmenter(_seg_config()).eval()
    stack = torch.randn(2, 2, 32, 8, 48)  # the tiny preset's coronal stack, 4 x 1 x 6 tokens of 8^3
    with torch.no_grad():
        assert model(stack, stacks=True).shape == (2, 2, 32, 8, 48)
        whole = model(torch.randn(1, 2, 20, 36, 44))  # any harmonized grid: resized, stitched, resized back
    assert whole.shape == (1, 2, 20, 36, 44) and torch.isfinite(whole).all()
    # stitching: a volume already on the grid = the mean of its stacks' logits on each slice
    x = torch.randn(1, 2, 32, 32, 48)
    with torch.no_grad():
        full = model(x)
        first = model(x[:, :, :, 0:16:2], stacks=True)  # stack 0: slices 0, 2, ..., 14 (only stack with 0)
    torch.testing.assert_close(full[:, :, :, 0], first[:, :, :, 0], atol=1e-4, rtol=1e-4)
    assert FratMAESegmenter(_seg_config(arch="mae")).backbone.feature_channels() == [48] * 2


def test_labeled_stacks_are_aligned_and_hit_lesions(env):
    data, _ = env
    cfg = _seg_config()
    cfg["data"]["fg_prob"] = 1.0
    task = FratMAEFinetuneTask(cfg, data)
    ds = task.dataset()
    item = ds[3]
    assert item["image"].shape == (2, 32, 8, 48) and item["label"].shape == (1, 32, 8, 48)
    assert item["label"].sum() > 0  # fg_prob 1: the block keeps a lesion slice
    torch.testing.assert_close(ds[3]["image"], item["image"])  # a pure function of (seed, rank, i)
    # image and label are the same slices: the lesion label sits on hot PET (normalized SUV > 2)
    assert float(item["image"][0][item["label"][0] > 0].mean()) > 2.0
    native = FratMAEFinetuneTask(_seg_config("native"), data).dataset()[3]  # stack-shaped crops, no resize
    assert native["image"].shape == (2, 32, 8, 48) and native["label"].shape == (1, 32, 8, 48)


def test_finetune_predict_evaluate_resume_from_a_fratmae_run(env, tmp_path, capsys):
    data, frat = env
    run = tmp_path / "ft"
    argv = ["finetune", "--data", str(data), "--out", str(run), "--init", str(frat), "--fraction", "100", *FAST,
            "--checkpoint-every", "4", "--figure-every", "4"]
    assert main([*argv, "--max-steps", "8"]) == 0
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    model, cfg = load_model(run / "best" / "model.safetensors")
    assert isinstance(model, FratMAESegmenter) and cfg["method"] == "fratmae_segmentation"
    # native crops (the default): sliding windows of the stack shape on the harmonized grid
    assert cfg["init"]["source"] == str(frat) and cfg["data"]["crop"] == "native"
    assert cfg["data"]["patch_size"] == [32, 8, 48]
    # the pretrained twin encoders were the starting point (decoder fresh): step-0 weights equal the run's
    state = read_weights(frat)[0]
    fresh = FratMAEFinetuneTask(cfg, data).build_model().state_dict()
    for k in ("encoders.pet.blocks.0.attn.q.weight", "encoders.ct.patch_embed.weight"):
        torch.testing.assert_close(fresh[f"backbone.{k}"], state[f"backbone.{k}"])
    val = [json.loads(x) for x in (run / "val.jsonl").read_text().splitlines()]
    assert [v["step"] for v in val] == [4, 8] and all(0.0 <= v["dice"] <= 1.0 for v in val)
    # finetune --predict -> NIfTI on the harmonized grid, scored by evaluate
    assert main(["finetune", "--out", str(run), "--data", str(data), "--predict", "test"]) == 0
    img = nib.load(run / "pred_test" / "toy005.nii.gz")
    assert img.shape == (32, 32, 48)
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(run / "pred_test"), "--gt", str(data), "--split", "test",
                 "--out", str(tmp_path / "ev"), "--bootstrap", "10"]) == 0
    assert "Dice" in capsys.readouterr().out
    # resume continues from step 8
    assert main([*argv, "--max-steps", "9", "--resume"]) == 0
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 9


def test_predict_model_on_a_synthetic_study(env, tmp_path):
    """Resized whole-body stacks (the model stitches whole volumes) through petctfm predict."""
    from petctfm.synth.writers import synthesize

    data, frat = env
    run = tmp_path / "ft"
    assert main(["finetune", "--data", str(data), "--out", str(run), "--init", str(frat), *FAST,
                 "--max-steps", "2", "--set", "data.crop=resized", "--checkpoint-every", "1", "--figure-every", "1"]) == 0
    assert load_model(run)[1]["data"]["patch_size"] == [-1, -1, -1]
    assert [json.loads(x)["step"] for x in (run / "val.jsonl").read_text().splitlines()] == [1, 2]
    synthesize(tmp_path / "synth", n_cases=1, seed=0, size="tiny", progress=False)
    study = next((tmp_path / "synth" / "autopet").iterdir())
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(run), "--pet", str(study / "SUV.nii.gz"), "--ct", str(study / "CT.nii.gz"),
                 "--out", str(out), "--no-progress", "--no-report", "--device", "cpu"]) == 0
    assert nib.load(out / "lesions.nii.gz").shape == nib.load(study / "SUV.nii.gz").shape
    assert json.loads((out / "summary.json").read_text())["model"]["backbone"] == "fratmae-unetr"


def test_scratch_arm_and_errors(env, tmp_path, capsys):
    data, frat = env
    run = tmp_path / "scratch"
    assert main(["finetune", "--data", str(data), "--out", str(run), "--init", "scratch", "--backbone",
                 "fratmae-unetr", "--fraction", "50", *FAST, "--max-steps", "1", "--figure-every", "0"]) == 0
    cfg = read_weights(run / "checkpoints" / "step_0000001" / "model.safetensors")[1]
    assert cfg["init"]["source"] == "scratch" and cfg["subset"]["cases"] == ["toy000", "toy002"]
    capsys.readouterr()
    assert main(["finetune", "--data", str(data), "--out", str(tmp_path / "x"), "--init", str(frat), "--patch", "16",
                 *FAST]) == 2  # UsageError: exit 2, one line, worded as the flag
    assert "--patch: does not apply to FratMAE" in capsys.readouterr().err
    with pytest.raises(UsageError, match="model.patch=6: must be one of 4, 8, 16"):
        FratMAEFinetuneTask(_seg_config(patch=6), data)


def test_stage_uses_the_central_whole_body_stack(env, tmp_path):
    from petctfm.methods.probe import load_frozen_encoders
    from petctfm.methods.fratmae.encoder import stack_features
    from petctfm.methods.staging import case_vector

    data, frat = env
    info = fmt.load_dataset_info(data)
    enc = load_frozen_encoders([frat], info)[0]
    assert enc.geometry == {"stack": {"grid": [32, 32, 48], "stack": "coronal", "depth": 8, "k": 2}}
    assert enc.read_case is not None  # the method's own whole-case reader (the central stack), not tiles
    image = np.asarray(fmt.load_case(data, "toy000")["image"])
    maps = stack_features(enc, image, torch.device("cpu"))
    assert [tuple(f.shape) for f in maps] == [(1, 96, 4, 1, 6)] * 2  # one stack, PET+CT tokens, 2 taps
    v = case_vector([enc], image, 8, np.zeros(2, np.float32), torch.device("cpu"))
    assert v.shape == (2 * 2 * 2 * 96,)  # (mean, max over one stack) x (avg, max pool) x 2 maps
    assert main(["stage", "--data", str(data), "--encoder", str(frat), "--out", str(tmp_path / "stage"),
                 "--bootstrap", "20", "--max-epochs", "5", "--no-progress"]) == 0
    m = json.loads((tmp_path / "stage" / "metrics.json").read_text())
    assert m["feature_dim"] == v.shape[0] and m["n"] == 1
    assert {"value", "ci_low", "ci_high"} <= set(m["balanced_accuracy"]) and "accuracy" in m


def test_plan_is_refused_for_fratmae_in_one_line(tmp_path):
    """``--plan`` (the convolutional recipe) is not FratMAE's: a UsageError naming the flag, not a trainer-key
    error."""
    from petctfm.core.errors import UsageError, cli_wording
    from petctfm.methods.fratmae.finetune import finetune_configs

    with pytest.raises(UsageError) as exc:
        finetune_configs(None, tmp_path / "run", None, "tiny", plan="cpu")
    assert cli_wording(exc.value).startswith("--plan 'cpu': the segmentation recipe plans convolutional UNets")
