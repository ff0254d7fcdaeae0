"""End-to-end seconds of ``petctfm predict`` on one whole-body case, by stage, against plain MONAI.

Usage::

    # GPU: SwinUNETR-v2 feature size 48 (random weights: speed does not depend on them), a toy whole-body
    # volume of 440x440x300 voxels at 2 mm (about 400x400x300 after harmonization's body crop)
    python benchmarks/bench_predict.py --out bench_predict.json

    # what benchmarks/gpu/speed.sh runs: PET 400x400x300 at 2 mm + CT 512x512x300 over the same field of view
    python benchmarks/bench_predict.py --shape 400 400 300 --ct-shape 512 512 300 --out predict.json

    # a real-looking case instead: petctfm synth --out /tmp/full --cases 1 --size full --formats autopet
    python benchmarks/bench_predict.py --pet /tmp/full/autopet/PETCT_0000/SUV.nii.gz \\
        --ct /tmp/full/autopet/PETCT_0000/CT.nii.gz --spacing 2 2 3

    # tiny CPU run (seconds): tiny residual UNet, 96x96x64 toy volume
    python benchmarks/bench_predict.py --cpu-smoke

The model is a ``finetune_segmentation`` checkpoint written to a temporary run folder with random weights
and the preprocessing (``--spacing``, CT window, normalization) recorded as fine-tuning would. Steps:

1. warm-up: one full prediction (CUDA context, cuDNN autotuning, page cache), not timed;
2. ``petctfm predict`` path (:func:`petctfm.predict.predictor.predict_one`): files on disk -> files written,
   seconds per stage (read, preprocess, inference, postprocess, write, report), median of ``--repeats``;
3. reference in the same process: plain MONAI ``sliding_window_inference`` of the same network on the
   same (already harmonized and normalized, already on the device) volume: fp32, overlap 0.5, sw batch 4,
   default constant blending, network only; median of ``--repeats``;
4. resampling (on CUDA, or with ``--compare-resampling``): the two fine-grid resamplings of ``predict`` timed
   on both paths, NumPy/SimpleITK on the CPU (``harmonize.resample.resample_xyz``) and torch on the device
   (``harmonize.resample_torch``): PET and CT onto the harmonized RAS grid (``to_ras``, the part of
   ``preprocess`` that moves to the GPU) and a probability back onto the input PET grid (``to_pet``, in
   ``postprocess``); host<->device copies included, median of ``--repeats`` after one warm-up, and the largest
   difference between the two paths' results.

Prints one JSON object (also written to ``--out``): stage seconds, totals, the reference, and the ratios
``end_to_end / reference`` and ``inference / reference``. Not a timed test: numbers go to docs/predict.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _toy_volumes(shape, lesions, with_noise_rng):
    """(PET SUV, CT HU) float32 arrays of ``shape`` (X, Y, Z) of the toy body; ``lesions``: (centre as fractions of
    the field of view, radius as a fraction of X, SUV). Coordinates are fractions of the field of view, so the
    PET and the CT of a pair can sit on grids of different sizes over the same field of view."""
    import numpy as np

    X, Y, Z = shape
    x = (np.arange(X) - X / 2)[:, None, None] / (0.46 * X)
    y = (np.arange(Y) - Y / 2)[None, :, None] / (0.36 * Y)
    z = np.arange(Z)[None, None, :] / Z
    body = (x**2 + y**2 <= 1) & np.ones((1, 1, Z), bool)
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    pet = np.where(body, 1.0, 0.0).astype(np.float32)
    lungs = ((np.abs(x) - 0.45) ** 2 / 0.09 + y**2 / 0.5 + (z - 0.7) ** 2 / 0.02 <= 1) & body
    ct[lungs], pet[lungs] = -800.0, 0.5
    liver = ((x + 0.3) ** 2 / 0.06 + y**2 / 0.3 + (z - 0.5) ** 2 / 0.006 <= 1) & body
    pet[liver] = 2.5
    gx, gy, gz = np.ogrid[:X, :Y, :Z]
    for c, r, suv in lesions:
        c, r = np.asarray(c) * shape, r * X
        pet[(gx - c[0]) ** 2 + (gy - c[1]) ** 2 + (gz - c[2]) ** 2 <= r * r] = suv
    rng = with_noise_rng
    pet += np.abs(rng.normal(0, 0.1, pet.shape)).astype(np.float32) * body
    ct += rng.normal(0, 15, ct.shape).astype(np.float32) * body  # CT noise (HU): compresses like a real CT
    return pet, ct


def toy_case(folder: Path, shape: tuple[int, int, int], spacing: float, seed: int = 0,
             ct_shape: tuple[int, int, int] | None = None) -> tuple[Path, Path]:
    """A whole-body-sized toy PET (SUV) / CT pair as NIfTI: elliptic body, lungs, liver, 12 hot lesions, noise
    in the body (so the files compress about as well as real ones). The PET has ``shape`` voxels of ``spacing``
    mm; the CT ``ct_shape`` voxels (default: the PET's) over the same field of view (e.g. PET 400x400x300 at
    2 mm, CT 512x512x300 at 1.5625 x 1.5625 x 2 mm, as a scanner writes them)."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    lesions = [(rng.uniform([0.3, 0.3, 0.1], [0.7, 0.7, 0.9]), rng.uniform(3, 8) / shape[0], rng.uniform(4, 15))
               for _ in range(12)]
    ct_shape = tuple(ct_shape or shape)
    fov = np.asarray(shape, float) * spacing
    paths = []
    for name, grid in (("SUV", tuple(shape)), ("CT", ct_shape)):
        pet, ct = _toy_volumes(grid, lesions, rng)
        arr = pet if name == "SUV" else ct.astype(np.int16)
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
        img.SetSpacing(tuple(float(v) for v in fov / np.asarray(grid)))
        img.SetOrigin(tuple(float(v) for v in (-fov[0] / 2, -fov[1] / 2, -fov[2])))
        paths.append(folder / f"{name}.nii.gz")
        sitk.WriteImage(img, str(paths[-1]))
    return paths[0], paths[1]


def make_model(run: Path, backbone: str, patch: int, spacing: list[float]) -> Path:
    """A random-weight fine-tuned segmentation checkpoint with the preprocessing fine-tuning records."""
    import torch

    from petctfm.core.config import deep_merge
    from petctfm.methods.segmentation.model import build_model
    from petctfm.methods.segmentation.task import DEFAULT_CONFIG, validate_config
    from petctfm.train.checkpoint import save_weights

    cfg = deep_merge(DEFAULT_CONFIG, {"model": {"backbone": backbone}, "data": {"patch_size": [patch] * 3}})
    validate_config(cfg)
    cfg["preprocessing"] = {
        "channels": ["PET", "CT"],
        "normalization": {"PET": {"mean": 0.6, "std": 1.2, "clip": [0.0, 30.0]},
                          "CT": {"mean": -400.0, "std": 500.0, "clip": [-1000.0, 1000.0]}},
        "harmonize": {"spacing": spacing, "ct_window": [-1000.0, 1000.0]},
    }
    torch.manual_seed(0)
    return save_weights(build_model(cfg), run / "model.safetensors", cfg)


def time_resampling(prep, dev, repeats: int, sync) -> dict:
    """Seconds of predict's two fine-grid resamplings on the NumPy path and the torch path on ``dev``.

    ``to_ras``: PET (linear, 0 outside) and CT (linear, -1000 HU outside) onto the harmonized grid, as
    ``harmonize_images`` does; ``to_pet``: a probability-sized float32 volume on that grid (the normalized PET
    channel: only its size matters for speed) back onto the input PET grid, as ``to_pet_grid`` does.
    """
    import numpy as np

    from petctfm.harmonize.resample import resample_xyz
    from petctfm.harmonize.resample_torch import resample_xyz_torch

    ref, pet, ct = prep.harmonized["reference"], prep.images["suv"], prep.images["ct"]
    prob = prep.x[0]

    def run(torch_path: bool) -> dict:
        kw = {"device": dev} if torch_path else {}
        fn = resample_xyz_torch if torch_path else resample_xyz
        to_pet = (lambda: resample_xyz_torch(ref, pet, True, 0.0, device=dev, array=prob)) if torch_path else (
            lambda: resample_xyz(_on_grid(prob, ref), pet, True, 0.0))
        jobs = {"to_ras_pet": lambda: fn(pet, ref, True, 0.0, **kw),
                "to_ras_ct": lambda: fn(ct, ref, True, -1000.0, **kw), "to_pet": to_pet}
        out, secs = {}, {}
        for name, job in jobs.items():
            out[name] = job()  # warm-up (CUDA kernels, allocator)
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                job()
                sync()
                times.append(time.perf_counter() - t0)
            secs[name] = statistics.median(times)
        secs["to_ras"] = secs["to_ras_pet"] + secs["to_ras_ct"]
        return {"seconds": {k: round(v, 4) for k, v in secs.items()}, "arrays": out}

    cpu, gpu = run(False), run(True)
    diff = {k: float(np.abs(cpu["arrays"][k] - gpu["arrays"][k]).max()) for k in cpu["arrays"]}
    return {"numpy_cpu": cpu["seconds"], f"torch_{dev.type}": gpu["seconds"],
            "speedup_to_ras": round(cpu["seconds"]["to_ras"] / max(gpu["seconds"]["to_ras"], 1e-9), 2),
            "speedup_to_pet": round(cpu["seconds"]["to_pet"] / max(gpu["seconds"]["to_pet"], 1e-9), 2),
            "max_abs_diff": diff, "ras_grid": list(ref.GetSize()), "pet_grid": list(pet.GetSize())}


def _on_grid(arr_xyz, ref):
    """``arr_xyz`` as a SimpleITK image with ``ref``'s geometry (what ``to_pet_grid`` builds on the CPU path)."""
    import numpy as np
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr_xyz, (2, 1, 0))))
    img.CopyInformation(ref)
    return img


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pet")
    p.add_argument("--ct")
    p.add_argument("--shape", nargs=3, type=int, help="toy PET voxels (2 mm; default 440 440 300, smoke 96 96 64)")
    p.add_argument("--ct-shape", nargs=3, type=int, help="toy CT voxels over the same field of view (default: --shape)")
    p.add_argument("--backbone", default="swinunetr-base")
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--spacing", nargs=3, type=float, default=[2.0, 2.0, 2.0], help="model's harmonize spacing")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--tta", type=int, default=0, choices=(0, 4, 8))
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--fast", action="store_true", help="petctfm predict --fast (in-plane spacing x 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--compare-resampling", action="store_true",
                   help="time NumPy vs torch resampling also on CPU (always done on CUDA)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny network, 96x96x64 toy volume, CPU")
    p.add_argument("--out")
    args = p.parse_args()
    if args.cpu_smoke:
        args.backbone, args.patch, args.device, args.repeats = "unet-resenc-tiny", 32, "cpu", 1
        args.shape = args.shape or [96, 96, 64]
    args.shape = args.shape or [440, 440, 300]

    import torch
    from monai.inferers import sliding_window_inference

    from petctfm.io.atomic import atomic_write_json
    from petctfm.predict.predictor import Predictor, predict_one, prepare
    from petctfm.predict.sources import source_from_files

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.pet and args.ct:
            pet, ct = Path(args.pet), Path(args.ct)
        else:
            t0 = time.perf_counter()
            pet, ct = toy_case(tmp, tuple(args.shape), 2.0, ct_shape=args.ct_shape)
            print(f"toy case PET {args.shape} at 2 mm, CT {args.ct_shape or args.shape} written in {time.perf_counter() - t0:.1f} s")
        make_model(tmp / "run", args.backbone, args.patch, args.spacing)
        predictor = Predictor.load(tmp / "run", args.device, args.overlap, args.tta, fast=args.fast)
        case = source_from_files(pet, ct)
        dev = predictor.device

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize()

        predict_one(case, predictor, tmp / "warmup", report=not args.no_report)  # warm-up, not timed
        runs = []
        for k in range(args.repeats):
            t0 = time.perf_counter()
            s = predict_one(case, predictor, tmp / f"out{k}", report=not args.no_report)
            sync()
            wall = time.perf_counter() - t0
            runs.append({**s["timings_s"], "wall": wall})
        stages = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        result = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch threads "
                       f"{torch.get_num_threads()}",
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "backbone": args.backbone, "patch": args.patch, "tta": args.tta, "overlap": args.overlap, "fast": args.fast,
            "precision": "bf16" if dev.type == "cuda" else "fp32", "sw_batch_size": predictor.sw_batch_size,
            "pet_shape": s["input"]["pet_shape"], "ct_shape": args.ct_shape or args.shape, "harmonized_shape": s["input"]["harmonized_shape"],
            "lesion_count": s["lesion_count"], "seconds": {k: round(v, 3) for k, v in stages.items()},
        }
        if not args.no_reference:
            prep = prepare(case, predictor)
            x = torch.from_numpy(prep.x)[None].to(dev)
            model = predictor.model.float().eval()
            times = []
            with torch.no_grad():
                for k in range(args.repeats + 1):
                    sync()
                    t0 = time.perf_counter()
                    sliding_window_inference(x, (args.patch,) * 3, 4, model, overlap=0.5)
                    sync()
                    if k:  # the first is a warm-up
                        times.append(time.perf_counter() - t0)
            ref = statistics.median(times)
            result["reference_monai_fp32_s"] = round(ref, 3)
            result["ratio_end_to_end_vs_reference"] = round(stages["wall"] / ref, 3)
            result["ratio_inference_vs_reference"] = round(stages["inference"] / ref, 3)
            del x
        save = (lambda: atomic_write_json(args.out, result)) if args.out else (lambda: None)
        save()  # before the resampling comparison: a run cut short by its time budget keeps the main numbers
        if dev.type == "cuda" or args.compare_resampling:
            result["resampling_s"] = time_resampling(prepare(case, predictor), dev, args.repeats, sync)
            save()
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
