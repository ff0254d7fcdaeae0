"""The response experiment: :func:`run_response_experiment` (``petctfm experiment response``). See
:mod:`petctfm.experiments.response` and docs/response.md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from petctfm.experiments.response.plan import Settings, check_settings

def find_pairs(data: str | os.PathLike) -> list[Path]:
    """The pair folders (holding ``response_truth.json``) of a ``synth --followup`` output, sorted by name;
    ``data`` is its ``pairs/`` folder or the folder above. :class:`InputError` (exit 3) when there are none."""
    from petctfm.core.errors import InputError
    from petctfm.synth.followup import PAIRS_DIR, TRUTH_JSON

    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{root}: --data folder not found")
    if (root / PAIRS_DIR).is_dir():
        root = root / PAIRS_DIR
    pairs = sorted(p for p in root.iterdir() if p.is_dir() and (p / TRUTH_JSON).is_file())
    if not pairs:
        raise InputError(f"{root}: no pair folders with {TRUTH_JSON} (write them with `petctfm synth --followup`)")
    return pairs


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def assess_pair(pair: Path, s: Settings, out: Path) -> dict[str, Any]:
    """Assess one pair (truth inputs or the model) into ``out/pairs/<pair>/`` and score it
    (:func:`petctfm.experiments.response.scoring.score_pair`)."""
    from petctfm.core.errors import InputError
    from petctfm.experiments.response.scoring import score_pair
    from petctfm.experiments.response.truth import write_truth_prediction
    from petctfm.response.api import assess_response
    from petctfm.synth.followup import ROLES, TRUTH_JSON

    try:
        truth = json.loads((pair / TRUTH_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{pair / TRUTH_JSON}: unreadable ({type(exc).__name__})") from None
    if s.masks == "truth":
        b, f = (write_truth_prediction(pair / r, out / "inputs" / pair.name / r) for r in ROLES)
    else:
        b, f = pair / "baseline", pair / "followup"
    dest = out / "pairs" / pair.name
    result = assess_response(b, f, dest, min_overlap=s.min_overlap, max_distance_mm=s.max_distance_mm,
                             report=s.report_png, model=s.model, organs_model=s.organs, device=s.device,
                             seed=s.seed)
    return score_pair(pair, truth, result, dest)


def run_response_experiment(out: str | os.PathLike, data: str | os.PathLike, *, model: str | None = None,
                            masks: str | None = None, organs: str | None = None, device: str = "auto",
                            min_overlap: float = 0.1, max_distance_mm: float = 15.0, bootstrap: int = 1000,
                            seed: int = 0, limit: int | None = None, report_png: bool = False,
                            progress: bool = False) -> dict[str, Any]:
    """Run :func:`assess_pair` on every pair of ``data`` and write ``out/summary.json`` (last), ``pairs.csv``,
    ``quarantine.csv``, ``results.md`` and ``response_experiment.png`` (:mod:`.report`); returns the summary.

    A pair that fails (a missing or unreadable file, a registration error, ...) is quarantined with one line
    (``quarantine.csv``, ``summary["quarantined"]``) and the batch goes on. Errors: ``UsageError`` (exit 2) for
    the settings, before anything is read; ``OutputError`` (exit 4) when ``out`` cannot be written;
    ``InputError`` (exit 3) when ``data`` holds no pair, or every pair failed."""
    from petctfm.core.errors import InputError
    from petctfm.experiments.response.report import write_report
    from petctfm.io.atomic import ensure_output_dir

    s = check_settings(Settings(str(data), model=None if model is None else str(model), masks=masks,
                                organs=None if organs is None else str(organs), device=device,
                                min_overlap=min_overlap, max_distance_mm=max_distance_mm, bootstrap=bootstrap,
                                seed=seed, limit=limit, report_png=report_png))
    out = ensure_output_dir(out)
    pairs = find_pairs(data)[: s.limit or None]
    rows, quarantined = [], []
    t0 = time.perf_counter()
    for i, pair in enumerate(pairs):
        try:
            rows.append(assess_pair(pair, s, out))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one bad pair must not stop the batch: quarantined with one line
            quarantined.append({"pair": pair.name, "reason": _one_line(exc)})
        if progress:
            print(f"experiment response: {i + 1}/{len(pairs)} pairs", flush=True)
    if not rows:
        raise InputError(f"{data}: every pair failed (first: {quarantined[0]['pair']}: {quarantined[0]['reason']})")
    return write_report(out, s, rows, quarantined, time.perf_counter() - t0)
