"""FratMAE pretraining throughput vs a naive reference measured in the same run; MFU; loader stacks/s.

- ``ours``: one FratMAE training step (``petctfm.methods.fratmae``: twin ViTs that encode only the visible
  tokens of the masked modality, SDPA attention, cross-attention decoders, masked MSE + ContextAlign InfoNCE),
  bf16 autocast on CUDA, fused AdamW; optionally ``torch.compile`` (``--compile``).
- ``reference``, the same job built the naive way: two MONAI ``ViT`` encoders (eager, attention as MONAI builds
  it, learnable positions) over ALL tokens (the masked half of the masked modality zeroed instead of
  dropped), a decoder of MONAI ``TransformerBlock(with_cross_attention=True)`` of the same width and depth
  (queries the masked modality, context the other), a linear head, MSE on the masked patches; plain AdamW.
- FLOPs of one step per sample with ``torch.utils.flop_counter`` (batch 1); MFU = samples/s x FLOPs / peak
  (H100 / H200 SXM bf16 dense 989 TFLOP/s, ``--peak-tflops``).
- Loader: :class:`petctfm.methods.fratmae.stacks.StackDataset` over an on-disk synthetic harmonized dataset
  (``benchmarks/toy_dataset.py``), worker processes, stacks/s.

Usage::

    python benchmarks/bench_fratmae.py --out fratmae.json                 # GPU: FratMAE-B, batch 24, 160x32x192
    python benchmarks/bench_fratmae.py --smoke --out /tmp/fratmae.json    # CPU, tiny ViTs, seconds

The JSON is rewritten (atomically) after every measurement, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # toy_dataset.py

from bench_pretrain import BF16_PEAK, flops_per_sample, measure  # noqa: E402
from petctfm.core.config import deep_merge  # noqa: E402
from petctfm.io.atomic import atomic_write_json  # noqa: E402
from petctfm.methods.fratmae.context import text_length  # noqa: E402
from petctfm.methods.fratmae.fratmae import DEFAULT_CONFIG, FratMAE, fratmae_loss, n_visible  # noqa: E402
from petctfm.methods.fratmae.presets import get_preset  # noqa: E402
from petctfm.methods.fratmae.stacks import StackConfig  # noqa: E402
from petctfm.methods.fratmae.vit import patchify, token_grid, unpatchify  # noqa: E402


class NaiveFratMAE(nn.Module):
    """The reference (module docstring): two MONAI ViTs over all tokens + a MONAI cross-attention decoder."""

    def __init__(self, cfg: dict):
        from monai.networks.blocks import TransformerBlock
        from monai.networks.nets import ViT

        super().__init__()
        m = cfg["model"]
        shape = StackConfig.from_dict(cfg["data"]).stack_shape()
        self.patch, d, dd = int(m["patch"]), int(m["dim"]), int(m["decoder_dim"])
        vit = dict(in_channels=1, img_size=shape, patch_size=self.patch, hidden_size=d, mlp_dim=4 * d,
                   num_layers=int(m["depth"]), num_heads=int(m["heads"]), qkv_bias=True)
        self.pet, self.ct = ViT(**vit), ViT(**vit)
        self.q_embed, self.kv_embed = nn.Linear(d, dd), nn.Linear(d, dd)
        self.blocks = nn.ModuleList([TransformerBlock(dd, 4 * dd, int(m["decoder_heads"]), qkv_bias=True,
                                                      with_cross_attention=True) for _ in range(int(m["decoder_depth"]))])
        self.head = nn.Linear(dd, self.patch**3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """PET masked (masked patches zeroed), CT complete -> (B, N, p^3) reconstructed PET patches."""
        keep = (~mask).to(image.dtype)[..., None]
        pet = patchify(image[:, :1], self.patch) * keep  # zero the masked patches, keep all tokens
        z_pet, _ = self.pet(unpatchify(pet, self.patch, token_grid(image.shape[2:], self.patch), 1))
        z_ct, _ = self.ct(image[:, 1:2])
        q, kv = self.q_embed(z_pet), self.kv_embed(z_ct)
        for blk in self.blocks:
            q = blk(q, context=kv)
        return self.head(q)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", "--cpu-smoke", dest="smoke", action="store_true", help="tiny ViTs on the CPU")
    ap.add_argument("--batch", type=int, default=None, help="batch (default 24; smoke 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 10; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; smoke 1)")
    ap.add_argument("--compile", action="store_true", help="also measure ours with torch.compile")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default 8; smoke 0)")
    ap.add_argument("--loader-items", type=int, default=None, help="stacks read for the loader rate")
    ap.add_argument("--peak-tflops", type=float, default=BF16_PEAK / 1e12, help="bf16 dense peak for the MFU")
    ap.add_argument("--out", type=Path, default=Path("bench_fratmae.json"))
    args = ap.parse_args(argv)

    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    preset = "tiny" if args.smoke else "gpu"
    cfg = deep_merge(DEFAULT_CONFIG, get_preset(preset)["task"])
    from petctfm.methods.fratmae.fratmae import validate_config

    validate_config(cfg)
    bs = args.batch or (2 if args.smoke else 24)
    steps, warmup = args.steps or (2 if args.smoke else 10), args.warmup or (1 if args.smoke else 3)
    bf16 = dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    shape = StackConfig.from_dict(cfg["data"]).stack_shape()
    n = FratMAE(cfg).n_tokens
    n_keep = n_visible(n, float(cfg["mask"]["ratio"]))
    result = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "preset": preset, "stack_shape": list(shape), "tokens_per_modality": n, "batch": bs,
              "peak_tflops": args.peak_tflops, "smoke": bool(args.smoke), "runs": []}

    def make_batch(b):
        g = torch.Generator().manual_seed(0)
        perm = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
        return {"image": torch.randn(b, 2, *shape, generator=g), "target": torch.arange(b) % 2, "perm": perm,
                "text": torch.randint(3, 20, (b, text_length(cfg["context_align"]["tokenizer"])), generator=g)}

    def ours_step(model, batch):
        out = model(batch["image"], batch["target"], batch["perm"], batch["text"])
        return fratmae_loss(model, out, batch["image"], batch["target"], batch["text"], cfg)[0]

    def ref_step(model, batch):
        mask = torch.ones_like(batch["perm"], dtype=torch.bool).scatter(1, batch["perm"][:, :n_keep], False)
        pred = model(batch["image"], mask)
        err = (pred.float() - patchify(batch["image"][:, :1], model.patch).float()).square().mean(-1)
        return (err * mask).sum() / mask.sum()

    def dev_batch(b):
        return {k: v.to(dev) for k, v in make_batch(b).items()}

    peak = args.peak_tflops * 1e12
    variants = [("reference", lambda: NaiveFratMAE(cfg), ref_step, False, False),
                ("ours", lambda: FratMAE(cfg), ours_step, dev.type == "cuda", False)]
    if args.compile:
        variants.append(("ours_compile", lambda: FratMAE(cfg), ours_step, dev.type == "cuda", True))
    for name, build, step, fused, comp in variants:
        try:
            r = measure(name, build, step, make_batch, bs, dev, fused=fused, compile_=comp, channels_last=False,
                        warmup=warmup, steps=steps, bf16=bf16)
            torch.manual_seed(0)
            r["flops_per_sample"] = flops_per_sample(build().to(dev), step, dev_batch)
            r["mfu"] = r["samples_per_s"] * r["flops_per_sample"] / peak
        except torch.cuda.OutOfMemoryError as exc:
            r = {"name": name, "error": f"out of memory: {str(exc).splitlines()[0]}"}
            torch.cuda.empty_cache()
        result["runs"].append(r)
        atomic_write_json(args.out, result)
    ref = next(r for r in result["runs"] if r["name"] == "reference")
    for r in result["runs"]:
        if "samples_per_s" in r and "samples_per_s" in ref:
            r["speedup_vs_reference"] = r["samples_per_s"] / ref["samples_per_s"]
        print(f"{r['name']}: " + (f"{r['samples_per_s']:.2f} samples/s, MFU {100 * r['mfu']:.1f} % "
                                  f"({r['flops_per_sample'] / 1e9:.3f} GFLOP/sample), "
                                  f"{r.get('speedup_vs_reference', 1.0):.2f}x the reference" if "mfu" in r else r["error"]))
    atomic_write_json(args.out, result)

    # loader: stacks/s from an on-disk harmonized dataset
    from petctfm.data.loader import patch_loader
    from petctfm.methods.fratmae.context import Vocabulary
    from petctfm.methods.fratmae.stacks import StackDataset
    from toy_dataset import write_bench_dataset

    workers = args.workers if args.workers is not None else (0 if args.smoke else 8)
    items = args.loader_items or (8 if args.smoke else 20 * bs)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_bench_dataset(Path(tmp) / "data", n_cases=3 if args.smoke else 8,
                                   shape=(40, 40, 56) if args.smoke else (200, 200, 320))
        data = StackConfig.from_dict({**cfg["data"], "num_workers": workers, "batch_size": bs})
        ds = StackDataset(root, data, n, float(cfg["mask"]["ratio"]), Vocabulary(cfg["context_align"]["vocab"]), seed=0,
                          tokenizer=cfg["context_align"]["tokenizer"])
        loader = iter(patch_loader(ds))
        t0, got = time.perf_counter(), 0
        while got < items:
            got += next(loader)["image"].shape[0]
        dt = time.perf_counter() - t0
    result["loader"] = {"workers": workers, "stacks": got, "stacks_per_s": got / dt,
                        "case_shape": [40, 40, 56] if args.smoke else [200, 200, 320],
                        "note": "first pass: includes reading, normalizing and resizing each case once per worker"}
    best = max((r for r in result["runs"] if r["name"] != "reference" and "samples_per_s" in r),
               key=lambda r: r["samples_per_s"], default=None)
    if best:
        result["loader"]["keeps_up"] = result["loader"]["stacks_per_s"] >= best["samples_per_s"]
    print(f"loader: {result['loader']['stacks_per_s']:.1f} stacks/s with {workers} workers")
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
