"""PERCIST 1.0 and the Deauville 5-point score as pure functions of numbers (docs/response.md has the rules
and the references: Wahl et al., J Nucl Med 2009;50:122S-150S; O JH, Lodge MA, Wahl RL, Practical PERCIST,
Radiology 2016;280:576-584; Barrington et al., J Clin Oncol 2014;32:3048-58 (Lugano)).

Values are SUL (SUV normalized to Janmahasatian lean body mass) when the lean body mass is known, else SUV
(``units`` says which); the 30 % criteria do not depend on the unit, the 0.8 absolute change does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PERCENT = 30.0  # PERCIST: >= 30 % change of the target SULpeak
ABSOLUTE = 0.8  # ... and >= 0.8 SUL units
EPS = 1e-9  # exactly -30 % (or -0.8) counts: ">= 30 %" in the guideline


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass
class Reference:
    """A reference region's mean and SD (liver 3 cm sphere, or the mediastinal blood pool) and its SUVmax."""
    name: str  # liver | blood_pool
    mean: float
    sd: float
    max: float = float("nan")


def measurability_threshold(liver: Reference | None, blood_pool: Reference | None) -> tuple[float | None, str]:
    """PERCIST's minimum measurable SULpeak: ``1.5 * liver mean + 2 SD``; when no liver reference, ``2 *
    blood-pool mean + 2 SD`` (Wahl 2009, for an abnormal liver); None with the reason when neither exists."""
    if liver is not None and _finite(liver.mean) and _finite(liver.sd):
        return 1.5 * liver.mean + 2.0 * liver.sd, "1.5 x liver SULmean + 2 SD (3 cm sphere)"
    if blood_pool is not None and _finite(blood_pool.mean) and _finite(blood_pool.sd):
        return 2.0 * blood_pool.mean + 2.0 * blood_pool.sd, "2 x blood-pool SULmean + 2 SD (no liver reference)"
    return None, "no liver reference"


@dataclass
class Percist:
    category: str | None  # CMR | PMR | SMD | PMD | None (not evaluable)
    reason: str
    baseline_peak: float | None = None
    followup_peak: float | None = None
    change_percent: float | None = None
    change_absolute: float | None = None
    baseline_threshold: float | None = None
    followup_threshold: float | None = None
    new_lesions_counted: list[int] = field(default_factory=list)
    new_lesions_below_threshold: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def r(v):
            return None if v is None else round(float(v), 4)

        return {"category": self.category, "reason": self.reason, "baseline_sulpeak": r(self.baseline_peak),
                "followup_sulpeak": r(self.followup_peak), "change_percent": r(self.change_percent),
                "change_absolute": r(self.change_absolute), "baseline_threshold": r(self.baseline_threshold),
                "followup_threshold": r(self.followup_threshold),
                "new_lesions_counted": self.new_lesions_counted,
                "new_lesions_below_threshold": self.new_lesions_below_threshold}


def percist(baseline_peak: float | None, followup_peak: float | None, baseline_threshold: float | None,
            followup_threshold: float | None, followup_liver_mean: float | None,
            new_lesions: dict[int, float] | None = None) -> Percist:
    """PERCIST 1.0 category.

    ``baseline_peak`` / ``followup_peak``: SULpeak of the hottest lesion at each time point (None: no lesion);
    ``*_threshold``: :func:`measurability_threshold` (None: no reference); ``followup_liver_mean``: the
    follow-up liver reference SULmean (CMR: the target falls to or below it); ``new_lesions``: number ->
    SULpeak of each follow-up lesion without a baseline counterpart.

    Rules (Wahl 2009; O 2016): not evaluable without a baseline threshold or when the baseline's
    hottest lesion is below it; a new lesion whose SULpeak reaches the follow-up threshold -> PMD (below it:
    listed, not counted); no follow-up lesion, or a hottest follow-up SULpeak at or below the liver SULmean ->
    CMR; a change of >= +30 % and >= +0.8 -> PMD; <= -30 % and <= -0.8 -> PMR; otherwise SMD.
    """
    new_lesions = dict(new_lesions or {})
    out = Percist(None, "", baseline_peak, followup_peak, None, None, baseline_threshold, followup_threshold)
    if baseline_threshold is None:
        out.reason = "not measurable: no liver reference"
        return out
    if baseline_peak is None or not baseline_peak >= baseline_threshold - EPS:
        out.reason = ("not evaluable: no baseline lesion" if baseline_peak is None else
                      f"not evaluable: baseline SULpeak {baseline_peak:.2f} below the measurability threshold "
                      f"{baseline_threshold:.2f}")
        return out
    limit = followup_threshold if followup_threshold is not None else baseline_threshold
    for k, v in sorted(new_lesions.items()):
        (out.new_lesions_counted if _finite(v) and v >= limit - EPS else out.new_lesions_below_threshold).append(k)
    if followup_peak is not None:
        out.change_absolute = followup_peak - baseline_peak
        out.change_percent = 100.0 * out.change_absolute / baseline_peak
    if out.new_lesions_counted:
        out.category, out.reason = "PMD", f"{len(out.new_lesions_counted)} new measurable lesion(s)"
        return out
    if followup_peak is None:
        out.category, out.reason = "CMR", "no lesion at follow-up"
        out.change_percent, out.change_absolute = -100.0, -baseline_peak
        return out
    if _finite(followup_liver_mean) and followup_peak <= followup_liver_mean + EPS:
        out.category, out.reason = "CMR", "hottest follow-up SULpeak at or below the liver SULmean"
        return out
    pct, ab = out.change_percent, out.change_absolute
    if pct >= PERCENT - EPS and ab >= ABSOLUTE - EPS:
        out.category, out.reason = "PMD", f"SULpeak {pct:+.1f} % ({ab:+.2f}): >= +30 % and >= +0.8"
    elif pct <= -PERCENT + EPS and ab <= -ABSOLUTE + EPS:
        out.category, out.reason = "PMR", f"SULpeak {pct:+.1f} % ({ab:+.2f}): <= -30 % and <= -0.8"
    else:
        out.category, out.reason = "SMD", f"SULpeak {pct:+.1f} % ({ab:+.2f}): neither PMR nor PMD"
    return out


MARKED = 2.0  # Deauville 5: lesion SUVmax > MARKED x liver SUVmax ("markedly higher": 2-3 x in practice)


def deauville(followup_lesion_max: float | None, liver: Reference | None, blood_pool: Reference | None,
              new_lesion_max: dict[int, float] | None = None, marked: float = MARKED) -> dict[str, Any]:
    """Deauville 5-point score of the follow-up (Lugano, Barrington 2014), quantitative form.

    ``followup_lesion_max``: SUVmax of the hottest follow-up lesion (None: none); ``liver`` / ``blood_pool``:
    the follow-up references (their SUVmax is compared); ``new_lesion_max``: number -> SUVmax of new lesions.

    1: no lesion; 2: <= blood-pool SUVmax; 3: > blood pool, <= liver SUVmax; 4: > liver SUVmax, <= ``marked``
    x liver SUVmax; 5: > ``marked`` x liver SUVmax, or a new lesion above the liver SUVmax. Without a liver
    reference only score 1 can be given (``score`` None otherwise, ``reason`` says why).
    """
    new_lesion_max = dict(new_lesion_max or {})
    liv = liver.max if liver is not None and _finite(liver.max) else None
    pool = blood_pool.max if blood_pool is not None and _finite(blood_pool.max) else None
    if followup_lesion_max is None:
        return {"score": 1, "reason": "no residual lesion at follow-up"}
    if liv is None:
        return {"score": None, "reason": "not scored: no liver reference"}
    new_hot = sorted(k for k, v in new_lesion_max.items() if _finite(v) and v > liv)
    m = followup_lesion_max
    if new_hot:
        score, why = 5, f"new lesion(s) {new_hot} above the liver"
    elif m > marked * liv:
        score, why = 5, f"SUVmax {m:.2f} > {marked:g} x liver SUVmax {liv:.2f}"
    elif m > liv:
        score, why = 4, f"SUVmax {m:.2f} > liver SUVmax {liv:.2f}, <= {marked:g} x"
    elif pool is None:
        return {"score": None, "reason": "not scored: at or below the liver, no blood-pool reference for 2 vs 3"}
    elif m > pool:
        score, why = 3, f"SUVmax {m:.2f} > blood pool {pool:.2f}, <= liver {liv:.2f}"
    else:
        score, why = 2, f"SUVmax {m:.2f} <= blood pool {pool:.2f}"
    return {"score": score, "reason": why, "marked_factor": marked}


__all__ = ["Reference", "measurability_threshold", "Percist", "percist", "deauville", "PERCENT", "ABSOLUTE",
           "MARKED"]
