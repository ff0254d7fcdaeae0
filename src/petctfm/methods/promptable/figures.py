"""The training figure of promptable segmentation: one column per click, PET coronal slice, ground-truth contour
(green), prediction contour (red), positive (+) and negative (x) clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petctfm.methods.promptable.prompts import interior_point


def click_figure(pet: np.ndarray, gt: np.ndarray, history: list, path: Path, title: str = "") -> Path:
    """``pet`` (X, Y, Z), ``gt`` (X, Y, Z) bool, ``history`` as filled by
    :func:`~petctfm.methods.promptable.task.simulate_clicks` (sample 0 is drawn). Coronal slice through the
    target's interior point, z (superior) up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = interior_point(gt)
    y = int(first[1]) if first is not None else pet.shape[1] // 2
    clicks = [(first, True)] if first is not None else []
    n = max(len(history), 1)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
    lo, hi = np.percentile(pet, [0.5, 99.5])
    for k in range(n):
        ax = axes[0][k]
        ax.imshow(pet[:, y, :].T, origin="lower", cmap="gray_r", vmin=lo, vmax=hi if hi > lo else lo + 1)
        if gt[:, y, :].any():
            ax.contour(gt[:, y, :].T.astype(float), levels=[0.5], colors="g", linewidths=1)
        if k < len(history):
            pred = history[k][0][0]
            if pred[:, y, :].any():
                ax.contour(pred[:, y, :].T.astype(float), levels=[0.5], colors="r", linewidths=1)
        for pt, positive in clicks:
            ax.plot(pt[0], pt[2], "+" if positive else "x", color="lime" if positive else "red", ms=9, mew=2)
        ax.set_title(f"{k + 1} click(s)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if k < len(history) and history[k][1] and history[k][1][0] is not None:
            clicks.append(history[k][1][0])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


def save_png(fig, path: Path, dpi: int = 80) -> Path:
    """Write a matplotlib figure as a PNG atomically (creating the folder) and close it; returns ``path``."""
    import matplotlib.pyplot as plt

    from petctfm.io.atomic import atomic_path

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


__all__ = ["click_figure", "save_png"]
