"""The statistics of the metabolic network, on a (cases x organs) matrix of uptake.

- :func:`design` / :func:`residualize` / :func:`zscore`: covariates (numeric as they are, categorical one-hot)
  regressed out with scikit-learn's ``LinearRegression``, then each organ z-scored;
- :func:`pearson`: correlation and two-sided p (the t-test of ``scipy.stats.pearsonr``, vectorized);
- :func:`partial`: partial correlation from the Ledoit-Wolf shrunk precision matrix
  (``sklearn.covariance.LedoitWolf``), p from the t-test with ``n - 2 - (p - 2)`` degrees of freedom
  (approximate: the shrinkage makes it conservative for small n);
- :func:`fdr`: Benjamini-Hochberg over the upper triangle (``scipy.stats.false_discovery_control``);
- :func:`permutation_difference`: per-edge group difference of Fisher-z correlations, group labels permuted
  (all permutations at once, numpy);
- :func:`bootstrap_stability`: the share of bootstrap resamples in which an edge is FDR-significant with the
  full-data sign, and the percentile CI of r;
- :func:`null_splits`: random halves of one cohort, tested like two groups: the false-positive rate.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

_R_MAX = 1.0 - 1e-12


def _numeric(values: Sequence[Any]) -> np.ndarray | None:
    """The values as floats when every present one is a number (missing: NaN), else None."""
    out = []
    for v in values:
        if v is None or (isinstance(v, str) and v.strip() == ""):
            out.append(np.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return None
    return np.array(out, np.float64)


def design(meta: Sequence[dict[str, Any]], columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The covariate matrix of ``columns`` for the cases ``meta``: a numeric column as it is, any other one-hot
    (first level dropped). Returns ``(X (n, k), complete (n,) bool, descriptions)``; a case missing a value is
    not ``complete``. A column with one level adds nothing."""
    n = len(meta)
    blocks: list[np.ndarray] = []
    complete = np.ones(n, bool)
    words: list[str] = []
    for col in columns:
        raw = [m.get(col) for m in meta]
        num = _numeric(raw)
        if num is not None:
            complete &= np.isfinite(num)
            blocks.append(num[:, None])
            words.append(f"{col} (numeric)")
            continue
        labels = [str(v).strip() if v is not None else "" for v in raw]
        complete &= np.array([s != "" for s in labels])
        levels = sorted({s for s in labels if s})
        if len(levels) > 1:
            blocks.append(np.array([[s == lv for lv in levels[1:]] for s in labels], np.float64))
        words.append(f"{col} ({len(levels)} level{'s' if len(levels) != 1 else ''})")
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    return np.where(np.isfinite(x), x, 0.0), complete, words


def residualize(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y`` (n, p) minus its least-squares fit on ``x`` (n, k) with an intercept (sklearn LinearRegression)."""
    from sklearn.linear_model import LinearRegression

    if x.shape[1] == 0:
        return y - y.mean(axis=0)
    return y - LinearRegression().fit(x, y).predict(x)


def zscore(y: np.ndarray) -> np.ndarray:
    """Each column to mean 0, SD 1 (ddof 1); a constant column stays 0."""
    sd = y.std(axis=0, ddof=1)
    return (y - y.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _t_p(r: np.ndarray, dof: float) -> np.ndarray:
    """Two-sided p of correlations ``r`` under the t-test with ``dof`` degrees of freedom."""
    r = np.clip(r, -_R_MAX, _R_MAX)
    t = r * np.sqrt(dof / (1.0 - r ** 2))
    return 2.0 * sps.t.sf(np.abs(t), dof)


def corr(z: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix of the columns of ``z`` (n, p) (or of each ``z[b]`` for a stack (B, n, p))."""
    c = z - z.mean(axis=-2, keepdims=True)
    cov = np.einsum("...ni,...nj->...ij", c, c)
    d = np.sqrt(np.einsum("...ii->...i", cov))
    d = np.where(d > 0, d, np.inf)
    return cov / (d[..., :, None] * d[..., None, :])


def pearson(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(r, p)`` (p, p) matrices; p is ``scipy.stats.pearsonr``'s two-sided t-test (diagonal r 1, p 0)."""
    n = z.shape[0]
    r = corr(z)
    p = _t_p(r, n - 2)
    np.fill_diagonal(r, 1.0)
    np.fill_diagonal(p, 0.0)
    return r, p


def partial(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(partial r, p)`` from the Ledoit-Wolf precision matrix: ``-P_ij / sqrt(P_ii P_jj)``; p from the t-test
    with ``n - p`` degrees of freedom (conditioning on the other ``p - 2`` organs)."""
    from sklearn.covariance import LedoitWolf

    n, k = z.shape
    prec = LedoitWolf().fit(z).precision_
    d = np.sqrt(np.diag(prec))
    pr = -prec / (d[:, None] * d[None, :])
    np.fill_diagonal(pr, 1.0)
    p = _t_p(pr, max(n - k, 1))
    np.fill_diagonal(p, 0.0)
    return pr, p


def fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p of a symmetric (..., k, k) p matrix, over its upper triangle (each matrix
    of a stack on its own); diagonal 0."""
    k = p.shape[-1]
    iu = np.triu_indices(k, 1)
    out = np.zeros_like(p)
    if len(iu[0]) == 0:
        return out
    adj = sps.false_discovery_control(p[..., iu[0], iu[1]], axis=-1, method="bh")
    out[..., iu[0], iu[1]] = adj
    out[..., iu[1], iu[0]] = adj
    return out


def _fisher(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -_R_MAX, _R_MAX))


def _subset_corr(g: np.ndarray, x: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Correlation matrices of the rows selected by each row of ``g`` (P, n) (0/1 weights): (P, p, p)."""
    k = x.shape[1]
    m = g.sum(axis=1)[:, None]
    s1 = g @ x
    s2 = (g @ xx).reshape(len(g), k, k)
    cov = s2 - s1[:, :, None] * s1[:, None, :] / m[:, :, None]
    d = np.sqrt(np.einsum("pii->pi", cov))
    d = np.where(d > 0, d, np.inf)
    return cov / (d[:, :, None] * d[:, None, :])


def permutation_difference(x: np.ndarray, in_a: np.ndarray, n_perm: int, rng: np.random.Generator
                           ) -> dict[str, np.ndarray]:
    """Per-edge difference of the correlation between the cases ``in_a`` (bool, n) and the others, in ``x``
    (n, p): statistic ``atanh(r_a) - atanh(r_b)``, two-sided p = (1 + #{|perm| >= |observed|}) / (1 + n_perm)
    over ``n_perm`` permutations of the labels (group sizes kept), all computed at once.

    Returns ``r_a``, ``r_b``, ``diff`` (r_a - r_b), ``stat`` and ``p`` (p, p) matrices."""
    in_a = np.asarray(in_a, bool)
    xx = (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    labels = np.vstack([in_a, rng.permuted(np.tile(in_a, (n_perm, 1)), axis=1)]).astype(np.float64)
    ra = _subset_corr(labels, x, xx)
    rb = _subset_corr(1.0 - labels, x, xx)
    stat = _fisher(ra) - _fisher(rb)
    exceed = (np.abs(stat[1:]) >= np.abs(stat[0]) - 1e-12).sum(axis=0)
    p = (1.0 + exceed) / (1.0 + n_perm)
    np.fill_diagonal(p, 1.0)
    return {"r_a": ra[0], "r_b": rb[0], "diff": ra[0] - rb[0], "stat": stat[0], "p": p}


def edges(r: np.ndarray, q: np.ndarray, alpha: float, min_r: float = 0.0) -> np.ndarray:
    """The edge rule, its one owner: (..., p, p) bool, BH-adjusted p ``q`` < ``alpha`` and |``r``| >= ``min_r``
    (an effect-size floor; 0 = significance alone)."""
    return (q < alpha) & (np.abs(r) >= min_r)


def bootstrap_stability(z: np.ndarray, n_boot: int, alpha: float, rng: np.random.Generator,
                        chunk: int = 100, min_r: float = 0.0) -> dict[str, np.ndarray]:
    """Edge stability over ``n_boot`` case resamples of ``z`` (n, p): ``stability`` = share of resamples in which
    the pair is an edge (:func:`edges`: Pearson, BH at ``alpha``, |r| >= ``min_r``) with the sign of the
    full-data r; ``ci_low`` / ``ci_high`` = 2.5 / 97.5 percentiles of r."""
    n, k = z.shape
    r_full = corr(z)
    hits = np.zeros((k, k))
    rs = []
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        r = corr(z[idx])
        p = fdr(_t_p(r, n - 2))
        hits += (edges(r, p, alpha, min_r) & (np.sign(r) == np.sign(r_full))).sum(axis=0)
        rs.append(r)
        done += b
    r_all = np.concatenate(rs)
    return {"stability": hits / n_boot, "ci_low": np.percentile(r_all, 2.5, axis=0),
            "ci_high": np.percentile(r_all, 97.5, axis=0)}


def null_splits(x: np.ndarray, n_splits: int, n_perm: int, alpha: float, rng: np.random.Generator
                ) -> list[dict[str, Any]]:
    """``n_splits`` random halves of the cases of ``x`` (n, p), each tested like two groups
    (:func:`permutation_difference`): per split the number of edges with raw p < ``alpha`` and with
    BH-adjusted p < ``alpha``, the smallest p, and (key ``_p``) the (p, p) matrix of p. Under the null every
    FDR-significant edge is a false positive.
    """
    n, k = x.shape
    iu = np.triu_indices(k, 1)
    out = []
    for s in range(n_splits):
        in_a = np.zeros(n, bool)
        in_a[rng.permutation(n)[: n // 2]] = True
        res = permutation_difference(x, in_a, n_perm, rng)
        p = res["p"][iu]
        q = sps.false_discovery_control(p, method="bh") if len(p) else p
        out.append({"split": s, "edges": len(p), "raw_p_below_alpha": int((p < alpha).sum()),
                    "fdr_significant": int((q < alpha).sum()), "min_p": float(p.min()) if len(p) else 1.0,
                    "_p": res["p"]})
    return out


__all__ = ["edges", "design", "residualize", "zscore", "corr", "pearson", "partial", "fdr", "permutation_difference",
           "bootstrap_stability", "null_splits"]
