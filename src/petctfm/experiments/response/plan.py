"""Settings of ``petctfm experiment response`` and their checks (usage errors, exit 2, before anything is read)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MASKS = ("truth",)


@dataclass(frozen=True)
class Settings:
    """Everything that decides the result (saved in ``summary.json["settings"]``).

    ``data``: the ``synth --followup`` output (its ``pairs/`` folder, or the folder holding it); exactly one of
    ``masks="truth"`` and ``model`` (a ``petctfm finetune`` lesion model; ``organs`` an organ model for the
    PERCIST references); ``limit``: the first N pairs only (by folder name)."""

    data: str
    model: str | None = None
    masks: str | None = None
    organs: str | None = None
    device: str = "auto"
    min_overlap: float = 0.1
    max_distance_mm: float = 15.0
    bootstrap: int = 1000
    seed: int = 0
    limit: int | None = None
    report_png: bool = False  # each pair's response.png (slow: off by default)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_settings(s: Settings) -> Settings:
    """One-line :class:`~petctfm.core.errors.UsageError` (exit 2) for a bad combination or value."""
    from petctfm.core.checks import check_choice, check_int
    from petctfm.core.errors import UsageError
    from petctfm.response.api import check_options

    if (s.model is None) == (s.masks is None):
        raise UsageError("give exactly one of --model RUN and --masks truth", arg="masks")
    if s.masks is not None:
        check_choice("masks", s.masks, MASKS)
        if s.organs is not None:
            raise UsageError("--organs goes with --model (with --masks truth the phantom's organs are used)",
                             arg="organs")
    check_options(s.min_overlap, s.max_distance_mm)
    check_int("bootstrap", s.bootstrap, lo=0)
    check_int("seed", s.seed, lo=0)
    if s.limit is not None:
        check_int("limit", s.limit, lo=1)
    return s
