"""Fixtures of the bad-input battery: a tiny fine-tuned segmentation model (as tests/predict builds it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _make_tiny_model():
    spec = importlib.util.spec_from_file_location("_predict_fixtures", Path(__file__).parents[1] / "predict" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Run folder of a tiny fine-tuned segmentation model (5 steps; predictions need not be good)."""
    return _make_tiny_model()(tmp_path_factory.mktemp("ft_run"), tmp_path_factory.mktemp("ft_data"))
