"""Probe arms side by side (issue 15: why did the joint probe sit at chance?): one table of linear probes with
the same protocol, data, subset and seed, including the random-init control and width-matched arms.

Usage::

    python benchmarks/probe_arms.py --data D --out P --seeds 0,1 \\
        --arm joint=RUNS/joint_s0 --arm joint2=RUNS/joint_s0,RUNS/joint_s1 --arm sep=RUNS/pet_s0,RUNS/ct_s0 \\
        --arm random_joint=random:RUNS/joint_s0 --points all,enc,dec

Each ``--arm NAME=RUN[,RUN...]`` is one probe (encoders side by side); every arm runs for every probe-point
set in ``--points`` (``;``-free names: all, enc, dec, enc0, ...) and every probe seed. Writes ``P/<arm>_<points>_s<seed>/``
(the files of ``petctfm probe``) and ``P/table.md`` / ``P/table.json`` (mean Dice and mean AP with 95% bootstrap CIs
over test cases, mean prevalence = AP's chance level, pooled Dice, feature width, seconds). Not a test: the numbers
go into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    from petctfm.io.atomic import atomic_write_json, atomic_write_text
    from petctfm.methods.probe import ProbeConfig, run_probe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--arm", action="append", required=True, metavar="NAME=RUN[,RUN]")
    p.add_argument("--points", default="all", help="comma list of probe-point sets: all, enc, dec, encK")
    p.add_argument("--seeds", default="0")
    p.add_argument("--kshot", type=int, default=5)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    out = Path(args.out)
    rows = json.loads((out / "table.json").read_text()) if (out / "table.json").is_file() else []
    done = {(r["arm"], r["points"], r["seed"]) for r in rows}
    for arm in args.arm:
        name, runs = arm.split("=", 1)
        for points in args.points.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                if (name, points, seed) in done:
                    continue
                t0 = time.perf_counter()
                cfg = ProbeConfig(kshot=args.kshot, steps=args.steps, points=points, seed=seed)
                s = run_probe(args.data, runs.split(","), out / f"{name}_{points}_s{seed}", cfg)
                rows.append({"arm": name, "encoders": runs, "points": points, "seed": seed,
                             "width": s["head_in_channels"], "dice": s["dice"], "ap": s["ap"],
                             "prevalence": s["prevalence"]["mean"], "dice_pooled": s["dice_pooled"],
                             "train_ap_sampled": s["fit"]["train_ap_sampled"], "seconds": time.perf_counter() - t0})
                atomic_write_json(out / "table.json", rows)
                print(name, points, seed, f"AP {s['ap']['mean']:.4f} Dice {s['dice']['mean']:.3f}", flush=True)
    lines = ["| arm | encoders | points | seed | width | mean Dice [95% CI] | mean AP [95% CI] | prevalence | pooled Dice | s |",
             "| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        d, a = r["dice"], r["ap"]
        lines.append(f"| {r['arm']} | {r['encoders']} | {r['points']} | {r['seed']} | {r['width']} | "
                     f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}] | {a['mean']:.4f} [{a['ci_low']:.4f}, "
                     f"{a['ci_high']:.4f}] | {r['prevalence']:.5f} | {r['dice_pooled']:.3f} | {r['seconds']:.0f} |")
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
