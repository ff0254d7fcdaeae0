"""Finding and loading evaluation cases: ground truth, predictions and SUV, matched by case id.

Ground-truth layouts (``--gt``), detected in this order:

1. a harmonized petctfm dataset (``dataset.json`` + ``cases/<id>/label.npy``): SUV is channel 0 of
   ``image.npy``, the grid comes from ``meta.json``'s RAS affine; ``split`` picks a split from
   ``splits.json`` (default: every case);
2. an nnU-Net v2 raw folder (has ``labelsTr``) or its ``labelsTr`` / ``labelsTs`` folder: labels
   ``<id>.nii.gz``; SUV from ``imagesTr|imagesTs/<id>_000k.nii.gz`` where channel k is named "SUV" or
   "PET" in the raw folder's ``dataset.json`` (autoPET's nnU-Net data stores SUV in its PET channel);
3. a folder of autoPET case folders ``<id>/SEG.nii.gz`` (SUV from ``<id>/SUV.nii.gz`` when present) and/or
   plain files ``<id>.nii.gz|.nii|.mha|.nrrd``.

Predictions (``--pred``): ``<id>.<ext>`` or ``<id>/lesions.<ext>`` (the ``petctfm predict`` layout).
Two files for one case (``c1.nii.gz`` and ``c1.nii``, or ``c1.nii.gz`` and ``c1/lesions.nii.gz``; the same
for ground truth) are refused with an :class:`InputError` naming both: picking one silently would make the
score depend on which file won.
An explicit ``--suv`` (a folder with ``<id>.<ext>`` or ``<id>/SUV.<ext>``, or a pattern containing
``{case}``) overrides the automatic SUV.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petctfm.core.errors import InputError
from petctfm.evaluate.geometry import Grid, grid_mismatch, grid_of
from petctfm.io.layouts.nnunet import nnunet_channels
from petctfm.io.images import IMAGE_SUFFIXES, array_xyz, read_image

BREAKDOWN_COLUMNS = ("site", "tracer", "diagnosis")


@dataclass
class GtCase:
    """Where one ground-truth case lives. ``dataset`` is set for a harmonized dataset, else ``label``."""

    case_id: str
    label: Path | None = None
    suv: Path | None = None
    dataset: Path | None = None

    @property
    def name(self) -> str:
        return str(self.label) if self.label else f"{self.dataset}/cases/{self.case_id}"


def case_id_of(path: Path) -> str | None:
    """``<id>`` of ``<id>.nii.gz`` etc., None for a non-image file."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def image_in(folder: Path, stem: str) -> Path | None:
    """The image ``folder/stem.<ext>``; None if none; :class:`InputError` if several extensions exist."""
    found = [folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    if len(found) > 1:
        raise InputError(f"{found[0]} and {found[1]}: two files for one case; keep one")
    return found[0] if found else None


def _add(found: dict[str, Path], case_id: str, path: Path) -> None:
    """``found[case_id] = path``, refusing a second file for the same case (a silent choice otherwise)."""
    if case_id in found:
        raise InputError(f"{found[case_id]} and {path}: two files for case {case_id}; keep one")
    found[case_id] = path


def _nnunet_suv_channel(raw_root: Path) -> int | None:
    """The PET/SUV channel of the nnU-Net dataset at ``raw_root`` (:func:`petctfm.io.layouts.nnunet.nnunet_channels`),
    or None without a readable ``dataset.json`` (then SUV-based metrics are left out)."""
    if not (raw_root / "dataset.json").is_file():
        return None
    try:
        return nnunet_channels(raw_root).pet
    except InputError:
        return None


def find_ground_truth(gt: str | Path, split: str | None = None) -> dict[str, GtCase]:
    """All ground-truth cases under ``gt`` (see the module docstring for layouts), by case id."""
    gt = Path(gt)
    if not gt.is_dir():
        raise InputError(f"{gt}: ground-truth folder not found")
    if (gt / "dataset.json").is_file() and (gt / "cases").is_dir():
        return _dataset_cases(gt, split)
    if split is not None:
        raise InputError(f"{gt}: --split needs a harmonized dataset as --gt")
    if (gt / "labelsTr").is_dir():
        gt = gt / "labelsTr"
    cases: dict[str, GtCase] = {}
    if gt.name in ("labelsTr", "labelsTs"):
        images = gt.parent / gt.name.replace("labels", "images")
        channel = _nnunet_suv_channel(gt.parent)
        labels: dict[str, Path] = {}
        for f in sorted(gt.iterdir()):
            if (cid := case_id_of(f)) is not None and f.is_file():
                _add(labels, cid, f)
        for cid, f in labels.items():
            suv = image_in(images, f"{cid}_{channel:04d}") if channel is not None else None
            cases[cid] = GtCase(cid, label=f, suv=suv)
    else:
        labels = {}
        for f in sorted(gt.iterdir()):
            if f.is_dir() and (seg := image_in(f, "SEG")) is not None:
                _add(labels, f.name, seg)
            elif f.is_file() and (cid := case_id_of(f)) is not None:
                _add(labels, cid, f)
        for cid, f in labels.items():
            suv = image_in(f.parent, "SUV") if f.parent != gt else None
            cases[cid] = GtCase(cid, label=f, suv=suv)
    if not cases:
        raise InputError(f"{gt}: no ground-truth masks found (expected <case>.nii.gz, <case>/SEG.nii.gz, "
                         "an nnU-Net labelsTr folder or a harmonized dataset)")
    return cases


def _dataset_cases(root: Path, split: str | None) -> dict[str, GtCase]:
    ids = sorted(p.name for p in (root / "cases").iterdir() if (p / "label.npy").is_file())
    if split is not None:
        from petctfm.data.format import load_splits

        splits = load_splits(root)
        chosen = splits.get(split, splits.get("splits", {}).get(split) if isinstance(splits.get("splits"), dict)
                            else None)
        if not isinstance(chosen, list):
            raise InputError(f"{root}/splits.json: no split named {split!r}")
        missing = sorted(set(chosen) - set(ids))
        if missing:
            raise InputError(f"{root}: split {split!r} lists cases not in cases/: {', '.join(missing[:10])}")
        ids = sorted(chosen)
    if not ids:
        raise InputError(f"{root}: dataset has no cases")
    return {cid: GtCase(cid, dataset=root) for cid in ids}


def case_images(folder: Path, stem: str) -> dict[str, Path]:
    """Image files directly under ``folder`` by case id: ``<id>.<ext>`` or ``<id>/<stem>.<ext>`` (two for one
    case: :class:`InputError` naming both)."""
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_dir() and (p := image_in(f, stem)) is not None:
            _add(out, f.name, p)
        elif f.is_file() and (cid := case_id_of(f)) is not None:
            _add(out, cid, f)
    return out


def find_predictions(pred: str | Path, stem: str = "lesions") -> dict[str, Path]:
    """Prediction files under ``pred`` by case id: ``<id>.<ext>`` or ``<id>/<stem>.<ext>`` (:func:`case_images`;
    ``stem`` ``lesions``, or ``organs`` for organ maps)."""
    pred = Path(pred)
    if not pred.is_dir():
        raise InputError(f"{pred}: prediction folder not found")
    return case_images(pred, stem)


def explicit_suv(spec: str, case_id: str) -> Path:
    """The SUV file for ``case_id`` from ``--suv`` (a pattern with ``{case}``, or a folder)."""
    if "{case}" in spec:
        path = Path(spec.format(case=case_id))
        if not path.is_file():
            raise InputError(f"{path}: SUV image not found for case {case_id}")
        return path
    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(f"{folder}: SUV folder not found")
    path = image_in(folder, case_id) or image_in(folder / case_id, "SUV")
    if path is None:
        raise InputError(f"{folder}: no SUV image for case {case_id} (looked for {case_id}.nii.gz and "
                         f"{case_id}/SUV.nii.gz)")
    return path


def read_mask(path: Path) -> tuple[np.ndarray, Grid]:
    """A mask image as a bool (X, Y, Z) array (nonzero = lesion) and its grid.

    A floating-point image with non-integer values (a probability map) is an error: threshold it first.
    """
    img = read_image(path)
    arr = array_xyz(img)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: mask contains NaN or infinite values")
        if np.any(arr != np.round(arr)):
            raise InputError(f"{path}: mask has non-integer values (a probability map?); threshold it first")
    return arr > 0, grid_of(img)


def load_ground_truth(case: GtCase) -> tuple[np.ndarray, np.ndarray | None, Grid, str]:
    """``(gt_mask bool (X,Y,Z), suv float32 (X,Y,Z) or None, grid, suv_source)`` of one GT case."""
    if case.dataset is not None:
        from petctfm.data.format import load_case

        c = load_case(case.dataset, case.case_id, mmap=True)
        label = np.asarray(c["label"]) > 0
        grid = grid_of(np.asarray(c["meta"]["affine"]), label.shape)
        return label, np.asarray(c["image"][0], dtype=np.float32), grid, f"{case.name}/image.npy[0]"
    mask, grid = read_mask(case.label)
    suv = None
    if case.suv is not None:
        suv = read_suv(case.suv, grid, case.label)
    return mask, suv, grid, str(case.suv) if case.suv else ""


def read_suv(path: Path, grid: Grid, gt_name) -> np.ndarray:
    img = read_image(path)
    problem = grid_mismatch(grid, grid_of(img))
    if problem:
        raise InputError(f"mismatched geometry: SUV {path} vs ground truth {gt_name}: {problem}")
    return array_xyz(img).astype(np.float32)


def read_manifest(path: str | Path) -> dict[str, dict]:
    """Rows of a manifest CSV (must have a ``case_id`` column) by case id."""
    from petctfm.io.tables import read_case_rows

    return read_case_rows(path, "manifest not found")[1]


def auto_manifest(gt: str | Path) -> Path | None:
    """A manifest next to the ground truth: ``manifest.csv`` (harmonized dataset) or ``metadata.csv``
    (``petctfm synth`` output: up to three folders up, e.g. from ``nnunet/Dataset001_PETCT/labelsTr``)."""
    gt = Path(gt).resolve()
    for folder in (gt, *list(gt.parents)[:3]):
        for name in ("manifest.csv", "metadata.csv"):
            p = folder / name
            if p.is_file():
                try:
                    with open(p, newline="") as f:
                        header = next(csv.reader(f), [])
                except OSError:
                    continue
                if "case_id" in header and any(c in header for c in BREAKDOWN_COLUMNS):
                    return p
    return None
