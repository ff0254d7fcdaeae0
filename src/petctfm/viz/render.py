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

Display frame: every input is first brought onto the PET grid reoriented to LPS (:mod:`petctfm.viz.display`),
so an LPS, an RAS and a z-flipped file of the same patient give the same picture. Drawing conventions
(radiological): in coronal views the patient's right is on the image left and the head is up; in axial
views the patient's right is on the image left and anterior is up. Extents are in millimetres, so
anisotropic voxels keep their true physical aspect ratio. Reading cases from disk is
:mod:`petctfm.io.layouts.read`.
"""

from __future__ import annotations

import os
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

from petctfm.core.labels import ORGAN_LABELS  # noqa: E402
from petctfm.io.atomic import atomic_path  # noqa: E402
from petctfm.viz.display import body_view_limits, select_focus, to_display  # noqa: E402

FIG_SIZE_IN = (16.0, 7.0)
"""Figure size in inches; the PNG is ``16*dpi x 7*dpi`` pixels (1600 x 700 at the default dpi=100)."""
FIG_SIZE_PX = (1600, 700)
CT_WINDOW = (-160.0, 240.0)  # soft-tissue window, W400 / L40
LESION_COLOR = "#00e000"
PRED_COLOR = "#ff00ff"
FOCUS_COLOR = "#00bfff"
ORGAN_NAMES = {v: k.replace("_", " ") for k, v in ORGAN_LABELS.items() if v > 0}


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


def check_options(dpi: int = 100, suv_max: float = 10.0, focus: str = "hottest") -> None:
    """:func:`render_case`'s settings, before an image is read: ``dpi`` in [10, 600], ``suv_max`` a finite
    number > 0, ``focus`` ``"hottest"`` or ``"largest"``; a value out of range is a UsageError (a ValueError)
    naming it."""
    from petctfm.core.checks import check_choice, check_float, check_int

    check_int("dpi", dpi, lo=10, hi=600)
    check_float("suv_max", suv_max, lo=0, lo_open=True)
    check_choice("focus", focus, ("hottest", "largest"))


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
    check_options(dpi=dpi, suv_max=suv_max, focus=focus)
    vol = to_display(pet_suv, ct, seg, organs, pred)
    (fi, fj, fk), reason = select_focus(vol.pet, vol.seg, vol.pred, vol.ct, focus)
    xs, ys, zs = vol.centers(0), vol.centers(1), vol.centers(2)
    x_ext, y_ext, z_ext = vol.edges(0), vol.edges(1), vol.edges(2)
    coronal_extent = (x_ext[0], x_ext[1], z_ext[0], z_ext[1])  # origin="lower": superior up
    axial_extent = (x_ext[0], x_ext[1], y_ext[1], y_ext[0])  # origin="upper": anterior up
    (x_lo, x_hi), (y_lo, y_hi) = body_view_limits(vol)
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
