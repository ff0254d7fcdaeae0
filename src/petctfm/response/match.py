"""Lesion correspondence between baseline and follow-up, after registration (docs/response.md).

Input: the baseline lesion labels ``base`` (X, Y, Z, 1..Nb, :func:`petctfm.evaluate.lesions.label_lesions`)
and the follow-up labels ``fu_on_base`` resampled onto the baseline grid (nearest neighbour), plus the
lesion centroids in baseline space (follow-up centroids mapped by the inverse transform).

1. **Overlap edges**: baseline lesion ``i`` and follow-up lesion ``j`` are linked when they share at least
   ``min_overlap`` of the smaller one's voxels on the baseline grid (default 0.1; one shared voxel of a 3-voxel
   lesion is enough, a 1-voxel brush of two large lesions is not).
2. **Distance edges**: lesions left without an overlap edge on both sides are paired one to one by centroid
   distance (``scipy.optimize.linear_sum_assignment`` on the distance matrix), a pair kept when its centroids
   are at most ``max_distance_mm`` apart (default 15 mm: residual misregistration and shrinkage).
3. The **connected components** of that bipartite graph (networkx is not needed: a union-find) are the groups:
   1 baseline + 1 follow-up: ``matched``; 1 + k (k > 1): ``split``; k + 1: ``merged``; k + m (both > 1):
   ``complex``; 1 + 0: ``disappeared``; 0 + 1: ``new``.

Groups are numbered 1.. by the baseline's lesion order (largest baseline lesion first), new lesions last by
follow-up order: the numbers of the report's two MIPs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_OVERLAP = 0.1
MAX_DISTANCE_MM = 15.0


@dataclass
class Group:
    number: int
    status: str  # matched | split | merged | complex | disappeared | new
    baseline: list[int] = field(default_factory=list)  # baseline lesion labels
    followup: list[int] = field(default_factory=list)  # follow-up lesion labels
    linked_by: str = "overlap"  # overlap | distance | none


def _status(nb: int, nf: int) -> str:
    if nb and not nf:
        return "disappeared"
    if nf and not nb:
        return "new"
    if nb == 1 and nf == 1:
        return "matched"
    if nb == 1:
        return "split"
    if nf == 1:
        return "merged"
    return "complex"


def match_lesions(base: np.ndarray, n_base: int, fu_on_base: np.ndarray, n_fu: int,
                  base_centroids: np.ndarray, fu_centroids: np.ndarray, min_overlap: float = MIN_OVERLAP,
                  max_distance_mm: float = MAX_DISTANCE_MM) -> list[Group]:
    """Groups of corresponding lesions (module docstring). ``base_centroids`` (Nb, 3) and ``fu_centroids``
    (Nf, 3): mm in one space (baseline), row ``k`` for label ``k + 1``."""
    from scipy.optimize import linear_sum_assignment

    base = np.asarray(base)
    fu = np.asarray(fu_on_base)
    if base.shape != fu.shape:
        raise ValueError(f"baseline labels {base.shape} and resampled follow-up labels {fu.shape} differ")
    size_b = np.bincount(base.ravel(), minlength=n_base + 1)
    size_f = np.bincount(fu.ravel(), minlength=n_fu + 1)  # follow-up voxels on the baseline grid
    both = (base > 0) & (fu > 0)
    pairs = np.stack([base[both], fu[both]], axis=1).astype(np.int64)
    edges: dict[tuple[int, int], str] = {}
    if len(pairs):
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        for (i, j), c in zip(uniq.tolist(), counts.tolist()):
            smaller = min(size_b[i], size_f[j]) or 1
            if c / smaller >= min_overlap:
                edges[(i, j)] = "overlap"
    lone_b = [i for i in range(1, n_base + 1) if not any(e[0] == i for e in edges)]
    lone_f = [j for j in range(1, n_fu + 1) if not any(e[1] == j for e in edges)]
    if lone_b and lone_f:
        cb = np.asarray(base_centroids, float).reshape(-1, 3)[np.array(lone_b) - 1]
        cf = np.asarray(fu_centroids, float).reshape(-1, 3)[np.array(lone_f) - 1]
        dist = np.linalg.norm(cb[:, None, :] - cf[None, :, :], axis=2)
        for r, c in zip(*linear_sum_assignment(dist)):
            if dist[r, c] <= max_distance_mm:
                edges[(lone_b[r], lone_f[c])] = "distance"
    # union-find over nodes ("b", i) / ("f", j)
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(1, n_base + 1):
        find(("b", i))
    for j in range(1, n_fu + 1):
        find(("f", j))
    for (i, j) in edges:
        parent[find(("b", i))] = find(("f", j))
    members: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for node in list(parent):
        members.setdefault(find(node), []).append(node)
    groups = []
    for nodes in members.values():
        b = sorted(k for s, k in nodes if s == "b")
        f = sorted(k for s, k in nodes if s == "f")
        kinds = {edges[(i, j)] for i in b for j in f if (i, j) in edges}
        linked = "none" if not kinds else ("overlap" if kinds == {"overlap"} else
                                           "distance" if kinds == {"distance"} else "overlap+distance")
        groups.append(Group(0, _status(len(b), len(f)), b, f, linked))
    groups.sort(key=lambda g: (0, g.baseline[0]) if g.baseline else (1, g.followup[0]))
    for k, g in enumerate(groups, start=1):
        g.number = k
    return groups


__all__ = ["Group", "match_lesions", "MIN_OVERLAP", "MAX_DISTANCE_MM"]
