"""Aggregates over cases: means with percentile-bootstrap 95% CIs, group breakdowns, paired comparisons.

This module is the only bootstrap code in petctfm (evaluation tables, the probe, staging metrics).

- :func:`bootstrap_ci`: percentile bootstrap CI of any statistic of resampled case indices: ``n_resamples``
  rows of ``n`` indices drawn with replacement (``numpy.random.default_rng(seed).integers(0, n, (R, n))``,
  the draws of ``scipy.stats.bootstrap``), resamples where the statistic is undefined (NaN, e.g. one class
  only for an AUC) skipped, quantiles by ``scipy.stats.quantile`` (linear), as ``scipy.stats.bootstrap``'s
  ``method="percentile"``: for a mean, the same numbers.
- :func:`mean_ci`: mean of the defined (non-NaN) values and its percentile bootstrap CI (1,000 resamples of
  cases by default, seeded). The percentile method is what FratMAE-style tables report; with fewer than two
  distinct values the CI collapses to the mean (nothing to resample).
- :func:`median_ci`: the same for the median (the statistic of the resamples is their median; organ SUVmean
  agreement reports median |relative error|).
- :func:`paired_comparison`: per-case differences A - B on cases where both are defined; Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences dropped as in Wilcoxon's original
  method) and a bootstrap CI of the mean difference (cases resampled as pairs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np

NAN = float("nan")


def defined(values: Iterable) -> np.ndarray:
    """The finite numeric values of ``values`` as float64 (NaN, None and '' dropped)."""
    out = []
    for v in values:
        if v is None or v == "":
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=np.float64)


def bootstrap_ci(statistic: Callable[[np.ndarray], float | np.ndarray], n: int, n_resamples: int = 1000,
                 seed: int = 0, confidence: float = 0.95, vectorized: bool = False) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of ``statistic`` over resamples of ``n`` cases.

    ``statistic(indices)``: with ``vectorized=False`` it takes one resample's (n,) int64 case indices and
    returns a float; with ``vectorized=True`` it takes all of them, (n_resamples, n), and returns
    (n_resamples,) values. Undefined (non-finite) resample values are skipped; ``(nan, nan)`` when ``n`` or
    ``n_resamples`` is 0 or no resample is defined.
    """
    from scipy import stats

    if n == 0 or n_resamples <= 0:
        return NAN, NAN
    idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    vals = np.asarray(statistic(idx) if vectorized else [statistic(i) for i in idx], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return NAN, NAN
    alpha = np.asarray((1 - confidence) / 2, dtype=np.float64)
    lo, hi = stats.quantile(vals, np.stack([alpha, 1 - alpha]), axis=-1)
    return float(lo), float(hi)


def mean_ci(values: Iterable, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """``{"n", "mean", "ci_low", "ci_high", "median", "std"}`` of the defined values (NaN-safe).

    n = 0 gives NaN everywhere; fewer than two distinct values give a CI equal to the mean.
    """
    x = defined(values)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": NAN, "ci_low": NAN, "ci_high": NAN, "median": NAN, "std": NAN}
    mean = float(x.mean())
    lo = hi = mean
    if n_resamples > 0 and np.unique(x).size > 1:
        lo, hi = bootstrap_ci(lambda i: x[i].mean(axis=-1), n, n_resamples, seed, confidence, vectorized=True)
    return {"n": n, "mean": mean, "ci_low": lo, "ci_high": hi, "median": float(np.median(x)),
            "std": float(x.std(ddof=1)) if n > 1 else 0.0}


def median_ci(values: Iterable, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """``{"n", "median", "ci_low", "ci_high"}`` of the defined values: :func:`mean_ci` with the median as the
    statistic (same resamples, same percentile CI; n = 0 gives NaN, fewer than two distinct values a CI equal to
    the median)."""
    x = defined(values)
    n = len(x)
    if n == 0:
        return {"n": 0, "median": NAN, "ci_low": NAN, "ci_high": NAN}
    med = float(np.median(x))
    lo = hi = med
    if n_resamples > 0 and np.unique(x).size > 1:
        lo, hi = bootstrap_ci(lambda i: np.median(x[i], axis=-1), n, n_resamples, seed, confidence, vectorized=True)
    return {"n": n, "median": med, "ci_low": lo, "ci_high": hi}


def group_rows(rows: Sequence[dict], key: str) -> dict[str, list[dict]]:
    """Rows grouped by ``row[key]`` (missing/empty -> "unknown"), groups in sorted order."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        v = r.get(key)
        groups.setdefault("unknown" if v in (None, "") else str(v), []).append(r)
    return dict(sorted(groups.items()))


def aggregate(rows: Sequence[dict], metrics: Sequence[str], group_by: Sequence[str] = (),
              n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Long table: one dict per (group_by, group, metric) with :func:`mean_ci`'s fields.

    The first rows are over all cases (``group_by="all"``, ``group="all"``); then one block per column in
    ``group_by`` that is present in the rows.
    """
    out = []
    blocks = [("all", {"all": list(rows)})]
    blocks += [(g, group_rows(rows, g)) for g in group_by if any(g in r for r in rows)]
    for by, groups in blocks:
        for name, members in groups.items():
            for m in metrics:
                out.append({"group_by": by, "group": name, "metric": m, "n_cases": len(members),
                            **mean_ci([r.get(m) for r in members], n_resamples, seed)})
    return out


def paired_comparison(a: Sequence, b: Sequence, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Compare paired per-case values ``a`` and ``b`` (same case order): A - B.

    Returns n (pairs with both defined), mean_a, mean_b, mean_diff with its bootstrap CI (ci_low, ci_high),
    median_diff, wins_a / wins_b / ties, and the Wilcoxon signed-rank ``statistic`` and ``p_value``
    (NaN when fewer than one nonzero difference).
    """
    from scipy.stats import wilcoxon

    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    pairs = [(float(x), float(y)) for x, y in zip(a, b)
             if x not in (None, "") and y not in (None, "") and math.isfinite(float(x)) and math.isfinite(float(y))]
    xa = np.array([p[0] for p in pairs])
    xb = np.array([p[1] for p in pairs])
    d = xa - xb
    ci = mean_ci(d, n_resamples, seed)
    stat = p = NAN
    if np.count_nonzero(d) >= 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-n exact/normal-approximation notices
            res = wilcoxon(xa, xb, zero_method="wilcox", alternative="two-sided")
        stat, p = float(res.statistic), float(res.pvalue)
    return {
        "n": len(pairs),
        "mean_a": float(xa.mean()) if len(pairs) else NAN,
        "mean_b": float(xb.mean()) if len(pairs) else NAN,
        "mean_diff": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
        "median_diff": ci["median"],
        "wins_a": int((d > 0).sum()), "wins_b": int((d < 0).sum()), "ties": int((d == 0).sum()),
        "wilcoxon_statistic": stat, "p_value": p,
    }


__all__ = ["defined", "bootstrap_ci", "mean_ci", "median_ci", "group_rows", "aggregate", "paired_comparison"]
