"""petctfm response (docs/response.md) on constructed data: tiny whole-body phantoms written as
``petctfm predict`` output folders (lesions.nii.gz, summary.json naming the PET, optional organs.csv)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.evaluate.percist import Reference, deauville, measurability_threshold, percist
from petctfm.response.match import match_lesions

SP = 4.0
SHAPE = (40, 30, 48)  # x, y, z voxels at 4 mm: 160 x 120 x 192 mm


def _grid(shift_mm=(0.0, 0.0, 0.0)):
    axes = [(np.arange(n) - (n - 1) / 2) * SP for n in SHAPE]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return x - shift_mm[0], y - shift_mm[1], z - shift_mm[2]


def _ellipsoid(g, c, r):
    x, y, z = g
    r = (r, r, r) if np.isscalar(r) else r
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1


def _body(g):
    suv = np.where(_ellipsoid(g, (0, 0, 0), (60, 45, 85)), 1.0, 0.0)
    suv += 1.0 * _ellipsoid(g, (-25, 0, 10), (22, 18, 20))  # liver
    suv += 4.0 * _ellipsoid(g, (0, 0, 70), (20, 20, 14))  # brain
    suv += 3.0 * _ellipsoid(g, (0, 0, -70), (12, 12, 9))  # bladder
    return suv


def _image(a):
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(a, (2, 1, 0))))
    img.SetSpacing((SP,) * 3)
    img.SetOrigin(tuple(-(n - 1) / 2 * SP for n in SHAPE))
    return img


def _study(lesions, shift_mm=(0.0, 0.0, 0.0)):
    """(SUV, mask) of a phantom with ``lesions`` = [(centre mm, radii mm, SUV)], everything moved by
    ``shift_mm`` (the patient lies elsewhere on the table)."""
    g = _grid(shift_mm)
    suv = _body(g)
    mask = np.zeros(SHAPE, np.uint8)
    for c, r, v in lesions:
        m = _ellipsoid(g, c, r)
        suv[m] = v
        mask[m] = 1
    return suv.astype(np.float32), mask


def _organs_csv(liver=(2.0, 0.2, 2.6), pool=(1.5, 0.1, 1.8)):
    rows = []
    for name, (mean, sd, mx) in (("liver_reference", liver), ("blood_pool_reference", pool)):
        rows.append({"organ": name, "kind": "reference", "label": 1, "volume_ml": 14.0, "n_voxels": 200,
                     "excluded_lesion_ml": 0.0, "suv_mean": mean, "suv_sd": sd, "suv_median": mean,
                     "suv_max": mx, "suv_peak": mean, "sul_mean": mean, "note": ""})  # SUL factor 1
    from petctfm.evaluate.organs import ORGAN_COLUMNS
    from petctfm.io.tables import csv_text

    return csv_text(rows, ORGAN_COLUMNS)


def write_prediction(root, name, lesions, shift_mm=(0.0, 0.0, 0.0), organs=True):
    """A folder as `petctfm predict` leaves it (+ the study it was predicted from); returns the folder."""
    suv, mask = _study(lesions, shift_mm)
    study = root / f"{name}_study"
    study.mkdir()
    sitk.WriteImage(_image(suv), str(study / "SUV.nii.gz"))
    pred = root / name
    pred.mkdir()
    sitk.WriteImage(_image(mask), str(pred / "lesions.nii.gz"))
    summary = {"case": name, "input": {"kind": "nifti", "source": str(study / "SUV.nii.gz")}}
    (pred / "summary.json").write_text(json.dumps(summary))
    if organs:
        (pred / "organs.csv").write_text(_organs_csv())
    return pred


# ------------------------------------------------------------------------------------------- registration


def test_registration_recovers_a_known_shift():
    from petctfm.response.register import register_followup, to_baseline_points

    base, _ = _study([])
    fu, _ = _study([], shift_mm=(8.0, 0.0, -4.0))
    reg = register_followup(_image(base), _image(fu))
    # fixed -> moving: a baseline point lies 8 mm further along x (and 4 mm lower) in the follow-up
    np.testing.assert_allclose(reg.transform.TransformPoint((0.0, 0.0, 0.0)), (8.0, 0.0, -4.0), atol=1.0)
    back = to_baseline_points(reg, np.array([[18.0, 5.0, -14.0]]))
    np.testing.assert_allclose(back[0], (10.0, 5.0, -10.0), atol=1.0)


def test_metric_samples_are_capped_per_level(monkeypatch):
    """25 % of a level's voxels, at most MAX_SAMPLES: a big image samples MAX_SAMPLES at every level, and the
    shift is still recovered when the cap binds (here a cap of 500 on a 20^3 study, whose 25 % would be 2000)."""
    import SimpleITK as sitk

    from petctfm.response import register as R

    big = sitk.Image(200, 200, 300, sitk.sitkFloat32)
    pct = R._sampling(big, [4, 2, 1])
    n = [200 * 200 * 300 / s ** 3 for s in (4, 2, 1)]
    assert [round(p * k) for p, k in zip(pct, n)] == [R.MAX_SAMPLES] * 3
    small = sitk.Image(20, 20, 20, sitk.sitkFloat32)
    assert R._sampling(small, [1]) == [0.25]

    monkeypatch.setattr(R, "MAX_SAMPLES", 500)
    base, _ = _study([])
    fu, _ = _study([], shift_mm=(8.0, 0.0, -4.0))
    reg = R.register_followup(_image(base), _image(fu))
    np.testing.assert_allclose(reg.transform.TransformPoint((0.0, 0.0, 0.0)), (8.0, 0.0, -4.0), atol=1.0)


# ------------------------------------------------------------------------------------------- matching


def _labels(blobs):
    lab = np.zeros((20, 20, 20), np.uint32)
    for k, sl in enumerate(blobs, start=1):
        lab[sl] = k
    return lab


def test_matching_statuses_exact_on_constructed_labels():
    s = np.s_
    base = _labels([s[1:5, 1:5, 1:5], s[10:13, 1:4, 1:4], s[1:4, 10:18, 1:4], s[10:13, 10:13, 10:12],
                    s[10:13, 10:13, 13:15]])
    fu = _labels([s[2:5, 2:5, 2:5], s[1:4, 10:13, 1:4], s[1:4, 15:18, 1:4], s[10:13, 10:13, 10:15],
                  s[16:19, 16:19, 16:19]])
    cen = lambda lab, n: np.array([np.argwhere(lab == k).mean(0) for k in range(1, n + 1)])  # noqa: E731
    groups = match_lesions(base, 5, fu, 5, cen(base, 5), cen(fu, 5))
    got = {(tuple(g.baseline), tuple(g.followup)): g.status for g in groups}
    assert got == {((1,), (1,)): "matched", ((2,), ()): "disappeared", ((3,), (2, 3)): "split",
                   ((4, 5), (4,)): "merged", ((), (5,)): "new"}
    assert [g.number for g in groups] == [1, 2, 3, 4, 5]


def test_matching_by_distance_when_no_overlap():
    base = _labels([np.s_[1:3, 1:3, 1:3]])
    fu = _labels([np.s_[5:7, 1:3, 1:3]])  # 4 voxels away, no overlap
    c_b, c_f = np.array([[1.5, 1.5, 1.5]]), np.array([[5.5, 1.5, 1.5]])
    near = match_lesions(base, 1, fu, 1, c_b * 2, c_f * 2, max_distance_mm=10)  # 8 mm apart
    far = match_lesions(base, 1, fu, 1, c_b * 4, c_f * 4, max_distance_mm=10)  # 16 mm apart
    assert [(g.status, g.linked_by) for g in near] == [("matched", "distance")]
    assert sorted(g.status for g in far) == ["disappeared", "new"]


# ------------------------------------------------------------------------------------------- PERCIST


def test_measurability_threshold_liver_then_blood_pool():
    thr, why = measurability_threshold(Reference("liver", 2.0, 0.25), Reference("blood_pool", 1.5, 0.1))
    assert thr == pytest.approx(3.5) and "liver" in why
    thr, why = measurability_threshold(None, Reference("blood_pool", 1.5, 0.1))
    assert thr == pytest.approx(3.2) and "blood-pool" in why
    assert measurability_threshold(None, None) == (None, "no liver reference")


@pytest.mark.parametrize("followup, category", [
    (7.1, "SMD"),  # -29 %
    (7.0, "PMR"),  # exactly -30 %
    (6.9, "PMR"),  # -31 %
    (12.9, "SMD"),  # +29 %
    (13.1, "PMD"),  # +31 %
    (None, "CMR"),  # no lesion at follow-up
    (1.9, "CMR"),  # at or below the follow-up liver SULmean
])
def test_percist_boundaries(followup, category):
    pc = percist(10.0, followup, 3.5, 3.5, 2.0)
    assert pc.category == category, pc.reason


def test_percist_absolute_criterion_and_new_lesions():
    assert percist(2.4, 1.6, 2.0, 2.0, 1.0).category == "PMR"  # -33 %, -0.8
    assert percist(2.2, 1.5, 2.0, 2.0, 1.0).category == "SMD"  # -32 % but only -0.7 SUL
    pmd = percist(10.0, 5.0, 3.5, 3.5, 2.0, {7: 4.0})  # a measurable new lesion beats a -50 % drop
    assert pmd.category == "PMD" and pmd.new_lesions_counted == [7]
    small = percist(10.0, 5.0, 3.5, 3.5, 2.0, {7: 3.0})  # a new lesion below the threshold: listed, not counted
    assert small.category == "PMR" and small.new_lesions_below_threshold == [7]
    assert percist(10.0, 5.0, None, None, None).reason == "not measurable: no liver reference"
    low = percist(3.0, 1.0, 3.5, 3.5, 2.0)
    assert low.category is None and "below the measurability threshold" in low.reason


# ------------------------------------------------------------------------------------------- Deauville

LIVER = Reference("liver", 2.0, 0.2, 3.0)
POOL = Reference("blood_pool", 1.5, 0.1, 2.0)


@pytest.mark.parametrize("suv_max, new, score", [
    (None, {}, 1), (1.8, {}, 2), (2.5, {}, 3), (3.0, {}, 3), (5.0, {}, 4), (6.0, {}, 4), (6.5, {}, 5),
    (2.5, {4: 3.5}, 5), (2.5, {4: 2.9}, 3),
])
def test_deauville_scores(suv_max, new, score):
    assert deauville(suv_max, LIVER, POOL, new)["score"] == score


def test_deauville_without_references():
    assert deauville(5.0, None, None)["score"] is None
    assert deauville(None, None, None)["score"] == 1


# ------------------------------------------------------------------------------------------- end to end

BASE_LESIONS = [((-30, 0, -30), 12, 10.0),  # 1: matched
                ((30, 0, -30), 8, 8.0),  # 2: disappears
                ((-30, 0, 40), (8, 8, 18), 8.0),  # 3: splits
                ((30, 0, 30), 6, 8.0), ((30, 0, 50), 6, 8.0)]  # 4 + 5: merge


def _followup_lesions(first=6.9):
    return [((-30, 0, -30), 12, first), ((-30, 0, 30), 5, 5.0), ((-30, 0, 52), 5, 5.0),
            ((30, 0, 40), (8, 8, 18), 6.0), ((15, -20, -10), 6, 5.0)]  # the last one is new


def test_response_end_to_end(tmp_path):
    from petctfm.response.api import COLUMNS, assess_response

    base = write_prediction(tmp_path, "t0", BASE_LESIONS)
    fu = write_prediction(tmp_path, "t1", _followup_lesions(), shift_mm=(8.0, 0.0, 0.0))
    out = tmp_path / "resp"
    r = assess_response(base, fu, out)
    assert sorted(p.name for p in out.iterdir()) == ["lesions.csv", "response.json", "response.png"]
    assert json.loads((out / "response.json").read_text())["percist"]["category"] == r["percist"]["category"]
    np.testing.assert_allclose(r["registration"]["translation_mm"], (8, 0, 0), atol=1.0)
    assert r["lesions"] == {"matched": 1, "split": 1, "merged": 1, "complex": 0, "disappeared": 1, "new": 1}
    # the new lesion (SULpeak 5.0) reaches 1.5 x 2.0 + 2 x 0.2 = 3.4: PMD
    assert r["percist"]["category"] == "PMD" and r["percist"]["new_lesions_counted"] == [5]
    assert r["percist"]["baseline_sulpeak"] == pytest.approx(10.0)
    assert r["deauville"]["score"] == 5
    assert r["tmtv"]["change_percent"] < 0
    with open(out / "lesions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    status = {row["status"]: row for row in rows}
    assert [row["status"] for row in rows][0] == "matched" and rows[-1]["status"] == "new"  # largest first
    assert sorted(status) == ["disappeared", "matched", "merged", "new", "split"] and len(rows) == 5
    assert float(status["matched"]["sulpeak_change_percent"]) == pytest.approx(-31.0, abs=0.01)
    assert status["disappeared"]["sulpeak_change_percent"] == "-100.0"
    assert len(status["split"]["followup_labels"].split(";")) == 2
    assert len(status["merged"]["baseline_labels"].split(";")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize("first, category", [(7.1, "SMD"), (6.9, "PMR")])
def test_response_percist_29_vs_31_percent(tmp_path, first, category):
    from petctfm.response.api import assess_response

    one = [((-30, 0, -30), 12, 10.0)]
    base = write_prediction(tmp_path, "t0", one)
    fu = write_prediction(tmp_path, "t1", [((-30, 0, -30), 12, first)], shift_mm=(0.0, 8.0, 0.0))
    r = assess_response(base, fu, tmp_path / "resp", report=False)
    assert r["lesions"]["matched"] == 1
    assert r["percist"]["category"] == category
    assert r["deauville"]["score"] == 5  # 6.9-7.1 > 2 x liver SUVmax 2.6


def test_response_without_organs_says_so(tmp_path):
    from petctfm.response.api import assess_response

    one = [((-30, 0, -30), 12, 10.0)]
    base = write_prediction(tmp_path, "t0", one, organs=False)
    fu = write_prediction(tmp_path, "t1", [((-30, 0, -30), 12, 5.0)], organs=False)
    r = assess_response(base, fu, tmp_path / "resp", report=False)
    assert r["percist"]["category"] is None
    assert r["percist"]["reason"] == "not measurable: no liver reference"
    assert r["deauville"]["score"] is None and r["units"] == "SUV"


# ------------------------------------------------------------------------------------------- CLI errors


def _cli(capsys, *argv):
    from petctfm.cli.main import main

    code = main(["response", *map(str, argv)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def test_cli_refuses_a_study_folder(tmp_path, capsys):
    base = write_prediction(tmp_path, "t0", BASE_LESIONS)
    study = tmp_path / "t1_raw"
    study.mkdir()
    sitk.WriteImage(_image(_study([])[0]), str(study / "SUV.nii.gz"))
    code, err = _cli(capsys, "--baseline", base, "--followup", study, "--out", tmp_path / "o")
    assert code == 3 and len(err) == 1 and err[0].startswith("error:")
    assert "petctfm predict" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "o" / "response.json").exists()


def test_cli_exit_codes(tmp_path, capsys):
    base = write_prediction(tmp_path, "t0", BASE_LESIONS)
    fu = write_prediction(tmp_path, "t1", BASE_LESIONS)
    code, err = _cli(capsys, "--baseline", base, "--followup", fu, "--out", tmp_path / "o", "--min-overlap", "0")
    assert code == 2 and len(err) == 1 and "--min-overlap" in err[0]
    code, err = _cli(capsys, "--baseline", base, "--followup", base, "--out", tmp_path / "o")
    assert code == 2 and len(err) == 1 and "--baseline" in err[0]
    code, err = _cli(capsys, "--baseline", base, "--followup", fu, "--out", tmp_path / "o", "--max-distance", "-1")
    assert code == 2 and len(err) == 1 and "--max-distance" in err[0]
    code, err = _cli(capsys, "--baseline", tmp_path / "nope", "--followup", fu, "--out", tmp_path / "o")
    assert code == 3 and len(err) == 1 and "not found" in err[0]
    (tmp_path / "file").write_text("x")
    code, err = _cli(capsys, "--baseline", base, "--followup", fu, "--out", tmp_path / "file")
    assert code == 4 and len(err) == 1
    (base / "summary.json").write_text(json.dumps({"input": {"kind": "nifti", "source": "/gone/SUV.nii.gz"}}))
    code, err = _cli(capsys, "--baseline", base, "--followup", fu, "--out", tmp_path / "o")
    assert code == 3 and len(err) == 1 and "--baseline-pet" in err[0]


def test_cli_writes_outputs(tmp_path, capsys):
    from petctfm.cli.main import main

    base = write_prediction(tmp_path, "t0", BASE_LESIONS)
    fu = write_prediction(tmp_path, "t1", _followup_lesions(), shift_mm=(8.0, 0.0, 0.0))
    assert main(["response", "--baseline", str(base), "--followup", str(fu), "--out", str(tmp_path / "o")]) == 0
    assert "PERCIST: PMD" in capsys.readouterr().out
    assert (tmp_path / "o" / "response.png").stat().st_size > 10_000


def test_response_followup_without_lesions_is_cmr(tmp_path):
    from petctfm.response.api import assess_response

    base = write_prediction(tmp_path, "t0", [((-30, 0, -30), 12, 10.0)])
    fu = write_prediction(tmp_path, "t1", [], shift_mm=(0.0, 0.0, 8.0))
    r = assess_response(base, fu, tmp_path / "resp")
    assert r["percist"]["category"] == "CMR" and r["deauville"]["score"] == 1
    assert r["lesions"]["disappeared"] == 1 and r["tmtv"]["change_percent"] == -100.0
    assert (tmp_path / "resp" / "response.png").is_file()


def test_response_baseline_without_lesions(tmp_path):
    from petctfm.response.api import assess_response

    base = write_prediction(tmp_path, "t0", [])
    fu = write_prediction(tmp_path, "t1", [((-30, 0, -30), 12, 10.0)])
    r = assess_response(base, fu, tmp_path / "resp", report=False)
    assert r["lesions"]["new"] == 1 and r["percist"]["category"] is None
    assert r["percist"]["reason"] == "not evaluable: no baseline lesion" and r["deauville"]["score"] == 5


def test_registration_failure_is_one_line(tmp_path, capsys, monkeypatch):
    import petctfm.response.register as R

    def boom(*a, **k):
        raise RuntimeError("itk::ERROR: All samples map outside moving image buffer")

    monkeypatch.setattr(R, "register_followup", boom)
    base = write_prediction(tmp_path, "t0", BASE_LESIONS)
    fu = write_prediction(tmp_path, "t1", BASE_LESIONS)
    code, err = _cli(capsys, "--baseline", base, "--followup", fu, "--out", tmp_path / "o")
    assert code == 3 and len(err) == 1 and "registration" in err[0] and "outside moving image" in err[0]
