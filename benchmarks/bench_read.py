"""Seconds to read a whole-body PET/CT pair from NIfTI, the first stage of ``petctfm predict`` and harmonize.

Usage::

    python benchmarks/bench_read.py [--shape 400 400 300] [--ct-shape 512 512 300] [--repeats 3]

Writes a toy whole-body pair (``bench_predict.toy_case``: float32 SUV and int16 CT, gzip NIfTI) to a temporary
folder and times, alternating within each repeat (this machine is noisy; medians are reported):

- ``itk``: SimpleITK's own reader on the two files, one after the other (the reference: what
  ``sitk.ReadImage`` costs, with ITK 5 silently turning NaN voxels of a NIfTI into 0);
- ``read_image``: petctfm's reader (floating-point NIfTI voxels through nibabel so that NaN/inf survive and
  QA can refuse them; integer NIfTI through ITK), one after the other;
- ``load_case_images``: what predict and harmonize call, PET and CT read by one thread each.

Prints one JSON object with the medians and the ratios ``read_image / itk`` (the price of catching NaN) and
``load_case_images / itk`` (what the two threads win back). Not a timed test: numbers go to
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[400, 400, 300], help="PET voxels (x y z)")
    ap.add_argument("--ct-shape", type=int, nargs=3, default=[512, 512, 300], help="CT voxels (x y z)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_predict import toy_case

    from petctfm.harmonize.discover import SourceCase
    from petctfm.harmonize.load import load_case_images
    from petctfm.io.images import read_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pet").mkdir()
        (tmp / "ct").mkdir()
        pet, _ = toy_case(tmp / "pet", tuple(args.shape), 2.0)
        _, ct = toy_case(tmp / "ct", tuple(args.ct_shape), 2.0, seed=1)
        case = SourceCase("bench", "pairs", "/", str(pet), {"suv": str(pet), "ct": str(ct)})
        ways = {
            "itk": lambda: [sitk.ReadImage(str(p)) for p in (pet, ct)],
            "read_image": lambda: [read_image(p) for p in (pet, ct)],
            "load_case_images": lambda: load_case_images(case),
        }
        for fn in ways.values():  # warm the page cache and the imports
            fn()
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(args.repeats):
            for name, fn in ways.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in (pet, ct)}
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    result = {
        "pet_shape": args.shape, "ct_shape": args.ct_shape, "file_mb": sizes, "repeats": args.repeats,
        "seconds_median": med,
        "ratio_read_image_vs_itk": round(med["read_image"] / med["itk"], 3),
        "ratio_load_case_images_vs_itk": round(med["load_case_images"] / med["itk"], 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
