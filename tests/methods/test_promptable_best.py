"""``prompt-train`` keeps ``RUN/best/`` by validation Dice (fixed val-split targets, simulated clicks), through the
owner fine-tuning uses (``train.checkpoint.keep_best``), and ``PromptSession.from_run`` / ``petctfm serve`` load
it rather than the last checkpoint (issue 23: validation Dice swung 0.71 -> 0.01 and serve took the last one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from petctfm.cli.main import main
from petctfm.inference.model import load_run_model
from petctfm.methods.promptable.session import PromptSession
from petctfm.methods.promptable.task import VAL_FILE
from petctfm.train.checkpoint import BEST_DIR, keep_best, read_weights
from toy_data import write_toy_dataset


def test_prompt_train_keeps_best_by_val_dice_and_sessions_load_it(tmp_path):
    root = write_toy_dataset(tmp_path / "ds", n_cases=3, shape=(32, 32, 40))
    run = tmp_path / "run"
    assert main(["prompt-train", "--data", str(root), "--out", str(run), "--preset", "tiny", "--patch", "16",
                 "--max-steps", "4", "--figure-every", "1", "--checkpoint-every", "4", "--num-workers", "0",
                 "--device", "cpu", "--no-progress", "--lr", "0.05"]) == 0
    val = [json.loads(line) for line in (run / VAL_FILE).read_text().splitlines()]
    assert [v["step"] for v in val] == [1, 2, 3, 4]
    scores = [v["val_dice"] for v in val]
    assert all(0.0 <= s <= 1.0 for s in scores)
    best = json.loads((run / BEST_DIR / "best.json").read_text())
    first_max = int(np.argmax(scores))
    assert best["step"] == val[first_max]["step"] and best["dice"] == scores[first_max]
    assert "val-split targets" in best["metric"]
    assert [v["best"] for v in val][first_max] is True
    # the session (and serve, through load_run_model) loads best/, not the last checkpoint
    _, _, path = load_run_model(run, "promptable")
    assert path == run / BEST_DIR / "model.safetensors"
    import SimpleITK as sitk

    pet = sitk.GetImageFromArray(np.ones((20, 20, 20), np.float32))
    session = PromptSession.from_run(run, pet)
    best_state = read_weights(run / BEST_DIR / "model.safetensors")[0]
    for k, v in session.model.state_dict().items():
        torch.testing.assert_close(v.cpu(), best_state[k])
    pytest.importorskip("fastapi")
    from petctfm.serve.app import check_prompt_model

    assert check_prompt_model(str(run))[0] == run / BEST_DIR / "model.safetensors"


def test_keep_best_keeps_the_highest_and_a_resumed_step_replaces_it(tmp_path):
    model = torch.nn.Linear(2, 2)
    assert keep_best(model, {"method": "x"}, tmp_path, 10, 0.71, "mean val Dice")
    assert not keep_best(model, {"method": "x"}, tmp_path, 20, 0.01, "mean val Dice")  # the swing down: kept 10
    assert not keep_best(model, {"method": "x"}, tmp_path, 30, float("nan"), "mean val Dice")
    assert json.loads((tmp_path / BEST_DIR / "best.json").read_text())["step"] == 10
    assert keep_best(model, {"method": "x"}, tmp_path, 5, 0.2, "mean val Dice")  # a resumed run redoing step 5
    assert json.loads((tmp_path / BEST_DIR / "best.json").read_text())["step"] == 5
