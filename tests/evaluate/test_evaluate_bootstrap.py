"""Bootstrap CIs, breakdowns and the paired Wilcoxon comparison."""

import math

import numpy as np
import pytest

from petctfm.evaluate.bootstrap import aggregate, mean_ci, median_ci, paired_comparison


def test_mean_ci_contains_mean_reproducible_and_seed_dependent():
    x = np.random.default_rng(0).normal(0.7, 0.1, 40)
    a = mean_ci(x, n_resamples=1000, seed=0)
    assert a["n"] == 40 and a["mean"] == pytest.approx(x.mean())
    assert a["ci_low"] < a["mean"] < a["ci_high"]
    # the CI width is about 2 * 1.96 * SE of the mean
    se = x.std(ddof=1) / math.sqrt(40)
    assert 0.7 * 3.92 * se < a["ci_high"] - a["ci_low"] < 1.3 * 3.92 * se
    assert mean_ci(x, 1000, seed=0) == a
    b = mean_ci(x, 1000, seed=1)
    assert (b["ci_low"], b["ci_high"]) != (a["ci_low"], a["ci_high"])


def test_mean_ci_ignores_nan_and_degenerate_cases():
    r = mean_ci([0.5, float("nan"), None, "", 0.7], 200, 0)
    assert r["n"] == 2 and r["mean"] == pytest.approx(0.6)
    one = mean_ci([0.3], 200, 0)
    assert one["ci_low"] == one["ci_high"] == 0.3
    none = mean_ci([float("nan")], 200, 0)
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_wilcoxon_known_paired_sets():
    a = [0.8, 0.7, 0.9, 0.6, 0.75]
    # all five differences positive: exact two-sided p = 2 / 2^5, statistic min(W+, W-) = 0
    r = paired_comparison(a, [v - d for v, d in zip(a, [0.1, 0.2, 0.05, 0.15, 0.3])], 500, 0)
    assert r["wilcoxon_statistic"] == 0 and r["p_value"] == pytest.approx(2 / 32)
    assert r["wins_a"] == 5 and r["mean_diff"] == pytest.approx(0.16)
    assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
    # differences 1, -2, 3, 4, 5: W- = 2, P(W <= 2) = 3/32 ({}, {1}, {2}) -> two-sided p = 6/32
    b = [0, 2, 0, 0, 0]
    a2 = [1, 0, 3, 4, 5]
    r2 = paired_comparison(a2, b, 500, 0)
    assert r2["wilcoxon_statistic"] == 2 and r2["p_value"] == pytest.approx(6 / 32)
    # NaN pairs are dropped (negative cases have no Dice)
    r3 = paired_comparison(a2 + [float("nan")], b + [0.5], 500, 0)
    assert r3["n"] == 5 and r3["p_value"] == pytest.approx(6 / 32)
    same = paired_comparison([0.5, 0.6], [0.5, 0.6], 100, 0)
    assert same["ties"] == 2 and math.isnan(same["p_value"])


def test_aggregate_breakdown_groups():
    rows = [{"case_id": f"c{i}", "site": "A" if i < 3 else "B", "dice": d}
            for i, d in enumerate([0.9, 0.8, 0.7, 0.2, float("nan")])]
    out = aggregate(rows, ["dice"], ["site", "tracer"], 100, 0)
    by = {(r["group_by"], r["group"]): r for r in out}
    assert set(by) == {("all", "all"), ("site", "A"), ("site", "B")}  # no tracer column -> no block
    assert by[("all", "all")]["n"] == 4 and by[("all", "all")]["n_cases"] == 5
    assert by[("site", "A")]["mean"] == pytest.approx(0.8)
    assert by[("site", "B")]["n"] == 1 and by[("site", "B")]["mean"] == pytest.approx(0.2)


def test_bootstrap_ci_is_scipys_percentile_bootstrap_and_skips_undefined_resamples():
    from scipy.stats import bootstrap

    from petctfm.evaluate.bootstrap import bootstrap_ci

    x = np.random.default_rng(3).normal(0.5, 0.2, 25)
    ref = bootstrap((x,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(7),
                    vectorized=True).confidence_interval
    assert mean_ci(x, 500, seed=7)["ci_low"] == ref.low and mean_ci(x, 500, seed=7)["ci_high"] == ref.high
    # one statistic per resample (staging's metrics) gives the same interval as the vectorized form
    assert bootstrap_ci(lambda i: x[i].mean(), 25, 500, 7) == bootstrap_ci(lambda i: x[i].mean(-1), 25, 500, 7,
                                                                         vectorized=True)
    y = np.array([0, 1] * 3)
    lo, hi = bootstrap_ci(lambda i: float("nan") if len(set(y[i])) < 2 else y[i].mean(), 6, 200, 0)
    assert 0 < lo <= hi < 1  # one-class resamples are left out, not NaN
    assert all(math.isnan(v) for v in bootstrap_ci(lambda i: 1.0, 0, 100, 0))


def test_median_ci_is_scipys_percentile_bootstrap_of_the_median():
    from scipy.stats import bootstrap

    x = np.random.default_rng(5).lognormal(-3, 1, 31)
    ref = bootstrap((x,), np.median, n_resamples=500, method="percentile", rng=np.random.default_rng(7),
                    vectorized=True).confidence_interval
    r = median_ci(list(x) + [float("nan")], 500, seed=7)
    assert r["n"] == 31 and r["median"] == float(np.median(x))
    assert (r["ci_low"], r["ci_high"]) == (ref.low, ref.high)
    assert median_ci([0.2, 0.2], 100, 0) == {"n": 2, "median": 0.2, "ci_low": 0.2, "ci_high": 0.2}
    assert median_ci([], 100, 0)["n"] == 0 and math.isnan(median_ci([], 100, 0)["median"])
