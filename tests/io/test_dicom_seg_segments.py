"""io.dicom_seg: one segment per object, lesion / organ codes, the algorithm type (issue 14 follow-up)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from petctfm.io.dicom_read import read_volume
from petctfm.io.dicom_seg import SegmentSpec, build_seg, organ_key, save_seg, segment_codes
from petctfm.io.images import array_xyz
from petctfm.synth.dicom import write_dicom_case

from test_dicom_write import FLIP_Z, fake_case  # pytest puts this folder on sys.path


def _frames(labels_xyz):
    return np.ascontiguousarray(np.transpose(labels_xyz, (2, 1, 0)))  # [slice, rows, cols]


@pytest.fixture
def pt_series(tmp_path):
    case_dir, _ = write_dicom_case(fake_case(direction=FLIP_Z), tmp_path, seed=3)
    files = sorted(str(p.relative_to(case_dir)) for p in (case_dir / "PT").iterdir())
    suv, pts = read_volume(case_dir, files)
    return suv, pts


def test_one_segment_per_object_with_codes_and_semiautomatic(pt_series, tmp_path):
    suv, pts = pt_series
    lab = np.zeros(array_xyz(suv).shape, np.uint8)  # (X, Y, Z) = (6, 5, 4)
    lab[0:2, 0:2, 0:2] = 3          # a lesion with a non-consecutive id
    lab[3:6, 2:5, 1:4] = 7          # the liver
    lab[5, 0, 0] = 9                # an organ without a code in the table
    specs = [SegmentSpec(3, "lesion A"), SegmentSpec(7, "liver", "organ"), SegmentSpec(9, "thymus", "organ")]
    seg = build_seg(_frames(lab), pts, series_number=910, series_description="t", content_description="t",
                    manufacturer_model_name="m", software_versions="0", algorithm=("model", "0"),
                    algorithm_type="SEMIAUTOMATIC", segments=specs, tracking_id="object")
    path = save_seg(seg, tmp_path / "objects.seg.dcm")
    back = hd.seg.segread(path)
    assert back.SegmentationType == "BINARY" and len(back.SegmentSequence) == 3
    descs = {int(d.SegmentNumber): d for d in back.SegmentSequence}
    assert [descs[i].SegmentLabel for i in (1, 2, 3)] == ["lesion A", "liver", "thymus"]
    assert {d.SegmentAlgorithmType for d in descs.values()} == {"SEMIAUTOMATIC"}
    assert descs[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morph. abnormal structure
    assert descs[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # neoplasm
    assert descs[2].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # anatomical structure
    assert descs[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # liver
    assert descs[3].SegmentedPropertyTypeCodeSequence[0].CodeValue == "91772007"  # generic organ
    assert descs[2].TrackingID == "object 7"
    pixels = back.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in pts],
                                                segment_numbers=[1, 2, 3], assert_missing_frames_are_empty=True)
    for i, value in enumerate((3, 7, 9)):  # each segment's frames reproduce its object's mask
        np.testing.assert_array_equal(pixels[..., i], _frames(lab == value))


def test_algorithm_type_defaults_and_errors(pt_series):
    suv, pts = pt_series
    frames = _frames(np.ones(array_xyz(suv).shape, np.uint8))
    kw = dict(series_number=1, series_description="t", content_description="t", manufacturer_model_name="m",
              software_versions="0")
    assert build_seg(frames, pts, **kw).SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert build_seg(frames, pts, algorithm=("m", "0"), **kw).SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    with pytest.raises(ValueError, match="needs the algorithm"):
        build_seg(frames, pts, algorithm_type="SEMIAUTOMATIC", **kw)
    with pytest.raises(ValueError, match="not one of"):
        build_seg(frames, pts, algorithm=("m", "0"), algorithm_type="GUESSED", **kw)


def test_organ_names_and_codes():
    assert organ_key("Kidney left") == organ_key("kidney-left") == "kidney_left"
    assert organ_key("lesion 1") is None and organ_key("background") is None
    assert segment_codes("organ", "kidney_right")[1].meaning == "Kidney"
    with pytest.raises(ValueError):
        segment_codes("tumour", "x")
