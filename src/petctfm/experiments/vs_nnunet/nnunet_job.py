"""What runs in the nnU-Net child process: ``python -m petctfm.experiments.vs_nnunet.nnunet_job JOB.json``.

The parent (:mod:`.run`) sets ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` in the child's
environment only (nnU-Net reads them when ``nnunetv2.paths`` is imported), so nothing here leaks into petctfm's
process. Two jobs:

- ``plan``: nnU-Net's fingerprint, its ``ExperimentPlanner`` twice (default GPU-memory target, and a small
  target under its own plans name: ``nnUNetv2_plan_and_preprocess -gpu_memory_target G
  -overwrite_plans_name nnUNetPlans_cpu``), ``3d_fullres`` preprocessing with one process; writes a summary
  of each plan (patch, batch, spacing, stages, parameters).
- ``predict``: a trained fold's checkpoint on other images (a confirmation cohort, :mod:`.confirm`).
- ``train``: :class:`nnUNetTrainerBudget` (nnU-Net's trainer, stopped by wall time; see its docstring) on fold
  0 (= our train/val split, ``splits_final.json``), nnU-Net's own final validation
  (``perform_actual_validation``; only when plans are compared, ``final_validation``), then nnU-Net's predictor
  (``nnUNetPredictor``, its defaults: Gaussian sliding window, step 0.5, mirroring TTA unless ``mirroring`` is
  false) on the test cases, timed per case.

The trainer class is used directly from Python (nnU-Net's ``-tr`` lookup only searches nnunetv2's own trainer
folder, which petctfm does not write into); the predictor is initialized with ``manual_initialization`` for
the same reason.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petctfm.experiments.vs_nnunet.export import lesion_only, with_organs


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    tmp.replace(path)


def _budget_trainer_class():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerBudget(nnUNetTrainer):
        """nnU-Net's ``nnUNetTrainer``, stopped by a wall-clock budget; nothing else about training changes.

        - **Budget**: ``budget_s`` seconds counted from the first training iteration (after nnU-Net's own
          ``on_train_start``: data loaders, unpacking). Checked after every training iteration: when spent,
          the current epoch ends there (its validation, logging and checkpoints as usual), then
          ``on_train_end`` saves ``checkpoint_final.pth`` as nnU-Net always does. ``checkpoint_best.pth``
          (best EMA pseudo-Dice) is kept by nnU-Net's ``on_epoch_end`` unchanged.
        - **Epoch length** (the one change): nnU-Net's 250 training + 50 validation iterations per epoch would
          not finish one epoch in a CPU budget, so nnU-Net would never validate. After the first iterations
          the time per iteration is measured and ``num_iterations_per_epoch`` is set so that the budget holds
          about ``target_validations`` epochs (at most nnU-Net's 250); ``num_val_iterations_per_epoch`` keeps
          nnU-Net's 1:5 ratio (at least 1). On a GPU with an hour's budget this is nnU-Net's 250 / 50.
        - ``num_epochs`` stays nnU-Net's 1000 (the poly learning-rate schedule is nnU-Net's, cut by the budget,
          as petctfm's schedule is cut by its ``max_time``).
        - ``budget_log.json`` in the fold folder: one row per epoch (epoch, iterations so far, seconds since the
          budget started, nnU-Net's pseudo-Dice and its EMA) and the derived epoch length; the Dice-vs-minutes
          curve of the report.
        """

        budget_s: float = 60.0
        target_validations: int = 10

        def run_training(self):
            self.on_train_start()
            t0 = time.perf_counter()
            self._budget = {"budget_s": float(self.budget_s), "target_validations": int(self.target_validations),
                            "default_iterations_per_epoch": int(self.num_iterations_per_epoch),
                            "default_val_iterations_per_epoch": int(self.num_val_iterations_per_epoch),
                            "iterations": 0, "epochs": [], "stopped": None}
            tr_keys, val_keys = self.do_split()
            self._budget["split"] = {"train": sorted(tr_keys), "val": sorted(val_keys)}
            t_first = None
            sized = False
            spent = False
            for _epoch in range(self.current_epoch, self.num_epochs):
                self.on_epoch_start()
                self.on_train_epoch_start()
                train_outputs = []
                it = 0
                while it < self.num_iterations_per_epoch:
                    train_outputs.append(self.train_step(next(self.dataloader_train)))
                    it += 1
                    self._budget["iterations"] += 1
                    now = time.perf_counter()
                    n = self._budget["iterations"]
                    if n == 1:
                        t_first = now
                    elif not sized and (n >= 10 or now - t0 > 0.05 * self.budget_s):
                        per_it = (now - t_first) / (n - 1)
                        self._size_epochs(per_it)
                        sized = True
                    if now - t0 >= self.budget_s:
                        spent = True
                        break
                self.on_train_epoch_end(train_outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val_outputs)
                self._log_epoch(time.perf_counter() - t0)
                self.on_epoch_end()
                if spent or time.perf_counter() - t0 >= self.budget_s:
                    self._budget["stopped"] = "budget"
                    break
            else:
                self._budget["stopped"] = "num_epochs"
            self._budget["train_seconds"] = time.perf_counter() - t0
            self._write_budget_log()
            self.on_train_end()

        def _size_epochs(self, per_it: float) -> None:
            val_ratio = self._budget["default_val_iterations_per_epoch"] / self._budget["default_iterations_per_epoch"]
            cost = per_it * (1.0 + val_ratio / 3.0)  # a validation iteration: forward only (~1/3 of a step)
            n = int(self.budget_s / max(1, self.target_validations) / max(cost, 1e-9))
            n = max(1, min(self._budget["default_iterations_per_epoch"], n))
            self.num_iterations_per_epoch = n
            self.num_val_iterations_per_epoch = max(1, int(round(n * val_ratio)))
            self._budget.update(seconds_per_iteration=per_it, iterations_per_epoch=n,
                                val_iterations_per_epoch=self.num_val_iterations_per_epoch)
            self.print_to_log_file(f"budget {self.budget_s:.0f} s, {per_it:.2f} s/iteration: {n} training and "
                                   f"{self.num_val_iterations_per_epoch} validation iterations per epoch")

        def _log_epoch(self, seconds: float) -> None:
            get = self.logger.get_value
            pseudo, ema = float(get("mean_fg_dice", step=-1)), float(get("ema_fg_dice", step=-1))
            if with_organs(self.dataset_json):  # organ classes too: the lesion's (class 1) pseudo-Dice,
                pseudo = float(get("dice_per_class_or_region", step=-1)[0])  # its EMA as nnU-Net's logger makes it
                prev = self._budget["epochs"][-1]["ema_pseudo_dice"] if self._budget["epochs"] else None
                ema = pseudo if prev is None else 0.9 * prev + 0.1 * pseudo
            self._budget["epochs"].append({
                "epoch": int(self.current_epoch), "iterations": int(self._budget["iterations"]),
                "seconds": float(seconds), "pseudo_dice": pseudo, "ema_pseudo_dice": ema,
                "train_loss": float(get("train_losses", step=-1)),
            })
            self._write_budget_log()

        def _write_budget_log(self) -> None:
            _write_json(Path(self.output_folder) / "budget_log.json", self._budget)

    return nnUNetTrainerBudget


# ------------------------------------------------------------------------------------------------ jobs


def _plan_summary(plans_name: str, dataset_name: str, configuration: str) -> dict[str, Any]:
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pre = Path(nnUNet_preprocessed) / dataset_name
    plans = json.loads((pre / f"{plans_name}.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    trainer = _budget_trainer_class()
    net = trainer.build_network_architecture(pm, cm, len(dataset_json["channel_names"]),
                                             pm.get_label_manager(dataset_json).num_segmentation_heads,
                                             enable_deep_supervision=False)
    kw = cm.network_arch_init_kwargs
    return {"plans": plans_name, "configuration": configuration, "patch_size": list(cm.patch_size),
            "batch_size": int(cm.batch_size), "spacing": [float(s) for s in cm.spacing],
            "median_image_size": list(plans["configurations"][configuration].get("median_image_size_in_voxels", [])),
            "network": cm.network_arch_class_name.rsplit(".", 1)[-1], "n_stages": int(kw.get("n_stages", 0)),
            "features_per_stage": list(kw.get("features_per_stage", [])),
            "parameters": int(sum(p.numel() for p in net.parameters()))}


def job_plan(job: dict[str, Any]) -> dict[str, Any]:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)

    did = int(job["dataset_id"])
    extract_fingerprints([did], num_processes=1, check_dataset_integrity=True, clean=False, verbose=False,
                         show_progress_bar=False)
    out = {}
    for key, p in job["plans"].items():
        plan_experiments([did], "ExperimentPlanner", gpu_memory_target_in_gb=p.get("gpu_memory_gb"),
                         overwrite_plans_name=p["name"])
        preprocess([did], p["name"], configurations=(job["configuration"],), num_processes=(1,),
                   show_progress_bar=False)
        out[key] = _plan_summary(p["name"], job["dataset_name"], job["configuration"])
        out[key]["gpu_memory_target_gb"] = p.get("gpu_memory_gb") or 8.0
    return out


def job_train(job: dict[str, Any]) -> dict[str, Any]:
    from nnunetv2.paths import nnUNet_preprocessed

    seed = int(job["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device(job["device"])
    pre = Path(nnUNet_preprocessed) / job["dataset_name"]
    plans = json.loads((pre / f"{job['plans_name']}.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = False  # what nnU-Net's run_training sets for a fresh run
    if device.type == "cuda":  # as nnU-Net's run_training
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    cls = _budget_trainer_class()
    cls.budget_s = float(job["budget_s"])
    cls.target_validations = int(job["target_validations"])
    trainer = cls(plans=plans, configuration=job["configuration"], fold=0, dataset_json=dataset_json, device=device)
    mirroring = bool(job.get("mirroring", True))
    t0 = time.perf_counter()
    trainer.run_training()
    train_s = time.perf_counter() - t0
    if not mirroring:  # no test-time mirroring: nnU-Net's own switch (its validation and predictor read it)
        trainer.inference_allowed_mirroring_axes = None
    fold = Path(trainer.output_folder)
    val_dice, val_s = None, 0.0
    if job.get("final_validation", True):
        t1 = time.perf_counter()
        trainer.perform_actual_validation(False)
        val_s = time.perf_counter() - t1
        summary = json.loads((fold / "validation" / "summary.json").read_text())
        val_dice = (summary.get("foreground_mean", {}).get("Dice") if not with_organs(dataset_json)
                    else summary.get("mean", {}).get("1", {}).get("Dice"))  # organ classes too: the lesion's
    pred = _predict(trainer, fold / "checkpoint_final.pth", job["predict"], device, mirroring)
    budget = json.loads((fold / "budget_log.json").read_text())
    return {"fold_dir": str(fold), "train_s": train_s, "validation_s": val_s,
            "val_dice": float(val_dice) if val_dice is not None and math.isfinite(float(val_dice)) else None,
            "iterations": budget["iterations"], "epochs": len(budget["epochs"]),
            "iterations_per_epoch": budget.get("iterations_per_epoch"),
            "val_iterations_per_epoch": budget.get("val_iterations_per_epoch"),
            "seconds_per_iteration": budget.get("seconds_per_iteration"), "stopped": budget["stopped"],
            "split": budget["split"], "predict": pred}


def _predict(trainer, checkpoint: Path, spec: dict[str, Any], device: torch.device,
             mirroring: bool = True) -> dict[str, Any]:
    """nnU-Net's predictor (its defaults; ``mirroring`` False turns its mirroring TTA off) with the trained
    weights; per-case seconds from reading the images to the written mask. A model with organ classes
    (labels beyond the lesion) writes the lesion mask only (:func:`~petctfm.experiments.vs_nnunet.export.lesion_only`)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    multi = with_organs(trainer.dataset_json)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    pm, cm = trainer.plans_manager, trainer.configuration_manager
    net = type(trainer).build_network_architecture(pm, cm, trainer.num_input_channels,
                                                   trainer.label_manager.num_segmentation_heads,
                                                   enable_deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, [ckpt["network_weights"]], trainer.dataset_json,
                                    type(trainer).__name__, ckpt.get("inference_allowed_mirroring_axes"))
    rw = pm.image_reader_writer_class()
    out_dir = Path(spec["out"])
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for cid in spec["cases"]:
        files = [str(Path(spec["images"]) / f"{cid}_{c:04d}.nii.gz") for c in range(trainer.num_input_channels)]
        t0 = time.perf_counter()
        data, props = rw.read_images(files)
        predictor.predict_single_npy_array(data, props, None, str(out_dir / cid), False)
        if multi:
            lesion_only(out_dir / f"{cid}.nii.gz")
        seconds[cid] = time.perf_counter() - t0
    return {"seconds_per_case": seconds, "tile_step_size": 0.5, "mirroring": mirroring}


def job_predict(job: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's predictor with a trained fold's ``checkpoint`` on other images (a confirmation cohort): the
    trainer is rebuilt from the same plans (not trained) only to hand the predictor its plans and network."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    device = torch.device(job["device"])
    pre = Path(nnUNet_preprocessed) / job["dataset_name"]
    plans = json.loads((pre / f"{job['plans_name']}.json").read_text())
    plans["continue_training"] = False  # nnU-Net's trainer pops it (only its W&B logger reads it)
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = _budget_trainer_class()(plans=plans, configuration=job["configuration"], fold=0,
                                      dataset_json=dataset_json, device=device)
    trainer.num_input_channels = determine_num_input_channels(trainer.plans_manager, trainer.configuration_manager,
                                                              dataset_json)
    return {"predict": _predict(trainer, Path(job["checkpoint"]), job["predict"], device,
                                bool(job.get("mirroring", True)))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    result = {"plan": job_plan, "train": job_train, "predict": job_predict}[job["action"]](job)
    _write_json(Path(job["result"]), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
