"""``--holdout-site``: the held-out site never appears in training, pretraining or normalization statistics,
and its cases are evaluated and reported separately (splits, the experiment's checks, records, report)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.experiments.label_efficiency.run import run_label_efficiency
from petctfm.harmonize.splits import make_splits
from petctfm.io.atomic import atomic_write_json
from toy_data import write_toy_dataset

FAST = ["data.patch_size=[16,16,16]", "train.figure_every=2", "train.checkpoint_every=2", "train.log_every=1"]
TRAIN = ["toy000", "toy001", "toy002"]
HELD = ["toy005", "toy006"]


def test_make_splits_keeps_the_site_out_of_every_training_list():
    cases = [{"case_id": f"c{i:02d}", "patient": f"p{i // 2}", "site": "far" if i in (3, 8, 9) else f"s{i % 3}",
              "tracer": "fdg", "positive": i % 4 != 1} for i in range(24)]
    sp = make_splits(cases, seed=0, holdout_site="far")
    held = {"c02", "c03", "c08", "c09"}  # patients p1 (c02, c03) and p4 (c08, c09) have a case at "far"
    assert sp["holdout_site"] == "far" and set(sp["holdout"]) == held
    training = set(sp["train"]) | set(sp["val"]) | set(sp["test"])
    training |= {c for v in sp["fractions"].values() for c in v} | {c for v in sp["kshot"].values() for c in v}
    assert not training & held and len(training) == 20
    assert "holdout" not in make_splits(cases, seed=0)
    with pytest.raises(InputError, match="no case from that site"):
        make_splits(cases, seed=0, holdout_site="nowhere")


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_mae_run):
    root = tmp_path_factory.mktemp("ho")
    data = write_toy_dataset(root / "data", n_cases=7, shape=(32, 32, 32))
    sp = json.loads((data / fmt.SPLITS_JSON).read_text())
    sp.update(train=TRAIN, val=["toy003"], test=["toy004"], fractions={"100": TRAIN}, kshot={"1": ["toy000"]},
              holdout_site="far", holdout=HELD)
    atomic_write_json(data / fmt.SPLITS_JSON, sp)
    return data, tiny_mae_run(root / "mae", data, steps=1)


@pytest.mark.slow
def test_experiment_trains_without_the_site_and_reports_it_separately(env, tmp_path):
    data, mae = env
    out = tmp_path / "le"
    res = run_label_efficiency(data, mae, out, runs="pretrained:100,scratch:100", seeds=[0], preset="tiny",
                               overrides=FAST, max_steps=2, probe_kshot=1, probe_steps=2, holdout_site="far",
                               progress=False)
    for run in ("finetune_pretrained_f100_s0", "finetune_scratch_f100_s0"):
        cfg = yaml.safe_load((out / run / "config.yaml").read_text())["task"]
        assert cfg["subset"]["cases"] == TRAIN and not set(cfg["subset"]["cases"]) & set(HELD)
        done = json.loads((out / run / "done.json").read_text())
        assert set(done["case_dice"]) == {"toy004"}  # in-domain test
        assert done["holdout"]["site"] == "far" and set(done["holdout"]["case_dice"]) == set(HELD)
        assert (out / run / "eval_holdout" / "per_case.csv").is_file()
        assert sorted(p.name for p in (out / run / "pred_holdout").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in HELD]
    probe = json.loads((out / "probe_joint_k1_s0" / "done.json").read_text())
    assert set(probe["holdout"]["case_ap"]) == set(HELD) and probe["cases"] == ["toy000"]
    rows = list(csv.DictReader(open(res["results_csv"])))
    held_rows = [r for r in rows if r["row"] == "aggregate_holdout"]
    assert len(held_rows) == 3 and all(r["n_test_cases"] == "2" for r in held_rows)
    md = res["results_md"].read_text()
    assert "## Held-out site `far`" in md and "--holdout-site far" in md


def test_holdout_checks(env, tmp_path, tiny_mae_run):
    data, mae = env
    with pytest.raises(InputError, match="no held-out site 'near'"):
        run_label_efficiency(data, mae, tmp_path / "a", runs="scratch:100", preset="tiny", probe_kshot=0,
                             holdout_site="near", progress=False)
    other = write_toy_dataset(tmp_path / "other", n_cases=3, shape=(32, 32, 32), seed=1)  # other statistics
    info = fmt.load_dataset_info(other)
    info["normalization"]["PET"]["mean"] = 0.9  # as if the held-out site's voxels were in the statistics
    fmt.write_dataset_info(other, {k: v for k, v in info.items() if k not in ("format_version", "channels")})
    leaky = tiny_mae_run(tmp_path / "mae_leaky", other, steps=1)
    with pytest.raises(InputError, match="other normalization statistics"):
        run_label_efficiency(data, leaky, tmp_path / "b", runs="scratch:100", preset="tiny", probe_kshot=0,
                             holdout_site="far", progress=False)
    sp = json.loads((data / fmt.SPLITS_JSON).read_text())
    atomic_write_json(tmp_path / "splits.json", sp)
    try:  # a training subset holding a held-out case is refused
        atomic_write_json(data / fmt.SPLITS_JSON, {**sp, "fractions": {"100": [*TRAIN, HELD[0]]}})
        with pytest.raises(InputError, match="held-out case"):
            run_label_efficiency(data, mae, tmp_path / "c", runs="scratch:100", preset="tiny", probe_kshot=0,
                                 holdout_site="far", progress=False)
    finally:
        atomic_write_json(data / fmt.SPLITS_JSON, sp)
