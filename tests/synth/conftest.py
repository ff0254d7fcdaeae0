"""Shared fixtures of the generator's tests."""

from __future__ import annotations

import numpy as np
import pytest

from petctfm.synth.anatomy import build_anatomy
from petctfm.synth.body import Patient, body_extent
from petctfm.synth.physiology import draw_physiology, render


@pytest.fixture(scope="module")
def body():
    """One truth-grid anatomy at tiny-like spacing (7, 7, 9 mm; ``anat.spacing``) with its rendered FDG
    ``(anat, hu, suv)``, no scanner: for placement and rendering tests."""
    p = Patient("M", 55, 176, 78, "down")
    lo, hi = body_extent(p)
    sp = (7.0, 7.0, 9.0)
    axes = tuple(np.arange(lo[k], hi[k] + sp[k], sp[k]) for k in range(3))
    rng = np.random.default_rng(3)
    anat = build_anatomy(axes, p, rng)
    hu, suv = render(anat, draw_physiology("fdg", rng), rng)
    return anat, hu, suv

