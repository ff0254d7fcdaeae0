"""``petctfm evaluate`` end to end on small NIfTI files (autoPET folders, flat files, nnU-Net, dataset)."""

import csv
import json

import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.evaluate.report import evaluate_folder
from petctfm.io.images import image_from_array, write_image

SPACING = (2.0, 2.0, 3.0)
VOX = 0.012
ORIGIN = (-10.0, 5.0, 100.0)
SHAPE = (12, 12, 8)


def write(path, arr, origin=ORIGIN, spacing=SPACING):
    write_image(image_from_array(np.asarray(arr), spacing, origin), path)


def box(*slices):
    a = np.zeros(SHAPE, np.uint8)
    a[slices] = 1
    return a


# case -> (gt, pred A, pred B); hand values: c1 Dice 2*16/(16+24) = 0.8; c2 missed lesion of 8 voxels
# (Dice 0, FN 0.096 ml); c3 negative with a 2-voxel FP blob.
CASES = {
    "c1": (box(slice(2, 4), slice(2, 6), slice(2, 4)), box(slice(2, 5), slice(2, 6), slice(2, 4)),
           box(slice(2, 4), slice(2, 6), slice(2, 4))),
    "c2": (box(slice(6, 8), slice(6, 8), slice(4, 6)), box(slice(0, 1), slice(0, 1), slice(0, 1)) * 0,
           box(slice(6, 8), slice(6, 8), slice(4, 5))),
    "c3": (box(slice(0, 0), slice(0, 0), slice(0, 0)), box(slice(10, 12), slice(0, 1), slice(0, 1)),
           box(slice(0, 0), slice(0, 0), slice(0, 0))),
}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "synth"
    gt_dir, pa, pb = root / "autopet", tmp_path / "predA", tmp_path / "predB"
    for i, (cid, (gt, a, b)) in enumerate(CASES.items()):
        write(gt_dir / cid / "SEG.nii.gz", gt)
        write(gt_dir / cid / "SUV.nii.gz", np.full(SHAPE, 2.0, np.float32))
        # one prediction in the predict layout, the others flat (NIfTI and MHA)
        write(pa / cid / "lesions.nii.gz" if cid == "c2" else pa / f"{cid}.nii.gz", a)
        write(pb / f"{cid}.mha", b)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "site", "tracer", "diagnosis"])
        w.writerows([["c1", "siteA", "FDG", "lymphoma"], ["c2", "siteA", "FDG", "melanoma"],
                     ["c3", "siteB", "PSMA", "negative"]])
    return {"gt": gt_dir, "a": pa, "b": pb, "tmp": tmp_path}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_end_to_end_with_comparison(data, capsys):
    out = data["tmp"] / "report"
    rc = main(["evaluate", "--pred", str(data["a"]), "--gt", str(data["gt"]), "--compare", str(data["b"]),
               "--out", str(out), "--bootstrap", "200", "--seed", "0"])
    assert rc == 0
    rows = {r["case_id"]: r for r in read_csv(out / "per_case.csv")}
    assert float(rows["c1"]["dice"]) == pytest.approx(0.8)
    assert float(rows["c2"]["dice"]) == 0 and float(rows["c2"]["fn_volume_ml"]) == pytest.approx(8 * VOX)
    assert rows["c3"]["dice"] == "" and float(rows["c3"]["fp_volume_ml"]) == pytest.approx(2 * VOX)
    assert rows["c1"]["site"] == "siteA" and rows["c3"]["tracer"] == "PSMA"
    # TLG from the autoPET SUV.nii.gz (SUV 2 everywhere): c1 gt 16 voxels, pred 24
    assert float(rows["c1"]["gt_tlg"]) == pytest.approx(2 * 16 * VOX)
    assert float(rows["c1"]["tlg_error"]) == pytest.approx(2 * 8 * VOX)
    summary = read_csv(out / "summary.csv")
    dice_all = next(r for r in summary if r["group_by"] == "all" and r["metric"] == "dice")
    assert int(dice_all["n"]) == 2 and float(dice_all["mean"]) == pytest.approx(0.4)
    fp_b = next(r for r in summary if r["group_by"] == "site" and r["group"] == "siteB" and r["metric"] == "fp_volume_ml")
    assert float(fp_b["mean"]) == pytest.approx(2 * VOX)
    comp = {r["metric"]: r for r in read_csv(out / "comparison.csv")}
    # B: c1 Dice 1.0, c2 Dice 2*4/(8+4) = 2/3 -> mean diff A - B = (0.8 - 1 + 0 - 2/3) / 2
    assert float(comp["dice"]["mean_diff"]) == pytest.approx((0.8 - 1 + 0 - 2 / 3) / 2)
    assert int(comp["dice"]["n"]) == 2 and int(comp["dice"]["wins_b"]) == 2
    md = (out / "summary.md").read_text()
    assert "## By site" in md and "## By tracer" in md and "## Paired comparison" in md
    assert "| dice | 2 | 0.400 [" in md
    assert (out / "dice_per_case.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "per_case_compare.csv").is_file()
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind
    assert "3 cases" in capsys.readouterr().out


def test_geometry_mismatch_exit_3_one_line(data, capsys):
    write(data["a"] / "c1.nii.gz", CASES["c1"][1], origin=(ORIGIN[0] + 1.0, ORIGIN[1], ORIGIN[2]))
    rc = main(["evaluate", "--pred", str(data["a"]), "--gt", str(data["gt"]), "--out", str(data["tmp"] / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(err.splitlines()) == 1
    assert err.startswith("error: mismatched geometry") and "c1.nii.gz" in err and "SEG.nii.gz" in err
    assert "origin" in err
    write(data["a"] / "c1.nii.gz", CASES["c1"][1], spacing=(2.0, 2.0, 2.5))
    assert main(["evaluate", "--pred", str(data["a"]), "--gt", str(data["gt"]), "--out", str(data["tmp"] / "r")]) == 3
    assert "spacing" in capsys.readouterr().err


def test_missing_prediction_error_and_allow_missing(data, capsys):
    (data["a"] / "c1.nii.gz").unlink()
    args = ["evaluate", "--pred", str(data["a"]), "--gt", str(data["gt"]), "--out", str(data["tmp"] / "r"),
            "--bootstrap", "50"]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "no prediction for 1 ground-truth case(s): c1" in err
    assert main(args + ["--allow-missing"]) == 0
    rows = {r["case_id"]: r for r in read_csv(data["tmp"] / "r" / "per_case.csv")}
    assert rows["c1"]["missing_prediction"] == "True" and float(rows["c1"]["dice"]) == 0


def test_probability_map_is_rejected(data, capsys):
    write(data["a"] / "c1.nii.gz", CASES["c1"][1] * np.float32(0.7))
    assert main(["evaluate", "--pred", str(data["a"]), "--gt", str(data["gt"]), "--out", str(data["tmp"] / "r")]) == 3
    assert "non-integer values" in capsys.readouterr().err


def test_nnunet_labels_with_suv_channel(tmp_path):
    raw = tmp_path / "Dataset001_PETCT"
    (raw / "dataset.json").parent.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"}}))
    gt, pred = CASES["c1"][0], CASES["c1"][1]
    write(raw / "labelsTr" / "p1.nii.gz", gt)
    write(raw / "imagesTr" / "p1_0001.nii.gz", np.full(SHAPE, 3.0, np.float32))
    write(tmp_path / "pred" / "p1.nii.gz", pred)
    res = evaluate_folder(tmp_path / "pred", raw, n_resamples=0)
    (row,) = res["cases"]
    assert row["dice"] == pytest.approx(0.8) and row["gt_tlg"] == pytest.approx(3 * 16 * VOX)
    assert res["breakdown_columns"] == []


def test_harmonized_dataset_ground_truth_ras_affine(tmp_path):
    """Dataset GT stores a RAS affine; a NIfTI prediction on the same physical grid must match it."""
    from petctfm.data.format import write_case, write_dataset_info

    gt = CASES["c1"][0]
    lps = np.eye(4)
    lps[:3, :3] = np.diag(SPACING)
    lps[:3, 3] = ORIGIN
    ras_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    image = np.stack([np.full(SHAPE, 4.0, np.float32), np.zeros(SHAPE, np.float32)])
    write_case(tmp_path / "ds", "p1", image, gt, ras_affine, {"site": "siteA"})
    write_dataset_info(tmp_path / "ds", {})
    (tmp_path / "ds" / "splits.json").write_text(json.dumps({"test": ["p1"]}))
    write(tmp_path / "pred" / "p1.nii.gz", CASES["c1"][1])
    res = evaluate_folder(tmp_path / "pred", tmp_path / "ds", split="test", n_resamples=0)
    (row,) = res["cases"]
    assert row["dice"] == pytest.approx(0.8) and row["gt_tlg"] == pytest.approx(4 * 16 * VOX)
    write(tmp_path / "pred" / "p1.nii.gz", CASES["c1"][1], origin=(10.0, -5.0, 100.0))  # RAS read as LPS
    with pytest.raises(Exception, match="mismatched geometry"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ds", n_resamples=0)


def test_build_result_in_memory_and_write_report(tmp_path):
    from petctfm.evaluate import build_result, case_metrics, write_report

    rows_a, rows_b = [], []
    for cid, (gt, a, b) in CASES.items():
        rows_a.append({"case_id": cid, "site": "s1", **case_metrics(a, gt, SPACING)})
        rows_b.append({"case_id": cid, "site": "s1", **case_metrics(b, gt, SPACING)})
    res = build_result(rows_a, rows_b, ["site", "tracer"], n_resamples=100, seed=0)
    assert res["breakdown_columns"] == ["site"]
    files = write_report(res, tmp_path / "r")
    assert set(files) == {"per_case.csv", "summary.csv", "per_case_compare.csv", "comparison.csv",
                          "dice_per_case.png", "summary.md"}
    assert len(read_csv(files["per_case.csv"])) == 3
    with pytest.raises(ValueError, match="same case ids"):
        build_result(rows_a, rows_b[::-1])
