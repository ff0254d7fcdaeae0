"""A harmonized dataset at a coarser (or any other) voxel spacing: nnU-Net's ``3d_lowres`` data.

The segmentation recipe can train on a coarser grid than the dataset was harmonized at (``--plan-spacing``,
docs/segmentation-recipe.md, round ten): a step buys a fixed number of voxels, and at 6 mm they cover 3.4x the
body they cover at 4 mm. :func:`respace_dataset` makes that copy once, by harmonize's own rules
(:func:`petctfm.harmonize.pipeline.harmonize_images`: SUV and HU linear, the lesion mask and the organ map nearest
neighbour, the grid recropped to the body), and a later run reuses it:

- every case of ``splits.json`` (train, val, test and a held-out site's ``holdout``) keeps its id, its metadata
  and its split; ``meta.json`` gets the new geometry and ``respaced_from`` (the source spacing); its ``stats``
  and ``qa`` still describe the source grid;
- ``dataset.json`` keeps the source's normalization statistics (a model normalizes its input as the dataset it
  was trained on says; the voxel statistics of one body barely move with the grid), gets the new ``spacing`` and
  ``respaced_from`` (the source folder and spacing);
- ``splits.json`` is copied, so fractions, k-shot subsets and the validation split are the same cases.

A lesion smaller than about one coarse voxel can vanish (nearest neighbour, as harmonize does at any spacing); a
model trained on the copy still predicts on any grid: ``petctfm predict`` and
:func:`petctfm.predict.split.predict_split` resample to the model's spacing and bring the probability back.

Shapes: a case's image (2, X, Y, Z) [SUV, HU] float32, label and organs (X, Y, Z) uint8; X, Y, Z change with
the spacing, the body's extent does not.
"""

from __future__ import annotations

import fcntl
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from petctfm.core.errors import InputError

#: Where :func:`respaced_dir` puts a dataset's respaced copies: a sub-folder of the dataset.
RESPACED_DIR = "respaced"


def spacing_tag(spacing: Sequence[float]) -> str:
    """``[6, 6, 6]`` -> ``"6x6x6"``, ``[1.5, 1.5, 3]`` -> ``"1.5x1.5x3"`` (a folder name)."""
    return "x".join(f"{float(s):g}" for s in spacing)


def respaced_dir(dataset: str | Path, spacing: Sequence[float]) -> Path:
    """The folder of ``dataset``'s copy at ``spacing``: ``DATASET/respaced/<tag>`` (:func:`spacing_tag`)."""
    return Path(dataset) / RESPACED_DIR / spacing_tag(spacing)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file), so two runs that start together make one copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_complete(out: Path, ids: list[str]) -> bool:
    from petctfm.data import format as fmt

    if not (out / fmt.DATASET_JSON).is_file():  # written last: its presence says the copy finished
        return False
    return all((fmt.case_dir(out, c) / "meta.json").is_file() for c in ids)


def respace_case(dataset: str | Path, case_id: str, spacing: Sequence[float], out: str | Path) -> Path:
    """One case of ``dataset`` resampled to ``spacing`` (mm, X, Y, Z) and written to ``out`` (atomic)."""
    from petctfm.data import format as fmt
    from petctfm.harmonize.pipeline import harmonize_images
    from petctfm.io.images import image_from_ras

    case = fmt.load_case(dataset, case_id, mmap=True)
    meta = case["meta"]
    affine = np.asarray(meta["affine"], np.float64)
    image = np.asarray(case["image"])
    images = {"suv": image_from_ras(np.ascontiguousarray(image[0], np.float32), affine),
              "ct": image_from_ras(np.ascontiguousarray(image[1], np.float32), affine),
              "seg": image_from_ras(np.asarray(case["label"], np.uint8), affine),
              "organs": image_from_ras(np.asarray(case["organs"], np.uint8), affine) if "organs" in case else None}
    window = tuple((meta.get("harmonize") or {}).get("ct_window") or (float(image[1].min()), float(image[1].max())))
    h = harmonize_images(images, tuple(float(s) for s in spacing), window)
    keep = {k: v for k, v in meta.items() if k not in ("case_id", "shape", "spacing", "affine")}
    keep["harmonize"] = {**(meta.get("harmonize") or {}), "spacing": [float(s) for s in spacing]}
    keep["respaced_from"] = {"spacing": fmt.case_spacing(meta)}
    keep["has_label"] = bool(h["label"].any())
    return fmt.write_case(out, case_id, h["image"], h["label"], h["affine"], keep, organs=h["organs"])


def respace_dataset(dataset: str | Path, spacing: Sequence[float], out: str | Path | None = None,
                    progress: bool = False) -> Path:
    """``dataset`` (a harmonized petctfm dataset) at ``spacing`` (mm, X, Y, Z) in ``out`` (default
    :func:`respaced_dir`), made once (module docstring) and reused while it holds every case of the source's
    ``splits.json``; concurrent callers wait for one copy (a lock file). Returns ``out``. A dataset already at
    ``spacing`` is returned as it is."""
    from rich.progress import Progress

    from petctfm.data import format as fmt
    from petctfm.harmonize.splits import CASE_SPLITS

    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise InputError(f"spacing {spacing}: three positive numbers in mm are needed")
    info = fmt.load_dataset_info(dataset)
    if [float(s) for s in info.get("spacing") or []] == spacing:
        return Path(dataset)
    splits = fmt.load_splits(dataset)
    ids = sorted({c for k in CASE_SPLITS for c in splits.get(k) or []})
    out = Path(out) if out is not None else respaced_dir(dataset, spacing)
    with _locked(out.parent / f".{out.name}.lock"):
        if _is_complete(out, ids):
            return out
        out.mkdir(parents=True, exist_ok=True)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"respace to {spacing_tag(spacing)} mm", total=len(ids))
            for cid in ids:
                if not (fmt.case_dir(out, cid) / "meta.json").is_file():
                    respace_case(dataset, cid, spacing, out)
                bar.advance(task)
        shutil.copyfile(Path(dataset) / fmt.SPLITS_JSON, out / fmt.SPLITS_JSON)
        src = {"dataset": str(Path(dataset).resolve()), "spacing": info.get("spacing")}
        fmt.write_dataset_info(out, {**{k: v for k, v in info.items() if k not in ("format_version", "channels")},
                                     "name": f"{info.get('name', Path(dataset).name)} at {spacing_tag(spacing)} mm",
                                     "spacing": spacing, "num_cases": len(ids), "respaced_from": src})
    return out


__all__ = ["RESPACED_DIR", "spacing_tag", "respaced_dir", "respace_case", "respace_dataset"]
