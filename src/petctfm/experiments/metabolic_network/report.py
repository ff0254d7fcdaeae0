"""The metabolic-network outputs: matrix CSVs, edges.csv, group files, heatmap.png, network.png, results.md and
experiment.yaml. :func:`write_all` writes them from the result of
:func:`petctfm.experiments.metabolic_network.run.run_metabolic_network`."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.experiments.metabolic_network.plan import EXPERIMENT_FILE
from petctfm.io.atomic import atomic_path, atomic_write_text
from petctfm.io.tables import csv_text

EDGE_COLUMNS = ["organ_a", "organ_b", "r", "p", "p_fdr", "edge", "partial_r", "partial_p", "partial_p_fdr",
                "partial_edge", "stability", "ci_low", "ci_high", "n"]
DIFF_COLUMNS = ["group_a", "group_b", "n_a", "n_b", "organ_a", "organ_b", "r_a", "r_b", "diff", "p", "p_fdr",
                "significant"]


def _num(v: Any, digits: int = 4) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return ""
        return float(f"{v:.3g}") if 0 < abs(v) < 10 ** -(digits - 1) else round(v, digits)  # small p: 3 digits
    return v


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}f}"


def _p(v: float) -> str:
    return "–" if not math.isfinite(float(v)) else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")


def matrix_csv(path: Path, organs: list[str], m: np.ndarray) -> Path:
    rows = [{"organ": a, **{b: _num(m[i, j]) for j, b in enumerate(organs)}} for i, a in enumerate(organs)]
    return atomic_write_text(path, csv_text(rows, ["organ", *organs]))


def edge_rows(organs: list[str], net: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per organ pair (upper triangle), edges first, then strongest first (``net["edge"]`` /
    ``net["partial_edge"]``: the run's edge rule, :func:`petctfm.experiments.metabolic_network.stats.edges`)."""
    rows = []
    for i in range(len(organs)):
        for j in range(i + 1, len(organs)):
            row = {"organ_a": organs[i], "organ_b": organs[j], "r": net["r"][i, j], "p": net["p"][i, j],
                   "p_fdr": net["q"][i, j], "edge": bool(net["edge"][i, j]), "partial_r": net["partial_r"][i, j],
                   "partial_p": net["partial_p"][i, j], "partial_p_fdr": net["partial_q"][i, j],
                   "partial_edge": bool(net["partial_edge"][i, j]), "n": int(net["n"])}
            for k in ("stability", "ci_low", "ci_high"):
                row[k] = net[k][i, j] if k in net else ""
            rows.append(row)
    rows.sort(key=lambda r: (not r["edge"], -abs(r["r"])))
    return rows


def _write_network(folder: Path, organs: list[str], net: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    matrix_csv(folder / "correlation.csv", organs, net["r"])
    matrix_csv(folder / "p_fdr.csv", organs, net["q"])
    matrix_csv(folder / "partial_correlation.csv", organs, net["partial_r"])
    matrix_csv(folder / "partial_p_fdr.csv", organs, net["partial_q"])
    rows = [{k: _num(v) for k, v in r.items()} for r in edge_rows(organs, net)]
    atomic_write_text(folder / "edges.csv", csv_text(rows, EDGE_COLUMNS))


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_heatmap(path: Path, organs: list[str], net: dict[str, np.ndarray], rule: str, title: str) -> None:
    """Pearson (left) and Ledoit-Wolf partial (right) correlation; * = edge (``rule``: its words, e.g.
    "FDR < 0.05")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(organs)
    fig, axes = plt.subplots(1, 2, figsize=(2 * (3 + 0.45 * k), 1.5 + 0.42 * k))
    for ax, key, edge, name in ((axes[0], "r", "edge", "Pearson r"), (axes[1], "partial_r", "partial_edge",
                                                                      "partial r (Ledoit-Wolf)")):
        m = net[key].copy()
        np.fill_diagonal(m, np.nan)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
        for i in range(k):
            for j in range(k):
                if i != j and net[edge][i, j]:
                    ax.text(j, i, "*", ha="center", va="center", fontsize=10)
        ax.set_xticks(range(k), organs, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), organs, fontsize=8)
        ax.set_title(f"{name}; * {rule}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(title, fontsize=10)
    _savefig(fig, path)
    plt.close(fig)


def plot_networks(path: Path, organs: list[str], nets: dict[str, dict[str, np.ndarray]], title: str) -> None:
    """One network panel per entry of ``nets``: nodes on a circle, edges = the Pearson edges (``net["edge"]``;
    red positive, blue negative, width ~ |r|)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 5.5), squeeze=False)
    for ax, (name, net) in zip(axes[0], nets.items()):
        g = nx.Graph()
        g.add_nodes_from(organs)
        for i in range(len(organs)):
            for j in range(i + 1, len(organs)):
                if net["edge"][i, j]:
                    g.add_edge(organs[i], organs[j], r=float(net["r"][i, j]))
        pos = nx.circular_layout(g)
        edges = list(g.edges(data=True))
        nx.draw_networkx_nodes(g, pos, ax=ax, node_color="#f2e6c9", edgecolors="#555", node_size=500)
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
        nx.draw_networkx_edges(g, pos, ax=ax, edgelist=[(a, b) for a, b, _ in edges],
                               width=[0.5 + 5 * abs(d["r"]) for _, _, d in edges],
                               edge_color=["#c0392b" if d["r"] > 0 else "#2e6da4" for _, _, d in edges])
        ax.set_title(f"{name} (n={int(net['n'])}, {len(edges)} edges)", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    _savefig(fig, path)
    plt.close(fig)


def edge_rule(settings: Any) -> str:
    """The run's edge rule in words (``settings``: its :class:`Settings`), e.g. "FDR < 0.05 and |r| >= 0.3"."""
    return f"FDR < {settings.alpha:g}" + (f" and |r| >= {settings.min_r:g}" if settings.min_r else "")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_+." else "_" for c in name) or "_"


def write_all(out: Path, res: dict[str, Any]) -> dict[str, str]:
    """Every output file of the experiment; returns their paths by role."""
    import yaml

    from petctfm.experiments.common import data_words_of

    s = res["settings"]
    organs = res["organs"]
    short, warning = data_words_of(res["data"]) if res["data"] else ("organ tables", "")
    ids, groups = res["case_ids"], res["groups"]
    uptake = [{"case_id": c, **({"group": g or ""} if s.group_by else {}),
               **{o: _num(v) for o, v in zip(organs, row)}} for c, g, row in zip(ids, groups, res["uptake"])]
    atomic_write_text(out / "uptake.csv", csv_text(uptake, ["case_id", *(["group"] if s.group_by else []), *organs]))
    _write_network(out, organs, res["pooled"])
    for g, net in res["group_nets"].items():
        _write_network(out / "groups" / _safe(g), organs, net)
    files = {"results_md": str(out / "results.md"), "edges_csv": str(out / "edges.csv"),
             "heatmap": str(out / "heatmap.png"), "network": str(out / "network.png")}
    if res["differences"]:
        atomic_write_text(out / "group_differences.csv",
                          csv_text([{k: _num(v) for k, v in d.items()} for d in res["differences"]], DIFF_COLUMNS))
        files["group_differences_csv"] = str(out / "group_differences.csv")
    if res["null_splits"]:
        atomic_write_text(out / "null_splits.csv", csv_text([{k: v for k, v in x.items() if not k.startswith("_")}
                                                             for x in res["null_splits"]]))
    plot_heatmap(out / "heatmap.png", organs, res["pooled"], edge_rule(s), f"metabolic covariance, all cases ({short})")
    nets = {"all cases": res["pooled"], **res["group_nets"]}
    plot_networks(out / "network.png", organs, nets, f"metabolic network ({short})")
    atomic_write_text(out / EXPERIMENT_FILE, yaml.safe_dump({"command": res["command"], "settings": asdict(s)},
                                                           sort_keys=False))
    atomic_write_text(out / "results.md", results_md(res, short, warning))
    return files


def results_md(res: dict[str, Any], short: str, warning: str) -> str:
    s = res["settings"]
    organs, pooled, alpha = res["organs"], res["pooled"], s.alpha
    iu = np.triu_indices(len(organs), 1)
    n_pairs = len(iu[0])
    lines = ["# Whole-body metabolic covariance network", ""]
    if warning:
        lines += [warning, ""]
    lines += [f"Command: `{res['command']}`", "",
              f"- input: {res['source']}",
              f"- {len(res['case_ids'])} cases, {len(organs)} organs ({', '.join(organs)}), {n_pairs} organ pairs",
              "- uptake: log SUVmean per organ, residualized on "
              + (", ".join(res["covariates"]) if res["covariates"] else "nothing")
              + (f" and the {s.group_by} groups" if s.group_by and len(res["group_sizes"]) > 1 else "")
              + " (LinearRegression, categorical one-hot), z-scored",
              f"- edges: {edge_rule(s)} (Benjamini-Hochberg over the {n_pairs} pairs); partial correlation from the "
              "Ledoit-Wolf precision matrix"]
    for note in res["notes"]:
        lines.append(f"- note: {note}")
    edges = [r for r in edge_rows(organs, pooled) if r["edge"]]
    lines += ["", f"## All cases: {len(edges)} edges (Pearson), "
              f"{int(pooled['partial_edge'][iu].sum())} partial-correlation edges", ""]
    if edges:
        lines += ["| organ a | organ b | r | p (FDR) | partial r | partial p (FDR) | bootstrap stability | r 95% CI |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in edges:
            ci = f"{_fmt(r['ci_low'], 2)} – {_fmt(r['ci_high'], 2)}" if r["ci_low"] != "" else "–"
            stab = _fmt(r["stability"], 2) if r["stability"] != "" else "–"
            lines.append(f"| {r['organ_a']} | {r['organ_b']} | {_fmt(r['r'])} | {_p(r['p_fdr'])} | "
                         f"{_fmt(r['partial_r'])} | {_p(r['partial_p_fdr'])} | {stab} | {ci} |")
    if s.bootstrap:
        lines += ["", f"Bootstrap stability: share of {s.bootstrap} case resamples in which the pair is an edge "
                  f"({edge_rule(s)}) with the same sign."]
    if res["group_nets"]:
        lines += ["", f"## Networks per {s.group_by} group", "", "| group | cases | edges | partial edges |",
                  "| --- | --- | --- | --- |"]
        for g, net in res["group_nets"].items():
            lines.append(f"| {g} | {int(net['n'])} | {int(net['edge'][iu].sum())} | "
                         f"{int(net['partial_edge'][iu].sum())} |")
    if res["differences"]:
        sig = [d for d in res["differences"] if d["significant"]]
        lines += ["", f"## Group differences (permutation test, {s.permutations} permutations per pair; FDR over the "
                  f"{n_pairs} edges of each pair)", "",
                  f"{len(sig)} edge differences with FDR < {alpha:g}. Smallest p per compared pair:", "",
                  "| group a | group b | organ a | organ b | r a | r b | p | p (FDR) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for d in res["differences"]:
            by_pair.setdefault((d["group_a"], d["group_b"]), []).append(d)
        for rows in by_pair.values():
            for d in sorted(rows, key=lambda d: d["p"])[:3]:
                lines.append(f"| {d['group_a']} (n={d['n_a']}) | {d['group_b']} (n={d['n_b']}) | {d['organ_a']} | "
                             f"{d['organ_b']} | {_fmt(d['r_a'])} | {_fmt(d['r_b'])} | {_p(d['p'])} | "
                             f"{_p(d['p_fdr'])} |")
    if res["null_splits"]:
        ns = res["null_splits"]
        fw = sum(1 for x in ns if x["fdr_significant"] > 0) / len(ns)
        raw = sum(x["raw_p_below_alpha"] for x in ns) / sum(x["edges"] for x in ns)
        lines += ["", "## Null check: random halves of the same cases", "",
                  f"{len(ns)} random splits into two halves, each tested like two groups ({s.permutations} "
                  f"permutations): {sum(1 for x in ns if x['fdr_significant'] > 0)} of {len(ns)} splits "
                  f"(false-positive rate {fw:.2f}) have an edge difference with FDR < {alpha:g}; {raw:.3f} of all "
                  f"edge tests have raw p < {alpha:g} (expected about {alpha:g})."]
    t = res["planted"]
    if t:
        lines += ["", f"## Recovery of the planted structure (`{t['file']}`)", "",
                  f"Planted edges: |planted r| >= 0.3 over the {len(t['organs'])} organs both have. Found: "
                  f"{edge_rule(s)} (Pearson, all cases). TP {t['tp']}, FP {t['fp']}, FN {t['fn']}: precision "
                  f"{_fmt(t['precision'], 2)}, recall {_fmt(t['recall'], 2)}.", "",
                  "| organ a | organ b | planted r | measured r | p (FDR) | found |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for e in sorted(t["edges"], key=lambda e: (-abs(e["planted_r"]), -abs(e["r"]))):
            if e["planted_edge"] or e["found"]:
                lines.append(f"| {e['organ_a']} | {e['organ_b']} | {_fmt(e['planted_r'], 2)} | {_fmt(e['r'])} | "
                             f"{_p(e['p_fdr'])} | {'yes' if e['found'] else 'no'} |")
        if t["differences"]:
            lines += ["", "Planted group differences:", "",
                      "| organ a | organ b | planted r (reference / lymphoma) | groups | measured r a / r b | p "
                      "| p (FDR) "
                      "| random splits with p < alpha on this edge |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for d in t["differences"]:
                lines.append(f"| {d['organ_a']} | {d['organ_b']} | {_fmt(d.get('r_reference'), 2)} / "
                             f"{_fmt(d.get('r_lymphoma'), 2)} | {d['group_a']} vs {d['group_b']} | {_fmt(d['r_a'])} / "
                             f"{_fmt(d['r_b'])} | {_p(d['p'])} | {_p(d['p_fdr'])} | "
                             f"{_fmt(d['null_split_rate'], 2)} |")
    lines += ["", "## Files", "",
              "- `uptake.csv`: SUVmean per case and organ (before the log, residualization and z-scoring)",
              "- `correlation.csv`, `p_fdr.csv`, `partial_correlation.csv`, `partial_p_fdr.csv`: organ x organ "
              "matrices",
              "- `edges.csv`: one row per organ pair (r, p, p_fdr, edge, partial r and p, bootstrap stability and CI)",
              f"- `heatmap.png`, `network.png`: the matrices and the networks (edges: {edge_rule(s)}; red positive, blue "
              "negative)"]
    if res["group_nets"]:
        lines.append("- `groups/<group>/`: the same matrices and edges.csv per group")
    if res["differences"]:
        lines.append("- `group_differences.csv`: per pair of groups and organ pair, r in each group, permutation p, "
                     "p_fdr")
    if res["null_splits"]:
        lines.append("- `null_splits.csv`: per random split, edges with raw p < alpha and with FDR < alpha")
    lines.append(f"- `{EXPERIMENT_FILE}`: the settings and the command line")
    return "\n".join(lines) + "\n"


__all__ = ["write_all", "edge_rows", "edge_rule", "matrix_csv", "plot_heatmap", "plot_networks", "results_md"]
