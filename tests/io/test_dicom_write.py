"""DICOM export: identifiers, SUV from the PT tags, CT rescale, geometry for LPS/RAS/flipped axes, SEG."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from petctfm.core.errors import InputError
from petctfm.synth.dicom import write_dicom_case
from petctfm.io.images import array_xyz, image_from_array
from petctfm.synth.case import SynthCase

LPS = (1, 0, 0, 0, 1, 0, 0, 0, 1)
RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
FLIP_Z = (1, 0, 0, 0, 1, 0, 0, 0, -1)  # left-handed: slices stored head to feet
FLIP_Y = (1, 0, 0, 0, -1, 0, 0, 0, 1)  # left-handed: rows stored posterior to anterior

IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "FAKE123",
    "PatientBirthDate": "19700203",
    "InstitutionName": "Fake Hospital",
}


def fake_case(case_id="PETCT_0001", direction=LPS, lesion=True, seed=0) -> SynthCase:
    """A tiny case with random CT/PET values, a cube lesion and SUV computed the generator's way."""
    rng = np.random.default_rng(seed)
    ct = rng.integers(-1000, 1500, size=(12, 10, 8)).astype(np.int16)
    ct_img = image_from_array(ct, (1.5, 1.2, 2.5), (-9.0, -6.0, 100.0), direction)
    pet = (rng.random((6, 5, 4)) * 20000 + 50).astype(np.float32)
    pet_img = image_from_array(pet, (3.0, 2.4, 5.0), (-9.0, -6.0, 100.0), direction)
    meta = dict(
        case_id=case_id, site="siteA", tracer="fdg", diagnosis="lymphoma", age=54, sex="F", weight_kg=71.5,
        height_cm=168.0, injected_activity_bq=3.1e8, injection_time="2024-03-05T09:12:30",
        acquisition_time="2024-03-05T10:15:00", patient_name="Doe^Jane", patient_id="FAKE123",
        birth_date="1970-02-03", manufacturer="Acme", model="PX-1", institution="Fake Hospital",
    )
    uptake_s = (datetime(2024, 3, 5, 10, 15) - datetime(2024, 3, 5, 9, 12, 30)).total_seconds()
    suv = pet * 71500.0 / (3.1e8 * 2 ** (-uptake_s / 6586.2))
    seg = np.zeros(pet.shape, np.uint8)
    if lesion:
        seg[2:4, 1:3, 1:3] = 1
        seg[5, 4, 3] = 1

    def on_pet(a):
        return image_from_array(a, pet_img.GetSpacing(), pet_img.GetOrigin(), pet_img.GetDirection())

    return SynthCase(case_id, ct_img, pet_img, on_pet(suv.astype(np.float32)), on_pet(pet * 0), on_pet(seg),
                     on_pet(seg * 2), meta)


def _read_dir(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def _slice_index(img: sitk.Image, ipp) -> int:
    """The z index of ``img`` whose slice starts at the DICOM ImagePositionPatient ``ipp``."""
    idx = img.TransformPhysicalPointToContinuousIndex([float(v) for v in ipp])
    assert abs(idx[0]) < 1e-3 and abs(idx[1]) < 1e-3, f"slice does not start at voxel (0, 0): {idx}"
    assert abs(idx[2] - round(idx[2])) < 1e-3
    return int(round(idx[2]))


def _dt(date: str, time: str) -> datetime:
    return datetime.strptime(date + time.split(".")[0], "%Y%m%d%H%M%S")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    case = fake_case(direction=FLIP_Z)
    case_dir, status = write_dicom_case(case, root, seed=7)
    return case, case_dir, status


def test_every_file_has_fake_identifiers_and_site_equipment(written):
    case, case_dir, _ = written
    files = sorted(case_dir.rglob("*.dcm"))
    assert len(files) == 8 + 4 + 1
    study_uids, frame_uids = set(), set()
    for path in files:
        ds = pydicom.dcmread(path)
        for key, value in IDENTIFIERS.items():
            assert str(ds[key].value) == value, (path, key)
        assert ds.AccessionNumber and str(ds.ReferringPhysicianName), path
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        study_uids.add(ds.StudyInstanceUID)
        frame_uids.add(ds.FrameOfReferenceUID)
        if ds.Modality in ("CT", "PT"):
            assert (ds.Manufacturer, ds.ManufacturerModelName) == ("Acme", "PX-1")
    assert len(study_uids) == 1 and len(frame_uids) == 1


def test_suv_computed_from_pt_tags_matches_suv_image(written):
    case, case_dir, _ = written
    pts = _read_dir(case_dir / "PT")
    suv = array_xyz(case.suv)
    seen = set()
    for ds in pts:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
        assert (ds.Units, ds.DecayCorrection) == ("BQML", "START")
        assert {"DECY", "ATTN"} <= set(ds.CorrectedImage)
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        assert rp.RadionuclideCodeSequence[0].CodeValue == "77004003"
        bqml = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        start = datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime).split(".")[0], "%Y%m%d%H%M%S")
        assert start == _dt(ds.StudyDate, str(rp.RadiopharmaceuticalStartTime))
        elapsed = (_dt(ds.SeriesDate, ds.SeriesTime) - start).total_seconds()
        assert _dt(ds.AcquisitionDate, ds.AcquisitionTime) == _dt(ds.SeriesDate, ds.SeriesTime)
        decayed = float(rp.RadionuclideTotalDose) * 2 ** (-elapsed / float(rp.RadionuclideHalfLife))
        suv_tags = bqml * float(ds.PatientWeight) * 1000.0 / decayed
        k = _slice_index(case.suv, ds.ImagePositionPatient)
        seen.add(k)
        np.testing.assert_allclose(suv_tags, suv[:, :, k].T, rtol=0.01, atol=1e-3)
    assert seen == set(range(suv.shape[2]))
    assert len({float(ds.RescaleSlope) for ds in pts}) == len(pts)  # a slope of its own per slice
    assert float(pts[0].PatientSize) == pytest.approx(1.68) and pts[0].PatientAge == "054Y"


def test_ct_rescale_gives_hounsfield_units(written):
    case, case_dir, _ = written
    ct = array_xyz(case.ct)
    for ds in _read_dir(case_dir / "CT"):
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.BitsAllocated == 16
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        k = _slice_index(case.ct, ds.ImagePositionPatient)
        np.testing.assert_array_equal(hu, ct[:, :, k].T)
    assert int(ds.RescaleIntercept) == -1024


@pytest.mark.parametrize("direction", [LPS, RAS, FLIP_Z, FLIP_Y], ids=["LPS", "RAS", "flipZ", "flipY"])
def test_series_read_back_by_simpleitk_reproduces_geometry(tmp_path, direction):
    case = fake_case(direction=direction)
    case_dir, _ = write_dicom_case(case, tmp_path, seed=1)
    for modality, original in (("CT", case.ct), ("PT", case.pet)):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case_dir / modality)))
        back = reader.Execute()
        d = np.array(direction, float).reshape(3, 3)
        np.testing.assert_allclose(back.GetSpacing(), original.GetSpacing(), atol=1e-4)
        if np.linalg.det(d) > 0:  # right-handed: the very same image
            np.testing.assert_allclose(back.GetDirection(), direction, atol=1e-6)
            np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-4)
        else:  # left-handed: DICOM stacks along the normal, so z is reversed; origin is the last slice
            flipped = d.copy()
            flipped[:, 2] *= -1
            np.testing.assert_allclose(np.array(back.GetDirection()).reshape(3, 3), flipped, atol=1e-6)
            last = original.TransformIndexToPhysicalPoint([0, 0, original.GetSize()[2] - 1])
            np.testing.assert_allclose(back.GetOrigin(), last, atol=1e-4)
        # same values at the same physical places
        on_original = sitk.Resample(back, original, sitk.Transform(), sitk.sitkNearestNeighbor, -9999.0,
                                    sitk.sitkFloat64)
        rtol = 0 if modality == "CT" else 1e-4
        np.testing.assert_allclose(array_xyz(on_original), array_xyz(original), rtol=rtol, atol=0.5)


@pytest.mark.parametrize("lesion", [True, False], ids=["lesion", "negative"])
def test_dicom_seg_reads_back_to_the_same_mask(tmp_path, lesion):
    case = fake_case(direction=FLIP_Z, lesion=lesion)
    case_dir, status = write_dicom_case(case, tmp_path, seed=3)
    assert status == ("lesion" if lesion else "empty")
    seg = hd.seg.segread(case_dir / "SEG" / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    desc = seg.SegmentSequence[0]
    assert desc.SegmentLabel == "Lesion"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # SCT Neoplasm
    pts = _read_dir(case_dir / "PT")
    assert seg.FrameOfReferenceUID == pts[0].FrameOfReferenceUID
    assert str(seg.PatientName) == "Doe^Jane" and seg.InstitutionName == "Fake Hospital"
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in pts],
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )[..., 0]
    expected = array_xyz(case.seg)
    for ds, frame in zip(pts, pixels):
        np.testing.assert_array_equal(frame, expected[:, :, _slice_index(case.seg, ds.ImagePositionPatient)].T)
    assert int(pixels.sum()) == int(expected.sum())


def test_same_seed_identical_bytes_other_seed_different(tmp_path):
    def files(root, seed):
        case_dir, _ = write_dicom_case(fake_case(), root, seed=seed)
        return {p.relative_to(case_dir): p.read_bytes() for p in sorted(case_dir.rglob("*.dcm"))}

    a, b, c = files(tmp_path / "a", 5), files(tmp_path / "b", 5), files(tmp_path / "c", 6)
    assert a.keys() == b.keys() == c.keys() and len(a) == 13
    assert all(a[k] == b[k] for k in a)
    assert all(a[k] != c[k] for k in a)


def test_missing_dose_is_a_clear_error_and_leaves_nothing(tmp_path):
    case = fake_case()
    del case.meta["injected_activity_bq"]
    with pytest.raises(InputError, match="PETCT_0001.*injected_activity_bq"):
        write_dicom_case(case, tmp_path, seed=0)
    assert not (tmp_path / "PETCT_0001").exists()
    assert list(tmp_path.iterdir()) == []


def test_generated_psma_case_from_a_flipped_axis_site(tmp_path):
    """A real tiny generated case (PSMA, Ga-68, a site with a left-handed orientation) survives the round trip."""
    from petctfm.synth.generator import generate_case
    from petctfm.synth.sites import SITES

    site = next(name for name, p in SITES.items() if np.linalg.det(np.reshape(p.direction, (3, 3))) < 0)
    case = generate_case(4, 21, size="tiny", sites=[site], tracers=["psma"])
    assert array_xyz(case.seg).sum() > 0, "pick a case with lesions"
    case_dir, _ = write_dicom_case(case, tmp_path, seed=21)
    pts = _read_dir(case_dir / "PT")
    rp = pts[0].RadiopharmaceuticalInformationSequence[0]
    assert rp.RadionuclideCodeSequence[0].CodeMeaning == "^68^Gallium"
    assert float(rp.RadionuclideHalfLife) == pytest.approx(case.meta["half_life_s"])
    start = datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    elapsed = (_dt(pts[0].SeriesDate, pts[0].SeriesTime) - start).total_seconds()
    decayed = float(rp.RadionuclideTotalDose) * 2 ** (-elapsed / float(rp.RadionuclideHalfLife))
    suv, seg = array_xyz(case.suv), array_xyz(case.seg)
    for ds in pts:
        k = _slice_index(case.suv, ds.ImagePositionPatient)
        by_hand = (ds.pixel_array * float(ds.RescaleSlope)) * float(ds.PatientWeight) * 1000.0 / decayed
        np.testing.assert_allclose(by_hand, suv[:, :, k].T, rtol=0.01, atol=0.01 * max(suv[:, :, k].max(), 1e-3))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case_dir / "CT")))
    ct_back = sitk.Resample(reader.Execute(), case.ct, sitk.Transform(), sitk.sitkNearestNeighbor, -9999.0)
    np.testing.assert_array_equal(array_xyz(ct_back), array_xyz(case.ct))
    mask = hd.seg.segread(case_dir / "SEG" / "seg.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in pts], segment_numbers=[1],
        assert_missing_frames_are_empty=True)[..., 0]
    for ds, frame in zip(pts, mask):
        np.testing.assert_array_equal(frame, seg[:, :, _slice_index(case.seg, ds.ImagePositionPatient)].T)
    assert int(mask.sum()) == int(seg.sum())
