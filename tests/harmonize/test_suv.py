"""SUV from DICOM PT tags against hand computations, for every DecayCorrection mode and unit."""

from __future__ import annotations

import math

import pytest
from pydicom.dataset import Dataset

from petctfm.core.errors import InputError
from petctfm.harmonize.suv import lean_body_mass_kg, suv_factor

HALF = 6586.2
DOSE = 370e6
WEIGHT = 72.5


def pt(decay="START", units="BQML", **over) -> Dataset:
    ds = Dataset()
    ds.Units = units
    ds.DecayCorrection = decay
    ds.PatientWeight = str(WEIGHT)
    ds.PatientSize = "1.75"
    ds.PatientSex = "M"
    ds.SeriesDate = "20200101"
    ds.SeriesTime = "101500"  # 75 min after injection
    ds.AcquisitionDate = "20200101"
    ds.AcquisitionTime = "102230.5"  # 82.5083 min after injection
    rp = Dataset()
    rp.RadiopharmaceuticalStartDateTime = "20200101090000.00"
    rp.RadiopharmaceuticalStartTime = "090000"
    rp.RadionuclideTotalDose = str(DOSE)
    rp.RadionuclideHalfLife = str(HALF)
    ds.RadiopharmaceuticalInformationSequence = [rp]
    for k, v in over.items():
        setattr(ds, k, v)
    return ds


def test_start_decays_to_series_time():
    expected = WEIGHT * 1000 / (DOSE * 2 ** (-(75 * 60) / HALF))
    assert suv_factor(pt("START"), "x.dcm") == pytest.approx(expected, rel=1e-9)
    # 5000 Bq/ml at the series start, hand computed
    assert 5000 * suv_factor(pt("START"), "x.dcm") == pytest.approx(5000 * 72500 / (DOSE * 0.5 ** (4500 / HALF)))


def test_admin_has_no_decay_factor():
    assert suv_factor(pt("ADMIN"), "x.dcm") == pytest.approx(WEIGHT * 1000 / DOSE, rel=1e-12)


def test_none_decays_to_each_slice_acquisition_time():
    seconds = 82 * 60 + 30.5
    expected = WEIGHT * 1000 / (DOSE * math.exp(-math.log(2) * seconds / HALF))
    assert suv_factor(pt("NONE"), "x.dcm") == pytest.approx(expected, rel=1e-9)
    later = pt("NONE", AcquisitionTime="103230.5")  # a later bed position: 10 more minutes of decay
    assert suv_factor(later, "x.dcm") / suv_factor(pt("NONE"), "x.dcm") == pytest.approx(2 ** (600 / HALF))


def test_start_time_without_datetime_uses_series_date():
    ds = pt("START")
    del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    assert suv_factor(ds, "x.dcm") == pytest.approx(suv_factor(pt("START"), "x.dcm"), rel=1e-12)


def test_philips_cnts_and_gml():
    ds = pt("START", units="CNTS")
    ds.add_new((0x7053, 0x1000), "DS", "0.000123")
    assert suv_factor(ds, "x.dcm") == pytest.approx(0.000123)
    ds2 = pt("START", units="CNTS")
    ds2.add_new((0x7053, 0x1009), "DS", "2.5")  # counts -> Bq/ml
    assert suv_factor(ds2, "x.dcm") == pytest.approx(2.5 * suv_factor(pt("START"), "x.dcm"))
    assert suv_factor(pt("START", units="GML"), "x.dcm") == 1.0
    with pytest.raises(InputError, match=r"x.dcm: Units CNTS without the Philips scale factor"):
        suv_factor(pt("START", units="CNTS"), "x.dcm")


def test_sul_janmahasatian():
    bmi = WEIGHT / 1.75**2
    lbm = 9270 * WEIGHT / (6680 + 216 * bmi)
    assert lean_body_mass_kg(WEIGHT, 1.75, "M") == pytest.approx(lbm)
    assert suv_factor(pt("START"), "x.dcm", kind="lbm") == pytest.approx(
        suv_factor(pt("START"), "x.dcm") * lbm / WEIGHT)
    assert lean_body_mass_kg(60, 1.6, "F") == pytest.approx(9270 * 60 / (8780 + 244 * 60 / 1.6**2))


@pytest.mark.parametrize("tag", ["PatientWeight", "Units", "DecayCorrection", "SeriesTime",
                                 "RadiopharmaceuticalInformationSequence"])
def test_missing_tag_names_tag_and_file(tag):
    ds = pt("START")
    delattr(ds, tag)
    with pytest.raises(InputError, match=rf"PT/slice_7.dcm: missing DICOM tag {tag}"):
        suv_factor(ds, "PT/slice_7.dcm")


def test_missing_dose_and_bad_times():
    ds = pt("START")
    del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
    with pytest.raises(InputError, match="missing DICOM tag RadionuclideTotalDose"):
        suv_factor(ds, "a.dcm")
    late = pt("START", SeriesTime="085000")  # injection after the series start
    with pytest.raises(InputError, match="injection time is 600 s after the START reference"):
        suv_factor(late, "a.dcm")
