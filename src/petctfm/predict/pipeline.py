"""``petctfm predict``: one PET/CT study in, lesion mask and quantitative report out.

The method, stage by stage (the stage names are the keys of ``summary.json["timings_s"]``):

1. **read**: the study is a :class:`~petctfm.harmonize.discover.SourceCase` (``--pet``/``--ct`` files or DICOM
   series folders, or one case found by :func:`petctfm.harmonize.discover.discover` under ``--in``) and is
   read by :func:`petctfm.harmonize.pipeline.load_case_images`: PET in SUV (DICOM: from the tags per slice),
   CT in HU, optional organ labels, each on its own grid. Lesion labels in the input are ignored.
2. **preprocess**: :func:`petctfm.harmonize.pipeline.harmonize_images` with the spacing and CT window recorded
   in the model's config (``preprocessing.harmonize``, from the dataset it was fine-tuned on; checkpoints
   without it get harmonize's defaults 2 x 2 x 3 mm, [-1000, 1000] HU) -> (2, X, Y, Z) [SUV, HU] on an
   axis-aligned RAS grid cropped to the body; then the model's normalization
   (:func:`petctfm.inference.sliding_window.normalized_input`). Same code as ``petctfm harmonize``, not a copy.
   On CUDA the fine-grid resampling runs on the GPU (:mod:`petctfm.harmonize.resample_torch`, the same
   separable passes in torch, handed to ``harmonize_images`` as its ``resampler``); on CPU it is NumPy.
   ``--fast`` doubles the in-plane spacing (2 x 2 x 3 -> 4 x 4 x 3 mm): 4x fewer voxels.
3. **inference**: MONAI sliding-window inference with Gaussian blending
   (:func:`petctfm.inference.sliding_window.predict_case`, the training patch, ``--overlap``, bf16 autocast on
   CUDA). ``--tta 8`` averages the lesion *probabilities* over the 8 combinations of flips of the three axes
   (the full flip group, as nnU-Net's mirroring), ``--tta 4`` over identity + the 3 single-axis flips.
4. **postprocess**: the lesion probability (not the label) is resampled from the RAS grid back onto the
   *input PET grid* (linear, separable passes of :func:`petctfm.harmonize.pipeline.resample_xyz`, equal to
   SimpleITK's linear resampler; 0 outside the body crop; on the GPU on CUDA) and thresholded there
   (``prob > threshold``), so
   the mask has exactly the input PET's shape, spacing, origin and direction. Lesion table
   (:func:`petctfm.evaluate.lesions.lesion_table`, 18-connected components, SUV of the input PET) with an
   anatomical region per lesion (:mod:`petctfm.predict.outputs`).
5. **write**: ``lesions.nii.gz`` (SimpleITK, the PET's geometry), ``lesions.seg.dcm`` for DICOM input,
   ``lesions.csv``, ``report.png`` (own timing ``report``), ``summary.json`` last: a case folder with
   ``summary.json`` is complete. Every file is written atomically.

Folder mode (:func:`predict_folder`): a background thread reads and preprocesses the next case while the
current one is inferred; a case that fails is listed in ``OUT/failed.csv`` (case, reason) and the others
complete; finished cases (``summary.json`` present) are skipped unless ``overwrite``.
"""

from __future__ import annotations

import copy
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from petctfm.core.errors import InputError, PetctfmError
from petctfm.core.device import resolve_device
from petctfm.harmonize.discover import SourceCase
from petctfm.harmonize.pipeline import DEFAULT_CT_WINDOW, DEFAULT_SPACING
from petctfm.io.tables import csv_text

DEFAULT_THRESHOLD = 0.5
TTA_CHOICES = (0, 4, 8)
FAST_INPLANE_FACTOR = 2.0
GPU_SW_BATCH = 8  # sliding-window batch on CUDA (CPU: the model config's val.sw_batch_size)
SUMMARY_JSON = "summary.json"
FAILED_CSV = "failed.csv"
CASES_CSV = "cases.csv"
STAGES = ("read", "preprocess", "inference", "postprocess", "write", "report")


# ------------------------------------------------------------------------------------------------ model


def harmonize_settings(cfg: dict[str, Any]) -> tuple[tuple[float, float, float], tuple[float, float], str]:
    """(spacing mm, CT window HU, where from: ``"checkpoint"`` or ``"default"``) of a segmentation config."""
    rec = ((cfg.get("preprocessing") or {}).get("harmonize") or {})
    spacing, window = rec.get("spacing"), rec.get("ct_window")
    source = "checkpoint" if spacing else "default"
    spacing = tuple(float(s) for s in spacing) if spacing else DEFAULT_SPACING
    window = tuple(float(w) for w in window) if window else DEFAULT_CT_WINDOW
    return spacing, window, source  # type: ignore[return-value]


@dataclass
class Predictor:
    """A loaded segmentation model and the inference settings applied to every case.

    Build with :meth:`load`. ``spacing``/``ct_window``: the harmonization of the model's training data
    (``--fast``: in-plane spacing x 2); ``patch``: the training patch; ``tta``: 0 (off), 4 or 8 flips;
    ``resample_device``: where the two fine-grid resamplings run (to the RAS grid, back to the PET grid):
    None = NumPy/SimpleITK on the CPU, else :mod:`petctfm.harmonize.resample_torch` on that device
    (:meth:`load` picks the model's device on CUDA, None on CPU).
    """

    model: nn.Module
    config: dict[str, Any]
    path: Path
    device: torch.device
    spacing: tuple[float, float, float]
    ct_window: tuple[float, float]
    spacing_source: str
    patch: tuple[int, int, int]
    overlap: float = 0.5
    tta: int = 0
    threshold: float = DEFAULT_THRESHOLD
    sw_batch_size: int = 2
    fast: bool = False
    resample_device: torch.device | None = None

    @classmethod
    def load(cls, model: str | os.PathLike, device: str | torch.device | None = "auto", overlap: float | None = None,
             tta: int = 0, threshold: float = DEFAULT_THRESHOLD, fast: bool = False,
             sw_batch_size: int | None = None) -> "Predictor":
        """Load a fine-tuned segmentation run folder or ``.safetensors`` checkpoint (safetensors only).

        A missing path or a file that is not a petctfm segmentation model raises a one-line
        :class:`InputError` naming it.
        """
        from petctfm.inference.sliding_window import load_segmenter

        if not Path(model).exists():
            raise InputError(f"{model}: model not found (a fine-tuning run folder or model.safetensors)")
        net, cfg, path = load_segmenter(model)
        if not (cfg.get("preprocessing") or {}).get("normalization"):
            raise InputError(f"{path}: model config has no preprocessing.normalization (not a fine-tuned model)")
        if tta not in TTA_CHOICES:
            raise InputError(f"--tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta}")
        if not 0.0 < float(threshold) < 1.0:
            raise InputError(f"--threshold must be in (0, 1), got {threshold}")
        ov = float(cfg["val"]["overlap"] if overlap is None else overlap)
        if not 0.0 <= ov < 1.0:
            raise InputError(f"--overlap must be in [0, 1), got {ov}")
        dev = resolve_device(device)
        spacing, window, source = harmonize_settings(cfg)
        if fast:
            spacing = (spacing[0] * FAST_INPLANE_FACTOR, spacing[1] * FAST_INPLANE_FACTOR, spacing[2])
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one patch shape for the whole run
        sw = int(sw_batch_size or (GPU_SW_BATCH if dev.type == "cuda" else cfg["val"].get("sw_batch_size", 2)))
        patch = tuple(int(p) for p in cfg["data"]["patch_size"])
        return cls(net.to(dev).eval(), cfg, Path(path), dev, spacing, window, source, patch, ov, int(tta),
                   float(threshold), sw, bool(fast), dev if dev.type == "cuda" else None)

    def describe(self) -> dict[str, Any]:
        """The model and settings as recorded in ``summary.json``."""
        cfg = self.config
        return {
            "model": {"path": str(self.path), "method": cfg.get("method"), "backbone": cfg["model"]["backbone"],
                      "mode": cfg["data"]["mode"], "init": (cfg.get("init") or {}).get("source"),
                      "training_subset": (cfg.get("subset") or {}).get("name")},
            "preprocessing": {"spacing_mm": list(self.spacing), "ct_window_hu": list(self.ct_window),
                              "settings_from": self.spacing_source, "fast": self.fast,
                              "resampling": f"torch {self.resample_device}" if self.resample_device else "numpy",
                              "channels": (cfg.get("preprocessing") or {}).get("channels")},
            "inference": {"device": str(self.device), "precision": "bf16" if self.device.type == "cuda" else "fp32",
                          "patch": list(self.patch), "overlap": self.overlap, "sw_batch_size": self.sw_batch_size,
                          "blending": "gaussian", "tta_flips": self.tta or 1, "threshold": self.threshold},
        }


# ------------------------------------------------------------------------------------------------ input


def _dicom_series(folder: Path, modality: str) -> list[str]:
    """Absolute paths of the largest ``modality`` series under ``folder`` (as harmonize picks it)."""
    from petctfm.io.dicom_read import pick_series, scan_tree

    studies, bad = scan_tree(folder)
    picked = [pick_series(s)[modality] for s in studies.values()]
    picked = [s for s in picked if s is not None]
    if not picked:
        why = f"; unreadable: {bad[0][0]} ({bad[0][1]})" if bad else ""
        raise InputError(f"{folder}: no {modality} DICOM series found{why}")
    series = max(picked, key=lambda s: (len(s.files), s.uid))
    return [str(folder.resolve() / f) for f in series.files]


def source_from_files(pet: str | os.PathLike, ct: str | os.PathLike) -> SourceCase:
    """The case of ``--pet PET --ct CT``: two image files (NIfTI/MHA/NRRD, PET in SUV) or two DICOM folders
    (PT series in Bq/ml, SUV from the tags; CT series). One folder holding both series may be given twice."""
    pet, ct = Path(pet), Path(ct)
    for role, p in (("PET", pet), ("CT", ct)):
        if not p.exists():
            raise InputError(f"{p}: {role} file or folder not found")
    if pet.is_dir() != ct.is_dir():
        raise InputError(f"{pet}, {ct}: give two image files or two DICOM series folders, not one of each")
    name = pet.name if pet.is_dir() else _strip_suffix(pet.name)
    if name.lower() in ("suv", "pet", "pt", "petct"):  # autoPET-style file names: the case is the folder
        name = pet.resolve().parent.name
    if pet.is_dir():
        files = {"PT": _dicom_series(pet, "PT"), "CT": _dicom_series(ct, "CT")}
        return SourceCase(name, "dicom", "/", str(pet), files)
    return SourceCase(name, "pairs", "/", str(pet), {"suv": str(pet.resolve()), "ct": str(ct.resolve())})


def _strip_suffix(name: str) -> str:
    from petctfm.io.images import IMAGE_SUFFIXES

    for s in IMAGE_SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def sources_from_folder(folder: str | os.PathLike, fmt: str = "auto") -> list[SourceCase]:
    """Every case under ``folder`` (autoPET, nnU-Net, DICOM or paired-file layout; harmonize's discovery),
    each named by its readable source path (``case_id`` = output subfolder name, unique)."""
    from petctfm.harmonize.discover import discover

    cases = discover([str(folder)], fmt)
    used: set[str] = set()
    out = []
    for c in cases:
        rel = c.rel.split("#")[0]
        if c.fmt == "nnunet":
            rel = Path(rel).name  # imagesTs/<id> -> <id>
        name = _safe_name(rel) or Path(c.root).name
        if name in used:
            name = f"{name}_{c.case_id}"
        used.add(name)
        out.append(replace(c, case_id=name))
    return out


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.strip("./").replace("/", "_"))


def sources_from_list(path: str | os.PathLike) -> list[SourceCase]:
    """The cases of ``--batch LIST``: a CSV file with a header row and columns ``pet`` and ``ct`` (image files
    or DICOM series folders, as ``--pet``/``--ct``; relative paths are relative to the list's folder) and an
    optional ``case_id`` (output subfolder name; default the PET's name). A row whose files are missing or
    unusable becomes a case with an ``error``: it is listed in ``failed.csv`` and the other rows run."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: batch list not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read batch list ({exc})") from None
    if "pet" not in header or "ct" not in header:
        raise InputError(f"{path}: batch list needs a header row with columns pet and ct (and optionally case_id), "
                         f"found {header or 'none'}")
    out, used = [], set()
    for i, raw in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not row.get("pet") and not row.get("ct"):
            continue  # blank line
        pet, ct = path.parent / row.get("pet", ""), path.parent / row.get("ct", "")
        given = _safe_name(row.get("case_id", ""))
        try:
            if not row.get("pet") or not row.get("ct"):
                raise InputError(f"{path}:{i}: a pet and a ct path are both needed")
            case = source_from_files(pet, ct)
            case = replace(case, case_id=given or _safe_name(case.case_id) or f"row{i}")
        except InputError as exc:
            case = SourceCase(given or f"row{i}", "pairs", "/", str(pet), {}, error=str(exc))
        if case.case_id in used:
            raise InputError(f"{path}:{i}: case_id {case.case_id!r} is used twice (output folders must differ)")
        used.add(case.case_id)
        out.append(case)
    if not out:
        raise InputError(f"{path}: batch list has no cases")
    return out


def _label(case: SourceCase) -> str:
    """How error messages name the case: the PET file / DICOM folder / case folder."""
    if case.root == "/":
        return case.rel
    return str(Path(case.root) / case.rel.split("#")[0])


def _named(exc: BaseException, case: SourceCase) -> InputError:
    """An InputError whose one-line message names the input (prefix added unless it names a path already)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, PetctfmError):
        msg = f"{type(exc).__name__}: {msg}"
    label = _label(case)
    if label not in msg and not (case.files and any(str(v) in msg for v in case.files.values() if isinstance(v, str))):
        msg = f"{label}: {msg}"
    return InputError(msg)


# ------------------------------------------------------------------------------------------------ stages


@dataclass
class Prepared:
    """A case read and preprocessed (what the background thread hands to inference)."""

    case: SourceCase
    images: dict[str, Any]  # "suv", "ct", "organs" (SimpleITK, own grids)
    pt_datasets: list[Any] | None  # DICOM PT headers in slice order, else None
    harmonized: dict[str, Any]  # harmonize_images output ("image", "reference", "affine", ...)
    x: np.ndarray  # (C, X, Y, Z) normalized network input
    bg: np.ndarray  # (C,) normalized background (padding value)
    timings: dict[str, float] = field(default_factory=dict)


def read(case: SourceCase) -> tuple[dict[str, Any], list[Any] | None]:
    """Stage 1: ``({"suv", "ct", "organs"}, DICOM PT headers or None)``; lesion labels in the input are skipped."""
    from petctfm.harmonize.pipeline import load_case_images

    case = copy.copy(case)
    case.files = {k: v for k, v in case.files.items() if k not in ("seg", "SEG", "RTSTRUCT")}
    images, extra = load_case_images(case)  # files: read_image refuses non-3D images, naming the file
    return {"suv": images["suv"], "ct": images["ct"], "organs": images.get("organs")}, extra.get("pt_datasets")


def prepare(case: SourceCase, predictor: Predictor) -> Prepared:
    """Stages 1-2 (read, preprocess) of one case; errors are one-line InputErrors naming the input."""
    from petctfm.inference.sliding_window import normalized_input
    from petctfm.harmonize.pipeline import harmonize_images
    from petctfm.harmonize.resample_torch import torch_resampler

    dev = predictor.resample_device
    try:
        t0 = time.perf_counter()
        images, pt = read(case)
        t1 = time.perf_counter()
        h = harmonize_images({"suv": images["suv"], "ct": images["ct"], "seg": None, "organs": None},
                             predictor.spacing, predictor.ct_window,
                             resampler=torch_resampler(dev) if dev is not None else None)
        x, bg = normalized_input(h["image"], predictor.config)
        t2 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - any failure of a case becomes one line naming it
        if not isinstance(exc, PetctfmError) and os.environ.get("PETCTFM_DEBUG"):
            traceback.print_exc()
        raise _named(exc, case) from None
    return Prepared(case, images, pt, h, x, bg, {"read": t1 - t0, "preprocess": t2 - t1})


def _flip_sets(n: int) -> list[tuple[int, ...]]:
    """Spatial axes flipped in each TTA pass: 1 pass (identity), 4 (+ single-axis flips) or 8 (all)."""
    if n in (0, 1):
        return [()]
    if n == 4:
        return [(), (0,), (1,), (2,)]
    return [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def infer(x: np.ndarray, bg: np.ndarray, predictor: Predictor) -> np.ndarray:
    """Stage 3: lesion probability (X, Y, Z) float32 on the harmonized grid; mean over the TTA flips."""
    from petctfm.inference.sliding_window import predict_case

    acc = None
    flips = _flip_sets(predictor.tta)
    for axes in flips:
        # (not pinned: one host->GPU copy per pass; pinning a whole volume costs more than it saves)
        xin = torch.from_numpy(np.ascontiguousarray(np.flip(x, [a + 1 for a in axes]) if axes else x))
        prob, _ = predict_case(predictor.model, xin, predictor.patch, predictor.overlap, predictor.device, bg=bg,
                               sw_batch_size=predictor.sw_batch_size)
        if axes:
            prob = np.flip(prob, axes)
        acc = prob if acc is None else acc + prob  # (float32; a new array, never written in place)
    return np.ascontiguousarray(acc / len(flips))


def to_pet_grid(prob: np.ndarray, reference: sitk.Image, pet: sitk.Image,
                device: torch.device | None = None) -> np.ndarray:
    """Resample a probability (X, Y, Z) on ``reference`` (the harmonized RAS grid) onto ``pet``'s grid
    (linear, 0 outside the reference); returns (X', Y', Z') float32 indexed like ``array_xyz(pet)``.
    ``device``: run the passes there with :mod:`petctfm.harmonize.resample_torch` (None: NumPy)."""
    from petctfm.harmonize.pipeline import resample_xyz

    if device is not None:
        from petctfm.harmonize.resample_torch import resample_xyz_torch

        return resample_xyz_torch(reference, pet, True, 0.0, device=device, array=prob)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(prob.astype(np.float32), (2, 1, 0))))
    img.CopyInformation(reference)
    return resample_xyz(img, pet, True, 0.0)


def predict_one(case: SourceCase, predictor: Predictor, out_dir: str | os.PathLike, report: bool = True,
                prepared: Prepared | None = None) -> dict[str, Any]:
    """Predict one case and write its outputs into ``out_dir``; returns the summary (as written).

    ``prepared``: the case already read and preprocessed (folder mode's background thread), else done here.
    Errors: one-line :class:`InputError` naming the input.
    """
    from petctfm.predict import outputs

    prep = prepared if prepared is not None else prepare(case, predictor)
    timings = dict(prep.timings)
    try:
        t0 = time.perf_counter()
        prob = infer(prep.x, prep.bg, predictor)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        pet = prep.images["suv"]
        prob_pet = to_pet_grid(prob, prep.harmonized["reference"], pet, predictor.resample_device)
        mask = (prob_pet > predictor.threshold).astype(np.uint8)
        result = outputs.quantify(mask, pet, prep.images.get("organs"), prep.harmonized)
        t2 = time.perf_counter()
        timings.update(inference=t1 - t0, postprocess=t2 - t1)
        summary = outputs.write_case_outputs(out_dir, case, predictor, prep, mask, result, timings, report=report)
    except Exception as exc:  # noqa: BLE001
        if not isinstance(exc, PetctfmError) and os.environ.get("PETCTFM_DEBUG"):
            traceback.print_exc()
        raise _named(exc, case) from None
    return summary


# ------------------------------------------------------------------------------------------------ folder


def predict_folder(cases: list[SourceCase], predictor: Predictor, out: str | os.PathLike, overwrite: bool = False,
                   report: bool = True, progress: bool = True) -> dict[str, Any]:
    """Predict every case into ``out/<case_id>/``; never raises for a bad case.

    Case ``i + 1`` is read and preprocessed in a background thread while case ``i`` is inferred. Returns
    ``{"done": [...], "skipped": [...], "failed": [{"case", "reason"}]}``; writes ``out/failed.csv`` (empty
    but for the header when nothing failed) and ``out/cases.csv`` (one summary row per finished case).
    """
    import json

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from petctfm.io.atomic import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if overwrite or not (out / c.case_id / SUMMARY_JSON).is_file()]
    skipped = [c.case_id for c in cases if c not in todo]
    done: list[str] = []
    failed: list[dict[str, str]] = []

    def safe_prepare(case: SourceCase) -> Prepared | Exception:
        if case.error:
            return _named(InputError(case.error), case)
        try:
            return prepare(case, predictor)
        except Exception as exc:  # noqa: BLE001 - reported in failed.csv
            return exc

    columns = (TextColumn("predict {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar, ThreadPoolExecutor(1) as pool:
        task = bar.add_task("", total=len(todo))
        nxt = pool.submit(safe_prepare, todo[0]) if todo else None
        for i, case in enumerate(todo):
            bar.update(task, description=case.case_id)
            prep = nxt.result()
            nxt = pool.submit(safe_prepare, todo[i + 1]) if i + 1 < len(todo) else None  # overlaps inference
            try:
                if isinstance(prep, Exception):
                    raise prep
                predict_one(case, predictor, out / case.case_id, report=report, prepared=prep)
                done.append(case.case_id)
            except Exception as exc:  # noqa: BLE001 - one bad case never stops the others
                reason = str(exc) if isinstance(exc, PetctfmError) else str(_named(exc, case))
                failed.append({"case": case.case_id, "reason": " ".join(reason.split())[:400]})
            del prep
            bar.advance(task)
    atomic_write_text(out / FAILED_CSV, csv_text(failed, ("case", "reason")))
    rows = []
    for c in cases:
        path = out / c.case_id / SUMMARY_JSON
        if path.is_file():
            s = json.loads(path.read_text())
            rows.append({"case": c.case_id, **{k: s.get(k) for k in ("lesion_count", "tmtv_ml", "total_tlg",
                                                                          "suv_max", "suv_peak")},
                         "seconds": (s.get("timings_s") or {}).get("total")})
    atomic_write_text(out / CASES_CSV, csv_text(rows, ("case", "lesion_count", "tmtv_ml", "total_tlg", "suv_max",
                                                   "suv_peak", "seconds")))
    return {"done": done, "skipped": skipped, "failed": failed}


__all__ = [
    "DEFAULT_THRESHOLD", "TTA_CHOICES", "Predictor", "Prepared", "resolve_device", "harmonize_settings",
    "source_from_files", "sources_from_folder", "sources_from_list", "read", "prepare", "infer", "to_pet_grid", "predict_one",
    "predict_folder",
]
