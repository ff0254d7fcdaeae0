"""``petctfm response`` on DICOM studies (docs/response.md): the DICOM-SEG of each study references that study's
own PT instances, a matched lesion has the same group number (and Tracking UID) in both, the TID 1500 SR of the
follow-up holds the PERCIST category and the values of ``response.json`` / ``lesions.csv``; swapped DICOM study
dates are refused (exit 3).

The pair: ``synth --followup``'s pair 1 (a PMR pair; ``make_pair``, read-only) written as two DICOM studies
(``synth``'s DICOM writer, different seeds so the studies have their own UIDs), and a predict-like folder for
each whose mask is the phantom's truth on the grid of the PT series as DICOM reads it (what ``predict`` writes
for a DICOM study), with ``summary.json`` naming the DICOM folder and the study date read from it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk


def _predict_like(case, study, dest):
    """``dest``: lesions.nii.gz (truth on the DICOM PT grid), organs.csv (predict's readout), summary.json."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.harmonize.load import read_dicom_suv
    from petctfm.io.images import array_xyz, write_image
    from petctfm.predict.organs import organ_table, organs_csv, patient_of
    from petctfm.predict.sources import dicom_series, study_date_of, source_from_files

    suv, pt = read_dicom_suv("/", dicom_series(study / "PT", "PT"))
    nn = sitk.sitkNearestNeighbor
    seg = sitk.Resample(case.seg, suv, sitk.Transform(), nn, 0, sitk.sitkUInt8)  # same voxels, DICOM's slice order
    organs = sitk.Resample(case.organs, suv, sitk.Transform(), nn, 0, sitk.sitkUInt8)
    mask = array_xyz(seg) > 0
    assert mask.sum() == (array_xyz(case.seg) > 0).sum()
    dest.mkdir(parents=True)
    write_image(seg, dest / "lesions.nii.gz")
    rows = organ_table(array_xyz(organs), mask, suv, ORGAN_LABELS, patient_of(pt))
    (dest / "organs.csv").write_text(organs_csv(rows))
    src = source_from_files(study / "PT", study / "CT")
    summary = {"case": case.case_id, "input": {"kind": "dicom", "source": str(study / "PT"),
                                               **study_date_of(src, pt).to_json()}}
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


@pytest.fixture(scope="module")
def dicom_pair(tmp_path_factory):
    from petctfm.synth.dicom import write_dicom_case
    from petctfm.synth.followup import make_pair

    root = tmp_path_factory.mktemp("dicom_pair")
    pair = make_pair(1, 4, 0, "tiny")  # pair 1 of 4: PMR
    b, _ = write_dicom_case(pair.baseline, root / "t0", seed=0)
    f, _ = write_dicom_case(pair.followup, root / "t1", seed=1)
    return {"truth": pair.truth, "studies": (b, f),
            "preds": (_predict_like(pair.baseline, b, root / "pred" / "t0"),
                      _predict_like(pair.followup, f, root / "pred" / "t1"))}


@pytest.fixture(scope="module")
def response_out(dicom_pair, tmp_path_factory):
    from petctfm.cli.main import main

    out = tmp_path_factory.mktemp("resp") / "r"
    b, f = dicom_pair["preds"]
    assert main(["response", "--baseline", str(b), "--followup", str(f), "--out", str(out), "--no-report"]) == 0
    return out


def _uids(folder):
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (folder / "PT").iterdir()}


def _study_uid(folder):
    return str(pydicom.dcmread(next((folder / "PT").iterdir()), stop_before_pixels=True).StudyInstanceUID)


def test_dicom_outputs_written(response_out):
    r = json.loads((response_out / "response.json").read_text())
    assert r["outputs"] == ["lesions.csv", "baseline_lesions.seg.dcm", "followup_lesions.seg.dcm",
                            "response_sr.dcm", "response.json"]
    assert r["percist"]["category"] == "PMR"  # the pair's truth, read through DICOM
    assert r["baseline"]["pet"].endswith("PT") and r["study_dates"]["interval_days"] > 0
    assert r["study_dates"]["sources"]["baseline"].endswith("summary.json (DICOM StudyDate)")  # as predict records


def test_segs_reference_their_own_study_and_number_groups_alike(dicom_pair, response_out):
    import highdicom as hd

    b, f = dicom_pair["studies"]
    assert _study_uid(b) != _study_uid(f)
    rows = list(csv.DictReader(open(response_out / "lesions.csv")))
    segs = {}
    for side, study in (("baseline", b), ("followup", f)):
        seg = hd.seg.segread(response_out / f"{side}_lesions.seg.dcm")
        segs[side] = seg
        assert seg.StudyInstanceUID == _study_uid(study) and seg.Modality == "SEG"
        refs = {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
                for i in s.ReferencedInstanceSequence}
        assert refs and refs <= _uids(study)  # its own study's PT instances, none of the other's
        assert not refs & _uids(f if study == b else b)
        # one segment per group with lesions in this study, labelled with the group number
        want = sorted(int(r["number"]) for r in rows if r[f"{side}_labels"])
        labels = [str(d.SegmentLabel) for d in seg.SegmentSequence]
        assert [int(lab.split()[1]) for lab in labels] == want
        assert [str(d.TrackingID) for d in seg.SegmentSequence] == [f"lesion {n}" for n in want]
    # a matched lesion: the same number and the same Tracking UID in both studies
    matched = [int(r["number"]) for r in rows if r["status"] == "matched"]
    assert matched
    uid = {side: {int(str(d.TrackingID).split()[1]): str(d.TrackingUID) for d in s.SegmentSequence}
           for side, s in segs.items()}
    for n in matched:
        assert uid["baseline"][n] == uid["followup"][n]
    assert len(set(uid["baseline"].values())) == len(uid["baseline"])
    # the segment's voxels are the group's lesions: the baseline SEG read back onto the PT grid
    from petctfm.io.dicom_read import read_seg_on

    from petctfm.harmonize.load import read_dicom_suv
    from petctfm.predict.sources import dicom_series

    suv, pt = read_dicom_suv("/", dicom_series(b / "PT", "PT"))
    back = sitk.GetArrayFromImage(read_seg_on("/", str(response_out / "baseline_lesions.seg.dcm"), pt, suv).lesion)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(dicom_pair["preds"][0] / "lesions.nii.gz")))
    assert np.array_equal(back > 0, truth > 0)


def _sr_groups(sr):
    """(tracking identifier, time point, {measurement meaning + derivation: value}, {evaluation: value}, segment
    reference) of every measurement group of a TID 1500 report."""
    import highdicom as hd

    out = []
    for g in sr.content.get_planar_roi_measurement_groups() + sr.content.get_volumetric_roi_measurement_groups() \
            + sr.content.get_image_measurement_groups():
        ms = {}
        for m in g.get_measurements():
            der = m.derivation.meaning if m.derivation is not None else ""
            ms[(m.name.meaning, der)] = (m.value, m.unit.value)
        ev = {q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()}
        items = {i.name.meaning: i for i in g[0].ContentSequence}
        tp = items["Time Point"].value if "Time Point" in items else None
        ref = g.referenced_segment if isinstance(g, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations) else None
        out.append((g.tracking_identifier, tp, ms, ev, ref))
    return out


def test_sr_holds_the_category_and_the_values_of_response_json(dicom_pair, response_out):
    import highdicom as hd

    b, f = dicom_pair["studies"]
    r = json.loads((response_out / "response.json").read_text())
    rows = {int(x["number"]): x for x in csv.DictReader(open(response_out / "lesions.csv"))}
    sr = hd.sr.srread(response_out / "response_sr.dcm")
    assert sr.StudyInstanceUID == _study_uid(f)  # the follow-up's study
    assert str(sr.ContentTemplateSequence[0].TemplateIdentifier) == "1500"  # TID 1500 Measurement Report
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    other = {str(s.StudyInstanceUID) for s in sr.PertinentOtherEvidenceSequence}
    assert other == {_study_uid(b)}
    groups = _sr_groups(sr)
    resp = [g for g in groups if g[0] == "PERCIST response"]
    assert len(resp) == 1 and resp[0][3]["Response Evaluation"] == "Partial metabolic response"
    assert resp[0][2][("SULpeak change", "")][0] == pytest.approx(r["percist"]["change_percent"])
    if r["deauville"]["score"] is not None:
        assert resp[0][3]["Deauville five-point score"] == f"Deauville score {r['deauville']['score']}"
    for side, word in (("baseline", "baseline"), ("followup", "follow-up")):
        wb = next(g for g in groups if g[0] == f"whole body, {word}")
        assert wb[1] == word
        assert wb[2][("Metabolic Volume", "")] == (pytest.approx(r["tmtv"][f"{side}_ml"]), "ml")
        assert wb[2][("Total Lesion Glycolysis", "")][0] == pytest.approx(r["tlg"][side])
        assert wb[2][("SUVlbm(Janma)", "Peak Value Within ROI")] == (pytest.approx(r[side]["hottest_sulpeak"]),
                                                                      "g/ml{SUVlbm(Janma)}")
    lesions = [g for g in groups if g[0].startswith("lesion ")]
    n_expected = sum(bool(x["baseline_labels"]) + bool(x["followup_labels"]) for x in rows.values())
    assert len(lesions) == n_expected
    uids = {}
    for ident, tp, ms, ev, ref in lesions:
        n = int(ident.split()[1])
        side = "baseline" if tp == "baseline" else "followup"
        row = rows[n]
        assert ms[("SUVlbm(Janma)", "Peak Value Within ROI")][0] == pytest.approx(float(row[f"{side}_sul_peak"]))
        assert ms[("SUVbw", "Maximum")][0] == pytest.approx(float(row[f"{side}_suv_max"]))
        assert ms[("Volume", "")] == (pytest.approx(float(row[f"{side}_volume_ml"])), "ml")
        assert ev["Lesion match status"] == f"Lesion {row['status']}"
        seg = hd.seg.segread(response_out / f"{side}_lesions.seg.dcm")
        assert ref.referenced_sop_instance_uid == str(seg.SOPInstanceUID)  # this time point's own SEG
        (seg_number,) = ref.referenced_segment_numbers
        assert str(seg.SegmentSequence[seg_number - 1].SegmentLabel).split()[1] == str(n)
        assert {str(i.referenced_sop_instance_uid) for i in ref.source_images_for_segmentation} <= _uids(
            b if side == "baseline" else f)
        uids.setdefault(n, set()).add(str(seg.SegmentSequence[seg_number - 1].TrackingUID))
    assert all(len(u) == 1 for u in uids.values())  # one Tracking UID per group across time points


def test_swapped_dicom_studies_are_refused(dicom_pair, tmp_path, capsys):
    from petctfm.cli.main import main

    b, f = dicom_pair["preds"]
    out = tmp_path / "r"
    rc = main(["response", "--baseline", str(f), "--followup", str(b), "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 3 and len(err) == 1 and "before the baseline" in err[0] and "swapped" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_swapped_dicom_study_folders_are_refused_before_any_prediction(dicom_pair, tmp_path, capsys):
    """Study folders (predicted inside ``response`` with ``--model``): the dates come from the DICOM headers and
    are checked before the model is even loaded (this model path does not exist)."""
    from petctfm.cli.main import main

    b, f = dicom_pair["studies"]
    rc = main(["response", "--baseline", str(f), "--followup", str(b), "--model", str(tmp_path / "no_model"),
               "--out", str(tmp_path / "r")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 3 and len(err) == 1 and "before the baseline" in err[0] and "DICOM StudyDate" in err[0]


def test_followup_without_lesions_gets_no_seg_and_a_cmr_report(dicom_pair, tmp_path):
    """The follow-up's mask emptied: CMR; its SEG is not written (a SEG needs a segment), the SR still is, with
    the baseline's lesions as disappeared and no follow-up lesion group."""
    import shutil

    import highdicom as hd

    from petctfm.cli.main import main

    b, f = dicom_pair["preds"]
    empty = tmp_path / "t1_empty"
    shutil.copytree(f, empty)
    mask = sitk.ReadImage(str(empty / "lesions.nii.gz"))
    sitk.WriteImage(mask * 0, str(empty / "lesions.nii.gz"))
    out = tmp_path / "r"
    assert main(["response", "--baseline", str(b), "--followup", str(empty), "--out", str(out), "--no-report"]) == 0
    r = json.loads((out / "response.json").read_text())
    assert r["percist"]["category"] == "CMR"
    assert r["outputs"] == ["lesions.csv", "baseline_lesions.seg.dcm", "response_sr.dcm", "response.json"]
    groups = _sr_groups(hd.sr.srread(out / "response_sr.dcm"))
    resp = next(g for g in groups if g[0] == "PERCIST response")
    assert resp[3]["Response Evaluation"] == "Complete metabolic response"
    lesions = [g for g in groups if g[0].startswith("lesion ")]
    assert lesions and all(g[1] == "baseline" and g[3]["Lesion match status"] == "Lesion disappeared"
                           for g in lesions)
