"""Follow-up -> baseline registration with SimpleITK's ``ImageRegistrationMethod`` (no optimizer of our own).

Two stages, each multi-resolution (shrink 4, 2, 1; Gaussian smoothing 2, 1, 0 voxels), Mattes mutual
information (50 bins; random samples, fixed seed: 25 % of the voxels of a level, at most :data:`MAX_SAMPLES`),
regular-step gradient descent with scales from the physical shift, linear interpolation:

1. rigid (``Euler3DTransform``), initialized by the moments of the two body masks (voxels above
   :data:`BODY_SUV`), so a table shift of several centimetres starts close;
2. affine (``AffineTransform``) starting from the rigid result (matrix, centre, translation).

The images are clipped to [0, :data:`CLIP_SUV`] SUV first (PET) so that lesions, which change between the
studies by design, do not drive the alignment; the body outline, brain, liver and bladder do. CT (HU) may be
given instead (``modality="ct"``: clipped to [-1000, 1000]).

The result is one ``sitk.AffineTransform`` that maps a **baseline** physical point (LPS mm) to the
corresponding **follow-up** point (SimpleITK's fixed -> moving convention): ``sitk.Resample(followup_image,
baseline_image, transform, ...)`` puts follow-up data on the baseline grid; ``transform.GetInverse()`` maps
follow-up points (lesion centroids) into baseline space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

BODY_SUV = 0.3  # SUV: body vs air, for the moments initialization
CLIP_SUV = 5.0  # PET intensities above this are clipped before registration (lesions must not drive it)
SHRINK = (4, 2, 1)
SMOOTH = (2.0, 1.0, 0.0)
SAMPLE_FRACTION = 0.25  # of a level's voxels, for the Mattes MI
#: Metric samples per level at most (as elastix's fixed number of spatial samples): the cost of an iteration no
#: longer grows with the image. On 5 tiny pairs (about 76 x 76 x 97) of the 2-core VM, 25 % of the voxels took
#: 10.0-28.5 s per pair (median 24.4) and 10,000 samples 4.2-5.7 s (median 5.3; docs/response.md); a whole-body
#: 2 mm PET (~12 M voxels) would take minutes at 25 %.
MAX_SAMPLES = 10_000


@dataclass
class Registration:
    transform: sitk.AffineTransform  # baseline point -> follow-up point (fixed -> moving)
    metric: float  # final Mattes MI (negative; lower is better)
    iterations: tuple[int, int]  # optimizer iterations of the rigid and the affine stage (last level)

    def to_json(self) -> dict[str, Any]:
        t = self.transform
        return {"method": "SimpleITK rigid (Euler3D) then affine, Mattes MI, multi-resolution 4/2/1",
                "direction": "baseline point -> follow-up point (fixed -> moving)",
                "matrix": [round(v, 6) for v in t.GetMatrix()],
                "translation_mm": [round(v, 3) for v in t.GetTranslation()],
                "center_mm": [round(v, 3) for v in t.GetCenter()],
                "metric_mattes_mi": round(self.metric, 5), "iterations": list(self.iterations)}


def _prepared(img: sitk.Image, modality: str) -> sitk.Image:
    img = sitk.Cast(img, sitk.sitkFloat32)
    lo, hi = (0.0, CLIP_SUV) if modality == "pet" else (-1000.0, 1000.0)
    return sitk.Clamp(img, sitk.sitkFloat32, lo, hi)


def _levels(img: sitk.Image) -> tuple[list[int], list[float]]:
    """Shrink factors that keep at least 8 voxels along every axis at the coarsest level."""
    smallest = min(img.GetSize())
    shrink = [s for s in SHRINK if smallest // s >= 8] or [1]
    smooth = [SMOOTH[SHRINK.index(s)] for s in shrink]
    return shrink, smooth


def _sampling(img: sitk.Image, shrink: list[int]) -> list[float]:
    """Per level: the fraction of its voxels sampled, :data:`SAMPLE_FRACTION` but at most :data:`MAX_SAMPLES`."""
    n = float(np.prod(img.GetSize()))
    return [min(SAMPLE_FRACTION, MAX_SAMPLES / max(1.0, n / s ** 3)) for s in shrink]


def _stage(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, learning_rate: float,
           iterations: int, seed: int) -> tuple[sitk.Transform, float, int]:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    shrink, smooth = _levels(fixed)
    reg.SetMetricSamplingPercentagePerLevel(_sampling(fixed, shrink), seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=1e-4,
                                                 numberOfIterations=iterations, relaxationFactor=0.5,
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(smooth)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    if isinstance(out, sitk.CompositeTransform) and out.GetNumberOfTransforms() == 1:
        out = out.GetNthTransform(0)
    return out, float(reg.GetMetricValue()), int(reg.GetOptimizerIteration())


def _body(img: sitk.Image, modality: str) -> sitk.Image:
    thr = BODY_SUV if modality == "pet" else -500.0
    return sitk.Cast(img > thr, sitk.sitkFloat32)


def register_followup(baseline: sitk.Image, followup: sitk.Image, modality: str = "pet", seed: int = 0,
                      iterations: int = 200) -> Registration:
    """Register ``followup`` (moving) to ``baseline`` (fixed): module docstring. Both PET in SUV
    (``modality="pet"``) or both CT in HU (``"ct"``); any grids (the physical geometry is used)."""
    if modality not in ("pet", "ct"):
        raise ValueError(f"modality must be 'pet' or 'ct', got {modality!r}")
    fixed, moving = _prepared(baseline, modality), _prepared(followup, modality)
    try:
        init = sitk.CenteredTransformInitializer(_body(baseline, modality), _body(followup, modality),
                                                 sitk.Euler3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
    except RuntimeError:  # an empty body mask: start from the grids' centres
        init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                 sitk.CenteredTransformInitializerFilter.GEOMETRY)
    rigid, _, it_rigid = _stage(fixed, moving, init, 2.0, iterations, seed)
    rigid = sitk.Euler3DTransform(rigid)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    result, metric, it_affine = _stage(fixed, moving, affine, 1.0, iterations, seed)
    return Registration(sitk.AffineTransform(result), metric, (it_rigid, it_affine))


def to_baseline_points(reg: Registration, points_lps: np.ndarray) -> np.ndarray:
    """Follow-up physical points (N, 3, LPS mm) -> baseline space."""
    inv = reg.transform.GetInverse()
    return np.array([inv.TransformPoint(tuple(float(v) for v in p)) for p in np.asarray(points_lps)]).reshape(-1, 3)


def resample_labels(labels: sitk.Image, baseline: sitk.Image, reg: Registration) -> sitk.Image:
    """A follow-up label image on the baseline grid (nearest neighbour, 0 outside)."""
    return sitk.Resample(labels, baseline, reg.transform, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


__all__ = ["Registration", "register_followup", "to_baseline_points", "resample_labels", "BODY_SUV", "CLIP_SUV",
           "MAX_SAMPLES"]
