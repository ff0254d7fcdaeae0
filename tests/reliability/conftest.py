"""Fixtures of the bad-input battery: tiny fine-tuned segmentation models and template phantoms."""

from __future__ import annotations


import pytest

from petctfm.synth.dicom import write_dicom_case
from petctfm.synth.layouts import write_autopet_case

from harmonize_phantoms import synth_case


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
