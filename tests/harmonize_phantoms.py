"""Tiny analytic PET/CT phantoms for the harmonize tests (no dependency on the synthetic generator).

The phantom is defined in physical LPS millimetres (an ellipsoid body, a liver sphere, a lesion sphere), and
sampled on any grid/direction, so the same patient can be written with different orientations and spacings.
"""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petctfm.synth.case import SynthCase

WEIGHT_KG = 80.0
DOSE_BQ = 300e6
UPTAKE_S = 3600.0
HALF_LIFE = 6586.2
SUV_TO_BQML = DOSE_BQ * 2 ** (-UPTAKE_S / HALF_LIFE) / (WEIGHT_KG * 1000.0)
LESION_CENTER = np.array([-20.0, 5.0, -10.0])
LESION_R = 15.0
LIVER_CENTER = np.array([25.0, 0.0, 20.0])
LIVER_R = 22.0
IDENTIFIERS = {"patient_name": "ZZTESTNAME^QWERTY", "patient_id": "PIDX98765", "birth_date": "19440817",
               "institution_name": "Xylophone Memorial Clinic", "accession_number": "ACCQ55512"}


def grid(size, spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), center=(0.0, 0.0, 0.0)) -> sitk.Image:
    """An empty float32 image of ``size``/``spacing``/``direction`` centred on ``center`` (LPS mm)."""
    img = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction])
    d = np.asarray(direction, float).reshape(3, 3)
    half = d @ ((np.asarray(size) - 1) * np.asarray(spacing) / 2)
    img.SetOrigin([float(v) for v in np.asarray(center) - half])
    return img


def world(img: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shape (3, Z, Y, X) (SimpleITK array order)."""
    size = img.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")[::-1])  # (3: x,y,z, Z, Y, X)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    scaled = idx * np.asarray(img.GetSpacing()).reshape(3, 1, 1, 1)
    return np.einsum("ij,jzyx->izyx", d, scaled) + np.asarray(img.GetOrigin()).reshape(3, 1, 1, 1)


def _fill(ref: sitk.Image, arr_zyx: np.ndarray, pixel=sitk.sitkFloat32) -> sitk.Image:
    img = sitk.GetImageFromArray(arr_zyx)
    img.CopyInformation(ref)
    return sitk.Cast(img, pixel)


def phantom_images(pet_grid: sitk.Image, ct_grid: sitk.Image, lesion: bool = True) -> dict[str, sitk.Image]:
    """SUV, CT (HU), SEG and ORGANS of the analytic phantom on the given grids."""
    def parts(p):
        x, y, z = p
        body = (x / 70) ** 2 + (y / 50) ** 2 + (z / 95) ** 2 <= 1
        liver = np.sum((p - LIVER_CENTER.reshape(3, 1, 1, 1)) ** 2, axis=0) <= LIVER_R**2
        les = np.sum((p - LESION_CENTER.reshape(3, 1, 1, 1)) ** 2, axis=0) <= LESION_R**2
        return body, liver & body, (les & body) if lesion else np.zeros_like(body)

    p = world(pet_grid)
    body, liver, les = parts(p)
    suv = np.where(body, 1.0, 0.0) + np.where(liver, 1.2, 0.0) + np.where(les, 7.0, 0.0)
    c = world(ct_grid)
    cbody, cliver, cles = parts(c)
    ct = np.where(cbody, 40.0, -1000.0) + np.where(cliver, 15.0, 0.0) - np.where(cles, 10.0, 0.0)
    return {
        "suv": _fill(pet_grid, suv.astype(np.float32)),
        "ct": _fill(ct_grid, np.rint(ct).astype(np.int16), sitk.sitkInt16),
        "seg": _fill(pet_grid, les.astype(np.uint8), sitk.sitkUInt8),
        "organs": _fill(pet_grid, liver.astype(np.uint8), sitk.sitkUInt8),
    }


def synth_case(case_id: str = "PHANTOM_0", pet_direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), lesion: bool = True,
               pet_spacing=(4.0, 4.0, 4.0), ct_center=(0.0, 0.0, 0.0)) -> SynthCase:
    """A :class:`SynthCase` of the phantom with DICOM-ready metadata (incl. fake identifiers)."""
    pet_grid = grid([int(round(160 / pet_spacing[0])), int(round(120 / pet_spacing[1])), int(round(216 / pet_spacing[2]))],
                    pet_spacing, pet_direction)
    ct_grid = grid((64, 48, 40), (2.5, 2.5, 5.0), center=ct_center)
    im = phantom_images(pet_grid, ct_grid, lesion)
    # one air voxel carries a tiny case-specific value: two case ids are two studies, not byte-identical
    # copies (which harmonize keeps once: petctfm.harmonize.duplicates); no statistic notices 0.002 SUV in air
    im["suv"][0, 0, 0] = 1e-3 * (1 + zlib.crc32(case_id.encode()) % 997) / 997
    pet = sitk.Cast(im["suv"] * SUV_TO_BQML, sitk.sitkFloat32)
    ctres = sitk.Resample(sitk.Cast(im["ct"], sitk.sitkFloat32), pet_grid, sitk.Transform(), sitk.sitkLinear, -1000.0)
    scan = dt.datetime(2021, 3, 4, 10, 30, 0)
    meta = {
        "case_id": case_id, "site": "phantom_site", "tracer": "fdg", "diagnosis": "lymphoma", "stage": "early",
        "age": 57, "sex": "F", "weight_kg": WEIGHT_KG, "height_cm": 168.0, "injected_activity_bq": DOSE_BQ,
        "injection_time": (scan - dt.timedelta(seconds=UPTAKE_S)).isoformat(), "acquisition_time": scan.isoformat(),
        "uptake_min": UPTAKE_S / 60, **IDENTIFIERS,
    }
    return SynthCase(case_id, im["ct"], pet, im["suv"], ctres, im["seg"], im["organs"], meta)


def write_meta_csv(cases: list[SynthCase], path: Path) -> None:
    from petctfm.synth.layouts import write_metadata_csv

    write_metadata_csv([c.meta for c in cases], path)
