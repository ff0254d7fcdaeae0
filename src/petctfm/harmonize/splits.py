"""Patient-level, stratified train/val/test splits with nested label fractions and k-shot subsets.

* Patients (all studies of one patient together) are grouped into strata by (site, tracer, lesion-positive),
  taken from the patient's first case; a patient is positive if any of its cases has a lesion.
* Strata are listed in a fixed order, patients shuffled within each stratum (``seed``), and the concatenated
  list is assigned by a repeating pattern of 10 slots (7 train, 1 val, 2 test). Systematic sampling over a
  stratum-sorted list is proportional stratification, and unlike per-stratum rounding it also gives small
  datasets a val and a test patient (6 patients -> 4/1/1).
* Label fractions (1, 5, 10, 20, 40, 100 % of the training cases) are prefixes of ONE stratified ordering
  of the training cases, so each is a subset of the next; each has at least one case, and the ordering
  starts with a lesion-positive case (when there is one), so that even a one-case fraction of a small dataset
  has a lesion to learn from (a negative control alone teaches segmentation nothing). k-shot subsets
  (k = 1, 5, 10) are prefixes of the lesion-positive training cases in that ordering (nested; fewer when
  the training split has fewer positive cases).
* ``holdout_site``: every patient with a case from that site goes to the ``holdout`` list, out of
  train/val/test, the fractions and the k-shot subsets (the autoPET II out-of-domain setting); the other
  patients are split as above. Statistics computed over ``train`` (normalization) then never see the site.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from petctfm.core.errors import InputError

PATTERN = ["train", "test", "train", "val", "train", "train", "test", "train", "train", "train"]
FRACTIONS = (1, 5, 10, 20, 40, 100)
KSHOTS = (1, 5, 10)
#: The splits.json lists that hold case ids, each case in one of them (``holdout`` only with a ``holdout_site``).
CASE_SPLITS = ("train", "val", "test", "holdout")


def _stratified_order(items: list[str], strata: dict[str, tuple], rng: np.random.Generator) -> list[str]:
    """Interleave strata proportionally: item j of a stratum of size n gets key (j + u) / n, sorted."""
    groups: dict[tuple, list[str]] = {}
    for it in sorted(items):
        groups.setdefault(strata[it], []).append(it)
    keyed = []
    for key in sorted(groups):
        members = list(groups[key])
        rng.shuffle(members)
        n = len(members)
        for j, it in enumerate(members):
            keyed.append(((j + rng.random()) / n, it))
    return [it for _, it in sorted(keyed)]


def make_splits(cases: list[dict[str, Any]], seed: int = 0, holdout_site: str | None = None) -> dict[str, Any]:
    """Splits from case records with ``case_id``, ``patient``, ``site``, ``tracer``, ``positive`` (bool);
    with ``holdout_site``, that site's patients go to ``holdout`` (and ``holdout_site`` is recorded)."""
    held: list[str] = []
    if holdout_site is not None:
        sites = sorted({str(c.get("site")) for c in cases})
        if holdout_site not in sites:
            raise InputError(f"--holdout-site {holdout_site!r}: no case from that site (sites: {', '.join(sites)})")
        out_patients = {c["patient"] for c in cases if str(c.get("site")) == holdout_site}
        held = sorted(c["case_id"] for c in cases if c["patient"] in out_patients)
        cases = [c for c in cases if c["patient"] not in out_patients]
    rng = np.random.default_rng(seed)
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for c in sorted(cases, key=lambda c: c["case_id"]):
        by_patient.setdefault(c["patient"], []).append(c)
    stratum = {p: (str(cs[0].get("site")), str(cs[0].get("tracer")), any(c["positive"] for c in cs))
               for p, cs in by_patient.items()}
    ordered: list[str] = []
    for key in sorted(set(stratum.values())):
        members = sorted(p for p in by_patient if stratum[p] == key)
        rng.shuffle(members)
        ordered.extend(members)
    assignment = {p: PATTERN[i % len(PATTERN)] for i, p in enumerate(ordered)}
    out: dict[str, Any] = {"seed": int(seed), "unit": "patient", "pattern": "7 train : 1 val : 2 test"}
    for split in ("train", "val", "test"):
        out[split] = sorted(c["case_id"] for p, cs in by_patient.items() if assignment[p] == split for c in cs)
    case_of = {c["case_id"]: c for c in cases}
    train = out["train"]
    order = _stratified_order(train, {cid: (str(case_of[cid].get("site")), str(case_of[cid].get("tracer")),
                                            bool(case_of[cid]["positive"])) for cid in train}, rng)
    first_pos = next((i for i, cid in enumerate(order) if case_of[cid]["positive"]), 0)
    if order:
        order.insert(0, order.pop(first_pos))  # every fraction holds a lesion case
    out["fractions"] = {str(f): sorted(order[: max(1, int(round(f / 100 * len(order))))]) if order else []
                        for f in FRACTIONS}
    positives = [cid for cid in order if case_of[cid]["positive"]]
    out["kshot"] = {str(k): sorted(positives[:k]) for k in KSHOTS}
    if holdout_site is not None:
        out["holdout_site"], out["holdout"] = holdout_site, held
    return out
