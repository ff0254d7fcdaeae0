"""Two promptable designs (or any two arms) head to head from their ``petctfm experiment interactive`` outputs.

Each arm is one or more experiment folders (one per training seed) of the same data and protocols; every
number is a per-unit mean over the arm's seeds first (unit: a case for one click per lesion, a case and target
for the corrective protocol), then a bootstrap CI over units, and B - A paired over the units both arms have
(:func:`petctfm.evaluate.bootstrap.paired_comparison`). Reads ``steps.csv`` only (columns of
:mod:`petctfm.experiments.interactive`); prints a markdown table. docs/promptable.md.

    python benchmarks/compare_interactive.py --a h2h/eval_cached_s0 h2h/eval_cached_s1 \
        --b h2h/eval_sam_s0 h2h/eval_sam_s1 --names cached sam
"""
import argparse
import csv
import pathlib
import statistics
from collections import defaultdict

from petctfm.evaluate.bootstrap import mean_ci, paired_comparison

CLICKS = (1, 3, 5)


def read(folder: pathlib.Path) -> dict:
    """``{measure: {unit: value}}`` of one experiment folder, and ``"later_s"``: the per-click seconds of every
    later corrective click (the ``seconds`` column is cumulative per target)."""
    out: dict = defaultdict(dict)
    later: list[float] = []
    prev: dict = {}
    with open(folder / "steps.csv", newline="") as f:
        for r in csv.DictReader(f):
            clicks, dice = int(r["clicks"]), r["dice"]
            if r["protocol"] == "one_per_lesion" and clicks == 1 and dice != "":
                out[f"one click per lesion, {r['arm']}"][r["case_id"]] = float(dice)
            if r["protocol"] != "corrective" or r["arm"] != "model":
                continue
            unit = (r["case_id"], r["target"])
            if r["seconds"] != "":
                if clicks > 1 and unit in prev:
                    later.append(float(r["seconds"]) - prev[unit])
                prev[unit] = float(r["seconds"])
            if r["kind"] == "lesion":
                group = "corrective, one lesion"
            elif r["kind"] == "organ":
                group = "corrective, held-out organ" if r["seen"] == "False" else "corrective, seen organ"
            else:  # "lesions": every lesion of the case at once
                group = None
            if group and clicks in CLICKS and dice != "":
                out[f"{group}, {clicks} click{'s' if clicks > 1 else ''}"][unit] = float(dice)
    out["later_s"] = later
    return out


def seed_mean(runs: list[dict], measure: str) -> dict:
    acc: dict = defaultdict(list)
    for run in runs:
        for unit, v in run.get(measure, {}).items():
            acc[unit].append(v)
    return {u: sum(v) / len(v) for u, v in acc.items()}


def fmt(ci: dict) -> str:
    return f"{ci['mean']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", nargs="+", required=True, help="arm A's experiment folders (one per seed)")
    ap.add_argument("--b", nargs="+", required=True, help="arm B's experiment folders (one per seed)")
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    a = ap.parse_args()
    arms = [[read(pathlib.Path(p)) for p in a.a], [read(pathlib.Path(p)) for p in a.b]]
    na, nb = a.names
    measures = sorted({m for runs in arms for run in runs for m in run if m != "later_s"},
                      key=lambda m: (not m.startswith("one"), m))
    print(f"| measure | units | {na} | {nb} | {nb} - {na} (paired) | wins {nb} / {na} / ties |")
    print("| --- | ---: | --- | --- | --- | --- |")
    for m in measures:
        va, vb = seed_mean(arms[0], m), seed_mean(arms[1], m)
        units = sorted(set(va) & set(vb))
        if not units:
            continue
        cmp = paired_comparison([vb[u] for u in units], [va[u] for u in units])
        print(f"| {m} | {len(units)} | {fmt(mean_ci([va[u] for u in units]))} | {fmt(mean_ci([vb[u] for u in units]))} "
              f"| {cmp['mean_diff']:+.3f} [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}] | "
              f"{cmp['wins_a']} / {cmp['wins_b']} / {cmp['ties']} |")
    for name, runs in zip(a.names, arms):
        iso = [seed_mean(runs, "one click per lesion, iso"), seed_mean(runs, "one click per lesion, model")]
        units = sorted(set(iso[0]) & set(iso[1]))
        cmp = paired_comparison([iso[1][u] for u in units], [iso[0][u] for u in units])
        later = [s for run in runs for s in run["later_s"]]
        timing = (f"; later corrective click median {statistics.median(later):.3f} s ({len(later)} clicks)"
                  if later else "")
        print(f"\n{name}: one click per lesion, model - 41 % isocontour {cmp['mean_diff']:+.3f} "
              f"[{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}] over {len(units)} cases{timing}")


if __name__ == "__main__":
    main()
