"""Seconds of a promptable-segmentation session on a whole-body phantom: the first prompt (image embedding,
auto-zoom included) and each later click, for the cached-embedding design against the full-network-per-click
design (``channels``) and the SAM-style design (``sam``: the same cached embedding, a prompt encoder and a
two-way-transformer mask decoder per click) measured in the same run (``--designs``).

Usage::

    # whole-body `full` phantom (petctfm synth --size full, generated in memory), residual UNet 64^3, CPU / CUDA
    python benchmarks/bench_promptable.py --out promptable.json
    # an existing PET (e.g. petctfm synth --out /tmp/full --cases 1 --size full --formats autopet)
    python benchmarks/bench_promptable.py --pet /tmp/full/autopet/PETCT_0000/SUV.nii.gz
    # seconds on the CPU: tiny phantom and network (what benchmarks/gpu/speed.sh --smoke runs)
    python benchmarks/bench_promptable.py --cpu-smoke
    # only some designs
    python benchmarks/bench_promptable.py --cpu-smoke --designs cached,sam

Both models have random weights (speed does not depend on them) and the same backbone and patch. With random
weights the first prediction touches the crop border, so the first prompt zooms out to ``--max-zoom`` (one
embedding per zoom step: the worst case); the object keeps that crop and zoom, so each later click (points a
few voxels from the first, alternately negative and positive, inside the crop) runs the mask decoder only in
the cached design and the whole network in the reference. One untimed warm-up session per design first (the
patch shape's kernels; every zoom step uses the same patch shape). Prints one JSON object (also ``--out``): session
set-up, first prompt, per-click seconds (median), encoder / decoder evaluations, and the ratio reference /
cached per click (and sam / cached). Targets (issue 13): a click <= 1 s on a 2-core CPU, <= 50 ms on a GPU;
issue 25: a later click <= 0.3 s on the CPU for the default design.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _phantom(size: str):
    """(SUV image, a lesion's interior voxel or the image centre) of synthetic case 0."""
    import numpy as np
    import SimpleITK as sitk

    from petctfm.io.images import array_xyz
    from petctfm.methods.promptable.prompts import interior_point
    from petctfm.synth.generator import generate_case

    case = generate_case(0, 0, size=size)
    img = case.suv
    arr = array_xyz(img).astype(np.float32)
    seg = sitk.Resample(case.seg, img, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    seg = array_xyz(seg) > 0
    point = interior_point(seg) if seg.any() else np.array(arr.shape) // 2
    return img, point


def _run_dir(root: Path, design: str, backbone: str, patch: int) -> Path:
    from petctfm.core.config import deep_merge
    from petctfm.methods.promptable.model import build_model
    from petctfm.methods.promptable.task import DEFAULT_CONFIG
    from petctfm.train.checkpoint import save_weights

    cfg = deep_merge(DEFAULT_CONFIG, {"model": {"backbone": backbone, "design": design},
                                      "data": {"patch_size": [patch] * 3}})
    cfg["preprocessing"] = {"channels": ["PET"], "harmonize": {"spacing": [2.0, 2.0, 2.0]}, "normalization": {
        "PET": {"mean": 0.6, "std": 1.2, "clip": [0.0, 30.0]}, "CT": {"mean": -400.0, "std": 500.0,
                                                                       "clip": [-1000.0, 1500.0]}}}
    run = root / design
    save_weights(build_model(cfg), run / "model.safetensors", cfg, step=0)
    return run


def time_session(run: Path, pet, point, n_clicks: int, device: str, max_zoom: float) -> dict:
    import numpy as np

    from petctfm.methods.promptable.session import PromptSession

    warm = PromptSession.from_run(run, pet, device=device, max_zoom=1.0)  # warm-up: kernels for the patch shape
    warm.add_point(point, True, 1)
    warm.add_point(point, False, 1)
    t0 = time.perf_counter()
    s = PromptSession.from_run(run, pet, device=device, max_zoom=max_zoom)
    t1 = time.perf_counter()
    s.add_point(point, True, 1)
    t2 = time.perf_counter()
    first_encodes, first_forwards = s.encodes, s.forwards
    clicks = []
    for k in range(n_clicks):
        offset = np.array([(-1) ** k * 3, (k % 3) - 1, 2 * ((k + 1) % 2) - 1])
        q = np.clip(np.asarray(point) + offset, 0, np.array(s.grid.shape) - 1)
        t = time.perf_counter()
        s.add_point(q, bool(k % 2), 1)
        clicks.append(time.perf_counter() - t)
    return {"setup_s": t1 - t0, "first_prompt_s": t2 - t1, "first_prompt_encodes": first_encodes,
            "first_prompt_forwards": first_forwards, "click_s": clicks, "click_median_s": statistics.median(clicks),
            "later_encodes": s.encodes - first_encodes, "later_forwards": s.forwards - first_forwards,
            "zoom": s.objects[1].zoom}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pet", help="a PET (SUV) image instead of the generated phantom")
    ap.add_argument("--point", type=int, nargs=3, metavar=("X", "Y", "Z"),
                    help="voxel of the first click (default: a lesion's interior point, or the image centre)")
    ap.add_argument("--size", default="full", help="phantom size (petctfm synth --size): full (default) | small | tiny")
    ap.add_argument("--backbone", default="unet-resenc")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--clicks", type=int, default=5, help="later clicks timed (default 5)")
    ap.add_argument("--max-zoom", type=float, default=4.0)
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny phantom and network on the CPU (seconds)")
    ap.add_argument("--designs", default="cached,channels,sam",
                    help="comma-separated model.design values to time (default cached,channels,sam)")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args(argv)
    import numpy as np
    import torch

    from petctfm.io.images import read_image

    if a.cpu_smoke:
        a.size, a.backbone, a.patch, a.device, a.clicks = "tiny", "unet-resenc-tiny", 32, "cpu", 2
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    t = time.perf_counter()
    if a.pet:
        from petctfm.io.images import array_xyz

        pet = read_image(a.pet)
        point = np.array(array_xyz(pet).shape) // 2
        source = a.pet
    else:
        pet, point = _phantom(a.size)
        source = f"synth case 0, size {a.size}"
    if a.point:
        point = np.array(a.point)
    phantom_s = time.perf_counter() - t
    res: dict = {"pet": source, "pet_shape": list(pet.GetSize()), "spacing_mm": list(pet.GetSpacing()),
                 "phantom_s": phantom_s, "device": device, "torch_threads": torch.get_num_threads(),
                 "cpu": platform.processor() or platform.machine(), "backbone": a.backbone, "patch": a.patch,
                 "max_zoom": a.max_zoom, "point": [int(v) for v in point]}
    if device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    from petctfm.methods.promptable.model import DESIGNS

    designs = [d.strip() for d in a.designs.split(",") if d.strip()]
    bad = [d for d in designs if d not in DESIGNS]
    if bad or not designs:
        ap.error(f"--designs: unknown design(s) {', '.join(bad) or '(none)'} (choose from {', '.join(DESIGNS)})")
    with tempfile.TemporaryDirectory() as tmp:
        for design in designs:
            run = _run_dir(Path(tmp), design, a.backbone, a.patch)
            res[design] = time_session(run, pet, point, a.clicks, device, a.max_zoom)
    for ref in ("channels", "sam"):
        if ref in res and "cached" in res:
            name = "reference" if ref == "channels" else ref
            res[f"ratio_{name}_over_cached_click"] = res[ref]["click_median_s"] / res["cached"]["click_median_s"]
            res[f"ratio_{name}_over_cached_first_prompt"] = res[ref]["first_prompt_s"] / res["cached"]["first_prompt_s"]
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return res


if __name__ == "__main__":
    main()
