"""Render one PET/CT case as a picture a clinician recognizes.

The figure (``FIG_SIZE_PX`` = 1600 x 700 pixels at ``dpi=100``; ``16 x 7`` inches at any dpi) has three
panels, left to right:

1. **PET MIP**: maximum-intensity projection along the anterior-posterior axis (coronal MIP), inverted
   grey (black = hot), SUV window ``0..suv_max``; lesion (and prediction) masks are max-projected the same
   way and drawn as contours.
2. **Coronal fused**: CT (grey, soft-tissue window -160..240 HU) with PET in the ``hot`` colormap on top,
   through the hottest lesion (SUVmax voxel inside SEG, else inside the prediction, else the body centre).
3. **Axial fused**: the same, axial, through the same point.

Contours: lesions (SEG) green, prediction magenta, organs thin and faint in one fixed colour per label. A
legend, an SUV colorbar, a scale bar and orientation letters (R/L, S/I, A/P) complete it.

Display frame. Every input is first brought into one canonical frame: the PET image is reoriented with
``sitk.DICOMOrient(pet, "LPS")`` (a pure axis permutation/flip, no interpolation, so voxel values are
unchanged), giving arrays indexed ``[x, y, z]`` with x: patient right -> left, y: anterior -> posterior,
z: inferior -> superior. The CT is resampled onto that grid (linear), labels with nearest neighbour. An
LPS file, an RAS file and a z-flipped file of the same patient therefore yield the same arrays and the
same picture. Drawing conventions (radiological): in coronal views the patient's right is on the image
left and the head is up; in axial views the patient's right is on the image left and anterior is up.
Extents are in millimetres, so anisotropic voxels keep their true physical aspect ratio.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display anywhere petctfm runs

import matplotlib.figure  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402

from petctfm.core.errors import InputError  # noqa: E402
from petctfm.io.atomic import atomic_path  # noqa: E402
from petctfm.io.images import IMAGE_SUFFIXES, array_xyz, is_image_file, read_image  # noqa: E402
from petctfm.core.labels import ORGAN_LABELS  # noqa: E402

log = logging.getLogger(__name__)

FIG_SIZE_IN = (16.0, 7.0)
"""Figure size in inches; the PNG is ``16*dpi x 7*dpi`` pixels (1600 x 700 at the default dpi=100)."""
FIG_SIZE_PX = (1600, 700)
CT_WINDOW = (-160.0, 240.0)  # soft-tissue window, W400 / L40
LESION_COLOR = "#00e000"
PRED_COLOR = "#ff00ff"
FOCUS_COLOR = "#00bfff"
ORGAN_NAMES = {v: k.replace("_", " ") for k, v in ORGAN_LABELS.items() if v > 0}
# Largest plausible SUV; above this a "PET" is taken to be activity concentration (Bq/ml), not SUV.
MAX_PLAUSIBLE_SUV = 1000.0


# --------------------------------------------------------------------------------------------------------
# Display frame
# --------------------------------------------------------------------------------------------------------
@dataclass
class DisplayVolumes:
    """All inputs on one canonical grid; arrays indexed ``[x, y, z]`` (x: R->L, y: A->P, z: I->S).

    Attributes:
        pet: (X, Y, Z) float32 SUV.
        ct: (X, Y, Z) float32 HU, or None.
        seg, pred, organs: (X, Y, Z) uint8/uint16 label maps, or None.
        origin: physical position (LPS mm) of voxel [0, 0, 0]'s centre.
        spacing: voxel size (mm) along x, y, z.
    """

    pet: np.ndarray
    ct: np.ndarray | None
    seg: np.ndarray | None
    pred: np.ndarray | None
    organs: np.ndarray | None
    origin: np.ndarray
    spacing: np.ndarray

    def centers(self, axis: int) -> np.ndarray:
        """Physical coordinates (mm) of the voxel centres along ``axis``."""
        return self.origin[axis] + self.spacing[axis] * np.arange(self.pet.shape[axis])

    def edges(self, axis: int) -> tuple[float, float]:
        """Physical coordinates (mm) of the outer voxel edges along ``axis`` (for ``imshow`` extents)."""
        c = self.centers(axis)
        half = self.spacing[axis] / 2.0
        return float(c[0] - half), float(c[-1] + half)


def _canonical_reference(pet: sitk.Image) -> sitk.Image:
    """PET reoriented to the LPS-identity frame, origin snapped to 1e-4 mm (removes float jitter)."""
    ref = sitk.DICOMOrient(pet, "LPS")
    if not np.allclose(ref.GetDirection(), np.eye(3).ravel(), atol=1e-6):
        # Oblique acquisition: DICOMOrient only permutes/flips, so resample onto an axis-aligned grid
        # covering the same physical box.
        size = np.array(ref.GetSize())
        corners = [
            ref.TransformContinuousIndexToPhysicalPoint([float(c) for c in idx])
            for idx in np.array(np.meshgrid(*[[0, n - 1] for n in size], indexing="ij")).reshape(3, -1).T
        ]
        lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
        spacing = np.array(ref.GetSpacing())
        new_size = [int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1]
        ref = sitk.Resample(
            ref, new_size, sitk.Transform(), sitk.sitkLinear, lo.tolist(), spacing.tolist(),
            np.eye(3).ravel().tolist(), 0.0, sitk.sitkFloat32,
        )
    ref.SetOrigin(tuple(round(o, 4) for o in ref.GetOrigin()))
    ref.SetSpacing(tuple(round(s, 6) for s in ref.GetSpacing()))
    ref.SetDirection(np.eye(3).ravel().tolist())
    return ref


def _onto(img: sitk.Image, ref: sitk.Image, label: bool, default: float) -> np.ndarray:
    """Resample ``img`` onto ``ref`` (nearest for labels, linear otherwise); returns an [x, y, z] array."""
    # Reorient first (exact), so the interpolation sees the same array whatever the stored orientation.
    img = sitk.DICOMOrient(img, "LPS")
    img.SetOrigin(tuple(round(o, 4) for o in img.GetOrigin()))
    img.SetSpacing(tuple(round(s, 6) for s in img.GetSpacing()))
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out_type = sitk.sitkUInt16 if label else sitk.sitkFloat32
    out = sitk.Resample(img, ref, sitk.Transform(), interp, default, out_type)
    arr = array_xyz(out)
    return arr if label else np.nan_to_num(np.round(arr, 3), nan=default).astype(np.float32)


def to_display(
    pet_suv: sitk.Image,
    ct: sitk.Image | None = None,
    seg: sitk.Image | None = None,
    organs: sitk.Image | None = None,
    pred: sitk.Image | None = None,
) -> DisplayVolumes:
    """Bring all inputs onto the canonical display grid (the PET grid, reoriented to LPS)."""
    ref = _canonical_reference(sitk.Cast(pet_suv, sitk.sitkFloat32))
    pet = np.nan_to_num(np.round(array_xyz(ref), 4)).astype(np.float32)

    def label(img):
        return None if img is None else _onto(img, ref, label=True, default=0)

    return DisplayVolumes(
        pet=pet,
        ct=None if ct is None else _onto(sitk.Cast(ct, sitk.sitkFloat32), ref, label=False, default=-1000.0),
        seg=label(seg),
        pred=label(pred),
        organs=label(organs),
        origin=np.array(ref.GetOrigin()),
        spacing=np.array(ref.GetSpacing()),
    )


# --------------------------------------------------------------------------------------------------------
# Where to cut
# --------------------------------------------------------------------------------------------------------
def select_focus(
    pet: np.ndarray,
    seg: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    ct: np.ndarray | None = None,
    focus: str = "hottest",
) -> tuple[tuple[int, int, int], str]:
    """The voxel the fused slices pass through, and why.

    ``focus="hottest"``: the SUVmax voxel of the hottest lesion (inside ``seg``), else of the hottest
    predicted lesion (inside ``pred``). ``focus="largest"``: the SUVmax voxel of the largest lesion
    (18-connected component by voxel count, the autoPET connectivity), same order. Without any lesion: the
    body centre (centre of mass of CT > -500 HU, or of PET above 10% of its 99.9th percentile when there is
    no CT). All arrays are (X, Y, Z) on the same grid.

    Returns:
        ((i, j, k), reason) with reason e.g. ``"hottest lesion"``, ``"largest predicted lesion"``,
        ``"body centre"``.
    """
    if focus not in ("hottest", "largest"):
        raise ValueError(f"focus must be 'hottest' or 'largest', got {focus!r}")
    for mask, what in ((seg, "lesion"), (pred, "predicted lesion")):
        if mask is not None and np.any(mask > 0):
            inside = mask > 0
            if focus == "largest":
                from petctfm.evaluate.lesions import label_lesions

                cc, n = label_lesions(inside, connectivity=18)
                sizes = np.bincount(cc.ravel(), minlength=n + 1)
                sizes[0] = 0
                inside = cc == int(np.argmax(sizes))
            masked = np.where(inside, pet, -np.inf)
            return tuple(int(v) for v in np.unravel_index(int(np.argmax(masked)), pet.shape)), f"{focus} {what}"
    if ct is not None and np.any(ct > -500):
        body = ct > -500
    else:
        body = pet > 0.1 * float(np.percentile(pet, 99.9))
    if not np.any(body):
        return tuple(int(n // 2) for n in pet.shape), "body centre"
    com = np.array(np.nonzero(body)).mean(axis=1)
    return tuple(int(round(c)) for c in com), "body centre"


def body_box(vol: DisplayVolumes, margin_mm: float = 15.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """Physical x and y limits (mm) of the body (CT > -500 HU, else SUV > 0.15) plus a margin.

    Scanner fields of view are wider than the patient; cropping the empty air makes the patient large
    enough to read. Falls back to the whole grid when no body is found.
    """
    body = vol.ct > -500 if vol.ct is not None else vol.pet > 0.15
    lims = []
    for axis in (0, 1):
        lo, hi = vol.edges(axis)
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(body.any(axis=other))
        if idx.size:
            c = vol.centers(axis)
            lo = max(lo, float(c[idx[0]]) - margin_mm)
            hi = min(hi, float(c[idx[-1]]) + margin_mm)
        lims.append((lo, hi))
    return lims[0], lims[1]


# --------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------
# Organ contour colours: distinct from the lesion green, prediction magenta and slice-level blue; bone is
# grey because its outline is everywhere and must not clutter.
ORGAN_COLORS = {
    1: "#1f77b4", 2: "#9467bd", 3: "#ff7f0e", 4: "#ffbb78", 5: "#d62728", 6: "#aec7e8",
    7: "#c5b0d5", 8: "#e7ba52", 9: "#c49c94", 10: "#ff9896", 11: "#8c8c8c", 12: "#bcbd22",
}


def _organ_color(label: int):
    return ORGAN_COLORS.get(label, colormaps["tab20"]((label - 1) % 20))


def _contour(ax, mask2d: np.ndarray, xs: np.ndarray, ys: np.ndarray, color, lw: float, alpha: float = 1.0,
             ls: str = "solid"):
    """Contour of a 2D mask (rows = ``ys``, columns = ``xs``, physical mm) at the 0.5 level."""
    if mask2d.any() and min(mask2d.shape) >= 2:
        ax.contour(xs, ys, mask2d.astype(np.float32), levels=[0.5], colors=[color], linewidths=lw, alpha=alpha,
                   linestyles=ls)


def _fused(ax, ct2d: np.ndarray | None, pet2d: np.ndarray, extent, origin: str, suv_max: float) -> None:
    """CT in grey with PET in ``hot`` on top; PET alpha grows with SUV so low uptake leaves the CT visible."""
    if ct2d is not None:
        ax.imshow(ct2d, cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=extent, origin=origin,
                  interpolation="bilinear")
    else:
        ax.set_facecolor("black")
    norm = Normalize(0.0, suv_max, clip=True)
    rgba = colormaps["hot"](norm(pet2d))
    rgba[..., 3] = np.clip(norm(pet2d) / 0.25, 0.0, 1.0) * (0.65 if ct2d is not None else 1.0)
    ax.imshow(rgba, extent=extent, origin=origin, interpolation="bilinear")


def _orientation_letters(ax, top: str, bottom: str, left: str = "R", right: str = "L", color="white") -> None:
    kw = dict(transform=ax.transAxes, color=color, fontsize=11, fontweight="bold", ha="center", va="center")
    ax.text(0.5, 0.97, top, **kw)
    ax.text(0.5, 0.03, bottom, **kw)
    ax.text(0.03, 0.5, left, **kw)
    ax.text(0.97, 0.5, right, **kw)


def _scale_bar(ax, width_mm: float, color: str) -> None:
    length = 100.0 if width_mm >= 250 else 50.0 if width_mm >= 100 else 10.0
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} mm", "lower right", pad=0.4, color=color,
                          frameon=False, size_vertical=0, fontproperties={"size": 9})
    ax.add_artist(bar)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def render_case(
    pet_suv: sitk.Image,
    ct: sitk.Image | None = None,
    seg: sitk.Image | None = None,
    organs: sitk.Image | None = None,
    pred: sitk.Image | None = None,
    title: str = "",
    out_png: str | os.PathLike | None = None,
    dpi: int = 100,
    suv_max: float = 10.0,
    focus: str = "hottest",
) -> matplotlib.figure.Figure:
    """Draw PET MIP + coronal and axial fused PET/CT slices; optionally write a PNG (atomically).

    Args:
        pet_suv: PET in SUV (any orientation, any grid); defines the display grid.
        ct: CT in HU (any grid; resampled linearly onto the PET grid).
        seg: lesion mask (> 0 = lesion), drawn green. pred: predicted lesion mask, drawn magenta.
        organs: organ label map (values of ``petctfm.core.labels.ORGAN_LABELS``), thin faint contours.
        title: figure title (case id, site, tracer).
        out_png: where to write the PNG (``16*dpi x 7*dpi`` pixels); nothing is written when None.
        dpi: dots per inch; the figure is always 16 x 7 inches.
        suv_max: upper end of the SUV window (MIP grey scale and PET colormap).
        focus: the fused slices pass through the ``"hottest"`` or the ``"largest"`` lesion (:func:`select_focus`).

    Returns:
        The matplotlib Figure (Agg canvas, not registered with pyplot, so no figure leaks).
    """
    if suv_max <= 0:
        raise ValueError(f"suv_max must be > 0, got {suv_max}")
    vol = to_display(pet_suv, ct, seg, organs, pred)
    (fi, fj, fk), reason = select_focus(vol.pet, vol.seg, vol.pred, vol.ct, focus)
    xs, ys, zs = vol.centers(0), vol.centers(1), vol.centers(2)
    x_ext, y_ext, z_ext = vol.edges(0), vol.edges(1), vol.edges(2)
    coronal_extent = (x_ext[0], x_ext[1], z_ext[0], z_ext[1])  # origin="lower": superior up
    axial_extent = (x_ext[0], x_ext[1], y_ext[1], y_ext[0])  # origin="upper": anterior up
    (x_lo, x_hi), (y_lo, y_hi) = body_box(vol)
    coronal_view = (x_lo, x_hi, z_ext[0], z_ext[1])
    axial_view = (x_lo, x_hi, y_hi, y_lo)

    fig = matplotlib.figure.Figure(figsize=FIG_SIZE_IN, dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    # Fixed boxes (fractions of the figure); images keep their physical aspect inside them. Whole-body
    # coronal views are tall and narrow, the axial view is wide, hence the widths.
    ax_mip = fig.add_axes((0.005, 0.04, 0.215, 0.86))
    ax_cor = fig.add_axes((0.225, 0.04, 0.215, 0.86))
    ax_ax = fig.add_axes((0.45, 0.04, 0.37, 0.86))
    ax_cb = fig.add_axes((0.835, 0.12, 0.011, 0.7))
    ax_leg = fig.add_axes((0.88, 0.04, 0.115, 0.86))
    ax_leg.axis("off")

    # (1) PET MIP, anterior-posterior projection, inverted grey.
    mip = vol.pet.max(axis=1).T  # (Z, X)
    ax_mip.imshow(mip, cmap="gray_r", vmin=0.0, vmax=suv_max, extent=coronal_extent, origin="lower",
                  interpolation="bilinear")
    # Ground truth wide and solid, prediction narrower and dashed: a perfect prediction still shows both.
    outlines = ((vol.seg, LESION_COLOR, 1.8, "solid"), (vol.pred, PRED_COLOR, 1.1, "dashed"))
    for mask, color, lw, ls in outlines:
        if mask is not None:
            _contour(ax_mip, (mask > 0).any(axis=1).T, xs, zs, color, lw * 0.8, ls=ls)
    ax_mip.axhline(zs[fk], color=FOCUS_COLOR, lw=0.8, ls="--", alpha=0.8)
    ax_mip.set_title(f"PET MIP (anterior view), SUV 0-{suv_max:g}", fontsize=11)
    ax_mip.set_xlim(coronal_view[0], coronal_view[1])
    ax_mip.set_ylim(coronal_view[2], coronal_view[3])
    _orientation_letters(ax_mip, "S", "I", color="black")
    _scale_bar(ax_mip, x_hi - x_lo, "black")

    # (2) coronal and (3) axial fused slices through the focus voxel.
    panels = (
        (ax_cor, "coronal", vol.ct[:, fj, :].T if vol.ct is not None else None, vol.pet[:, fj, :].T,
         lambda a: a[:, fj, :].T, coronal_extent, coronal_view, "lower", zs, ("S", "I")),
        (ax_ax, "axial", vol.ct[:, :, fk].T if vol.ct is not None else None, vol.pet[:, :, fk].T,
         lambda a: a[:, :, fk].T, axial_extent, axial_view, "upper", ys, ("A", "P")),
    )
    organs_shown: set[int] = set()
    for ax, name, ct2d, pet2d, cut, extent, view, origin, rows, (top, bottom) in panels:
        _fused(ax, ct2d, pet2d, extent, origin, suv_max)
        if vol.organs is not None:
            org2d = cut(vol.organs)
            for lab in (int(v) for v in np.unique(org2d) if v > 0):
                _contour(ax, org2d == lab, xs, rows, _organ_color(lab), 0.6, alpha=0.55)
                organs_shown.add(lab)
        for mask, color, lw, ls in outlines:
            if mask is not None:
                _contour(ax, cut(mask) > 0, xs, rows, color, lw, ls=ls)
        if name == "coronal":
            ax.axhline(zs[fk], color=FOCUS_COLOR, lw=0.8, ls="--", alpha=0.8)
            where = f"y = {ys[fj]:.0f} mm"
        else:
            ax.axvline(xs[fi], color=FOCUS_COLOR, lw=0.8, ls="--", alpha=0.8)
            where = f"z = {zs[fk]:.0f} mm"
        ax.set_title(f"{name} PET/CT, {where} ({reason})", fontsize=11)
        ax.set_xlim(view[0], view[1])
        ax.set_ylim(view[2], view[3])
        _orientation_letters(ax, top, bottom)
        _scale_bar(ax, x_hi - x_lo, "white")
    for ax in (ax_mip, ax_cor, ax_ax):
        _bare(ax)

    # Colorbar (PET SUV) and legend.
    cb = fig.colorbar(ScalarMappable(Normalize(0.0, suv_max), colormaps["hot"]), cax=ax_cb)
    cb.set_label("SUV (PET, fused panels)")
    handles = []
    if vol.seg is not None:
        handles.append(Line2D([], [], color=LESION_COLOR, lw=2, label="lesion (SEG)"))
    if vol.pred is not None:
        handles.append(Line2D([], [], color=PRED_COLOR, lw=2, ls="--", label="prediction"))
    handles.append(Line2D([], [], color=FOCUS_COLOR, lw=1, ls="--", label="slice level"))
    for lab in sorted(organs_shown):
        handles.append(Line2D([], [], color=_organ_color(lab), lw=1, label=ORGAN_NAMES.get(lab, f"label {lab}")))
    ax_leg.legend(handles=handles, loc="upper left", fontsize=9, frameon=False, borderaxespad=0.0)
    suvmax_focus = float(vol.pet[fi, fj, fk])
    info = [f"SUV at focus: {suvmax_focus:.1f}", f"PET voxel: {'x'.join(f'{s:.2g}' for s in vol.spacing)} mm",
            f"CT window: {CT_WINDOW[0]:g}..{CT_WINDOW[1]:g} HU", "R = patient right"]
    ax_leg.text(0.0, 0.0, "\n".join(info), transform=ax_leg.transAxes, fontsize=8, va="bottom", ha="left")
    if title:
        fig.suptitle(title, fontsize=14, y=0.985)

    if out_png is not None:
        out_png = Path(out_png)
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    return fig


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------
def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (folder / n).exists():
            return folder / n
    return None


def _check_suv(img: sitk.Image, path: Path) -> sitk.Image:
    mx = float(np.max(sitk.GetArrayViewFromImage(img)))
    if mx > MAX_PLAUSIBLE_SUV:
        raise InputError(
            f"{path}: values up to {mx:.0f} look like activity concentration (Bq/ml), not SUV; "
            "view needs SUV (e.g. SUV.nii.gz from petctfm synth/harmonize)"
        )
    return img


def _load_autopet(folder: Path) -> dict[str, sitk.Image]:
    suv = folder / "SUV.nii.gz"
    if not suv.exists():
        if (folder / "PET.nii.gz").exists():
            raise InputError(
                f"{folder}: has PET.nii.gz (activity, Bq/ml) but no SUV.nii.gz; view needs SUV "
                "(convert with the patient weight and decayed dose, e.g. petctfm harmonize)"
            )
        raise InputError(f"{folder}: no SUV.nii.gz (autoPET case folder) and no nnU-Net dataset.json found")
    ct = _first_existing(folder, ("CTres.nii.gz", "CT.nii.gz"))
    if ct is None:
        raise InputError(f"{folder}: no CTres.nii.gz or CT.nii.gz next to SUV.nii.gz")
    out = {"pet": _check_suv(read_image(suv), suv), "ct": read_image(ct)}
    for key, name in (("seg", "SEG.nii.gz"), ("organs", "ORGANS.nii.gz")):
        if (folder / name).exists():
            out[key] = read_image(folder / name)
    return out


def _nnunet_channels(dataset_dir: Path) -> tuple[str, str, str]:
    """(ct_channel, pet_channel, file_ending) from dataset.json (defaults: 0000 CT, 0001 PET, .nii.gz)."""
    ct_ch, pet_ch, ending = "0000", "0001", ".nii.gz"
    dj = dataset_dir / "dataset.json"
    if dj.exists():
        try:
            meta = json.loads(dj.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{dj}: cannot read dataset.json ({exc})") from None
        names = meta.get("channel_names") or meta.get("modality") or {}
        ending = meta.get("file_ending", ending)
        for k, v in names.items():
            v = str(v).upper()
            if "PET" in v or "SUV" in v or v == "PT":
                pet_ch = f"{int(k):04d}"
            elif "CT" in v:
                ct_ch = f"{int(k):04d}"
    return ct_ch, pet_ch, ending


def _find_nnunet_dataset(folder: Path) -> Path | None:
    if (folder / "imagesTr").is_dir():
        return folder
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "imagesTr").is_dir())
    return subs[0] if subs else None


def _load_nnunet(dataset_dir: Path, case_id: str | None) -> dict[str, sitk.Image]:
    ct_ch, pet_ch, ending = _nnunet_channels(dataset_dir)
    images = dataset_dir / "imagesTr"
    if case_id is None:
        cases = sorted({p.name[: -len(ending)].rsplit("_", 1)[0] for p in images.glob(f"*{ending}")})
        if not cases:
            raise InputError(f"{images}: no *{ending} images")
        case_id = cases[0]
        log.info("nnU-Net dataset %s: showing the first case, %s", dataset_dir, case_id)
    pet_path = images / f"{case_id}_{pet_ch}{ending}"
    ct_path = images / f"{case_id}_{ct_ch}{ending}"
    out = {"pet": _check_suv(read_image(pet_path), pet_path), "ct": read_image(ct_path)}
    label = dataset_dir / "labelsTr" / f"{case_id}{ending}"
    if label.exists():
        out["seg"] = read_image(label)
    return out


_NNUNET_FILE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def _stem(path: Path) -> str:
    name = path.name
    for s in IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _role_from_name(path: Path) -> str | None:
    stem = _stem(path).upper()
    tokens = set(re.split(r"[^A-Z0-9]+", stem))
    if tokens & {"SEG", "LABEL", "LABELS", "MASK", "GT"}:
        return "seg"
    if tokens & {"ORGANS", "ORGAN"}:
        return "organs"
    if tokens & {"SUV", "PET", "PT"}:
        return "pet"
    if tokens & {"CT", "CTRES"}:
        return "ct"
    return None


def load_case_images(paths: list[str | os.PathLike]) -> dict[str, sitk.Image]:
    """Load the images of one case for :func:`render_case`; keys ``"pet"`` (SUV), ``"ct"``, ``"seg"``,
    ``"organs"`` (the last two only when present).

    Accepted inputs:
        - an autoPET case folder: ``SUV.nii.gz``, ``CTres.nii.gz`` (or ``CT.nii.gz``), optional
          ``SEG.nii.gz`` and ``ORGANS.nii.gz``;
        - an nnU-Net v2 raw dataset folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``; the first case
          is shown) or one of its channel files ``imagesTr/<id>_0000.nii.gz`` (that case is shown);
          channels follow ``dataset.json`` ``channel_names`` (default 0000 = CT, 0001 = PET in SUV);
        - explicit image files (NIfTI/MHA/NRRD): the role comes from the name (``SUV``/``PET``/``PT`` ->
          pet, ``CT`` -> ct, ``SEG``/``label``/``mask`` -> seg, ``ORGANS`` -> organs); unnamed files fill
          pet then ct in the order given.

    Raises:
        InputError: a path is missing, PET is in Bq/ml instead of SUV, or no PET is found.
    """
    if not paths:
        raise InputError("no input given: pass a case folder or PET and CT image files")
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: not found")
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if (folder / "SUV.nii.gz").exists() or (folder / "PET.nii.gz").exists():
            return _load_autopet(folder)
        dataset = _find_nnunet_dataset(folder)
        if dataset is not None:
            return _load_nnunet(dataset, None)
        return _load_autopet(folder)  # raises the clear "no SUV.nii.gz" error
    for p in paths:
        if p.is_dir():
            raise InputError(f"{p}: a folder cannot be combined with other inputs; give one case folder or files")
        if not is_image_file(p):
            raise InputError(f"{p}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    if len(paths) == 1:
        m = _NNUNET_FILE.match(_stem(paths[0]))
        if m and paths[0].parent.name in ("imagesTr", "imagesTs"):
            return _load_nnunet(paths[0].parent.parent, m.group("case"))
        raise InputError(f"{paths[0]}: a single file is not a case; give PET (SUV) and CT files, or a case folder")

    roles: dict[str, Path] = {}
    unnamed: list[Path] = []
    for p in paths:
        role = _role_from_name(p)
        if role is None or role in roles:
            unnamed.append(p)
        else:
            roles[role] = p
    for role in ("pet", "ct"):
        if role not in roles and unnamed:
            roles[role] = unnamed.pop(0)
    if unnamed:
        raise InputError(f"{unnamed[0]}: cannot tell which image this is (name it SUV/PET, CT, SEG or ORGANS)")
    if "pet" not in roles:
        raise InputError("no PET (SUV) image among the inputs")
    out = {role: read_image(p) for role, p in roles.items()}
    _check_suv(out["pet"], roles["pet"])
    return out


def describe_case(paths: list[str | os.PathLike]) -> str:
    """A title for the picture: case id, plus site/tracer/diagnosis from a nearby ``metadata.csv``."""
    if not paths:
        return ""
    first = Path(paths[0])
    m = _NNUNET_FILE.match(_stem(first)) if first.is_file() else None
    case_id = m.group("case") if m else (first.name if first.is_dir() else _stem(first))
    for parent in list(first.resolve().parents)[:4]:
        meta = parent / "metadata.csv"
        if meta.is_file():
            try:
                with open(meta, newline="") as f:
                    for row in csv.DictReader(f):
                        if row.get("case_id") == case_id:
                            parts = [case_id] + [
                                f"{k}: {row[k]}" for k in ("site", "tracer", "diagnosis") if row.get(k)
                            ]
                            return "  |  ".join(parts)
            except (OSError, csv.Error):
                pass
            break
    return case_id
