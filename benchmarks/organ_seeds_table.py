"""Seed-averaged organ Dice and SUVmean agreement of several seeds' ``petctfm evaluate --organs`` folders on the
same cases (docs/organs.md): per case and organ the seeds are averaged, then the mean Dice / median |SUVmean
relative error| with bootstrap CIs over cases, and the 9 target classes together.

    python benchmarks/organ_seeds_table.py organs900_s0/eval_8484 organs900_s1/eval_8484 organs900_s2/eval_8484
"""
import csv, math, sys
from collections import defaultdict
from petctfm.evaluate.bootstrap import mean_ci, median_ci
TARGET = ["liver", "spleen", "kidney_left", "kidney_right", "heart", "lung_left", "lung_right", "bladder", "brain"]
d = defaultdict(lambda: defaultdict(list)); r = defaultdict(lambda: defaultdict(list)); seedmeans = defaultdict(list)
for s, folder in enumerate(sys.argv[1:]):
    per = defaultdict(list)
    for row in csv.DictReader(open(f"{folder}/organs_per_case.csv")):
        f = lambda k: float(row[k]) if row[k] not in ("", "nan") else math.nan
        d[row["organ"]][row["case_id"]].append(f("dice")); r[row["organ"]][row["case_id"]].append(f("suv_mean_rel_err"))
        if row["organ"] in TARGET: per[row["case_id"]].append(f("dice"))
    seedmeans[s] = sum(sum(v)/len(v) for v in per.values())/len(per)
avg = lambda v: sum(v)/len(v) if v and all(not math.isnan(x) for x in v) else math.nan
print("per-seed mean Dice over 9 targets (case mean of organ mean):", {s: round(v, 3) for s, v in seedmeans.items()})
case_t = defaultdict(list); pooled = []
for o in list(d):
    dv = {c: avg(v) for c, v in d[o].items()}; rv = {c: avg(v) for c, v in r[o].items()}
    ci = mean_ci(list(dv.values())); m = median_ci([abs(x) for x in rv.values()])
    within = [abs(x) <= 0.05 for x in rv.values() if not math.isnan(x)]
    print(f"{o:16s} Dice {ci['mean']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}] n={ci['n']}  SUV |rel| median {m['median']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] within5 {sum(within)/max(1,len(within)):.2f}")
    if o in TARGET:
        for c, v in dv.items(): case_t[c].append(v)
        pooled += [abs(x) for x in rv.values()]
ct = mean_ci([sum(v)/len(v) for v in case_t.values() if all(not math.isnan(x) for x in v)])
print(f"TARGET mean Dice (per case mean over 9 organs, seeds averaged): {ct['mean']:.3f} [{ct['ci_low']:.3f}, {ct['ci_high']:.3f}] n={ct['n']}")
pm = median_ci(pooled); pw = [x <= 0.05 for x in pooled if not math.isnan(x)]
print(f"TARGET pooled SUV |rel| median {pm['median']:.3f} [{pm['ci_low']:.3f}, {pm['ci_high']:.3f}] within5 {sum(pw)/len(pw):.2f} (n={len(pw)}; CI over case-organs)")
