"""Benchmark the synthetic phantom generator (not a test): N cases of one size with K worker processes.

    python benchmarks/bench_synth.py --cases 100 --size small --workers 2

Prints seconds per case and cases per second. Cases are generated in memory only (no files written), so
this measures `petctfm.synth.generator.generate_case` alone, not the writers.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # avoid K x cores threads


def _one(args: tuple[int, int, str]) -> tuple[float, str]:
    from petctfm.synth.generator import generate_case

    index, seed, size = args
    t0 = time.perf_counter()
    case = generate_case(index, seed, size)
    return time.perf_counter() - t0, case.meta["site"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--size", default="small", choices=("tiny", "small", "full"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    jobs = [(i, args.seed, args.size) for i in range(args.cases)]
    t0 = time.perf_counter()
    if args.workers <= 1:
        results = [_one(j) for j in jobs]
    else:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        with ProcessPoolExecutor(max_workers=args.workers, initializer=_init_worker, initargs=(threads,)) as ex:
            results = list(ex.map(_one, jobs))
    wall = time.perf_counter() - t0
    per = [r[0] for r in results]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), python {platform.python_version()}")
    print(f"size={args.size} cases={args.cases} workers={args.workers}")
    print(f"per case: mean {sum(per) / len(per):.2f} s, min {min(per):.2f} s, max {max(per):.2f} s")
    print(f"wall {wall:.1f} s -> {args.cases / wall:.3f} cases/s")


if __name__ == "__main__":
    main()
