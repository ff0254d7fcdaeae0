"""The segmentation recipe (issue 30, item 2): fingerprint, nnU-Net-style planning, deep supervision, poly LR,
CPU bf16; the plan is written into the run's config and the run reproduces from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from toy_data import write_toy_dataset

from petctfm.core.config import ConfigError
from petctfm.methods.segmentation import plan as P
from petctfm.methods.segmentation.task import deep_supervision_weights


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("recipe") / "toy", n_cases=4, shape=(40, 24, 56))


def test_fingerprint_reads_shapes_lesions_and_intensities(toy):
    fp = P.fingerprint(toy, ["toy000", "toy001", "toy002"])
    assert fp["n_cases"] == 3 and fp["spacing"] == [2.0, 2.0, 2.0]
    assert fp["median_shape"] == [40, 24, 56] and fp["min_shape"] == fp["max_shape"] == [40, 24, 56]
    assert fp["cases_with_lesions"] == 1.0 and fp["lesions_per_case"] >= 1
    # toy lesions are spheres of radius 2-4 voxels of 8 ul: 0.03-2.2 ml; SUV 5-12 inside
    assert 0.02 < fp["lesion_volume_ml"]["p50"] < 2.5
    assert 5.0 <= fp["lesion_suv"]["p5"] <= fp["lesion_suv"]["p95"] <= 12.0
    json.dumps(fp)  # JSON-able: it goes into the run's config


def test_fingerprint_counts_organ_maps_in_every_case_not_only_the_sampled_ones(tmp_path):
    from petctfm.data import format as fmt

    data = write_toy_dataset(tmp_path / "toy", n_cases=4, shape=(24, 16, 32), organs=True)
    (fmt.case_dir(data, "toy001") / "organs.npy").unlink()  # not among the 2 sampled cases (toy000, toy003)
    fp = P.fingerprint(data, ["toy000", "toy001", "toy002", "toy003"], max_cases=2)
    assert fp["n_cases"] == 2
    assert fp["cases_with_organs"] == 0.75  # so the plan does not turn on auxiliary organs (needs 1.0)


def test_plan_patch_follows_nnunet_rule():
    # a body-shaped median volume (4 mm whole body): the patch keeps its aspect, fits the budget, pools cleanly
    patch = P.plan_patch([118, 70, 300], 64 ** 3, max_stages=5)
    assert patch == [56, 32, 144]
    assert np.prod(patch) <= 64 ** 3 * 1.15
    # a volume already under the budget is taken whole (rounded to its divisors)
    assert P.plan_patch([40, 24, 56], 64 ** 3, max_stages=5) == [40, 24, 56]
    # a fixed divisor (a given network's) is respected on every axis
    assert all(s % 16 == 0 for s in P.plan_patch([118, 70, 300], 64 ** 3, 5, divisor=[16, 16, 16]))


def test_plan_network_pools_each_axis_to_four_voxels():
    net = P.plan_network([56, 32, 144], 16, 256, max_stages=5)
    assert net["n_stages"] == 5 and net["deep_supervision"] is True
    assert net["features_per_stage"] == [16, 32, 64, 128, 256]
    assert net["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2]]
    assert P.stride_divisor(net["strides"]) == [8, 8, 16]
    for side, div in zip([56, 32, 144], P.stride_divisor(net["strides"])):
        assert side % div == 0 and side // div >= P.MIN_EDGE


def test_make_plan_targets_and_pretrained_network(monkeypatch):
    fp = {"median_shape": [118, 70, 300]}
    monkeypatch.setenv("PETCTFM_CPU_BF16", "0")
    from petctfm.core.device import cpu_has_bf16

    cpu_has_bf16.cache_clear()
    try:
        cpu = P.make_plan(fp, "cpu", step_seconds=None)  # untimed: the target's numbers alone
        assert cpu["precision"] == "fp32" and cpu["lr_schedule"] == "poly" and cpu["planned_network"]
        assert cpu["patch_size"] == [56, 32, 144] and "timing" not in cpu
        gpu = P.make_plan(fp, "gpu")
        assert np.prod(gpu["patch_size"]) > np.prod(cpu["patch_size"]) and gpu["precision"] == "bf16"
        assert gpu["model_overrides"]["features_per_stage"][0] == 32
        # a given (pretrained) network is kept: only the patch is planned, fitting its divisors
        kept = P.make_plan(fp, "cpu", backbone="nnunet-plain", overrides={}, step_seconds=None)
        assert not kept["planned_network"] and kept["model_overrides"] == {}
        assert all(s % 16 == 0 for s in kept["patch_size"])
        with pytest.raises(ConfigError, match="plan.target"):
            P.make_plan(fp, "tpu")
    finally:
        cpu_has_bf16.cache_clear()


def test_axis_divisors_and_patch_check_see_planned_strides():
    from petctfm.core.errors import InputError
    from petctfm.models.backbones import axis_divisors, check_patch_size

    ov = {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 1, 2]], "n_stages": 5}
    assert axis_divisors("nnunet-plain", ov) == [8, 8, 16]
    assert axis_divisors("nnunet-plain", {"n_stages": 4}) == [8, 8, 8]
    assert axis_divisors("unet-resenc", ov) == [16, 16, 16]  # not an nnU-Net network: its own divisor
    check_patch_size("nnunet-plain", [56, 32, 144], ov)
    with pytest.raises(InputError, match=r"multiple of \[8, 8, 16\]"):
        check_patch_size("nnunet-plain", [56, 32, 136], ov)


def test_deep_supervision_weights_are_nnunets():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)
    assert w[-1] == 0.0 and abs(sum(w) - 1.0) < 1e-9
    assert w[0] == pytest.approx(2 * w[1]) and w[1] == pytest.approx(2 * w[2])


def test_poly_schedule():
    from petctfm.train.schedule import SCHEDULES, WarmupPoly

    s = WarmupPoly(warmup=10, horizon=110, min_ratio=0.0)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0) and s(60) == pytest.approx(0.5 ** 0.9) and s(110) == 0.0 and s(500) == 0.0
    assert set(SCHEDULES) == {"cosine", "poly"}


def test_cpu_bf16_switch(monkeypatch):
    from petctfm.core.device import autocast_for, cpu_has_bf16

    for value, want in (("1", True), ("0", False)):
        monkeypatch.setenv("PETCTFM_CPU_BF16", value)
        cpu_has_bf16.cache_clear()
        assert cpu_has_bf16() is want
        with autocast_for(torch.device("cpu")):
            y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
        assert y.dtype == (torch.bfloat16 if want else torch.float32)
    cpu_has_bf16.cache_clear()


def test_planned_run_trains_with_deep_supervision_and_reproduces_from_its_config(toy, tmp_path, monkeypatch):
    from petctfm.methods.segmentation.api import finetune
    from petctfm.train.checkpoint import load_model

    monkeypatch.setenv("PETCTFM_CPU_BF16", "0")
    from petctfm.core.device import cpu_has_bf16

    cpu_has_bf16.cache_clear()
    try:
        run = tmp_path / "run"
        summary = finetune(toy, run, backbone="nnunet-plain", preset="tiny", plan="cpu", max_steps=3,
                           plan_step_seconds=0, plan_spacing=0, progress=False, figure_every=3, checkpoint_every=3,
                           overrides={"val.sw_batch_size": 1})
        assert summary["steps"] == 3 and np.isfinite(summary["loss"]) and summary["precision"] == "fp32"
        saved = yaml.safe_load((run / "config.yaml").read_text())
        task, train = saved["task"], saved["train"]
        plan = task["plan"]
        assert plan["fingerprint"]["n_cases"] == 3 and plan["target"] == "cpu"
        assert task["data"]["patch_size"] == plan["patch_size"] == [40, 24, 56]
        assert task["model"]["overrides"]["deep_supervision"] is True
        assert task["model"]["overrides"]["strides"] == plan["model_overrides"]["strides"]
        assert train["lr_schedule"] == "poly" and train["precision"] == "fp32"
        assert task["data"]["fg_balance"] == plan["fg_balance"] == "lesion"  # round three's choice
        assert task["data"]["fg_prob"] == plan["fg_prob"] == 0.66
        # validated (a best checkpoint) and loadable: in eval mode the network returns one tensor
        assert (run / "best" / "model.safetensors").is_file()
        model, cfg = load_model(run)
        out = model.eval()(torch.zeros(1, 2, 40, 24, 56))
        assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 40, 24, 56)
        # an explicit patch wins over the plan
        run2 = tmp_path / "run2"
        finetune(toy, run2, backbone="nnunet-plain", preset="tiny", plan="cpu", plan_spacing=0, max_steps=1,
                 progress=False, figure_every=0, overrides={"data.patch_size": [16, 16, 16],
                                                            "model.overrides.strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                                            "model.overrides.n_stages": 3,
                                                            "model.overrides.features_per_stage": [8, 16, 32],
                                                            "model.overrides.kernel_sizes": [[3, 3, 3]] * 3})
        t2 = yaml.safe_load((run2 / "config.yaml").read_text())["task"]
        assert t2["data"]["patch_size"] == [16, 16, 16] and t2["plan"]["patch_size"] == [40, 24, 56]
    finally:
        cpu_has_bf16.cache_clear()


def test_plan_keeps_an_explicitly_given_network(toy):
    """From scratch, ``plan`` plans an nnU-Net backbone's network unless ``model.overrides`` is given (even
    ``{}``): then that network is kept and only the patch fits it, as for a pretrained one."""
    from petctfm.methods.segmentation.api import finetune_configs, given_network

    assert given_network(None) is None and given_network(["train.lr=0.1"]) is None
    assert given_network([("model.overrides", {})]) == {}
    assert given_network(["model.overrides={}", "model.overrides={filters: [8, 16]}"]) == {"filters": [8, 16]}
    planned, _ = finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain", preset="tiny",
                                  plan="cpu", plan_step_seconds=0)
    kept, _ = finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain", preset="tiny",
                               plan="cpu", plan_step_seconds=0, overrides=[("model.overrides", {})])
    assert planned["plan"]["planned_network"] and planned["model"]["overrides"]
    assert not kept["plan"]["planned_network"] and kept["model"]["overrides"] == {}
    assert kept["plan"]["target"] == "cpu" and kept["data"]["batch_size"] == planned["data"]["batch_size"]


def test_the_cpu_plan_sets_the_sliding_window_overlap_of_a_lesion_run(toy, tmp_path):
    """Round seven (docs/segmentation-recipe.md): a lesion run planned for the cpu gets ``val.overlap`` 0.25, which
    its validation and predictions use; the gpu plan keeps nnU-Net's 0.5; an explicit overlap wins; an organ run
    keeps the config's 0.5 (not measured)."""
    from petctfm.methods.segmentation.api import finetune_configs

    def overlap(data=toy, **kw):
        task, _ = finetune_configs(data, "/nonexistent/run", init="scratch", backbone="nnunet-plain", preset="tiny",
                                   plan_step_seconds=0 if kw.get("plan") == "cpu" else None, **kw)
        return task["val"]["overlap"], (task.get("plan") or {}).get("overlap")

    assert P.OVERLAP_CPU == 0.25 and overlap(plan="cpu") == (0.25, 0.25)
    assert overlap(plan="gpu") == (0.5, 0.5)
    assert overlap() == (0.5, None)  # no plan: the config's default
    assert overlap(plan="cpu", overlap=0.5)[0] == 0.5  # named option
    assert overlap(plan="cpu", plan_rule={"overlap": 0.4})[0] == 0.4  # the rule's number
    organs_ds = write_toy_dataset(tmp_path / "organs", n_cases=4, shape=(32, 32, 40), organs=True)
    assert overlap(organs_ds, plan="cpu", task="organs")[0] == 0.5


def test_step_time_budget_shrinks_the_patch_until_a_timed_step_fits():
    """plan.py item 5: with a fake timer (seconds proportional to voxels, 1 s per 40^3), the budget of 1 s
    shrinks the 64^3 cpu patch of a whole-body median shape to a patch whose step fits, and stops there."""
    fp = {"median_shape": [118, 70, 300]}
    calls = []

    def timer(patch, net):
        calls.append((list(patch), net["features_per_stage"]))
        return float(np.prod(patch)) / 40 ** 3

    p = P.make_plan(fp, "cpu", precision="fp32", step_seconds=1.0, timer=timer)
    assert p["rule"]["step_seconds"] == 1.0 and len(p["timing"]) == len(calls) >= 2
    assert p["timing"][0]["patch_size"] == [56, 32, 144] and p["timing"][0]["seconds"] > 3.9
    assert p["timing"][-1]["seconds"] <= 1.0 and p["timing"][-1]["patch_size"] == p["patch_size"]
    assert all(a["seconds"] > 1.0 for a in p["timing"][:-1])  # it stopped at the first fit
    assert np.prod(p["patch_size"]) <= 40 ** 3 and p["rule"]["patch_voxels"] == p["timing"][-1]["patch_voxels"]
    # no two measurements of the same rounded patch; the network follows the patch (nnU-Net's rule)
    assert len({tuple(c[0]) for c in calls}) == len(calls)
    assert p["model_overrides"] == P.plan_network(p["patch_size"], 16, 256, 5)
    # reproducible without timing: the rule's voxel budget plans the same patch and network
    again = P.make_plan(fp, "cpu", precision="fp32", patch_voxels=p["rule"]["patch_voxels"], step_seconds=None)
    assert again["patch_size"] == p["patch_size"] and again["model_overrides"] == p["model_overrides"]
    assert "timing" not in again
    # the cpu target is timed by default (1 s, chosen on validation); the gpu target is not
    assert P.TARGETS["cpu"]["step_seconds"] == P.STEP_SECONDS == 1.0 and P.TARGETS["gpu"]["step_seconds"] is None
    assert P.make_plan(fp, "cpu", precision="fp32", timer=timer)["patch_size"] == p["patch_size"]
    assert "timing" not in P.make_plan(fp, "gpu", timer=timer)
    # a fast machine keeps the target's patch after one measurement
    fast = P.make_plan(fp, "cpu", precision="fp32", step_seconds=1.0, timer=lambda patch, net: 0.1)
    assert fast["patch_size"] == [56, 32, 144] and len(fast["timing"]) == 1
    # a slow one stops at the floor, and says what it measured there
    slow = P.make_plan(fp, "cpu", precision="fp32", step_seconds=1.0, timer=lambda patch, net: 50.0)
    assert slow["rule"]["patch_voxels"] == P.MIN_PATCH_VOXELS and slow["timing"][-1]["seconds"] == 50.0
    # when the tries run out before a step fits, the plan is the last patch measured, never an untimed smaller one
    vox, tries = P.timed_patch_voxels(lambda v: ([v, 1, 1], {}), 10 ** 6, 1.0, lambda patch, net: 2.0, max_tries=3)
    assert len(tries) == 3 and vox == tries[-1]["patch_voxels"] == tries[-1]["patch_size"][0] < 10 ** 6
    assert tries[-1]["seconds"] == 2.0
    with pytest.raises(ConfigError, match="plan.step_seconds"):
        P.make_plan(fp, "cpu", precision="fp32", step_seconds=0.0, timer=timer)
    with pytest.raises(ConfigError, match="plan.rule.*patch_voxel"):
        P.make_plan(fp, "cpu", precision="fp32", patch_voxel=32 ** 3)


def test_measure_step_times_a_real_step_without_touching_the_rng():
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    s = P.measure_step("nnunet-plain", P.plan_network([16, 16, 16], 4, 16, 3), [16, 16, 16], out_channels=3,
                       batch_size=1, steps=1)
    assert 0.0 < s < 60.0
    assert torch.equal(torch.rand(3), want)  # the run's random stream is as if nothing had been timed


def test_finetune_plans_with_a_step_budget_and_refuses_one_without_a_plan(toy, monkeypatch):
    from petctfm.core.errors import UsageError
    from petctfm.methods.segmentation import api

    seen = {}

    def fake_measure(backbone, net, patch, **kw):
        seen.update(kw)
        return float(np.prod(patch)) / 24 ** 3

    monkeypatch.setattr(P, "measure_step", fake_measure)
    task, _ = api.finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain", preset="tiny",
                                   plan="cpu", plan_step_seconds=1.0)
    plan = task["plan"]
    assert plan["rule"]["step_seconds"] == 1.0 and plan["timing"][-1]["seconds"] <= 1.0
    assert task["data"]["patch_size"] == plan["patch_size"] and np.prod(plan["patch_size"]) <= 24 ** 3 * 1.15
    assert seen["in_channels"] == 2 and seen["out_channels"] == 2  # the run's own network is what is timed
    ruled, _ = api.finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain",
                                    preset="tiny", plan="cpu",
                                    plan_rule={"patch_voxels": plan["rule"]["patch_voxels"], "step_seconds": None})
    assert ruled["data"]["patch_size"] == plan["patch_size"] and "timing" not in ruled["plan"]
    assert ruled["model"]["overrides"] == task["model"]["overrides"]
    # the cpu target's default budget; 0 = untimed; an explicit patch replaces the plan's, so nothing is timed
    default, _ = api.finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain",
                                      preset="tiny", plan="cpu")
    assert default["plan"]["timing"] == plan["timing"] and default["data"]["patch_size"] == plan["patch_size"]
    for kw in ({"plan_step_seconds": 0}, {"patch": 16}, {"overrides": ["data.patch_size=[16,16,16]"]}):
        t, _ = api.finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain",
                                    preset="tiny", plan="cpu", **kw)
        assert "timing" not in t["plan"] and t["plan"]["rule"]["step_seconds"] is None, kw
    with pytest.raises(UsageError, match="plan_step_seconds=1.0: needs a plan"):
        api.finetune_configs(toy, "/nonexistent/run", init="scratch", backbone="nnunet-plain", preset="tiny",
                             plan_step_seconds=1.0)
