"""Harmonize one PET/CT case: load (any layout) -> SUV -> one RAS grid -> crop to body -> write.

Steps for one :class:`~petctfm.harmonize.discover.SourceCase`:

1. **Load** PET in SUV, CT in HU, lesion mask and optional organ labels as SimpleITK images, each with its own
   geometry (DICOM: slices sorted along the normal, SUV from the tags per slice, SEG onto the PT frames).
2. **Check** the inputs (NaN/inf, orientation, spacing; see :mod:`petctfm.harmonize.qa`).
3. **Grid.** The target grid is axis-aligned RAS (ITK direction ``diag(-1, -1, 1)`` in LPS) with the target
   spacing, voxel faces on the lattice ``k * spacing``, covering the PET field of view. A coarse pass (4x the
   spacing) finds the body (CT > -500 HU where CT exists; Gaussian-smoothed PET > 0.3 SUV where it does not;
   components < 5 % of the largest dropped) and the CT coverage of the PET FOV; the fine grid is the body
   bounding box + ``margin_mm`` inside the PET FOV. No CT overlap at all -> the case fails.
4. **Resample** onto the fine grid (separable 1D passes for axis-aligned grids, ``sitk.Resample`` for
   oblique ones; the same passes in torch on a GPU when a ``resampler`` from
   :mod:`petctfm.harmonize.resample_torch` is given): PET linear (no B-spline overshoot, SUV stays >= 0), CT
   linear with -1000 HU outside the CT FOV (the covered fraction is recorded as ``ct_fov_coverage``), labels
   nearest neighbour. CT is clipped to ``ct_window`` (default [-1000, 1000] HU), PET below at 0.
5. **Write** ``image.npy`` (2, X, Y, Z) [SUV, HU], ``label.npy``, ``organs.npy``, ``meta.json`` with
   :func:`petctfm.data.format.write_case` (one atomic folder) and optionally a QA thumbnail.
"""

from __future__ import annotations

import math
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

from petctfm.core.errors import InputError, PetctfmError
from petctfm.harmonize.discover import KEPT_FIELDS, SourceCase
from petctfm.io.atomic import atomic_write_json
from petctfm.io.images import array_xyz, read_image

DEFAULT_SPACING = (2.0, 2.0, 3.0)
DEFAULT_CT_WINDOW = (-1000.0, 1000.0)
BODY_HU = -500.0
BODY_SUV = 0.3
WORK_DIR = ".work"
FAILED_DIR = "failed"
PET_HIST = (0.0, 20.0, 80)  # SUV bins for the QA histograms (lo, hi, n)
CT_HIST = (-1100.0, 1600.0, 54)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # ITK (LPS) direction of a RAS-ordered grid


# --------------------------------------------------------------------------------------------- loading


def _tracer_from_dicom(ds: Any) -> str | None:
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None) or []
    text = " ".join(str(getattr(item, "Radiopharmaceutical", "")) + " " +
                    " ".join(str(getattr(c, "CodeMeaning", "")) for c in getattr(item, "RadiopharmaceuticalCodeSequence", []))
                    for item in seq).lower()
    if "psma" in text or "pylarify" in text or "piflufolastat" in text:
        return "psma"
    if "fdg" in text or "fluorodeoxyglucose" in text:
        return "fdg"
    return None


def _dicom_demographics(ds: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sex = str(getattr(ds, "PatientSex", "") or "").upper()[:1]
    if sex in ("M", "F"):
        out["sex"] = sex
    age = str(getattr(ds, "PatientAge", "") or "")
    m = re.fullmatch(r"(\d{3})([YMWD])", age)
    if m:
        out["age"] = float(m.group(1)) / {"Y": 1, "M": 12, "W": 52.18, "D": 365.25}[m.group(2)]
    try:
        if getattr(ds, "PatientWeight", None):
            out["weight_kg"] = float(ds.PatientWeight)
        if getattr(ds, "PatientSize", None):
            out["height_cm"] = float(ds.PatientSize) * 100.0
    except (TypeError, ValueError):
        pass
    tracer = _tracer_from_dicom(ds)
    if tracer:
        out["tracer"] = tracer
    return out


def check_gzip_complete(path: Path) -> None:
    """Raise :class:`InputError` if a ``.nii.gz`` is truncated (SimpleITK may read such a file silently).

    A gzip member ends with ISIZE, the uncompressed size mod 2**32; for a complete NIfTI it equals
    ``vox_offset + voxels * bitpix / 8`` from the header (nibabel reads only the header here).
    """
    if not str(path).lower().endswith(".nii.gz"):
        return
    import nibabel as nib

    try:
        hdr = nib.load(str(path)).header
        offset = int(hdr["vox_offset"]) or int(getattr(hdr, "single_vox_offset", 352))  # 0 = right after header
        expected = offset + int(np.prod(hdr.get_data_shape())) * int(hdr["bitpix"]) // 8
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read image header ({type(exc).__name__})") from None
    if isize != expected % 2**32:
        raise InputError(f"{path}: cannot read image (truncated or corrupt gzip: {isize} of {expected} bytes)")


def _read(path: Path) -> sitk.Image:
    img = read_image(path)
    check_gzip_complete(path)
    return img


def load_case_images(case: SourceCase, suv_kind: str = "bw") -> tuple[dict[str, sitk.Image | None], dict[str, Any]]:
    """Images ``{"suv", "ct", "seg", "organs"}`` (SimpleITK, own geometry) and metadata found in the files."""
    root = Path(case.root)
    extra: dict[str, Any] = {}
    if case.error:
        raise InputError(case.error)
    if case.fmt == "dicom":
        from petctfm.harmonize.suv import suv_factor
        from petctfm.io.dicom_read import read_rtstruct_on, read_seg_on, read_volume

        cache: dict[tuple, float] = {}

        def factor(ds: Any, where: str) -> float:
            key = (str(getattr(ds, "AcquisitionTime", "")), str(getattr(ds, "AcquisitionDateTime", "")))
            if key not in cache or str(getattr(ds, "DecayCorrection", "")).upper() == "NONE":
                cache[key] = suv_factor(ds, where, suv_kind)
            return cache[key]

        suv, pt_datasets = read_volume(root, case.files["PT"], slice_factor=factor)
        ct, _ = read_volume(root, case.files["CT"])
        seg = None
        if case.files.get("SEG"):
            seg = read_seg_on(root, case.files["SEG"][0], pt_datasets, suv)
        elif case.files.get("RTSTRUCT"):
            seg = read_rtstruct_on(root, case.files["RTSTRUCT"][0], suv)
        extra.update(_dicom_demographics(pt_datasets[0]))
        extra["pt_datasets"] = pt_datasets  # headers in slice order (predict's DICOM-SEG); not a KEPT_FIELD
        return {"suv": suv, "ct": ct, "seg": seg, "organs": None}, extra
    f = case.files
    if "suv" not in f and "pet" not in f:
        raise InputError(f"{case.rel}: missing modality: no PET/SUV image")
    ct_rel = f.get("ct") or f.get("ctres")
    if not ct_rel:
        raise InputError(f"{case.rel}: missing modality: no CT image (CT.nii.gz or CTres.nii.gz)")
    bqml, m = "suv" not in f, case.meta  # PET in Bq/ml: SUV from metadata.csv
    if bqml and not all(m.get(k) for k in ("weight_kg", "injected_activity_bq", "uptake_min")):
        raise InputError(f"{f['pet']}: no SUV.nii.gz and no weight_kg/injected_activity_bq/uptake_min in "
                         "metadata.csv to compute SUV from Bq/ml (missing SUV tags)")
    roles = {"pet": f.get("suv") or f["pet"], "ct": ct_rel, "seg": f.get("seg"), "organs": f.get("organs")}
    images = _read_parallel({r: root / rel for r, rel in roles.items() if rel})
    suv = sitk.Cast(images["pet"], sitk.sitkFloat32)
    if bqml:
        from petctfm.harmonize.suv import suv_from_bqml

        suv = suv_from_bqml(suv, m["weight_kg"], m["injected_activity_bq"], m["uptake_min"] * 60.0,
                            m.get("half_life_s", 6586.2))  # F-18 unless metadata says otherwise
    # int16 CT stays int16 (half the memory traffic); resampling gives float32
    return {"suv": suv, "ct": images["ct"], "seg": images.get("seg"), "organs": images.get("organs")}, extra


def _read_parallel(paths: dict[str, Path]) -> dict[str, sitk.Image]:
    """``{role: image}`` read by one thread per file: gzip inflation and ITK's readers release the GIL, so a
    whole-body PET + CT pair reads in about the time of the larger one. The first failing file's error is
    raised (the same one-line :class:`InputError` as reading it alone)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = {role: pool.submit(_read, path) for role, path in paths.items()}
        return {role: fut.result() for role, fut in futures.items()}


# ------------------------------------------------------------------------------------------------ grid


def ras_bounds(img: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) RAS mm of the outer voxel faces of ``img`` (its field of view)."""
    size = np.asarray(img.GetSize())
    corners = []
    for cx in (-0.5, size[0] - 0.5):
        for cy in (-0.5, size[1] - 0.5):
            for cz in (-0.5, size[2] - 0.5):
                corners.append(img.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz))))
    ras = np.asarray(corners) @ LPS_TO_RAS
    return ras.min(axis=0), ras.max(axis=0)


def ras_grid(lo: np.ndarray, hi: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty RAS-ordered reference image whose voxels tile the box ``[lo, hi]`` (RAS mm)."""
    sp = np.asarray(spacing, dtype=float)
    lo = np.floor(lo / sp + 1e-6) * sp  # voxel faces on the lattice k * spacing: the same patient gets the
    hi = np.ceil(hi / sp - 1e-6) * sp  # same voxel grid whatever the source layout or crop
    size = np.maximum(1, np.round((hi - lo) / sp)).astype(int)
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in sp])
    ref.SetDirection(RAS_DIRECTION)
    ref.SetOrigin([float(v) for v in (lo + sp / 2) @ LPS_TO_RAS])
    return ref


def affine_of(ref: sitk.Image) -> np.ndarray:
    """4x4 voxel -> RAS mm matrix of a grid made by :func:`ras_grid`."""
    aff = np.eye(4)
    aff[:3, :3] = np.diag(ref.GetSpacing())
    aff[:3, 3] = np.asarray(ref.GetOrigin()) @ LPS_TO_RAS
    return aff


def _resample(img: sitk.Image, ref: sitk.Image, linear: bool, default: float, out_type=None) -> sitk.Image:
    return sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
                         float(default), out_type if out_type is not None else img.GetPixelID())


def _axis_maps(src: sitk.Image, ref: sitk.Image) -> list[tuple[int, np.ndarray, float]] | None:
    """For each ``ref`` axis: (matching ``src`` axis, continuous ``src`` index of every ``ref`` voxel along it,
    sign of that src axis in LPS world).

    None unless both grids are axis-aligned (direction = signed permutation), the common case; then
    resampling is separable and done as three cheap 1D passes instead of a per-voxel 3D transform.
    """
    ds = np.asarray(src.GetDirection()).reshape(3, 3)
    dr = np.asarray(ref.GetDirection()).reshape(3, 3)
    for d in (ds, dr):
        if not np.allclose(np.abs(d), np.round(np.abs(d)), atol=1e-6):
            return None
    o_s, s_s = np.asarray(src.GetOrigin()), np.asarray(src.GetSpacing())
    o_r, s_r, n_r = np.asarray(ref.GetOrigin()), np.asarray(ref.GetSpacing()), ref.GetSize()
    maps = []
    for a in range(3):
        w = int(np.argmax(np.abs(dr[:, a])))  # world axis of ref axis a
        k = int(np.argmax(np.abs(ds[w, :])))  # src axis along that world axis
        world = o_r[w] + np.arange(n_r[a]) * s_r[a] * dr[w, a]
        ci = np.round((world - o_s[w]) / (s_s[k] * ds[w, k]), 6)  # rounding makes half-voxel ties exact
        maps.append((k, ci, float(np.sign(ds[w, k]))))
    if sorted(m[0] for m in maps) != [0, 1, 2]:
        return None
    return maps


def _taps(ci: np.ndarray, n: int, linear: bool, sign: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Source indices and weights of one 1D pass over an axis of length ``n`` at continuous indices ``ci``.

    Linear: ``(i0, i1, f)``, the two neighbours (clipped to the axis) and the float32 weight of ``i1``;
    nearest: ``(i, None, None)`` with ties as described in :func:`_pass`. Shared by the NumPy passes and
    :mod:`petctfm.harmonize.resample_torch`, so both sample exactly the same source voxels.
    """
    if linear:
        i0 = np.floor(ci).astype(np.int64)
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), (ci - i0).astype(np.float32)
    nearest = np.floor(ci + 0.5) if sign > 0 else np.ceil(ci - 0.5)
    return np.clip(nearest.astype(np.int64), 0, n - 1), None, None


def _pass(arr: np.ndarray, axis: int, ci: np.ndarray, valid: np.ndarray, linear: bool, default: float,
          sign: float = 1.0) -> np.ndarray:
    """Sample ``arr`` at continuous indices ``ci`` along ``axis``; ``valid`` marks samples inside the source.

    Nearest-neighbour ties (a target voxel exactly between two source voxels) go to the source voxel with
    the larger LPS world coordinate whatever the storage direction, so LPS- and RAS-stored copies of an
    image give identical labels.
    """
    shape = [1, 1, 1]
    shape[axis] = len(ci)
    i0, i1, f = _taps(ci, arr.shape[axis], linear, sign)
    if linear:
        f = f.reshape(shape)
        a0 = np.take(arr, i0, axis=axis).astype(np.float32, copy=False)
        a1 = np.take(arr, i1, axis=axis).astype(np.float32, copy=False)
        out = a0 * (1 - f) + a1 * f
    else:
        out = np.take(arr, i0, axis=axis)
    if not valid.all():
        out = np.where(valid.reshape(shape), out, np.asarray(default, dtype=out.dtype))
    return out


def resample_xyz(img: sitk.Image, ref: sitk.Image, linear: bool, default: float, dtype=np.float32) -> np.ndarray:
    """``img`` sampled on the grid of ``ref`` as an ``[x, y, z]`` array (linear or nearest neighbour).

    Axis-aligned grids use separable 1D passes on the source array cropped to the needed index range
    (same values as SimpleITK's resampler up to float rounding, except ties, several times faster on
    one core); oblique ones use ``sitk.Resample``.
    """
    maps = _axis_maps(img, ref)
    if maps is None:
        out_type = sitk.sitkFloat32 if dtype == np.float32 else sitk.sitkUInt8
        return array_xyz(_resample(img, ref, linear, default, out_type)).astype(dtype, copy=False)
    arr = sitk.GetArrayViewFromImage(img)  # [z, y, x], C-contiguous; ITK axis k is array axis 2 - k
    planned = _separable_plan(maps, arr.shape)
    if planned is None:
        return np.full(ref.GetSize(), default, dtype=dtype)
    crop, passes, perm = planned
    arr = arr[crop]
    for ax, ci, valid, sign in passes:
        arr = _pass(arr, ax, ci, valid, linear, default, sign)
    return np.ascontiguousarray(arr.transpose(perm)).astype(dtype, copy=False)


def _separable_plan(maps: list[tuple[int, np.ndarray, float]], shape: tuple[int, ...]):
    """The separable resampling of a ``[z, y, x]`` source array of ``shape`` along ``maps`` (:func:`_axis_maps`).

    Returns ``(crop, passes, perm)``: the source crop (a tuple of slices: only the index range the target
    needs), the 1D passes ``(array axis, ci relative to the crop, valid, sign)`` in the order that shrinks the
    volume first, and the transpose that turns the result into ``[x, y, z]`` of the target; None when the
    target does not intersect the source at all (every voxel is the default).
    """
    crop, plan = [slice(None)] * 3, []
    for k, ci, sign in maps:
        ax, n = 2 - k, shape[2 - k]
        valid = (ci >= -0.5) & (ci <= n - 0.5)
        if not valid.any():
            return None
        lo = max(0, int(np.floor(ci[valid].min())))
        hi = min(n, int(np.floor(ci[valid].max())) + 2)
        crop[ax] = slice(lo, hi)
        plan.append((ax, ci - lo, valid, sign, len(ci) / (hi - lo)))
    passes = [p[:4] for p in sorted(plan, key=lambda p: p[4])]  # shrink the volume first
    return tuple(crop), passes, [2 - k for k, _, _ in maps]


def body_box(suv: sitk.Image, ct: sitk.Image, spacing, margin_mm: float) -> tuple[np.ndarray, np.ndarray, float]:
    """RAS box of the body inside the PET FOV (+ margin) and the fraction of that box that CT covers.

    Coverage is measured inside the body's bounding box, not the whole PET field of view: a CT
    reconstructed on a 500 mm circle inside a 700 mm PET FOV covers the patient fully, which is what matters.
    """
    lo, hi = ras_bounds(suv)
    coarse = ras_grid(lo, hi, tuple(4 * s for s in spacing))
    ct_c = array_xyz(_resample(ct, coarse, False, -5000.0, sitk.sitkFloat32))
    pet_c = array_xyz(_resample(suv, coarse, True, 0.0, sitk.sitkFloat32))
    covered = ct_c > -4000
    coverage = float(covered.mean())
    if coverage == 0.0:
        raise InputError("no PET/CT overlap: the CT field of view does not intersect the PET field of view")
    from scipy.ndimage import gaussian_filter

    pet_s = gaussian_filter(pet_c, sigma=1.0)  # PET noise in air must not count as body
    body = np.where(covered, ct_c > BODY_HU, pet_s > BODY_SUV)
    if body.any():  # drop small specks (noise, table edges): keep components >= 5% of the largest
        import cc3d

        labels, n = cc3d.connected_components(body, connectivity=26, return_N=True)
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            body = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))
    if not body.any():
        raise InputError("empty body mask: no CT > -500 HU and no PET > 0.3 SUV inside the PET field of view")
    idx = np.argwhere(body)
    box = tuple(slice(a, b + 1) for a, b in zip(idx.min(axis=0), idx.max(axis=0)))
    coverage = float(covered[box].mean())
    sp_c = np.asarray(coarse.GetSpacing())
    origin_c = np.asarray(coarse.GetOrigin()) @ LPS_TO_RAS
    blo = origin_c + idx.min(axis=0) * sp_c - sp_c / 2 - margin_mm
    bhi = origin_c + idx.max(axis=0) * sp_c + sp_c / 2 + margin_mm
    return np.maximum(blo, lo), np.minimum(bhi, hi), coverage


# ------------------------------------------------------------------------------------------- harmonize


def _hist(values: np.ndarray, spec: tuple[float, float, int]) -> list[int]:
    lo, hi, n = spec
    return np.histogram(np.clip(values, lo, hi), bins=n, range=(lo, hi))[0].astype(int).tolist()


def harmonize_images(
    images: dict[str, sitk.Image | None],
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW,
    margin_mm: float = 10.0,
    resampler: Callable[..., np.ndarray] | None = None,
) -> dict[str, Any]:
    """Resample one case onto the RAS target grid cropped to the body.

    ``resampler``: a drop-in for :func:`resample_xyz` (same arguments, same result), e.g.
    :func:`petctfm.harmonize.resample_torch.torch_resampler` to run the fine-grid resampling on a GPU;
    default :func:`resample_xyz` (NumPy/SimpleITK). The coarse body-box pass always runs on the CPU.

    Returns ``image`` float32 (2, X, Y, Z) [SUV, HU], ``label`` uint8 (X, Y, Z), ``organs`` uint8 or None,
    ``affine`` (4x4 RAS), ``ct_fov_coverage`` and the QA inputs (source spacings, histograms, source lesion
    volume).
    """
    from petctfm.harmonize import qa

    resample = resampler or resample_xyz
    suv, ct, seg, organs = images["suv"], images["ct"], images.get("seg"), images.get("organs")
    src = qa.check_inputs(suv, ct, seg)
    lo, hi, coverage = body_box(suv, ct, spacing, margin_mm)
    ref = ras_grid(lo, hi, spacing)
    pet = np.maximum(resample(suv, ref, True, 0.0), 0.0)
    cta = np.clip(resample(ct, ref, True, ct_window[0]), *ct_window)
    if seg is not None:
        label = (resample(seg, ref, False, 0, dtype=np.float32) > 0).astype(np.uint8)
    else:
        label = np.zeros(pet.shape, np.uint8)
    org = resample(organs, ref, False, 0, dtype=np.uint8) if organs is not None else None
    stride = (slice(None, None, 2),) * 3
    src["hist_before"] = {"PET": _hist(sitk.GetArrayViewFromImage(suv)[stride], PET_HIST),
                          "CT": _hist(sitk.GetArrayViewFromImage(ct)[stride], CT_HIST)}
    src["hist_after"] = {"PET": _hist(pet[stride], PET_HIST), "CT": _hist(cta[stride], CT_HIST)}
    image = np.stack([pet, cta]).astype(np.float32, copy=False)
    return {"image": image, "label": label, "organs": org, "affine": affine_of(ref), "ct_fov_coverage": coverage,
            "source": src, "reference": ref}


def case_stats(image: np.ndarray, label: np.ndarray, organs: np.ndarray | None, spacing) -> dict[str, Any]:
    """SUVmax, liver SUVmean (organ label 1), lesion count (cc3d, 26-connected) and volume (ml)."""
    import cc3d

    from petctfm.core.labels import ORGAN_LABELS

    pet = image[0]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    stats: dict[str, Any] = {"suv_max": round(float(pet.max()), 4), "liver_suv_mean": None}
    if organs is not None and (organs == ORGAN_LABELS["liver"]).any():
        stats["liver_suv_mean"] = round(float(pet[organs == ORGAN_LABELS["liver"]].mean()), 4)
    if organs is not None and (organs == ORGAN_LABELS["aorta"]).any():
        stats["blood_pool_suv_mean"] = round(float(pet[organs == ORGAN_LABELS["aorta"]].mean()), 4)
    stats["lesion_count"] = int(cc3d.connected_components(label > 0, connectivity=26, return_N=True)[1]) if label.any() else 0
    stats["lesion_volume_ml"] = round(float((label > 0).sum()) * voxel_ml, 4)
    stats["lesion_suv_max"] = round(float(pet[label > 0].max()), 4) if label.any() else None
    return stats


def _sanitize(msg: str, case: SourceCase) -> str:
    """One line, input root replaced by its folder name (no absolute paths in outputs)."""
    line = " ".join(str(msg).split())
    line = line.replace(case.root.rstrip("/") + "/", "").replace(case.root, Path(case.root).name)
    return line[:300]


def failed_path(out: str | os.PathLike, case_id: str) -> Path:
    return Path(out) / WORK_DIR / FAILED_DIR / f"{case_id}.json"


def is_done(out: str | os.PathLike, case_id: str) -> bool:
    from petctfm.data.format import case_dir

    return (case_dir(out, case_id) / "meta.json").is_file()


def process_case(case: SourceCase, out: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Harmonize and write one case; never raises for bad input (returns ``status: failed`` + reason).

    ``opts``: spacing, ct_window, margin_mm, suv_kind, thumbnails (bool), threads (SimpleITK threads).
    """
    from petctfm.data.format import write_case
    from petctfm.harmonize import qa

    t0 = time.perf_counter()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(opts.get("threads", 1)))
    base = {"case_id": case.case_id, "source": Path(case.root).name, "source_format": case.fmt,
            "source_path": case.rel}
    try:
        images, extra = load_case_images(case, opts.get("suv_kind", "bw"))
        spacing = tuple(opts.get("spacing", DEFAULT_SPACING))
        h = harmonize_images(images, spacing, tuple(opts.get("ct_window", DEFAULT_CT_WINDOW)),
                             float(opts.get("margin_mm", 10.0)))
        meta = {k: v for k, v in {**extra, **case.meta}.items() if k in KEPT_FIELDS}
        meta.setdefault("site", Path(case.root).name.lower())
        meta = {k: meta.get(k) for k in KEPT_FIELDS}
        stats = case_stats(h["image"], h["label"], h["organs"], spacing)
        checks = qa.check_case(h, stats, meta.get("tracer"))
        if checks["fatal"]:
            raise InputError(checks["fatal"])
        record = {
            **base, **meta, "patient": case.patient, "orientation": "RAS", "ct_fov_coverage": round(h["ct_fov_coverage"], 4),
            "has_label": images.get("seg") is not None, "has_organs": h["organs"] is not None,
            "stats": stats, "qa": checks["row"], "hist_before": h["source"]["hist_before"],
            "hist_after": h["source"]["hist_after"],
            "harmonize": {"spacing": list(spacing), "ct_window": list(opts.get("ct_window", DEFAULT_CT_WINDOW)),
                          "pet_interpolation": "linear", "ct_interpolation": "linear", "label_interpolation": "nearest",
                          "ct_outside_fov_hu": float(opts.get("ct_window", DEFAULT_CT_WINDOW)[0]),
                          "suv": "sul" if opts.get("suv_kind") == "lbm" else "bw"},
        }
        write_case(out, case.case_id, h["image"], h["label"], h["affine"], record, organs=h["organs"])
        failed_path(out, case.case_id).unlink(missing_ok=True)
        if opts.get("thumbnails", True):
            qa.thumbnail(out, case.case_id, h, meta)
        return {"case_id": case.case_id, "status": "done", "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - any failure of one case quarantines it; the run goes on
        reason = _sanitize(str(exc) or type(exc).__name__, case)
        if not isinstance(exc, PetctfmError):
            reason = f"{type(exc).__name__}: {reason}"
            if os.environ.get("PETCTFM_DEBUG"):
                traceback.print_exc()
        atomic_write_json(failed_path(out, case.case_id), {**base, "reason": reason})
        return {"case_id": case.case_id, "status": "failed", "reason": reason, "seconds": time.perf_counter() - t0}


def parse_spacing(values: list[float] | None) -> tuple[float, float, float]:
    if not values:
        return DEFAULT_SPACING
    if len(values) != 3 or any(not math.isfinite(v) or v <= 0 or v > 20 for v in values):
        raise InputError(f"--spacing needs three positive numbers in mm (<= 20), got {values}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]
