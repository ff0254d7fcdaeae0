"""Fixtures for ``petctfm serve`` (helpers in serve_fixtures.py, importable by name from the tests)."""

import pytest


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    """One tiny synthetic study (``petctfm synth --size tiny``): autoPET and DICOM layouts."""
    from petctfm.synth.writers import synthesize

    out = tmp_path_factory.mktemp("serve_synth")
    synthesize(out, n_cases=1, seed=0, size="tiny", progress=False)
    return out
