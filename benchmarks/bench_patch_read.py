"""Random 96^3 two-channel patch reads per second from harmonized cases, by storage format.

Usage::

    python benchmarks/bench_patch_read.py [--dataset DATASET] [--shape 2 226 122 395] [--cases 4]

With ``--dataset`` the cases of a harmonized dataset are used (``cases/*/image.npy``); otherwise ``--cases``
random volumes of ``--shape`` (default: the shape of a harmonized full-size synthetic case) are written to a
temporary folder. Each case is also written as compressed ``.npz`` and as NIfTI ``.nii.gz`` (both must be
fully decompressed to read a patch). Reads are with a warm page cache (the files were just written or read),
which is the steady state of a training loader whose dataset fits in RAM; a cold-cache memmap read is bounded
by the disk instead. Prints patches/s per format.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

PATCH = 96


def _patch(img, rng) -> np.ndarray:
    starts = [int(rng.integers(0, max(1, s - PATCH + 1))) for s in img.shape[1:]]
    sl = tuple(slice(s, s + PATCH) for s in starts)
    return np.array(img[(slice(None), *sl)], dtype=np.float32)


def bench(name, opener, paths, n, rng) -> float:
    t0 = time.perf_counter()
    total = 0.0
    for i in range(n):
        img = opener(paths[i % len(paths)])
        total += float(_patch(img, rng)[0, 0, 0, 0])
    dt = time.perf_counter() - t0
    print(f"{name:34s} {n / dt:9.1f} patches/s  ({n} patches, {dt:.2f} s)")
    return n / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset")
    p.add_argument("--shape", nargs=4, type=int, default=[2, 226, 122, 395])
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--n", type=int, default=300, help="patches for the memmap reader")
    args = p.parse_args()
    import nibabel as nib

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.dataset:
            npys = sorted(Path(args.dataset).glob("cases/*/image.npy"))[: args.cases]
        else:
            npys = []
            for i in range(args.cases):
                vol = rng.normal(size=args.shape).astype(np.float32)
                np.save(tmp / f"c{i}.npy", vol)
                npys.append(tmp / f"c{i}.npy")
        npzs, niis = [], []
        for i, path in enumerate(npys):
            vol = np.load(path)
            np.savez_compressed(tmp / f"c{i}.npz", image=vol)
            npzs.append(tmp / f"c{i}.npz")
            nib.save(nib.Nifti1Image(np.moveaxis(vol, 0, -1), np.eye(4)), tmp / f"c{i}.nii.gz")
            niis.append(tmp / f"c{i}.nii.gz")
        shape = np.load(npys[0], mmap_mode="r").shape
        size_mb = os.path.getsize(npys[0]) / 2**20
        print(f"volume {shape} float32, {size_mb:.0f} MB per case (.npy), {len(npys)} cases; patch 2x{PATCH}^3")
        bench(".npy memmap (np.load mmap_mode=r)", lambda q: np.load(q, mmap_mode="r"), npys, args.n, rng)
        bench(".npy full load", lambda q: np.load(q), npys, max(4, args.n // 30), rng)
        bench(".npz compressed full load", lambda q: np.load(q)["image"], npzs, 4, rng)
        bench(".nii.gz full load (nibabel)",
              lambda q: np.moveaxis(np.asarray(nib.load(q).dataobj), -1, 0), niis, 4, rng)


if __name__ == "__main__":
    main()
