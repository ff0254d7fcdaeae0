"""The settings of a metabolic-network experiment, their checks (one-line UsageErrors naming the argument) and the
command line that reproduces it. See :mod:`petctfm.experiments.metabolic_network`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from petctfm.core.errors import UsageError

#: Covariates used when none are given: those of them the metadata has (a missing one is noted, not an error).
DEFAULT_COVARIATES = ("age", "sex", "site", "tracer")
#: The tables contract of ``--tables DIR``: ``DIR/<case_id>/organs.csv`` with these columns (others ignored).
TABLE_FILE = "organs.csv"
TABLE_COLUMNS = ("organ", "suv_mean")
#: Metadata looked for in ``DIR`` when ``metadata`` is not given (``case_id`` plus covariate / group columns).
TABLE_METADATA = ("metadata.csv", "manifest.csv")
MIN_CASES = 10
EXPERIMENT_FILE = "experiment.yaml"


@dataclass
class Settings:
    """Everything that decides the result (saved in ``experiment.yaml``)."""

    data: str | None = None
    model: str | None = None  # an organ model: its predicted organ maps of ``data`` instead of the ground truth
    tables: str | None = None
    metadata: str | None = None
    group_by: str | None = None
    groups: list[str] | None = None
    covariates: list[str] | None = None
    organs: list[str] | None = None
    alpha: float = 0.05
    min_r: float = 0.0  # edges also need |r| >= min_r (an effect-size floor; 0 = FDR alone)
    permutations: int = 1000
    bootstrap: int = 500
    null_splits: int = 20
    min_group: int = 10
    seed: int = 0
    planted: str | None = None
    erode: int = 1


def _names(arg: str, value: str | Sequence[str] | None) -> list[str] | None:
    from petctfm.core.checks import parse_list

    if value is None:
        return None
    names = parse_list(arg, value, str, "a name")
    if len(set(names)) != len(names):
        raise UsageError(f"{arg}={value!r}: a name is given twice", arg=arg)
    return names


def check_settings(data=None, model=None, tables=None, metadata=None, group_by=None, groups=None, covariates=None,
                   organs=None, alpha=0.05, min_r=0.0, permutations=1000, bootstrap=500, null_splits=20, min_group=10, seed=0,
                   planted=None, erode=1) -> Settings:
    """The checked :class:`Settings` of :func:`petctfm.experiments.metabolic_network.run.run_metabolic_network`'s
    arguments; a wrong one is a one-line :class:`UsageError` naming it, raised before anything is read."""
    from petctfm.core.checks import check_float, check_int

    if (data is None) == (tables is None):
        raise UsageError("give exactly one input: data=DATASET (ground-truth or predicted organ maps) or "
                         "tables=DIR (per-case organs.csv)", arg="data")
    if model is not None and tables is not None:
        raise UsageError(f"model={model}: a model predicts the organ maps of a dataset; organ tables already "
                         "hold the organ values", arg="model")
    if metadata is not None and tables is None:
        raise UsageError(f"metadata={metadata}: only with organ tables (a dataset carries its own metadata)",
                         arg="metadata")
    groups = _names("groups", groups)
    if groups is not None:
        if group_by is None:
            raise UsageError(f"groups={','.join(groups)}: needs a group column (group_by)", arg="groups")
        if len(groups) < 2:
            raise UsageError(f"groups={','.join(groups)}: name at least two groups to compare", arg="groups")
    covariates = _names("covariates", covariates)
    if covariates is not None and group_by is not None and group_by in covariates:
        raise UsageError(f"covariates={','.join(covariates)}: holds the group column {group_by!r}; the groups are "
                         "compared, not adjusted away", arg="covariates")
    return Settings(
        data=None if data is None else str(data), model=None if model is None else str(model),
        tables=None if tables is None else str(tables),
        metadata=None if metadata is None else str(metadata), group_by=group_by, groups=groups,
        covariates=covariates, organs=_names("organs", organs),
        alpha=check_float("alpha", alpha, lo=0.0, hi=0.5, lo_open=True),
        min_r=check_float("min_r", min_r, lo=0.0, hi=1.0, hi_open=True),
        permutations=check_int("permutations", permutations, lo=1000),
        bootstrap=check_int("bootstrap", bootstrap, lo=0),
        null_splits=check_int("null_splits", null_splits, lo=0),
        min_group=check_int("min_group", min_group, lo=5),
        seed=check_int("seed", seed, lo=0),
        planted=None if planted is None else str(planted),
        erode=check_int("erode", erode, lo=0, hi=5))


def command_line(settings: Settings, out: str | Path) -> str:
    """The ``petctfm experiment metabolic-network`` command that reproduces ``settings`` into ``out``."""
    words: list[Any] = ["petctfm", "experiment", "metabolic-network"]
    words += ["--data", settings.data] if settings.data else ["--tables", settings.tables]
    if settings.model:
        words += ["--model", settings.model]
    if settings.metadata:
        words += ["--metadata", settings.metadata]
    words += ["--out", str(out)]
    for flag, value in (("--group-by", settings.group_by), ("--groups", settings.groups),
                        ("--covariates", settings.covariates), ("--organs", settings.organs),
                        ("--planted", settings.planted)):
        if value:
            words += [flag, ",".join(value) if isinstance(value, list) else value]
    defaults = Settings()
    for flag, name in (("--alpha", "alpha"), ("--min-r", "min_r"), ("--permutations", "permutations"), ("--bootstrap", "bootstrap"),
                       ("--null-splits", "null_splits"), ("--min-group", "min_group"), ("--seed", "seed"),
                       ("--erode", "erode")):
        if getattr(settings, name) != getattr(defaults, name):
            words += [flag, f"{getattr(settings, name):g}"]
    return " ".join(shlex.quote(str(w)) for w in words)


__all__ = ["Settings", "check_settings", "command_line", "DEFAULT_COVARIATES", "TABLE_FILE", "TABLE_COLUMNS",
           "TABLE_METADATA", "MIN_CASES", "EXPERIMENT_FILE"]
