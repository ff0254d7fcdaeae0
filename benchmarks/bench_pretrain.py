"""Pretraining throughput: plain reference vs the optimized early-fusion MAE step, MFU, loader patches/s.

In ONE run on the same GPU, for each SwinUNETR-v2 feature size (24, 48 by default) and, with ``--unet``,
for the residual UNet (``unet-resenc``: MONAI ``DynUNet(res_block=True)``, 32..320 filters):

- ``reference``: MONAI ``SwinUNETR(use_v2=True)``, batch 2 of 2x96^3, bf16 autocast, eager, plain
  ``torch.optim.AdamW`` (defaults), MSE between output and input. (Project measurement on an H100: 19
  samples/s at feature size 48, 23 at 24.)
- ``ours`` variants: the early-fusion MAE step (block mask, zero imputation, weighted loss) on the same
  backbone and patch, with combinations of batch size, ``cudnn.benchmark``, TF32, fused AdamW,
  channels_last_3d and ``torch.compile``. Each is measured, none assumed.

Then the best variant is fed from the real data loader (``PatchDataset`` over an on-disk harmonized
dataset, worker processes, pinned memory) while GPU utilization is sampled with NVML, and the loader alone
is timed in patches/s. FLOPs of one training step are counted with ``torch.utils.flop_counter``;
MFU = achieved FLOP/s / peak (H100 / H200 SXM bf16 dense: 989 TFLOP/s; ``--peak-tflops`` to change).
The residual UNet's reference is the same plain recipe on a plain MONAI ``DynUNet`` of the same shape.

Usage::

    python benchmarks/bench_pretrain.py --out bench_pretrain.json            # GPU (the lead's H100 run)
    python benchmarks/bench_pretrain.py --cpu-smoke --out /tmp/smoke.json    # tiny, CPU, seconds
    python benchmarks/bench_pretrain.py --features 48 --unet --variants 8 8:compile --out r.json  # gpu/speed.sh

Results are written (atomically) to ``--out`` after every measurement, so a run cut short keeps what
it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # toy_dataset.py

from petctfm.data.loader import PatchConfig, PatchDataset, patch_loader  # noqa: E402
from petctfm.io.atomic import atomic_write_json  # noqa: E402
from toy_dataset import write_bench_dataset  # noqa: E402

from petctfm.methods.early_fusion_mae.mae import (  # noqa: E402
    EarlyFusionMAE, block_mask_grid, mask_grid_shape, reconstruction_loss, voxel_mask,
)

BF16_PEAK = 989e12  # H100 / H200 SXM, bf16 dense (the H200 has the H100's tensor cores)


def flops_per_sample(model, step_fn, make_batch) -> float:
    """FLOPs of one forward+backward on a batch of 1 (FlopCounterMode), i.e. per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = make_batch(1)
    with FlopCounterMode(display=False) as fc:
        loss = step_fn(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def measure(name, build, step_fn, make_batch, bs, dev, *, fused, compile_, channels_last, warmup, steps,
            bf16, lr=1e-4):
    """samples/s of (forward, loss, backward, AdamW step) at batch ``bs``; returns a result dict."""
    torch.manual_seed(0)
    model = build().to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=fused if dev.type == "cuda" else None)
    fn = torch.compile(model) if compile_ else model
    batch = make_batch(bs)
    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last_3d)

    def one():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_fn(fn, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup):
        one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = one()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    res = {"name": name, "batch": bs, "fused_adamw": fused, "compile": compile_, "channels_last": channels_last,
           "samples_per_s": bs * steps / dt, "step_s": dt / steps, "warmup_s": t_warm, "loss": float(loss.detach())}
    if dev.type == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    model = opt = fn = batch = None  # free GPU memory before the next variant (one() is not called again)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def gpu_util_sampler(stop: threading.Event, out: list):
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        while not stop.is_set():
            out.append(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            time.sleep(0.1)
    except Exception as exc:  # NVML missing: report why
        out.append(f"nvml unavailable: {exc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON results path")
    ap.add_argument("--data", help="harmonized dataset for the loader measurements (default: write one)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (checks the script runs)")
    ap.add_argument("--features", type=int, nargs="+", default=[24, 48])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--variants", nargs="+", help="override the variant list: BATCH[:cl][:compile][:flash] ...")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--skip-loader", action="store_true", help="only the step measurements")
    ap.add_argument("--patch", type=int, help="patch side (default 96, smoke 64; SwinUNETR needs >= 64)")
    ap.add_argument("--no-swin", action="store_true", help="no SwinUNETR (with --unet: the residual UNet only)")
    ap.add_argument("--unet", action="store_true", help="also the residual UNet (unet-resenc) vs plain DynUNet")
    ap.add_argument("--loader-cases", type=int, default=8, help="cases of the on-disk dataset written for the loader")
    ap.add_argument("--peak-tflops", type=float, default=BF16_PEAK / 1e12, help="bf16 dense peak for the MFU")
    args = ap.parse_args(argv)

    smoke = args.cpu_smoke
    dev = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    patch = args.patch or (64 if smoke else 96)
    block = 16
    features = [] if args.no_swin else [12] if smoke else args.features
    peak = args.peak_tflops * 1e12
    batches = [1] if smoke else args.batches
    steps, warmup = (1, 0) if smoke else (args.steps, 3)  # smoke: the code path once, no warm-up step
    bf16 = dev.type == "cuda"
    out = Path(args.out)
    results: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                     "torch": torch.__version__, "patch": patch, "in_channels": 2, "peak_tflops": args.peak_tflops,
                     "runs": [], "loader": {}}
    save = lambda: atomic_write_json(out, results)  # noqa: E731
    grid = mask_grid_shape((patch,) * 3, block)

    def make_batch(bs):
        g = torch.Generator().manual_seed(0)
        masks = np.stack([block_mask_grid(np.random.default_rng(i), grid, 0.6) for i in range(bs)])
        return {"image": torch.randn(bs, 2, patch, patch, patch, generator=g), "mask": torch.from_numpy(masks)}

    def ref_step(model, batch):
        return torch.nn.functional.mse_loss(model(batch["image"]), batch["image"])

    def mae_step(model, batch):
        x = batch["image"]
        pred = model(x, batch["mask"])
        return reconstruction_loss(pred, x, voxel_mask(batch["mask"], block, x.shape[2:]), 1.0, 0.1)[0]

    from monai.networks.nets import SwinUNETR

    from petctfm.models.backbones import build_backbone

    def swin(F, flash=False):
        return SwinUNETR(in_channels=2, out_channels=2, feature_size=F, use_v2=True,
                         depths=(1, 1, 1, 1) if smoke else (2, 2, 2, 2), use_flash_attention=flash)

    unet_name = "unet-resenc-tiny" if smoke else "unet-resenc"
    # (label, plain reference network, our network(flash)); flash attention exists for SwinUNETR only
    nets = [(f"f{F}", lambda F=F: swin(F), lambda flash=False, F=F: swin(F, flash)) for F in features]
    if args.unet:
        nets.append(("unet", lambda: build_backbone(unet_name, 2, 2), lambda flash=False: build_backbone(unet_name, 2, 2)))
    builders = {}
    for label, build_net_ref, build_net in nets:
        def build_ref(build_net_ref=build_net_ref):
            return build_net_ref()

        def build_ours(flash=False, build_net=build_net):
            return EarlyFusionMAE(build_net(flash), 2, block, "zero")

        builders[label] = build_ours
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        common = dict(warmup=warmup, steps=steps, bf16=bf16)
        ref = measure(f"reference_{label}", build_ref, ref_step, make_batch, 1 if smoke else 2, dev, fused=False, compile_=False,
                      channels_last=False, **common)
        ref_flops = flops_per_sample(build_ref().to(dev), ref_step, lambda b: {k: v.to(dev) for k, v in make_batch(b).items()})
        ref["flops_per_sample"] = ref_flops
        ref["mfu"] = ref["samples_per_s"] * ref_flops / peak
        results["runs"].append(ref)
        print(json.dumps(ref), flush=True)
        save()

        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        ours_flops = flops_per_sample(build_ours().to(dev), mae_step, lambda b: {k: v.to(dev) for k, v in make_batch(b).items()})
        variants = [(2, False, False, False), *[(b, False, False, False) for b in batches],
                    (batches[-1], True, False, False), (batches[-1], False, False, True)]
        if not args.no_compile:
            variants += [(batches[-1], False, True, False), (batches[-1], False, True, True)]
        if smoke:
            variants = [(1, False, False, False), (1, False, False, True)]
        if args.variants:
            variants = [(int(v.split(":")[0]), ":cl" in v, ":compile" in v, ":flash" in v) for v in args.variants]
        if label == "unet":
            variants = list(dict.fromkeys((bs, cl, comp, False) for bs, cl, comp, _ in variants))
        best = None
        for bs, cl, comp, flash in variants:
            name = f"ours_{label}_b{bs}" + ("_cl" if cl else "") + ("_compile" if comp else "") + ("_flash" if flash else "")
            try:
                r = measure(name, lambda: build_ours(flash), mae_step, make_batch, bs, dev, fused=dev.type == "cuda",
                            compile_=comp, channels_last=cl, **common)
            except torch.OutOfMemoryError:
                r = {"name": name, "batch": bs, "error": "out of memory"}
                torch.cuda.empty_cache()
            except Exception as exc:  # record and go on (e.g. a compile failure)
                r = {"name": name, "batch": bs, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            if "samples_per_s" in r:
                r["flops_per_sample"] = ours_flops
                r["mfu"] = r["samples_per_s"] * ours_flops / peak
                r["speedup_vs_reference"] = r["samples_per_s"] / ref["samples_per_s"]
                if best is None or r["samples_per_s"] > best["samples_per_s"]:
                    best = {**r, "cl": cl, "comp": comp, "flash": flash}
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
            save()
        results[f"best_{label}"] = best

    # ------------------------------------------------------------------ loader, on-disk harmonized data
    tmp = None
    data = args.data
    if args.skip_loader:
        return 0
    if not data:
        tmp = tempfile.TemporaryDirectory()
        shape = (64, 64, 96) if smoke else (192, 192, 320)
        t0 = time.perf_counter()
        data = write_bench_dataset(Path(tmp.name) / "ds", n_cases=3 if smoke else args.loader_cases, shape=shape)
        results["loader"]["dataset"] = {"written": True, "cases": 3 if smoke else args.loader_cases, "shape": list(shape),
                                        "write_s": time.perf_counter() - t0}
    workers = 0 if smoke else args.workers
    cfg = PatchConfig.from_dict({"patch_size": patch, "batch_size": batches[-1], "num_workers": workers})
    grid_fn = lambda rng, item: item.__setitem__("mask", torch.from_numpy(block_mask_grid(rng, grid, 0.6)))  # noqa: E731
    ds = PatchDataset(data, cfg, seed=0, extra=grid_fn)
    loader = iter(patch_loader(ds))
    next(loader)
    n_batches = 3 if smoke else 30
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(loader)
    dt = time.perf_counter() - t0
    results["loader"].update({"workers": workers, "patch": patch, "batch": cfg.batch_size,
                              "patches_per_s": n_batches * cfg.batch_size / dt})
    print(json.dumps(results["loader"]), flush=True)
    save()

    # ------------------------------------------------------------------ end to end: best variant fed by the loader
    best = results.get(f"best_f{features[-1]}") if features else None
    if best:
        torch.manual_seed(0)
        model = builders[f"f{features[-1]}"](best["flash"]).to(dev)
        if best["cl"]:
            model = model.to(memory_format=torch.channels_last_3d)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda" or None)
        fn = torch.compile(model) if best["comp"] else model
        cfg2 = PatchConfig.from_dict({"patch_size": patch, "batch_size": best["batch"], "num_workers": workers})
        loader = iter(patch_loader(PatchDataset(data, cfg2, seed=0, extra=grid_fn)))
        util: list = []
        stop = threading.Event()

        def step():
            b = next(loader)
            b = {k: v.to(dev, non_blocking=True) for k, v in b.items()}
            if best["cl"]:
                b["image"] = b["image"].contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = mae_step(fn, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(warmup):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
            th = threading.Thread(target=gpu_util_sampler, args=(stop, util), daemon=True)
            th.start()
        n = 1 if smoke else steps * 2
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        stop.set()
        nums = [u for u in util if isinstance(u, (int, float))]
        results["end_to_end"] = {"variant": best["name"], "samples_per_s": n * best["batch"] / dt,
                                 "gpu_util_mean_pct": float(np.mean(nums)) if nums else None,
                                 "gpu_util_samples": len(nums), "nvml_note": [u for u in util if isinstance(u, str)][:1],
                                 "workers": workers}
        print(json.dumps(results["end_to_end"]), flush=True)
        save()
    if tmp is not None:
        tmp.cleanup()

    print("\nsummary")
    for label, _, _ in nets:
        ref = next(r for r in results["runs"] if r["name"] == f"reference_{label}")
        b = results.get(f"best_{label}")
        if b:
            print(f"  {label}: reference {ref['samples_per_s']:.1f} samples/s (MFU {ref['mfu']:.1%}), "
                  f"best {b['name']} {b['samples_per_s']:.1f} samples/s (MFU {b['mfu']:.1%}), "
                  f"ratio {b['speedup_vs_reference']:.2f}x")
    print(f"  loader: {results['loader']['patches_per_s']:.1f} patches/s ({workers} workers)")
    if "end_to_end" in results:
        print(f"  end to end: {results['end_to_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
