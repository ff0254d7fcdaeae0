"""Seed-averaged organ Dice and SUVmean agreement of several seeds' ``petctfm evaluate --organs`` folders on the
same cases (docs/organs.md): per case and organ the seeds' Dice, NSD and SUVmean are averaged, then the
evaluation's own summary (:func:`petctfm.evaluate.organs.organ_summary`, :func:`organ_suv_pooled`: CIs over
cases) and the mean Dice over the target organs per case, with its CI.

    python benchmarks/organ_seeds_table.py organs900_s0/eval_8484 organs900_s1/eval_8484 organs900_s2/eval_8484
"""
import csv
import math
import sys
from collections import defaultdict

from petctfm.evaluate.bootstrap import mean_ci
from petctfm.evaluate.organs import SUV_TARGET_ORGANS, organ_summary, organ_suv_pooled

KEYS = ("dice", "nsd", "suv_mean_true", "suv_mean_pred")


def _float(v: str) -> float:
    return float(v) if v not in ("", "nan") else math.nan


def seed_averaged(folders: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{case: {organ: {dice, nsd, suv_mean_true, suv_mean_pred, suv_mean_rel_err}}}: each value the mean over the
    folders (NaN when any seed's is undefined); the relative error recomputed from the averaged means."""
    acc: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for folder in folders:
        for row in csv.DictReader(open(f"{folder}/organs_per_case.csv", newline="")):
            for k in KEYS:
                acc[row["case_id"]][row["organ"]][k].append(_float(row[k]))
    out: dict = {}
    for case, organs in acc.items():
        out[case] = {}
        for organ, vals in organs.items():
            m = {k: (sum(v) / len(v) if len(v) == len(folders) else math.nan) for k, v in vals.items()}
            t, p = m["suv_mean_true"], m["suv_mean_pred"]
            m["suv_mean_rel_err"] = (p - t) / t if math.isfinite(t) and math.isfinite(p) and t else math.nan
            out[case][organ] = m
    return out


def main(folders: list[str]) -> None:
    per_case = seed_averaged(folders)
    for r in organ_summary(per_case):
        print(f"{r['organ']:16s} Dice {r['dice_mean']:.3f} [{r['dice_ci_low']:.3f}, {r['dice_ci_high']:.3f}]  "
              f"SUV median |rel err| {r['suv_abs_rel_err_median']:.3f} [{r['suv_abs_rel_err_ci_low']:.3f}, "
              f"{r['suv_abs_rel_err_ci_high']:.3f}]  within 5 % {r['suv_within_5pct']:.2f}")
    targets = [o for o in SUV_TARGET_ORGANS if any(o in per_case[c] for c in per_case)]
    case_means = [sum(per_case[c][o]["dice"] for o in targets) / len(targets) for c in per_case
                  if all(o in per_case[c] for o in targets)]
    ci = mean_ci(case_means)
    print(f"target organs ({len(targets)}): mean Dice per case {ci['mean']:.3f} [{ci['ci_low']:.3f}, "
          f"{ci['ci_high']:.3f}] (n = {ci['n']})")
    p = organ_suv_pooled(per_case)
    print(f"target organs pooled: SUV median |rel err| {p['suv_abs_rel_err_median']:.3f} [{p['suv_abs_rel_err_ci_low']:.3f}, "
          f"{p['suv_abs_rel_err_ci_high']:.3f}], within 5 % {p['suv_within_5pct']:.2f} of {p['n_suv']} case-organs")


if __name__ == "__main__":
    main(sys.argv[1:])
