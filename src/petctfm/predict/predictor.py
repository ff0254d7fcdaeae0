"""``petctfm predict`` as a Python object: a loaded model that maps one PET/CT study to a lesion mask,
a lesion table and a summary, in memory (:meth:`Predictor.predict`) or into a case folder (:func:`predict_one`).

The method, stage by stage (the stage names are the keys of ``summary.json["timings_s"]``):

1. **read** (files only, :func:`read`): the study is a :class:`~petctfm.harmonize.discover.SourceCase`
   (:mod:`petctfm.predict.sources`) read by :func:`petctfm.harmonize.load.load_case_images`: PET in SUV
   (DICOM: from the tags per slice), CT in HU, optional organ labels, each on its own grid. Lesion labels in
   the input are ignored. In memory, the images are given (nibabel, ``(array, affine)`` or SimpleITK).
2. **preprocess** (:func:`prepare_images`): :func:`petctfm.harmonize.pipeline.harmonize_images` with the
   spacing and CT window recorded in the model's config (``preprocessing.harmonize``, from the dataset it was
   fine-tuned on; checkpoints without it get harmonize's defaults 2 x 2 x 3 mm, [-1000, 1000] HU) -> (2, X, Y,
   Z) [SUV, HU] on an axis-aligned RAS grid cropped to the body; then the model's normalization
   (:func:`petctfm.inference.normalize.normalized_input`). Same code as ``petctfm harmonize``, not a copy.
   On CUDA the fine-grid resampling runs on the GPU (:mod:`petctfm.harmonize.resample_torch`, the same
   separable passes in torch, handed to ``harmonize_images`` as its ``resampler``); on CPU it is NumPy.
   ``--fast`` doubles the in-plane spacing (2 x 2 x 3 -> 4 x 4 x 3 mm): 4x fewer voxels.
3. **inference** (:func:`infer`): :func:`petctfm.inference.sliding_window.lesion_probability` (MONAI sliding
   window, Gaussian blending, the training patch, ``--overlap``, bf16 autocast on CUDA). ``--tta 8`` averages
   the lesion *probabilities* over the 8 combinations of flips of the three axes (the full flip group, as
   nnU-Net's mirroring), ``--tta 4`` over identity + the 3 single-axis flips.
4. **postprocess**: the lesion probability (not the label) is resampled from the RAS grid back onto the
   *input PET grid* (:func:`to_pet_grid`: linear, separable passes of
   :func:`petctfm.harmonize.resample.resample_xyz`, equal to SimpleITK's linear resampler; 0 outside the body
   crop; on the GPU on CUDA) and thresholded there (``prob > threshold``), so the mask has exactly the input
   PET's shape, spacing, origin and direction. Lesion table (:func:`petctfm.predict.outputs.quantify`:
   18-connected components, SUV of the input PET, an anatomical region per lesion).
5. **organs** (an organ model: ``--organs MODEL``, or ``--model`` an organ model; :func:`predict_organs`):
   the organ label map on the input PET grid and the organ table (:mod:`petctfm.predict.organs`; lesion voxels
   of step 4 excluded); lesion regions then come from the predicted organs when the input has none.
6. **write** (:func:`predict_one` only): :func:`petctfm.predict.outputs.write_case_outputs`.

Folder and list mode (background reading, ``failed.csv``, resume) is :mod:`petctfm.predict.batch`.
"""

from __future__ import annotations

import copy
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from petctfm.core.checks import check_choice, check_float, check_int
from petctfm.core.device import resolve_device
from petctfm.core.errors import InputError, PetctfmError
from petctfm.harmonize.discover import SourceCase
from petctfm.harmonize.pipeline import DEFAULT_CT_WINDOW, DEFAULT_SPACING
from petctfm.inference.sliding_window import TTA_CHOICES, lesion_probability, predict_case
from petctfm.predict import outputs
from petctfm.predict.sources import named_error

DEFAULT_THRESHOLD = 0.5
FAST_INPLANE_FACTOR = 2.0
GPU_SW_BATCH = 8  # sliding-window batch on CUDA (CPU: the model config's val.sw_batch_size)
STAGES = ("read", "preprocess", "inference", "postprocess", "organs", "write", "report")


def harmonize_settings(cfg: dict[str, Any]) -> tuple[tuple[float, float, float], tuple[float, float], str]:
    """(spacing mm, CT window HU, where from: ``"checkpoint"`` or ``"default"``) of a segmentation config."""
    rec = ((cfg.get("preprocessing") or {}).get("harmonize") or {})
    spacing, window = rec.get("spacing"), rec.get("ct_window")
    source = "checkpoint" if spacing else "default"
    spacing = tuple(float(s) for s in spacing) if spacing else DEFAULT_SPACING
    window = tuple(float(w) for w in window) if window else DEFAULT_CT_WINDOW
    return spacing, window, source  # type: ignore[return-value]


@dataclass
class Prepared:
    """A case read and preprocessed (what folder mode's background thread hands to inference)."""

    case_id: str
    kind: str  # input kind in summary.json: nifti, mha, nrrd, dicom, memory
    source: str | None  # the input's path as summary.json names it (None in memory)
    images: dict[str, Any]  # "suv", "ct", "organs" (SimpleITK, own grids)
    pt_datasets: list[Any] | None  # DICOM PT headers in slice order, else None
    harmonized: dict[str, Any]  # harmonize_images output ("image", "reference", "affine", ...)
    x: np.ndarray  # (C, X, Y, Z) normalized network input
    bg: np.ndarray  # (C,) normalized background (padding value)
    timings: dict[str, float] = field(default_factory=dict)
    fingerprint: dict[str, str] = field(default_factory=dict)  # identity.input_fingerprint of the case read
    study: dict[str, Any] = field(default_factory=dict)  # StudyDate.to_json() (summary.json input.study_*)


def check_options(overlap: float | None = None, tta: int = 0, threshold: float = DEFAULT_THRESHOLD,
                  sw_batch_size: int | None = None) -> None:
    """The prediction settings of :meth:`Predictor.load`, checked before any input or model is read: ``overlap``
    in [0, 1) (None: the model's), ``tta`` one of :data:`TTA_CHOICES`, ``threshold`` in (0, 1),
    ``sw_batch_size`` >= 1 (None: the device's default). A value out of range is a UsageError naming it."""
    if overlap is not None:
        check_float("overlap", overlap, lo=0, hi=1, hi_open=True)
    check_choice("tta", tta, TTA_CHOICES)
    check_float("threshold", threshold, lo=0, hi=1, lo_open=True, hi_open=True)
    if sw_batch_size is not None:
        check_int("sw_batch_size", sw_batch_size, lo=1)


@dataclass
class Predictor:
    """A loaded segmentation model and the inference settings applied to every case.

    Build with :meth:`from_run` (= :meth:`load`). ``spacing``/``ct_window``: the harmonization of the model's
    training data (``fast``: in-plane spacing x 2); ``patch``: the training patch; ``tta``: 0 (off), 4 or 8
    flips; ``resample_device``: where the two fine-grid resamplings run (to the RAS grid, back to the PET
    grid): None = NumPy/SimpleITK on the CPU, else :mod:`petctfm.harmonize.resample_torch` on that device
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
    weights_digest: str = ""  # BLAKE2b of the checkpoint file (summary.json: model.weights_blake2b)
    organs: "Predictor | None" = None  # the organ model of --organs (None: none, or this model is one)
    #: organ suppression (None: off): the lesion model's own organs (inference.postprocess.suppression: the
    #: config's, or --suppress-organs) or, with ``source`` "organ_model", the organ model's map
    #: (inference.postprocess.organ_map_suppression: --suppress-organs with --organs)
    suppress: dict[str, Any] | None = None

    @classmethod
    def load(cls, model: str | os.PathLike, device: str | torch.device | None = "auto", overlap: float | None = None,
             tta: int = 0, threshold: float = DEFAULT_THRESHOLD, fast: bool = False,
             sw_batch_size: int | None = None, organs: str | os.PathLike | None = None,
             suppress_organs: Sequence[str] | None = None) -> "Predictor":
        """Load a fine-tuned segmentation run folder (its best checkpoint, else the latest) or ``.safetensors``
        checkpoint (safetensors only). A missing path or a file that is not a petctfm segmentation model
        raises a one-line :class:`InputError` naming it. ``organs``: an organ model (``finetune --task organs``)
        run beside the lesion model (``organs.nii.gz``, ``organs.csv``; docs/organs.md); ``model`` itself may be
        an organ model (organ outputs only). ``suppress_organs``: the organs in which lesion components are
        removed (None: the model config's ``postprocess.suppress_organs``, in the lesion model's own auxiliary
        organs; empty: none). Given with ``organs``, the names are the organ model's and its organ map decides
        (:func:`petctfm.inference.postprocess.organ_map_suppression`); without it, the lesion model's own
        auxiliary organs. A name the deciding model does not predict is an InputError."""
        from petctfm.inference.model import is_organ_model, load_segmenter

        check_options(overlap=overlap, tta=tta, threshold=threshold, sw_batch_size=sw_batch_size)
        if not Path(model).exists():
            raise InputError(f"{model}: model not found (a fine-tuning run folder or model.safetensors)")
        organ_predictor = None
        if organs is not None:
            if not Path(organs).exists():
                raise InputError(f"{organs}: organ model not found (a 'finetune --task organs' run folder or "
                                 "model.safetensors)")
            organ_predictor = cls.load(organs, device, overlap, tta, threshold, fast, sw_batch_size)
            if not is_organ_model(organ_predictor.config):
                raise InputError(f"{organ_predictor.path}: not an organ model (trained with task lesions); "
                                 "--organs takes a 'petctfm finetune --task organs' run")
        net, cfg, path = load_segmenter(model)
        if not (cfg.get("preprocessing") or {}).get("normalization"):
            raise InputError(f"{path}: model config has no preprocessing.normalization (not a fine-tuned model)")
        sup = _suppression(cfg, path, suppress_organs, organ_predictor)
        ov = float(cfg["val"]["overlap"] if overlap is None else overlap)
        dev = resolve_device(device)
        spacing, window, source = harmonize_settings(cfg)
        if fast:
            spacing = (spacing[0] * FAST_INPLANE_FACTOR, spacing[1] * FAST_INPLANE_FACTOR, spacing[2])
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one patch shape for the whole run
        sw = int(sw_batch_size or (GPU_SW_BATCH if dev.type == "cuda" else cfg["val"].get("sw_batch_size", 2)))
        patch = tuple(int(p) for p in cfg["data"]["patch_size"])
        from petctfm.predict.identity import model_digest

        if organ_predictor is not None and is_organ_model(cfg):
            raise InputError(f"{path}: --model is an organ model too; give a lesion model as --model, or the "
                             "organ model alone as --model")
        return cls(net.to(dev).eval(), cfg, Path(path), dev, spacing, window, source, patch, ov, int(tta),
                   float(threshold), sw, bool(fast), dev if dev.type == "cuda" else None, model_digest(path),
                   organ_predictor, sup)

    @classmethod
    def from_run(cls, run: str | os.PathLike, device: str | torch.device | None = "auto", overlap: float | None = None,
                 tta: int = 0, threshold: float = DEFAULT_THRESHOLD, fast: bool = False,
                 sw_batch_size: int | None = None) -> "Predictor":
        """The predictor of a fine-tuning run folder or checkpoint (same arguments as ``petctfm predict``)."""
        return cls.load(run, device, overlap, tta, threshold, fast, sw_batch_size)

    @property
    def organ_only(self) -> bool:
        """Whether this model is an organ model (task ``organs``): it predicts organs, no lesions."""
        from petctfm.inference.model import is_organ_model

        return is_organ_model(self.config)

    @property
    def organ_model(self) -> "Predictor | None":
        """The predictor whose organs are written: this one for an organ model, else ``--organs``'s (or None)."""
        return self if self.organ_only else self.organs

    @property
    def model_name(self) -> str:
        """How outputs name the model (DICOM-SEG algorithm, report title): ``petctfm <backbone>``."""
        return f"petctfm {self.config['model']['backbone']}"

    def describe(self) -> dict[str, Any]:
        """The model and settings as recorded in ``summary.json`` (``organs_model``: the organ model's, when
        one is run beside the lesion model)."""
        out = self._describe()
        if self.organs is not None:
            out["organs_model"] = self.organs._describe()["model"]
        if self.organ_only:
            out["model"]["task"] = "organs"
        return out

    def _describe(self) -> dict[str, Any]:
        from petctfm.inference.postprocess import min_lesion_ml

        cfg = self.config
        return {
            "model": {"path": str(self.path), "method": cfg.get("method"), "backbone": cfg["model"]["backbone"],
                      "mode": cfg["data"]["mode"], "init": (cfg.get("init") or {}).get("source"),
                      "training_subset": (cfg.get("subset") or {}).get("name"),
                      "weights_blake2b": self.weights_digest or None},
            "preprocessing": {"spacing_mm": list(self.spacing), "ct_window_hu": list(self.ct_window),
                              "settings_from": self.spacing_source, "fast": self.fast,
                              "resampling": f"torch {self.resample_device}" if self.resample_device else "numpy",
                              "channels": (cfg.get("preprocessing") or {}).get("channels")},
            "inference": {"device": str(self.device), "precision": "bf16" if self.device.type == "cuda" else "fp32",
                          "patch": list(self.patch), "overlap": self.overlap, "sw_batch_size": self.sw_batch_size,
                          "blending": "gaussian", "tta_flips": self.tta or 1, "threshold": self.threshold,
                          "min_lesion_ml": min_lesion_ml(cfg),
                          "suppress_organs": list(self.suppress["organs"]) if self.suppress else [],
                          "suppress_fraction": self.suppress["fraction"] if self.suppress else None,
                          "suppress_source": self.suppress.get("source", "lesion_model") if self.suppress else None},
        }

    def predict(self, pet: Any, ct: Any, organs: Any = None, case_id: str = "case", patient: dict[str, Any] | None = None
                ) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        """Predict one study in memory; no file is read or written.

        ``pet`` (SUV), ``ct`` (HU) and optional ``organs`` (organ label map, for the lesion regions): each a
        nibabel image, an ``(array (X, Y, Z), 4x4 RAS affine)`` pair or a SimpleITK image, on its own grid.
        Returns ``(mask, lesion_table, summary)``: mask (X, Y, Z) uint8 on the input PET's grid (the voxels
        ``petctfm predict`` writes to ``lesions.nii.gz``), the rows of ``lesions.csv`` (unrounded) and the
        ``summary.json`` dict (``outputs`` empty, no write timings). An organ model (as the model or ``organs``
        of :meth:`load`): the summary's ``organs`` holds the references; the organ map and table are
        :meth:`predict_all`'s. ``patient``: ``{"weight_kg", "height_cm", "sex"}`` for the organs' SUL.
        """
        out = self.predict_all(pet, ct, organs, case_id, patient)
        return out["mask"], out["lesions"], out["summary"]

    def predict_all(self, pet: Any, ct: Any, organs: Any = None, case_id: str = "case",
                    patient: dict[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`predict` with the organs: ``{"mask", "lesions", "summary", "organs", "organ_table"}``
        (``mask`` None for an organ-only model; ``organs`` (X, Y, Z) uint8 on the PET grid and ``organ_table``
        the ``organs.csv`` rows, None without an organ model)."""
        images = {"suv": as_image(pet, float32=True), "ct": as_image(ct),
                  "organs": None if organs is None else as_image(organs)}
        prep = prepare_images(images, self, case_id=case_id)
        mask, table, summary, _, org = self.predict_prepared(prep, patient)
        return {"mask": mask, "lesions": table, "summary": summary,
                "organs": None if org is None else org["map"], "organ_table": None if org is None else org["rows"]}

    def predict_prepared(self, prep: Prepared, patient: dict[str, Any] | None = None
                         ) -> tuple[np.ndarray | None, list[dict[str, Any]], dict[str, Any], dict[str, float],
                                    dict[str, Any] | None]:
        """Stages 3-4 of a prepared case: ``(mask, lesion_table, summary, timings in s, organs)``; ``mask`` None
        for an organ-only model; ``organs`` None without an organ model, else ``{"map": (X, Y, Z) uint8 on the
        PET grid, "rows": organs.csv rows, "classes": name -> value}`` (stage ``organs`` in the timings)."""
        from petctfm.inference.postprocess import lesion_mask, min_lesion_ml, suppress_in_organ_map
        from petctfm.predict import organs as organ_out

        timings = dict(prep.timings)
        pet = prep.images["suv"]
        org = None
        organ_img = prep.images.get("organs")
        if self.organ_model is not None:
            t0 = time.perf_counter()
            org = {"map": predict_organs(prep, self, self.organ_model),
                   "classes": organ_classes(self.organ_model)}
            timings["organs"] = time.perf_counter() - t0
            if organ_img is None:  # lesion regions from the predicted organs
                organ_img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(org["map"], (2, 1, 0))))
                organ_img.CopyInformation(pet)
        mask = None
        from petctfm.evaluate.lesions import summary as lesion_totals

        result: dict[str, Any] = {"table": [], "totals": lesion_totals([]), "lungs_z_mm": None}
        if not self.organ_only:
            t0 = time.perf_counter()
            prob = infer(prep.x, prep.bg, self)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            prob_pet = to_pet_grid(prob, prep.harmonized["reference"], pet, self.resample_device)
            mask = lesion_mask(prob_pet, pet.GetSpacing(), min_lesion_ml(self.config), self.threshold)
            if self.suppress and self.suppress.get("source") == "organ_model":  # the organ model's map decides
                mask = suppress_in_organ_map(mask, org["map"], self.suppress)
            result = outputs.quantify(mask, pet, organ_img, prep.harmonized)
            timings.update(inference=t1 - t0, postprocess=time.perf_counter() - t1)
        if org is not None:
            t0 = time.perf_counter()
            patient = patient if patient is not None else organ_out.patient_of(prep.pt_datasets)
            org["rows"] = organ_out.organ_table(org["map"], mask, pet, org["classes"], patient)
            timings["organs"] += time.perf_counter() - t0
        summary = outputs.case_summary(prep.case_id, prep.kind, prep.source, pet, prep.harmonized, self.describe(),
                                       result, timings, [], study=prep.study)
        if org is not None:
            summary["organs"] = organ_out.organ_summary(org["rows"])
        return mask, result["table"], summary, timings, org


# ------------------------------------------------------------------------------------------------ images


def as_image(image: Any, float32: bool = False) -> sitk.Image:
    """A SimpleITK image (LPS geometry) of a SimpleITK image, a nibabel image or an ``(array (X, Y, Z), 4x4 RAS
    affine)`` pair; ``float32``: cast the voxels (the PET is float32, as the file reader gives it). Float64
    arrays become float32 (what ITK reads from a float NIfTI)."""
    if isinstance(image, sitk.Image):
        img = image
    else:
        if isinstance(image, tuple) and len(image) == 2:
            arr, affine = image
        elif hasattr(image, "affine") and hasattr(image, "dataobj"):
            arr, affine = image.dataobj, image.affine
        else:
            raise InputError(f"expected a nibabel image, an (array, affine) pair or a SimpleITK image, got "
                             f"{type(image).__name__}")
        arr = np.asanyarray(arr)
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3:
            raise InputError(f"expected a 3D image, got an array of shape {arr.shape}")
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        from petctfm.io.images import image_from_ras

        img = image_from_ras(arr, affine)
    if float32 and img.GetPixelID() != sitk.sitkFloat32:
        img = sitk.Cast(img, sitk.sitkFloat32)
    return img


# ------------------------------------------------------------------------------------------------ stages


def read(case: SourceCase) -> tuple[dict[str, Any], list[Any] | None]:
    """Stage 1: ``({"suv", "ct", "organs"}, DICOM PT headers or None)``; lesion labels in the input are skipped."""
    from petctfm.harmonize.load import load_case_images

    case = copy.copy(case)
    case.files = {k: v for k, v in case.files.items() if k not in ("seg", "SEG", "RTSTRUCT")}
    images, extra = load_case_images(case)  # files: read_image refuses non-3D images, naming the file
    return {"suv": images["suv"], "ct": images["ct"], "organs": images.get("organs")}, extra.get("pt_datasets")


def prepare_images(images: dict[str, Any], predictor: Predictor, pt_datasets: list[Any] | None = None,
                   case_id: str = "case", kind: str = "memory", source: str | None = None,
                   timings: dict[str, float] | None = None) -> Prepared:
    """Stage 2 (preprocess) of images ``{"suv", "ct", "organs"}`` (SimpleITK, own grids)."""
    from petctfm.core import plausibility as plaus
    from petctfm.harmonize.pipeline import harmonize_images
    from petctfm.harmonize.resample_torch import torch_resampler
    from petctfm.inference.normalize import normalized_input

    dev = predictor.resample_device
    t0 = time.perf_counter()
    h = harmonize_images({"suv": images["suv"], "ct": images["ct"], "seg": None, "organs": None},
                         predictor.spacing, predictor.ct_window,
                         resampler=torch_resampler(dev) if dev is not None else None)
    if pt_datasets:  # DICOM: PatientWeight is known (files carry none; predict reads no metadata)
        h["source"]["warnings"] += plaus.weight_flags(getattr(pt_datasets[0], "PatientWeight", None))
    x, bg = normalized_input(h["image"], predictor.config)
    timings = {**(timings or {}), "preprocess": time.perf_counter() - t0}
    return Prepared(case_id, kind, source, images, pt_datasets, h, x, bg, timings)


def prepare(case: SourceCase, predictor: Predictor) -> Prepared:
    """Stages 1-2 (read, preprocess) of one case; errors are one-line InputErrors naming the input."""
    try:
        t0 = time.perf_counter()
        from petctfm.predict.identity import input_fingerprint

        images, pt = read(case)
        read_s = time.perf_counter() - t0
        prep = prepare_images(images, predictor, pt, case.case_id, outputs.input_kind(case),
                              outputs.case_source(case), {"read": read_s})
        prep.fingerprint = input_fingerprint(case)
        from petctfm.predict.sources import study_date_of

        prep.study = study_date_of(case, pt).to_json()
        return prep
    except Exception as exc:  # noqa: BLE001 - any failure of a case becomes one line naming it
        if not isinstance(exc, PetctfmError) and os.environ.get("PETCTFM_DEBUG"):
            traceback.print_exc()
        raise named_error(exc, case) from None


def infer(x: np.ndarray, bg: np.ndarray, predictor: Predictor) -> np.ndarray:
    """Stage 3: lesion probability (X, Y, Z) float32 on the harmonized grid; mean over the TTA flips; the lesion
    components in the model's own predicted organs removed when the predictor suppresses organs by them (an organ
    model's suppression acts on the mask, in :meth:`Predictor.predict_prepared`)."""
    if predictor.suppress and predictor.suppress.get("source") != "organ_model":
        return predict_case(predictor.model, x, predictor.patch, predictor.overlap, predictor.device, bg=bg,
                            sw_batch_size=predictor.sw_batch_size, tta=predictor.tta, suppress=predictor.suppress,
                            threshold=predictor.threshold)[0]
    return lesion_probability(predictor.model, x, predictor.patch, predictor.overlap, predictor.device, bg=bg,
                              sw_batch_size=predictor.sw_batch_size, tta=predictor.tta)


def _suppression(cfg: dict[str, Any], path: Path, names: Sequence[str] | None,
                 organ_model: "Predictor | None" = None) -> dict[str, Any] | None:
    """The organ suppression of a lesion model: ``names`` given with an ``organ_model``: by its organ map
    (:func:`petctfm.inference.postprocess.organ_map_suppression`); else by the lesion model's own auxiliary
    organs (:func:`petctfm.inference.postprocess.suppression`: the config's, or ``names`` instead; empty: off). A
    name the deciding model does not predict is a one-line InputError."""
    from petctfm.inference.model import is_organ_model
    from petctfm.inference.postprocess import organ_map_suppression, suppress_fraction, suppression

    if is_organ_model(cfg):
        if names:
            raise InputError(f"{path}: --suppress-organs applies to a lesion model, not an organ model")
        return None
    if names and organ_model is not None:
        try:
            return organ_map_suppression(names, organ_classes(organ_model), suppress_fraction(cfg))
        except ValueError as exc:
            raise InputError(f"{organ_model.path}: {exc}") from None
    if names is not None:
        cfg = {**cfg, "postprocess": {**(cfg.get("postprocess") or {}), "suppress_organs": list(names)}}
    try:
        return suppression(cfg)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def organ_classes(organ_model: Predictor) -> dict[str, int]:
    """The organ model's ``{organ name: label value}`` (background left out)."""
    from petctfm.inference.model import output_classes

    return {k: v for k, v in output_classes(organ_model.config).items() if v != 0}


def predict_organs(prep: Prepared, predictor: Predictor, organ_model: Predictor) -> np.ndarray:
    """The organ label map (X, Y, Z) uint8 on the input PET grid of a prepared case: ``organ_model``'s
    sliding-window class argmax (:func:`petctfm.inference.sliding_window.predict_labels`, TTA as set) on the
    harmonized grid, written in its organ values, brought onto the PET grid by nearest neighbour (a label map:
    no probabilities are resampled, which for 13 classes would hold 13 PET-sized volumes). The case's harmonized
    volume is reused when the organ model was trained at the same spacing and CT window as ``predictor``; else
    the images are harmonized again for it."""
    from petctfm.harmonize.resample import resample_xyz
    from petctfm.inference.normalize import normalized_input
    from petctfm.inference.sliding_window import predict_labels
    from petctfm.inference.model import output_classes

    om = organ_model
    if om is predictor or (om.spacing, om.ct_window) == (predictor.spacing, predictor.ct_window):
        h = prep.harmonized
        x, bg = (prep.x, prep.bg) if om is predictor else normalized_input(h["image"], om.config)
    else:
        again = prepare_images(prep.images, om, prep.pt_datasets, prep.case_id, prep.kind, prep.source)
        h, x, bg = again.harmonized, again.x, again.bg
    labels = predict_labels(om.model, x, om.patch, list(output_classes(om.config).values()), om.overlap, om.device,
                            bg=bg, sw_batch_size=om.sw_batch_size, tta=om.tta,
                            flip_axes=om.config["data"].get("flip_axes", (0, 1, 2)))
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))))
    img.CopyInformation(h["reference"])
    return resample_xyz(img, prep.images["suv"], False, 0, dtype=np.uint8)


def to_pet_grid(prob: np.ndarray, reference: sitk.Image, pet: sitk.Image,
                device: torch.device | None = None) -> np.ndarray:
    """Resample a probability (X, Y, Z) on ``reference`` (the harmonized RAS grid) onto ``pet``'s grid
    (linear, 0 outside the reference); returns (X', Y', Z') float32 indexed like ``array_xyz(pet)``.
    ``device``: run the passes there with :mod:`petctfm.harmonize.resample_torch` (None: NumPy)."""
    from petctfm.harmonize.resample import resample_xyz

    if device is not None:
        from petctfm.harmonize.resample_torch import resample_xyz_torch

        return resample_xyz_torch(reference, pet, True, 0.0, device=device, array=prob)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(prob.astype(np.float32), (2, 1, 0))))
    img.CopyInformation(reference)
    return resample_xyz(img, pet, True, 0.0)


def predict_one(case: SourceCase, predictor: Predictor, out_dir: str | os.PathLike, report: bool = True,
                prepared: Prepared | None = None, seg_identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Predict one case and write its outputs into ``out_dir``; returns the summary (as written).

    The in-memory prediction (:meth:`Predictor.predict_prepared`) followed by
    :func:`petctfm.predict.outputs.write_case_outputs`. ``prepared``: the case already read and preprocessed
    (folder mode's background thread), else done here; ``seg_identity``: UIDs and algorithm parameters of
    ``lesions.seg.dcm`` (:func:`petctfm.predict.outputs.write_seg`). Errors: one-line :class:`InputError` naming
    the input.
    """
    prep = prepared if prepared is not None else prepare(case, predictor)
    try:
        mask, table, summary, timings, organs = predictor.predict_prepared(prep)
        summary["input"]["fingerprint"] = prep.fingerprint  # what a re-run's skip compares (predict.identity)
        return outputs.write_case_outputs(out_dir, summary, mask, table, prep.images, prep.pt_datasets,
                                          predictor.model_name, timings, report=report, organs=organs,
                                          seg_identity=seg_identity)
    except Exception as exc:  # noqa: BLE001
        from petctfm.io.atomic import output_failure

        full = output_failure(exc, Path(out_dir) / outputs.SUMMARY_FILE)
        if full is not None:  # a full disk is the output's fault (exit 4), not the input's
            raise full from None
        if not isinstance(exc, PetctfmError) and os.environ.get("PETCTFM_DEBUG"):
            traceback.print_exc()
        raise named_error(exc, case) from None


__all__ = ["DEFAULT_THRESHOLD", "TTA_CHOICES", "check_options", "STAGES", "Predictor", "Prepared", "harmonize_settings",
           "as_image", "read", "prepare_images", "prepare", "infer", "organ_classes", "predict_organs", "to_pet_grid",
           "predict_one"]
