"""``response.png``: baseline and follow-up PET MIPs side by side (anterior view, radiological convention:
patient's right on the image's left, head up) with every lesion outlined and numbered by its match group
(a lesion and its follow-up counterpart carry the same number; new lesions get the next numbers), and a
waterfall plot of the per-group SULpeak change. Colours: matched blue, split / merged / complex orange,
disappeared grey, new red."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import SimpleITK as sitk

COLORS = {"matched": "tab:blue", "split": "tab:orange", "merged": "tab:orange", "complex": "tab:orange",
          "disappeared": "tab:gray", "new": "tab:red"}


def _lps(img: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(array X,Y,Z in LPS order, origin, spacing) of ``img`` reoriented to LPS (x to the patient's left,
    z superior)."""
    from petctfm.io.images import array_xyz

    o = sitk.DICOMOrient(img, "LPS")
    return array_xyz(o), np.array(o.GetOrigin()), np.array(o.GetSpacing())


def _panel(ax, pet: sitk.Image, labels: sitk.Image, numbers: dict[int, tuple[int, str]], title: str,
           suv_max: float) -> None:
    arr, origin, sp = _lps(pet)
    lab, _, _ = _lps(labels)
    mip = arr.max(axis=1).T  # (Z, X)
    ext = (origin[0] - sp[0] / 2, origin[0] + (arr.shape[0] - 0.5) * sp[0],
           origin[2] - sp[2] / 2, origin[2] + (arr.shape[2] - 0.5) * sp[2])
    ax.imshow(mip, cmap="gray_r", vmin=0, vmax=suv_max, extent=ext, origin="lower", interpolation="nearest")
    xs = origin[0] + np.arange(arr.shape[0]) * sp[0]
    zs = origin[2] + np.arange(arr.shape[2]) * sp[2]
    for k, (num, status) in numbers.items():
        m = lab == k
        if not m.any():
            continue
        proj = m.any(axis=1).T.astype(float)
        color = COLORS.get(status, "k")
        if proj.sum() > 1:
            ax.contour(xs, zs, proj, levels=[0.5], colors=[color], linewidths=1.0)
        i, _, kk = np.argwhere(m).mean(axis=0)
        ax.text(origin[0] + i * sp[0] + 3 * sp[0], origin[2] + kk * sp[2], str(num), color=color, fontsize=9,
                fontweight="bold", va="center")
    ax.set_title(title, fontsize=10)
    ax.text(0.02, 0.98, "R", transform=ax.transAxes, va="top", fontsize=9)
    ax.text(0.98, 0.98, "L", transform=ax.transAxes, va="top", ha="right", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def render_response(baseline_pet: sitk.Image, baseline_labels: sitk.Image, followup_pet: sitk.Image,
                    followup_labels: sitk.Image, groups: list[Any], rows: list[dict[str, Any]], title: str,
                    suv_max: float = 10.0, dpi: int = 100) -> bytes:
    """The PNG bytes (module docstring). ``groups``: :class:`~petctfm.response.match.Group` list; ``rows``:
    the ``lesions.csv`` rows (``number``, ``status``, ``sulpeak_change_percent``)."""
    import matplotlib.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = matplotlib.figure.Figure(figsize=(14, 7), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax_b = fig.add_axes((0.01, 0.05, 0.27, 0.85))
    ax_f = fig.add_axes((0.29, 0.05, 0.27, 0.85))
    ax_w = fig.add_axes((0.63, 0.15, 0.35, 0.7))
    nb = {k: (g.number, g.status) for g in groups for k in g.baseline}
    nf = {k: (g.number, g.status) for g in groups for k in g.followup}
    _panel(ax_b, baseline_pet, baseline_labels, nb, "baseline (PET MIP, anterior)", suv_max)
    _panel(ax_f, followup_pet, followup_labels, nf, "follow-up (PET MIP, anterior)", suv_max)
    bars = [r for r in rows if r["status"] != "new" and r.get("sulpeak_change_percent") is not None]
    bars.sort(key=lambda r: -r["sulpeak_change_percent"])
    n_new = sum(r["status"] == "new" for r in rows)
    if bars:
        x = np.arange(len(bars))
        ax_w.bar(x, [r["sulpeak_change_percent"] for r in bars], color=[COLORS.get(r["status"], "k") for r in bars])
        ax_w.set_xticks(x)
        ax_w.set_xticklabels([str(r["number"]) for r in bars], fontsize=8)
    ax_w.axhline(0, color="k", lw=0.8)
    for y in (-30, 30):
        ax_w.axhline(y, color="k", lw=0.6, ls="--")
    ax_w.set_ylabel("SULpeak change (%)")
    ax_w.set_xlabel("lesion (group number)")
    ax_w.set_title("per-lesion waterfall" + (f" ({n_new} new lesion(s) not shown)" if n_new else ""), fontsize=10)
    fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


__all__ = ["render_response", "COLORS"]
