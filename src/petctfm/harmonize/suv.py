"""Standardized uptake values (SUV) from DICOM PET tags.

Body-weight SUV of one PET slice (QIBA vendor-neutral SUV pseudo-code, simplified)::

    value      = stored * RescaleSlope + RescaleIntercept          (per slice)
    SUVbw      = value * factor
    factor     = PatientWeight[g] / decayed_dose                     Units BQML
               = (7053,1000)  Philips "SUV scale factor"             Units CNTS (Philips private tag)
               = (7053,1009) * PatientWeight[g] / decayed_dose       Units CNTS, activity-concentration factor
               = 1                                                   Units GML (already SUV)
    decayed_dose = RadionuclideTotalDose * 2 ** (-dt / RadionuclideHalfLife)

where ``dt`` depends on DecayCorrection:

* ``START``: pixels are decay-corrected to the series start -> ``dt = SeriesDateTime - injection``.
* ``ADMIN``: pixels are decay-corrected to the administration time -> ``dt = 0`` (no decay factor).
* ``NONE``: pixels are activity at acquisition time -> ``dt = AcquisitionDateTime(slice) - injection``
  (per slice; frame-duration averaging is ignored, a < 0.5 % effect for 2-3 min frames).

The injection time is ``RadiopharmaceuticalStartDateTime`` when present, else the series date with
``RadiopharmaceuticalStartTime`` (a start time later than the series time is taken as the previous day).

Lean-body-mass SUV (SUL, Janmahasatian 2005) replaces the weight by the lean body mass::

    LBM[kg] = 9270 * W / (6680 + 216 * BMI)   (male)      9270 * W / (8780 + 244 * BMI)   (female)

with ``BMI = W / H[m]**2`` (PatientSize in m, PatientSex M/F).

Every missing tag raises :class:`InputError` naming the tag and the file.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from petctfm.core.errors import InputError
from petctfm.core.plausibility import check_weight_kg

PHILIPS_SUV_FACTOR = (0x7053, 0x1000)
PHILIPS_ACTIVITY_FACTOR = (0x7053, 0x1009)


def _require(ds: Any, keyword: str, where: str) -> Any:
    value = getattr(ds, keyword, None) if ds is not None else None
    if value is None or value == "":
        raise InputError(f"{where}: missing DICOM tag {keyword} (needed for SUV)")
    return value


def _float(ds: Any, keyword: str, where: str) -> float:
    value = _require(ds, keyword, where)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: DICOM tag {keyword}={value!r} is not a number") from None


def _parse_dt(date: str, time: str, where: str, what: str) -> dt.datetime:
    time = str(time).strip()
    date = str(date).strip()
    try:
        hh, mm = int(time[0:2]), int(time[2:4] or 0)
        ss = float(time[4:] or 0)
        d = dt.datetime.strptime(date[:8], "%Y%m%d")
    except (ValueError, IndexError):
        raise InputError(f"{where}: cannot parse {what} date/time {date!r} {time!r}") from None
    return d + dt.timedelta(hours=hh, minutes=mm, seconds=ss)


def _parse_datetime(value: str, where: str, what: str) -> dt.datetime:
    value = str(value).strip()
    # strip a UTC offset (+hhmm / -hhmm): all times of one study share the scanner's local time
    for sign in "+-":
        if sign in value[8:]:
            value = value[: 8 + value[8:].index(sign)]
    return _parse_dt(value[:8], value[8:] or "000000", where, what)


def radiopharmaceutical(ds: Any, where: str) -> Any:
    seq = _require(ds, "RadiopharmaceuticalInformationSequence", where)
    if len(seq) == 0:
        raise InputError(f"{where}: empty DICOM tag RadiopharmaceuticalInformationSequence (needed for SUV)")
    return seq[0]


def injection_datetime(ds: Any, where: str) -> dt.datetime:
    rp = radiopharmaceutical(ds, where)
    if getattr(rp, "RadiopharmaceuticalStartDateTime", None):
        return _parse_datetime(rp.RadiopharmaceuticalStartDateTime, where, "RadiopharmaceuticalStartDateTime")
    start = _require(rp, "RadiopharmaceuticalStartTime", where)
    series = series_datetime(ds, where)
    inj = _parse_dt(series.strftime("%Y%m%d"), start, where, "RadiopharmaceuticalStartTime")
    if inj > series:
        inj -= dt.timedelta(days=1)
    return inj


def series_datetime(ds: Any, where: str) -> dt.datetime:
    return _parse_dt(_require(ds, "SeriesDate", where), _require(ds, "SeriesTime", where), where, "Series")


def acquisition_datetime(ds: Any, where: str) -> dt.datetime:
    if getattr(ds, "AcquisitionDateTime", None):
        return _parse_datetime(ds.AcquisitionDateTime, where, "AcquisitionDateTime")
    date = getattr(ds, "AcquisitionDate", None) or _require(ds, "SeriesDate", where)
    return _parse_dt(date, _require(ds, "AcquisitionTime", where), where, "Acquisition")


def decayed_dose(ds: Any, where: str) -> float:
    """Injected activity (Bq) decayed to the reference time of the pixel values (see module doc)."""
    rp = radiopharmaceutical(ds, where)
    dose = _float(rp, "RadionuclideTotalDose", where)
    half_life = _float(rp, "RadionuclideHalfLife", where)
    if dose <= 0 or half_life <= 0:
        raise InputError(f"{where}: RadionuclideTotalDose={dose} / RadionuclideHalfLife={half_life} must be > 0")
    mode = str(_require(ds, "DecayCorrection", where)).upper()
    if mode == "ADMIN":
        return dose
    if mode == "START":
        ref = series_datetime(ds, where)
    elif mode == "NONE":
        ref = acquisition_datetime(ds, where)
    else:
        raise InputError(f"{where}: unsupported DecayCorrection {mode!r} (START, ADMIN, NONE)")
    seconds = (ref - injection_datetime(ds, where)).total_seconds()
    if seconds < 0:
        raise InputError(f"{where}: injection time is {-seconds:.0f} s after the {mode} reference time")
    return dose * 2.0 ** (-seconds / half_life)


def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str, where: str = "") -> float:
    """Janmahasatian lean body mass (kg)."""
    if weight_kg <= 0 or height_m <= 0:
        raise InputError(f"{where}: weight {weight_kg} kg / height {height_m} m must be > 0 for SUL")
    bmi = weight_kg / height_m**2
    sex = str(sex).upper()[:1]
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    if sex == "F":
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise InputError(f"{where}: PatientSex {sex!r} must be M or F for SUL (lean body mass)")


def _mass_g(ds: Any, where: str, kind: str) -> float:
    weight = _float(ds, "PatientWeight", where)
    if weight <= 0:
        raise InputError(f"{where}: DICOM tag PatientWeight={weight} must be > 0 for SUV")
    check_weight_kg(weight, f"{where}: DICOM tag PatientWeight")  # grams or a typo: refused, not SUV x 1000
    if kind == "bw":
        return weight * 1000.0
    if kind == "lbm":
        height = _float(ds, "PatientSize", where)
        return lean_body_mass_kg(weight, height, _require(ds, "PatientSex", where), where) * 1000.0
    raise ValueError(f"unknown SUV kind {kind!r} (bw, lbm)")


def suv_factor(ds: Any, where: str = "PET slice", kind: str = "bw") -> float:
    """The factor that turns this slice's rescaled pixel values into SUV (``kind="bw"``) or SUL (``"lbm"``).

    ``ds`` is a pydicom Dataset of one PT slice (headers suffice); ``where`` names the file in errors.
    """
    units = str(_require(ds, "Units", where)).upper()
    if units == "GML":
        if kind != "bw":
            raise InputError(f"{where}: Units GML is body-weight SUV already; SUL needs Units BQML")
        return 1.0
    if units == "BQML":
        return _mass_g(ds, where, kind) / decayed_dose(ds, where)
    if units == "CNTS":
        if kind == "bw" and PHILIPS_SUV_FACTOR in ds:
            return float(ds[PHILIPS_SUV_FACTOR].value)
        if PHILIPS_ACTIVITY_FACTOR in ds:
            return float(ds[PHILIPS_ACTIVITY_FACTOR].value) * _mass_g(ds, where, kind) / decayed_dose(ds, where)
        raise InputError(f"{where}: Units CNTS without the Philips scale factor tag (7053,1000)/(7053,1009)")
    raise InputError(f"{where}: unsupported PET Units {units!r} (BQML, CNTS with Philips factor, GML)")


def rescale(ds: Any) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of one slice (1, 0 when absent, as the standard implies)."""
    return float(getattr(ds, "RescaleSlope", 1.0) or 1.0), float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)


def suv_from_bqml(bqml, weight_kg: float, dose_bq: float, uptake_s: float, half_life_s: float = 6586.2):
    """Body-weight SUV of an activity image in Bq/ml decay-corrected to scan start (autoPET ``PET.nii.gz``)."""
    if weight_kg <= 0 or dose_bq <= 0:
        raise InputError(f"weight {weight_kg} kg and dose {dose_bq} Bq must be > 0 for SUV")
    check_weight_kg(weight_kg, "metadata weight_kg")
    return bqml * (weight_kg * 1000.0 / (dose_bq * 2.0 ** (-uptake_s / half_life_s)))
