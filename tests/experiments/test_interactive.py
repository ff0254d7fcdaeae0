"""petctfm experiment interactive: autoPET click protocol, the isocontour baseline by hand, the experiment end to end."""

import csv

import numpy as np
import pytest
from toy_data import write_toy_dataset

from petctfm.cli.main import main
from petctfm.core.config import deep_merge
from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data import format as fmt
from petctfm.experiments.interactive.clicks import autopet_clicks, component_points, isocontour
from petctfm.experiments.interactive.report import clicks_to_reach, markdown, summarize
from petctfm.methods.promptable.model import build_model
from petctfm.methods.promptable.presets import get_preset
from petctfm.methods.promptable.task import DEFAULT_CONFIG, PromptTask
from petctfm.train.checkpoint import save_weights


def test_isocontour_matches_a_hand_computation():
    suv = np.full((20, 20, 20), 1.0, np.float32)
    suv[8:12, 8:12, 8:12] = 5.0   # shell: 5 >= 0.41 * 10 = 4.1 -> inside
    suv[9:11, 9:11, 9:11] = 10.0  # core, the box's SUVmax
    suv[8:12, 8:12, 12] = 4.0     # one face at 4.0 < 4.1 -> outside
    suv[15:17, 9:11, 9:11] = 8.0  # a separate hot blob in the box: not connected -> outside
    suv[18:20, 18:20, 18:20] = 50.0  # outside the box [1, 18)^3: does not set SUVmax
    got = isocontour(suv, (9, 9, 9), half_box=(8, 8, 8))
    want = np.zeros(suv.shape, bool)
    want[8:12, 8:12, 8:12] = True
    assert np.array_equal(got, want)
    # a click on the rim (below threshold) grows from the box's hottest voxel instead
    assert np.array_equal(isocontour(suv, (9, 9, 5), half_box=(8, 8, 8)), want)
    # ... or, as the dense prompt of the isocontour-informed first click (fallback=False), gives nothing
    assert not isocontour(suv, (9, 9, 5), half_box=(8, 8, 8), fallback=False).any()
    assert np.array_equal(isocontour(suv, (9, 9, 9), half_box=(8, 8, 8), fallback=False), want)
    # a small box around the separate blob: its own max (8) sets the threshold, the blob alone is grown
    got = isocontour(suv, (16, 10, 10), half_box=(2, 2, 2))
    want = np.zeros(suv.shape, bool)
    want[15:17, 9:11, 9:11] = True
    assert np.array_equal(got, want)


def test_autopet_clicks_positive_inside_lesions_background_on_hot_non_lesion():
    rng = np.random.default_rng(0)
    suv = rng.random((30, 30, 30)).astype(np.float32)
    lesion = np.zeros(suv.shape, bool)
    lesion[3:9, 3:9, 3:9] = True      # larger lesion first
    lesion[20:23, 20:23, 20:23] = True
    suv[lesion] = 8.0
    suv[12:16, 24:28, 2:6] = 6.0      # bladder-like hot background
    fg, bg = autopet_clicks(suv, lesion, n=10)
    assert len(fg) == 2 and all(lesion[tuple(p)] for p in fg) and fg[0].tolist() == [5, 5, 5]
    assert bg and all(not lesion[tuple(p)] and suv[tuple(p)] > np.percentile(suv[~lesion], 99.75) for p in bg)
    assert 12 <= bg[0][0] < 16 and 24 <= bg[0][1] < 28  # the largest hot region first
    assert len(autopet_clicks(suv, lesion, n=1)[0]) == 1 and component_points(np.zeros((3, 3, 3), bool), 5) == []


def test_clicks_to_reach():
    assert clicks_to_reach([0.5, 0.85, 0.95], 0.8) == 2 and clicks_to_reach([0.5, 0.6], 0.8) is None
    assert clicks_to_reach([0.1, float("nan"), 0.92], 0.9, first_click=0) == 2


def test_one_click_breakdown_by_site_and_tracer_is_paired_within_each_group():
    rows = []
    for i, (site, tracer, dm, di) in enumerate([("a", "fdg", 0.8, 0.6), ("a", "psma", 0.6, 0.5),
                                                ("b", "fdg", 0.2, 0.5), ("b", "fdg", 0.4, 0.6)]):
        for arm, d, fp in (("model", dm, 1.0), ("iso", di, 3.0 + i)):
            rows.append({"case_id": f"c{i}", "site": site, "tracer": tracer, "protocol": "one_per_lesion", "arm": arm,
                         "kind": "lesions", "target": "lesions", "seen": "", "clicks": 1, "dice": d,
                         "fp_volume_ml": fp, "fn_volume_ml": 0.0})
    summary = summarize(rows, max_clicks=1, n_resamples=200)

    def get(by, group, arm, metric):
        return next(r for r in summary if r["section"] == f"one_click_by_{by}" and r["group"] == group
                    and r["arm"] == arm and r["metric"] == metric)

    assert get("site", "a", "model", "dice")["mean"] == pytest.approx(0.7) and get("site", "a", "model", "dice")["n"] == 2
    assert get("site", "b", "model-iso", "dice")["mean"] == pytest.approx(-0.25)
    assert get("site", "b", "model-iso", "fp_volume_ml")["mean"] == pytest.approx(-4.5)  # iso FP 5 and 6 ml vs 1 ml
    assert get("tracer", "fdg", "iso", "dice")["n"] == 3 and get("tracer", "psma", "model-iso", "dice")["mean"] == pytest.approx(0.1)
    md = markdown(summary, {"model": "m", "data": "d", "split": "test", "n_cases": 4, "max_clicks": 1,
                            "iso_box_mm": 60, "held_out": [], "auto": None, "seconds": 1.0})
    assert "One click per lesion by site" in md and "| b | 2 |" in md and "by tracer" in md


@pytest.fixture
def toy_prompt_run(tmp_path):
    root = write_toy_dataset(tmp_path / "ds", n_cases=3, shape=(32, 32, 40))
    for cid in fmt.load_splits(root)["test"]:
        organs = np.zeros(np.load(fmt.case_dir(root, cid) / "label.npy").shape, np.uint8)
        organs[4:12, 4:12, 4:14] = ORGAN_LABELS["liver"]
        organs[20:28, 4:12, 4:14] = ORGAN_LABELS["spleen"]
        np.save(fmt.case_dir(root, cid) / "organs.npy", organs)
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["data"]["patch_size"] = [16, 16, 16]
    task = PromptTask(cfg, root)
    save_weights(build_model(task.config), tmp_path / "run" / "model.safetensors", task.config, step=0)
    return root, tmp_path / "run"


def test_experiment_runs_end_to_end(toy_prompt_run, tmp_path):
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG as SEG, FinetuneTask

    root, run = toy_prompt_run
    seg = FinetuneTask(deep_merge(SEG, {"model": {"backbone": "unet-resenc-tiny"},
                                        "data": {"patch_size": [16, 16, 16]}}), root)
    save_weights(seg.build_model(), tmp_path / "auto" / "model.safetensors", seg.config, step=0)
    out = tmp_path / "exp"
    assert main(["experiment", "interactive", "--data", str(root), "--model", str(run), "--out", str(out),
                 "--max-cases", "1", "--max-clicks", "3", "--max-targets", "1", "--no-progress",
                 "--auto", str(tmp_path / "auto"), "--iso-prior"]) == 0
    for name in ("results.md", "results.csv", "steps.csv", "dice_vs_clicks.png", "info.json"):
        assert (out / name).is_file(), name
    assert list((out / "cases").glob("*.png"))
    with open(out / "steps.csv", newline="") as f:
        steps = list(csv.DictReader(f))
    got = {(r["protocol"], r["arm"], r["kind"]) for r in steps}
    assert {("autopet", "model", "lesions"), ("autopet", "iso", "lesions"), ("one_per_lesion", "iso", "lesions"),
            ("one_per_lesion", "model_isoprior", "lesions"), ("auto", "auto", "lesions"),
            ("corrective", "model", "lesion"), ("corrective", "model", "organ")} <= got
    auto_steps = sorted(int(r["clicks"]) for r in steps if r["protocol"] == "autopet" and r["arm"] == "model")
    assert auto_steps == [0, 1, 2, 3]
    organs = {(r["target"], r["seen"]) for r in steps if r["kind"] == "organ"}
    assert organs <= {("liver", "True"), ("spleen", "False")} and organs  # spleen is held out by default
    with open(out / "results.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    for section in ("model_minus_iso_one_click_per_lesion", "model_isoprior_minus_iso_one_click_per_lesion"):
        assert any(r["section"] == section and r["metric"] == "dice" and int(r["n"]) >= 1 for r in summary), section
    assert any(r["section"] == "auc" for r in summary)
    md = (out / "results.md").read_text()
    assert "One click per lesion" in md and "Isocontour-informed first click" in md


def test_experiment_rejects_a_non_promptable_model(tmp_path, toy_prompt_run):
    root, _ = toy_prompt_run
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG as SEG

    cfg = deep_merge(SEG, {"model": {"backbone": "unet-resenc-tiny"}})
    from petctfm.methods.segmentation.model import build_model as seg_build

    save_weights(seg_build(cfg), tmp_path / "seg" / "model.safetensors", cfg, step=0)
    with pytest.raises(InputError, match="not a promptable model"):
        from petctfm.experiments.interactive.run import run_interactive

        run_interactive(root, tmp_path / "seg", tmp_path / "x")


class _EchoSession:
    """A stand-in session whose 'model' returns each object's starting mask (records the prompts it got)."""

    def __init__(self, shape):
        self.shape, self.masks, self.points = shape, {}, []

    def clear(self):
        self.masks = {}

    def set_mask(self, mask, object=1):
        self.masks[object] = np.asarray(mask, bool)

    def add_point(self, p, positive=True, object=1):
        self.points.append((tuple(int(v) for v in p), positive, object))
        self.masks.setdefault(object, np.zeros(self.shape, bool))

    def mask(self):
        out = np.zeros(self.shape, np.uint8)
        for k, m in self.masks.items():
            out[m & (out == 0)] = k
        return out


def test_iso_prior_arm_starts_each_lesion_object_from_its_isocontour():
    from petctfm.experiments.interactive.run import CaseRunner

    suv = np.full((24, 24, 24), 1.0, np.float32)
    lesion = np.zeros(suv.shape, bool)
    hot, faint = (slice(4, 8),) * 3, (slice(15, 19),) * 3
    suv[hot], suv[faint] = 10.0, 1.2  # hot: its isocontour is the lesion; faint, with a hot neighbour in its box
    lesion[hot] = lesion[faint] = True
    suv[20:22, 20:22, 20:22] = 9.0  # the neighbour -> the faint click is below 41 %: no prior
    runner = CaseRunner(_EchoSession(suv.shape), "c", suv, lesion, None, (4.0, 4.0, 4.0), set(), {}, 10, 60.0, 1,
                        iso_prior=True)
    runner.one_per_lesion()
    rows = {r["arm"]: r for r in runner.rows}
    assert set(rows) == {"model", "iso", "model_isoprior"}
    assert rows["model"]["dice"] == 0.0  # the echo 'model' without a prior predicts nothing
    # with the prior: the hot lesion exactly (64 of 128 lesion voxels), nothing for the faint one
    assert rows["model_isoprior"]["dice"] == pytest.approx(2 * 64 / (64 + 128))
    assert rows["model_isoprior"]["fp_volume_ml"] == 0.0
    assert rows["iso"]["fp_volume_ml"] > 0  # the baseline grows the hot neighbour from the faint click


def test_one_click_protocol_alone_with_prompted_components(toy_prompt_run, tmp_path):
    root, run = toy_prompt_run
    out = tmp_path / "exp1"
    assert main(["experiment", "interactive", "--data", str(root), "--model", str(run), "--out", str(out),
                 "--max-cases", "1", "--max-clicks", "2", "--no-progress", "--protocols", "one_per_lesion",
                 "--components", "prompted"]) == 0
    with open(out / "steps.csv", newline="") as f:
        protocols = {r["protocol"] for r in csv.DictReader(f)}
    assert protocols == {"one_per_lesion"}
    with open(out / "results.csv", newline="") as f:
        assert any(r["section"] == "model_minus_iso_one_click_per_lesion" and r["metric"] == "fp_voxels_ml"
                   for r in csv.DictReader(f))
    info = __import__("json").loads((out / "info.json").read_text())
    assert info["components"] == "prompted" and info["protocols"] == ["one_per_lesion"]
    assert main(["experiment", "interactive", "--data", str(root), "--model", str(run), "--out", str(tmp_path / "e2"),
                 "--no-progress", "--protocols", "one,two"]) == 2  # a usage error (docs/reliability.md)


def test_fp_voxels_counts_spill_connected_to_a_lesion_that_autopet_fp_ignores():
    from petctfm.experiments.interactive.run import _metrics

    gt = np.zeros((10, 10, 10), bool)
    gt[2:5, 2:5, 2:5] = True
    pred = gt.copy()
    pred[5:7, 2:5, 2:5] = True  # 18 voxels of spill attached to the lesion
    pred[8, 8, 8] = True  # one detached false-positive voxel
    m = _metrics(pred, gt, (2.0, 2.0, 2.0))  # 8 mm3 per voxel
    assert m["fp_voxels_ml"] == pytest.approx(19 * 8 / 1000)
    assert m["fp_volume_ml"] == pytest.approx(1 * 8 / 1000)
