"""Patient-level stratified splits, nested label fractions and k-shot subsets."""

from __future__ import annotations

import numpy as np

from petctfm.harmonize.splits import FRACTIONS, KSHOTS, make_splits


def _records(n_patients: int = 50, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        site, tracer, positive = f"site{p % 3}", "fdg" if p % 4 else "psma", bool(rng.random() < 0.6)
        for s in range(1 + (p % 5 == 0)):  # every 5th patient has two studies
            out.append({"case_id": f"hc_{p:03d}{s}", "patient": f"hp_{p:03d}", "site": site, "tracer": tracer,
                        "positive": positive and s == 0})
    return out


def test_patient_level_disjoint_and_stratified():
    recs = _records()
    sp = make_splits(recs, seed=3)
    sets = {k: set(sp[k]) for k in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == {r["case_id"] for r in recs}
    split_of = {c: k for k, v in sets.items() for c in v}
    by_patient: dict[str, set] = {}
    for r in recs:
        by_patient.setdefault(r["patient"], set()).add(split_of[r["case_id"]])
    assert all(len(s) == 1 for s in by_patient.values())  # both studies of a patient in one split
    n = len(by_patient)
    n_train = len({r["patient"] for r in recs if r["case_id"] in sets["train"]})
    assert 0.6 * n <= n_train <= 0.8 * n and sets["val"] and sets["test"]
    for site in ("site0", "site1", "site2"):  # every site appears in train and test
        for split in ("train", "test"):
            assert any(r["site"] == site for r in recs if r["case_id"] in sets[split])


def test_fractions_and_kshot_nested_subsets_of_train():
    recs = _records()
    sp = make_splits(recs, seed=1)
    train = set(sp["train"])
    prev: set = set()
    for f in FRACTIONS:
        cur = set(sp["fractions"][str(f)])
        assert prev <= cur <= train and len(cur) >= 1
        assert len(cur) == max(1, round(f / 100 * len(train)))
        prev = cur
    assert prev == train
    positive = {r["case_id"] for r in recs if r["positive"]}
    assert set(sp["fractions"]["1"]) & positive  # even the smallest fraction has a lesion case
    prev = set()
    for k in KSHOTS:
        cur = set(sp["kshot"][str(k)])
        assert prev <= cur <= train & positive and len(cur) == min(k, len(train & positive))
        prev = cur


def test_deterministic_by_seed_and_small_datasets():
    recs = _records()
    assert make_splits(recs, seed=5) == make_splits(list(reversed(recs)), seed=5)
    assert make_splits(recs, seed=5)["train"] != make_splits(recs, seed=6)["train"]
    small = make_splits(_records(6), seed=0)
    assert len(small["val"]) >= 1 and len(small["test"]) >= 1 and len(small["train"]) >= 3
    assert make_splits([], seed=0)["fractions"]["100"] == []
