"""Scanner/site profiles of the synthetic multi-center cohort.

Each site is a fixed, fake PET/CT scanner + reconstruction protocol: PET voxel grid and point-spread
function, count sensitivity and frame time (noise), a small SUV calibration bias, CT grid, reconstruction
kernel and noise, and the orientation its files are stored in (direction cosines in ITK's LPS world).
Sizes ``small`` and ``tiny`` scale the voxel sizes up (same field of view, smaller matrices) by the factors
in :data:`SIZE_SCALE`, so the sites still differ from each other at every size.

All names (institutions, manufacturers, models) are invented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Orientations, as ITK direction matrices (row-major 3x3). ITK's world is LPS; an identity direction means
# array x runs to the patient's Left, y to Posterior, z to Superior.
LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # what NIfTI-minded software usually stores
LPI = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # z reversed: slice 0 is the top of the head
LAS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # y flipped
RPS = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # x flipped


@dataclass(frozen=True)
class SiteProfile:
    """One site's scanner and protocol (values at size ``full``).

    Attributes:
        name: site key (``SITES`` key).
        institution_name, manufacturer, model_name, station_name: fake DICOM identity of the scanner.
        orientation: short name of ``direction`` (``LPS``, ``RAS``, ``LPI``, ``LAS``, ``RPS``).
        direction: ITK direction cosines (row-major 3x3), shared by this site's CT and PET grids.
        pet_spacing_mm: PET voxel size (x, y, z) in mm.
        pet_matrix: PET in-plane matrix (square); field of view = matrix * spacing.
        pet_psf_fwhm_mm: resolution of the reconstructed PET (isotropic Gaussian FWHM).
        pet_sensitivity: detected counts per decay (effective, after reconstruction), sets the noise level.
        pet_frame_s: acquisition time per bed position.
        pet_recon: reconstruction description (DICOM-like free text).
        suv_calibration: multiplicative calibration error of the activity concentration (1.0 = perfect).
        ct_spacing_mm: CT voxel size (x, y, z) in mm.
        ct_matrix: CT in-plane matrix (square).
        ct_kernel: reconstruction kernel name.
        ct_kernel_fwhm_mm: blur of the kernel (smaller = sharper).
        ct_noise_hu: image noise (SD in water for a 30 cm patient).
        ct_noise_grain_mm: correlation length of the noise (sharp kernels: fine grain).
        ct_kvp: tube voltage.
        fdg_mbq_per_kg: FDG dosing policy (MBq per kg body weight).
        center_offset_mm: (x, y) offset of the reconstruction centre from the patient's axis (PET, CT).
    """

    name: str
    institution_name: str
    manufacturer: str
    model_name: str
    station_name: str
    orientation: str
    direction: tuple[float, ...]
    pet_spacing_mm: tuple[float, float, float]
    pet_matrix: int
    pet_psf_fwhm_mm: float
    pet_sensitivity: float
    pet_frame_s: float
    pet_recon: str
    suv_calibration: float
    ct_spacing_mm: tuple[float, float, float]
    ct_matrix: int
    ct_kernel: str
    ct_kernel_fwhm_mm: float
    ct_noise_hu: float
    ct_noise_grain_mm: float
    ct_kvp: float
    fdg_mbq_per_kg: float
    center_offset_mm: tuple[tuple[float, float], tuple[float, float]]

    def as_meta(self) -> dict[str, Any]:
        """Plain JSON-serializable dict of the profile (for ``SynthCase.meta``)."""
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


SITES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        SiteProfile(
            name="north_valley",
            institution_name="North Valley University Hospital",
            manufacturer="Helion Medical Systems",
            model_name="Helion PX 600",
            station_name="NVUH-PET1",
            orientation="LPS",
            direction=LPS,
            pet_spacing_mm=(3.65, 3.65, 3.27),
            pet_matrix=192,
            pet_psf_fwhm_mm=6.5,
            pet_sensitivity=0.0030,
            pet_frame_s=120.0,
            pet_recon="OSEM 3i24s TOF 5mm Gaussian",
            suv_calibration=1.03,
            ct_spacing_mm=(0.98, 0.98, 3.0),
            ct_matrix=512,
            ct_kernel="SOFT-B30",
            ct_kernel_fwhm_mm=1.0,
            ct_noise_hu=12.0,
            ct_noise_grain_mm=1.2,
            ct_kvp=120.0,
            fdg_mbq_per_kg=3.7,
            center_offset_mm=((0.0, 10.0), (0.0, 0.0)),
        ),
        SiteProfile(
            name="harbor_city",
            institution_name="Harbor City Cancer Center",
            manufacturer="Quantix Imaging",
            model_name="Quantix Aurora 64",
            station_name="HCCC-PETCT",
            orientation="RAS",
            direction=RAS,
            pet_spacing_mm=(3.9, 3.9, 4.0),
            pet_matrix=176,
            pet_psf_fwhm_mm=7.5,
            pet_sensitivity=0.0020,
            pet_frame_s=150.0,
            pet_recon="OSEM 2i21s 6mm Gaussian",
            suv_calibration=0.96,
            ct_spacing_mm=(1.37, 1.37, 5.0),
            ct_matrix=512,
            ct_kernel="LUNG-SHARP",
            ct_kernel_fwhm_mm=0.6,
            ct_noise_hu=22.0,
            ct_noise_grain_mm=0.8,
            ct_kvp=120.0,
            fdg_mbq_per_kg=4.0,
            center_offset_mm=((5.0, -15.0), (-8.0, 20.0)),
        ),
        SiteProfile(
            name="mountain_ridge",
            institution_name="Mountain Ridge Medical Institute",
            manufacturer="Helion Medical Systems",
            model_name="Helion Vista Digital",
            station_name="MRMI-DPET",
            orientation="LPI",
            direction=LPI,
            pet_spacing_mm=(2.73, 2.73, 2.79),
            pet_matrix=256,
            pet_psf_fwhm_mm=4.5,
            pet_sensitivity=0.0060,
            pet_frame_s=90.0,
            pet_recon="OSEM-PSF 4i5s TOF no filter",
            suv_calibration=1.05,
            ct_spacing_mm=(1.17, 1.17, 2.5),
            ct_matrix=512,
            ct_kernel="STANDARD",
            ct_kernel_fwhm_mm=0.9,
            ct_noise_hu=15.0,
            ct_noise_grain_mm=1.0,
            ct_kvp=100.0,
            fdg_mbq_per_kg=3.0,
            center_offset_mm=((0.0, 0.0), (10.0, 5.0)),
        ),
        SiteProfile(
            name="lakeside_clinic",
            institution_name="Lakeside Oncology Clinic",
            manufacturer="Nordic Tomography AB",
            model_name="NT Lumen 32",
            station_name="LOC-PT01",
            orientation="LAS",
            direction=LAS,
            pet_spacing_mm=(4.0, 4.0, 4.0),
            pet_matrix=144,
            pet_psf_fwhm_mm=8.0,
            pet_sensitivity=0.0016,
            pet_frame_s=180.0,
            pet_recon="FBP-OSEM 2i16s 7mm Gaussian",
            suv_calibration=0.98,
            ct_spacing_mm=(1.27, 1.27, 3.75),
            ct_matrix=512,
            ct_kernel="SMOOTH",
            ct_kernel_fwhm_mm=1.5,
            ct_noise_hu=10.0,
            ct_noise_grain_mm=1.8,
            ct_kvp=130.0,
            fdg_mbq_per_kg=4.5,
            center_offset_mm=((-10.0, 25.0), (0.0, 15.0)),
        ),
        SiteProfile(
            name="river_bend",
            institution_name="River Bend Regional Hospital",
            manufacturer="Quantix Imaging",
            model_name="Quantix Meridian TOF",
            station_name="RBRH-PET2",
            orientation="RPS",
            direction=RPS,
            pet_spacing_mm=(3.0, 3.0, 3.0),
            pet_matrix=220,
            pet_psf_fwhm_mm=5.5,
            pet_sensitivity=0.0040,
            pet_frame_s=120.0,
            pet_recon="OSEM 3i16s TOF 4mm Gaussian",
            suv_calibration=1.01,
            ct_spacing_mm=(0.98, 0.98, 2.0),
            ct_matrix=512,
            ct_kernel="BODY-B40",
            ct_kernel_fwhm_mm=0.8,
            ct_noise_hu=18.0,
            ct_noise_grain_mm=1.0,
            ct_kvp=120.0,
            fdg_mbq_per_kg=3.5,
            center_offset_mm=((0.0, -5.0), (0.0, -10.0)),
        ),
    )
}

# Voxel sizes per size. ``full`` uses each site's own grids. ``small`` and ``tiny`` keep each site's field of
# view but use coarser voxels around a target (mm, in-plane / slice) scaled by the square root of the site's
# ratio to the cohort mean, so sites keep distinct (ordered) voxel sizes: small PET is 3.5-4.3 mm.
# ``truth`` is the spacing (mm, x/y/z) of the internal anatomy grid everything is rendered on before
# resampling to the scanner grids.
SIZE_SCALE: dict[str, dict[str, Any]] = {
    "full": {"pet": None, "ct": None, "truth": (1.6, 1.6, 2.0)},
    "small": {"pet": (4.0, 4.0), "ct": (3.0, 6.0), "truth": (3.0, 3.0, 4.0)},
    "tiny": {"pet": (9.0, 12.0), "ct": (7.0, 12.0), "truth": (7.0, 7.0, 9.0)},
}


def scaled_spacing(site: SiteProfile, size: str, modality: str) -> tuple[float, float, float]:
    """Voxel size (x, y, z mm) of ``modality`` (``"pet"`` | ``"ct"``) at ``site`` for ``size``."""
    full = site.pet_spacing_mm if modality == "pet" else site.ct_spacing_mm
    target = SIZE_SCALE[size][modality]
    if target is None:
        return tuple(float(v) for v in full)  # type: ignore[return-value]
    ref = [p.pet_spacing_mm if modality == "pet" else p.ct_spacing_mm for p in SITES.values()]
    mean_xy = sum(r[0] for r in ref) / len(ref)
    mean_z = sum(r[2] for r in ref) / len(ref)
    xy = round(target[0] * (full[0] / mean_xy) ** 0.5, 3)
    z = round(target[1] * (full[2] / mean_z) ** 0.5, 3)
    return (xy, xy, z)
