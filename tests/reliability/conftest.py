"""Fixtures of the bad-input battery: the tiny fine-tuned segmenter of ``tests/predict/conftest.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _predict_fixtures():
    path = Path(__file__).resolve().parents[1] / "predict" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_predict_fixture_helpers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tiny_seg_model(tmp_path_factory):
    """Run folder of a tiny fine-tuned segmentation model (5 steps, 8 mm grid; predictions need not be good)."""
    return _predict_fixtures().make_tiny_model(tmp_path_factory.mktemp("ft_run"), tmp_path_factory.mktemp("ft_data"))
