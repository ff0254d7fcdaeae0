"""Janmahasatian lean body mass (Janmahasatian et al., Clin Pharmacokinet 2005;44:1051-65), the LBM PERCIST's
SUL asks for: ``BMI = weight_kg / height_m**2``, male ``LBM = 9270 * weight / (6680 + 216 * BMI)``, female
``LBM = 9270 * weight / (8780 + 244 * BMI)`` (kg). Its one home: the organ readout (``evaluate.organs``) and the
follow-up phantoms' truth (``synth.followup``) both use it."""

from __future__ import annotations

import math

NAN = float("nan")


def lean_body_mass(weight_kg: float | None, height_cm: float | None, sex: str | None) -> float:
    """Janmahasatian lean body mass in kg (module docstring); NaN when any input is unknown or not positive.
    ``sex``: ``M``/``male`` or ``F``/``female`` (case-insensitive); anything else is unknown."""
    try:
        w, h = float(weight_kg), float(height_cm) / 100.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return NAN
    s = str(sex or "").strip().lower()
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)) or s not in ("m", "male", "f", "female"):
        return NAN
    bmi = w / (h * h)
    if s in ("m", "male"):
        return 9270.0 * w / (6680.0 + 216.0 * bmi)
    return 9270.0 * w / (8780.0 + 244.0 * bmi)


__all__ = ["lean_body_mass"]
