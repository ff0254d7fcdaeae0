"""``petctfm segment`` inputs (issue 28, item 1): prompt files read as regular files within the JSON limits, strict
types, a limit on the number of prompts with progress, ``--start-from`` compared by geometry, and the PET
plausibility checks of predict. Each case runs the CLI in process: exit code, one ``error:`` line naming the
file, no traceback, nothing hangs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from input_helpers import fifo_guard
from petctfm.methods.promptable import segment as seg
from petctfm.methods.promptable.model import build_model
from petctfm.train.checkpoint import save_weights
from toy_data import tiny_prompt_config
from test_values_and_outputs import one_error_line, run_cli

SHAPE = (20, 20, 20)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """An untrained tiny PET-only promptable model and a 20^3 PET in SUV at 2 mm (a hot sphere in warm tissue)."""
    root = tmp_path_factory.mktemp("segment")
    cfg = tiny_prompt_config()
    save_weights(build_model(cfg), root / "run" / "model.safetensors", cfg, step=0)
    pet = np.full(SHAPE, 1.0, np.float32)
    pet[8:12, 8:12, 8:12] = 8.0
    img = sitk.GetImageFromArray(np.transpose(pet, (2, 1, 0)))
    img.SetSpacing((2.0, 2.0, 2.0))
    img.SetOrigin((-20.0, -20.0, -20.0))
    sitk.WriteImage(img, str(root / "pet.nii.gz"))
    return {"model": root / "run", "pet": root / "pet.nii.gz", "image": img}


def _prompts(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _segment(study, prompts, out, capsys, *extra, pet=None):
    return run_cli(["segment", "--model", study["model"], "--pet", pet or study["pet"], "--prompts", prompts,
                    "--out", out, *extra], capsys)


POINT = {"objects": {"1": "lesion"}, "prompts": [{"object": 1, "point": [10, 10, 10]}]}


def test_fifo_prompt_file_is_refused_without_hanging(study, tmp_path, capsys):
    fifo = tmp_path / "prompts.json"
    with fifo_guard(fifo):
        rc, _, err = _segment(study, fifo, tmp_path / "out", capsys)
    assert rc == 3
    one_error_line(err, str(fifo), "not a regular file")


def test_folder_prompt_file_is_one_line_exit_3(study, tmp_path, capsys):
    (tmp_path / "p").mkdir()
    rc, _, err = _segment(study, tmp_path / "p", tmp_path / "out", capsys)
    assert rc == 3
    one_error_line(err, str(tmp_path / "p"), "a folder")


@pytest.mark.parametrize("text, message", [
    ('{"prompts": [{"object": 1, "point": [1' + "0" * 5000 + ', 1, 1]}]}', "a number longer than"),
    ('{"prompts": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than"),
])
def test_absurd_json_is_one_line(study, tmp_path, capsys, text, message):
    p = _prompts(tmp_path / "p.json", text)
    rc, _, err = _segment(study, p, tmp_path / "out", capsys)
    assert rc == 3
    one_error_line(err, str(p), message)


@pytest.mark.parametrize("prompt, message", [
    ({"object": 1, "point": [10, 10, 10], "positive": "false"}, "'positive' must be true or false"),
    ({"object": 1, "point": [10, 10, 10], "positive": 0}, "'positive' must be true or false"),
    ({"object": 1, "box": [[8, 8, 8], [12, 12, 12]], "positive": "false"}, "'positive' applies to points only"),
    ({"object": 1, "box": [[8, 8, 8], [12, 12, 12]], "positive": False}, "'positive' applies to points only"),
    ({"object": "1", "point": [10, 10, 10]}, "'object' must be an integer"),
    ({"object": 1, "point": ["10", 10, 10]}, "expected 3 numbers"),
])
def test_prompt_types_are_strict(study, tmp_path, capsys, prompt, message):
    p = _prompts(tmp_path / "p.json", {"objects": {"1": "lesion"}, "prompts": [prompt]})
    rc, _, err = _segment(study, p, tmp_path / "out", capsys)
    assert rc == 3
    one_error_line(err, str(p), "prompts[0]", message)
    assert not (tmp_path / "out" / "mask.nii.gz").exists()


@pytest.mark.parametrize("objects, message", [
    ({"1": 7}, "the name must be a string"),
    ({"1": {"name": ["a"]}}, "name: must be a string"),
    ({"\u0661": "arabic-indic one"}, "id must be an integer"),
])
def test_object_declarations_are_strict(study, tmp_path, capsys, objects, message):
    p = _prompts(tmp_path / "p.json", {"objects": objects, "prompts": POINT["prompts"]})
    rc, _, err = _segment(study, p, tmp_path / "out", capsys)
    assert rc == 3
    one_error_line(err, str(p), message)


def test_too_many_prompts_refused_before_the_model_is_read(study, tmp_path, capsys):
    pts = [{"object": 1, "point": [10, 10, 10]}] * (seg.MAX_PROMPTS + 1)
    p = _prompts(tmp_path / "p.json", {"objects": {"1": "a"}, "prompts": pts})
    rc, _, err = run_cli(["segment", "--model", tmp_path / "no-model", "--pet", study["pet"], "--prompts", p,
                          "--out", tmp_path / "out"], capsys)
    assert rc == 3
    one_error_line(err, str(p), f"{seg.MAX_PROMPTS + 1:,} prompts", f"limit of {seg.MAX_PROMPTS:,}")


def test_large_prompt_file_shows_progress(study, tmp_path, capsys, caplog):
    n = seg.PROGRESS_EVERY + 5
    pts = [{"object": 1, "point": [9 + i % 3, 10, 10], "positive": i % 4 != 3} for i in range(n)]
    p = _prompts(tmp_path / "p.json", {"objects": {"1": "a"}, "prompts": pts})
    with caplog.at_level(logging.INFO, logger="petctfm.methods.promptable.segment"):
        rc, _, _ = _segment(study, p, tmp_path / "out", capsys)
    assert rc == 0
    lines = [r.getMessage() for r in caplog.records if "prompt " in r.getMessage()]
    assert lines == [f"{p}: prompt {seg.PROGRESS_EVERY}/{n}" + lines[0].split(f"/{n}")[1]], lines
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_prompts"] == n


def _start(study, path: Path, spacing=(2.0, 2.0, 2.0), shift=(0.0, 0.0, 0.0), shape=SHAPE, box=(8, 12)) -> Path:
    arr = np.zeros(shape, np.uint8)
    a, b = box
    arr[a:b, a:b, a:b] = 3
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(tuple(o + s for o, s in zip(study["image"].GetOrigin(), shift)))
    sitk.WriteImage(img, str(path))
    return path


def test_start_from_on_the_pet_grid_is_used_as_is(study, tmp_path, capsys):
    start = _start(study, tmp_path / "start.nii.gz")
    p = _prompts(tmp_path / "p.json", {"prompts": [{"object": 3, "point": [10, 10, 10]}]})
    rc, _, _ = _segment(study, p, tmp_path / "out", capsys, "--start-from", start)
    assert rc == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["start_from_resampled"] is None and [o["object"] for o in s["objects"]] == [3]


def test_start_from_shifted_100_mm_is_refused(study, tmp_path, capsys):
    """Same shape as the PET, 100 mm off: compared by shape only, it used to be taken as lying on the PET."""
    start = _start(study, tmp_path / "start.nii.gz", shift=(100.0, 0.0, 0.0))
    p = _prompts(tmp_path / "p.json", {"prompts": [{"object": 3, "point": [10, 10, 10]}]})
    rc, _, err = _segment(study, p, tmp_path / "out", capsys, "--start-from", start)
    assert rc == 3
    one_error_line(err, str(start), "object 3 lies outside the PET", "origin")
    assert not (tmp_path / "out" / "mask.nii.gz").exists()


def test_start_from_at_twice_the_spacing_is_resampled_in_place(study, tmp_path, capsys):
    """A 10^3 mask at 4 mm over the same field of view: resampled onto the PET grid where it lies in mm."""
    start = _start(study, tmp_path / "start.nii.gz", spacing=(4.0, 4.0, 4.0), shape=(10, 10, 10), box=(4, 6))
    got, note = seg.start_mask(start, study["image"])
    assert "shape (10, 10, 10)" in note and got.shape == SHAPE
    # 4 mm voxels 4..5 (centres -4 and 0 mm) cover [-6, 2) mm: PET voxels (2 mm, origin -20) with centres in
    # it are 7..10 (-6 mm is on the face: either side is nearest)
    idx = np.argwhere(got == 3)
    assert set(np.unique(got)) == {0, 3} and idx.min() >= 7 and idx.max() == 10
    assert 27 <= len(idx) <= 64
    p = _prompts(tmp_path / "p.json", {"prompts": [{"object": 3, "point": [9, 9, 9]}]})
    rc, _, _ = _segment(study, p, tmp_path / "out", capsys, "--start-from", start)
    assert rc == 0
    assert "resampled" in json.loads((tmp_path / "out" / "summary.json").read_text())["start_from_resampled"]


@pytest.mark.parametrize("scale, message", [(5000.0, "SUVmax"), (-1.0, "every voxel is <= 0")])
def test_implausible_pet_is_refused_as_predict_does(study, tmp_path, capsys, scale, message):
    """A PET in Bq/ml (SUV x 5000) or sign-flipped went to the model unchecked."""
    img = sitk.Cast(study["image"], sitk.sitkFloat32) * scale
    pet = tmp_path / "bqml.nii.gz"
    sitk.WriteImage(img, str(pet))
    p = _prompts(tmp_path / "p.json", POINT)
    rc, _, err = _segment(study, p, tmp_path / "out", capsys, pet=pet)
    assert rc == 3
    one_error_line(err, str(pet), message)
