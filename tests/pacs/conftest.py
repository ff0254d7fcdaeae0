"""Fixtures of the DICOMweb tests: a real Orthanc per test (orthanc_server.py), tiny synthetic DICOM studies
(``petctfm synth --formats dicom --size tiny``) and the tiny fine-tuned model of tests/predict."""

from __future__ import annotations


import pytest

from orthanc_server import require_orthanc, running_orthanc


@pytest.fixture
def orthanc(tmp_path):
    """A fresh, empty Orthanc on a free loopback port (skips with the reason when not installed)."""
    binary, plugin = require_orthanc()
    with running_orthanc(tmp_path / "orthanc", binary, plugin) as server:
        yield server


@pytest.fixture(scope="session")
def synth_dicom(tmp_path_factory):
    """Two tiny synthetic studies in the DICOM layout: ``<root>/dicom/PETCT_000{0,1}/{PT,CT,SEG}``."""
    from petctfm.synth.writers import synthesize

    out = tmp_path_factory.mktemp("pacs_synth")
    synthesize(out, n_cases=2, seed=0, size="tiny", formats=["dicom"], progress=False)
    return out / "dicom"


