"""Seconds per case of `petctfm harmonize` on one core (SimpleITK single-threaded, one process).

Usage::

    petctfm synth --out /tmp/full --cases 2 --seed 3 --size full --formats autopet,dicom
    python benchmarks/bench_harmonize.py --in /tmp/full/autopet --in /tmp/full/dicom [--spacing 2 2 3]

For every input folder it discovers the cases, harmonizes each one into a temporary dataset (no
thumbnails; rendering is a separate cost reported with --thumbnails) and prints seconds per case, the
source CT/PET sizes and the harmonized shape. Not a timed test: numbers go into docs/harmonize.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="inputs", action="append", required=True)
    p.add_argument("--spacing", nargs=3, type=float, default=[2.0, 2.0, 3.0])
    p.add_argument("--thumbnails", action="store_true")
    args = p.parse_args()

    import json

    import SimpleITK as sitk

    from petctfm.harmonize.discover import discover
    from petctfm.harmonize.pipeline import process_case

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus visible; 1 thread used")
    for root in args.inputs:
        t0 = time.perf_counter()
        cases = discover([root])
        print(f"{root}: discovery {time.perf_counter() - t0:.2f} s for {len(cases)} case(s)")
        with tempfile.TemporaryDirectory() as out:
            times = []
            for c in cases:
                t0 = time.perf_counter()
                r = process_case(c, out, {"spacing": tuple(args.spacing), "thumbnails": args.thumbnails, "threads": 1})
                dt = time.perf_counter() - t0
                if r["status"] != "done":
                    print(f"  {c.rel}: FAILED {r['reason']}")
                    continue
                times.append(dt)
                meta = json.load(open(os.path.join(out, "cases", c.case_id, "meta.json")))
                print(f"  {c.fmt:8s} {c.rel:20s} {dt:6.2f} s  PET spacing {meta['qa']['pet_spacing']} "
                      f"CT spacing {meta['qa']['ct_spacing']} -> shape {meta['shape']}")
            if times:
                print(f"{root}: {sum(times) / len(times):.2f} s/case over {len(times)} case(s)")


if __name__ == "__main__":
    main()
