"""Fixtures of the bad-input battery: tiny fine-tuned segmentation models and template phantoms."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from petctfm.synth.dicom import write_dicom_case
from petctfm.synth.layouts import write_autopet_case

from harmonize_phantoms import synth_case


def _make_tiny_model():
    spec = importlib.util.spec_from_file_location("_predict_fixtures", Path(__file__).parents[1] / "predict" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Run folder of a tiny fine-tuned segmentation model (5 steps; predictions need not be good)."""
    return _make_tiny_model()(tmp_path_factory.mktemp("ft_run"), tmp_path_factory.mktemp("ft_data"))


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """Two different tiny autoPET cases (A: lesion, B: none) and one DICOM case, written once."""
    root = tmp_path_factory.mktemp("template")
    write_autopet_case(synth_case("A"), root / "autopet")
    write_autopet_case(synth_case("B", lesion=False, pet_spacing=(5.0, 5.0, 5.0)), root / "autopet")
    write_dicom_case(synth_case("D"), root / "dicom", seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_seg_model(tiny_model):
    """The same tiny fine-tuned segmenter (the values battery's name for it)."""
    return tiny_model
