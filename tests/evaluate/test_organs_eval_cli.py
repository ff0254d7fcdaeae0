"""``petctfm evaluate --organs``: per-organ Dice / NSD with CIs from organ label maps, absent organs left out,
one-line errors with the documented exit codes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data import format as fmt
from petctfm.predict.split import write_label_nifti
from toy_data import write_toy_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("evorg"), n_cases=3, shape=(24, 24, 24), organs=True)


def _preds(ds, out, damage=None):
    for cid in ("toy000", "toy001", "toy002"):
        c = fmt.load_case(ds, cid)
        org = np.asarray(c["organs"]).copy()
        if damage == cid:
            org[org == ORGAN_LABELS["spleen"]] = 0  # the spleen missed in one case
        write_label_nifti(org, np.asarray(c["meta"]["affine"]), out / f"{cid}.nii.gz")
    return out


def test_organ_report_scores_each_organ(ds, tmp_path, capsys):
    pred = _preds(ds, tmp_path / "pred", damage="toy001")
    out = tmp_path / "rep"
    assert main(["evaluate", "--organs", "--pred", str(pred), "--gt", str(ds), "--out", str(out),
                 "--bootstrap", "200"]) == 0
    rows = {r["organ"]: r for r in csv.DictReader(open(out / "organs_summary.csv", newline=""))}
    assert float(rows["liver"]["dice_mean"]) == 1.0 and float(rows["liver"]["nsd_mean"]) == 1.0
    assert float(rows["spleen"]["dice_mean"]) == pytest.approx(2 / 3, abs=1e-4)  # 1, 0, 1 (CSV: 4 decimals)
    assert float(rows["spleen"]["dice_ci_low"]) <= 0.6667 <= float(rows["spleen"]["dice_ci_high"])
    assert rows["heart"]["n_dice"] == "0" and rows["heart"]["dice_mean"] == ""  # absent everywhere: left out
    per = list(csv.DictReader(open(out / "organs_per_case.csv", newline="")))
    assert {r["case_id"] for r in per} == {"toy000", "toy001", "toy002"}
    assert "| spleen | 3 |" in (out / "organs_summary.md").read_text()
    # SUVmean agreement from the dataset's image.npy channel 0: a perfect liver agrees exactly, the missed
    # spleen counts against the within-5 % fraction
    assert float(rows["liver"]["suv_abs_rel_err_median"]) == 0.0 and float(rows["liver"]["suv_within_5pct"]) == 1.0
    assert rows["spleen"]["n_suv"] == "3" and rows["spleen"]["n_suv_missed"] == "1"
    assert float(rows["spleen"]["suv_within_5pct"]) == pytest.approx(2 / 3, abs=1e-4)
    liver = [r for r in per if r["organ"] == "liver"]
    assert all(float(r["suv_mean_rel_err"]) == 0.0 and float(r["suv_mean_true"]) > 0 for r in liver)
    assert "mean organ Dice" in capsys.readouterr().out


def test_labels_table_and_split(ds, tmp_path):
    pred = _preds(ds, tmp_path / "pred")
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"liver": 1, "spleen": 2}))
    out = tmp_path / "rep"
    assert main(["evaluate", "--organs", "--labels", str(table), "--pred", str(pred), "--gt", str(ds),
                 "--split", "test", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "organs_summary.csv", newline="")))
    assert [r["organ"] for r in rows] == ["liver", "spleen", "target_organs_pooled"] and rows[0]["n_dice"] == "1"


@pytest.mark.parametrize("extra, code, needle", [
    (["--labels", "t.json"], 2, "only with --organs"),
    (["--organs", "--nsd-tolerance", "0"], 2, "--nsd-tolerance"),
    (["--organs", "--compare", "x"], 2, "--compare"),
    (["--organs", "--labels", "missing.json"], 3, "missing.json"),
])
def test_errors(ds, tmp_path, capsys, extra, code, needle):
    pred = _preds(ds, tmp_path / "pred")
    (tmp_path / "t.json").write_text("{}")
    extra = [str(tmp_path / e) if e.endswith(".json") else e for e in extra]
    rc = main(["evaluate", *extra, "--pred", str(pred), "--gt", str(ds), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == code and needle in err and len(err.strip().splitlines()) == 1


def test_missing_prediction_is_an_input_error(ds, tmp_path, capsys):
    pred = _preds(ds, tmp_path / "pred")
    (pred / "toy002.nii.gz").unlink()
    rc = main(["evaluate", "--organs", "--pred", str(pred), "--gt", str(ds), "--out", str(tmp_path / "o")])
    assert rc == 3 and "toy002" in capsys.readouterr().err
