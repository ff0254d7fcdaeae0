"""The harmonized dataset -> nnU-Net v2 raw format, and our train/val split as nnU-Net's fold 0.

``RAW/DatasetNNN_petctfm/``: ``imagesTr/<case>_0000.nii.gz`` (CT, HU), ``_0001.nii.gz`` (PET, SUV),
``labelsTr/<case>.nii.gz`` (1 = lesion; with ``organs``, the organ map's classes 2.. where there is no lesion)
for the train and val cases; ``imagesTs/`` for the test (and holdout) cases; ``dataset.json`` (channel_names CT / PET: nnU-Net normalizes a channel named "CT" with its CT scheme, the
other by z-score). ``PREPROCESSED/DatasetNNN_petctfm/splits_final.json`` = ``[{"train": ..., "val": ...}]``:
nnU-Net's fold 0 is then exactly our split. Images keep the harmonized grid (RAS affine of ``meta.json``), so
nnU-Net's predictions land on the grid ``petctfm evaluate`` checks them against.

Organ classes (``organs``, what petctfm's recipe trains as ``task.aux_classes``): the organ of value
``organs[name]`` in ``organs.npy`` becomes nnU-Net class ``i + 2`` (``i`` its place in the table, the order of
petctfm's auxiliary classes), a lesion voxel stays 1. nnU-Net then learns the same targets as petctfm's arm;
its predictions are cut back to the lesion (:func:`lesion_only`) before they are scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.data import format as fmt
from petctfm.experiments.vs_nnunet.plan import DATASET_ID, dataset_folder_name, nnunet_dirs
from petctfm.io.atomic import atomic_path, atomic_write_json

EXPORT_FILE = "petctfm_export.json"
CHANNELS = {"0": "CT", "1": "PET"}


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.asarray(affine, np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def organ_lut(organs: dict[str, int]) -> np.ndarray:
    """(256,) uint8: stored organ value of ``organs.npy`` -> nnU-Net class (``organs[name]`` at place ``i`` ->
    ``i + 2``; anything else 0)."""
    lut = np.zeros(256, np.uint8)
    for i, v in enumerate(organs.values()):
        lut[int(v)] = i + 2
    return lut


def nnunet_labels(organs: dict[str, int] | None) -> dict[str, int]:
    """``dataset.json["labels"]``: background 0, lesion 1, then the organs in table order (2..)."""
    return {"background": 0, "lesion": 1, **{str(n): i + 2 for i, n in enumerate(organs or {})}}


def with_organs(dataset_json: dict[str, Any]) -> bool:
    """Whether an nnU-Net ``dataset.json`` has organ classes beside the lesion (:func:`nnunet_labels`)."""
    return len(dataset_json["labels"]) > 2


def label_map(case: dict[str, Any], lut: np.ndarray | None, where: Path) -> np.ndarray:
    """The exported label (X, Y, Z) uint8 of a loaded case: 1 on lesion voxels; with ``lut``
    (:func:`organ_lut`) the organ classes elsewhere (a case without ``organs.npy`` is a one-line InputError
    naming ``where``)."""
    lesion = np.asarray(case["label"]) > 0
    if lut is None:
        return lesion.astype(np.uint8)
    if "organs" not in case:
        from petctfm.core.errors import InputError

        raise InputError(f"{where / 'organs.npy'}: missing: the organ classes are exported to nnU-Net, and every "
                         "train and val case needs its organ map (or run with --organs off)")
    out = lut[np.asarray(case["organs"], dtype=np.uint8)]
    out[lesion] = 1
    return out


def _write_case(data: Path, cid: str, images: Path, labels: Path | None, lut: np.ndarray | None = None) -> None:
    case = fmt.load_case(data, cid, mmap=True)
    image = np.asarray(case["image"], np.float32)
    affine = np.asarray(case["meta"]["affine"], np.float64)
    _write_nifti(np.ascontiguousarray(image[1]), affine, images / f"{cid}_0000.nii.gz")  # CT (HU)
    _write_nifti(np.ascontiguousarray(image[0]), affine, images / f"{cid}_0001.nii.gz")  # PET (SUV)
    if labels is not None:
        _write_nifti(label_map(case, lut, fmt.case_dir(data, cid)), affine, labels / f"{cid}.nii.gz")


def lesion_only(path: str | Path) -> None:
    """Rewrite nnU-Net's multi-class prediction ``path`` (NIfTI) as the lesion mask (class 1 -> 1, the rest 0),
    atomically, header and affine kept."""
    import nibabel as nib

    path = Path(path)
    img = nib.load(str(path))
    mask = (np.asarray(img.dataobj) == 1).astype(np.uint8)
    out = nib.Nifti1Image(mask, img.affine, img.header)
    out.set_data_dtype(np.uint8)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))


def write_images(data: str | Path, ids: list[str], images: str | Path) -> Path:
    """The cases ``ids`` of ``data`` as nnU-Net raw test images (``<case>_0000`` CT, ``_0001`` PET) in ``images``;
    cases already written are skipped (a rerun is cheap). Returns ``images``."""
    images = Path(images)
    images.mkdir(parents=True, exist_ok=True)
    for cid in ids:
        if not (images / f"{cid}_0001.nii.gz").is_file():
            _write_case(Path(data), cid, images, None)
    return images


def export_splits(data: str | Path, exp_dir: str | Path, dataset_id: int = DATASET_ID,
                  test_splits: tuple[str, ...] = ("test",), organs: dict[str, int] | None = None) -> dict[str, Any]:
    """Export once (``petctfm_export.json`` records what was written; a rerun with the same splits and organ
    classes is a no-op). ``organs``: organ name -> value of ``organs.npy``, exported as classes 2.. (None: the
    lesion alone). Returns ``{"raw", "preprocessed", "train", "val", "test": {split: ids}, "organs"}``."""
    data = Path(data)
    dirs = nnunet_dirs(exp_dir)
    name = dataset_folder_name(dataset_id)
    raw = dirs["nnUNet_raw"] / name
    pre = dirs["nnUNet_preprocessed"] / name
    splits = fmt.load_splits(data)
    train, val = list(splits["train"]), list(splits.get("val") or [])
    if not train or not val:
        from petctfm.core.errors import InputError

        raise InputError(f"{data}: vs-nnunet needs a train and a val split (has {len(train)} / {len(val)} cases)")
    tests = {s: list(splits.get(s) or []) for s in test_splits}
    record = {"data": str(data.resolve()), "dataset": name, "train": train, "val": val, "test": tests,
              "organs": dict(organs) if organs else None}
    done = raw / EXPORT_FILE
    if done.is_file() and json.loads(done.read_text()) == record:
        return {"raw": raw, "preprocessed": pre, **record}
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    lut = organ_lut(organs) if organs else None
    for cid in train + val:
        _write_case(data, cid, raw / "imagesTr", raw / "labelsTr", lut)
    for ids in tests.values():
        for cid in ids:
            _write_case(data, cid, raw / "imagesTs", None)
    atomic_write_json(raw / "dataset.json", {
        "channel_names": CHANNELS, "labels": nnunet_labels(organs),
        "numTraining": len(train) + len(val), "file_ending": ".nii.gz",
        "name": name, "description": f"petctfm export of {data} (train + val; test in imagesTs)",
    })
    pre.mkdir(parents=True, exist_ok=True)
    atomic_write_json(pre / "splits_final.json", [{"train": train, "val": val}])
    atomic_write_json(done, record)
    return {"raw": raw, "preprocessed": pre, **record}


__all__ = ["EXPORT_FILE", "CHANNELS", "organ_lut", "nnunet_labels", "with_organs", "label_map", "lesion_only", "write_images",
           "export_splits"]
