"""Fixtures for ``petctfm predict``: a tiny fine-tuned segmentation model and tiny synthetic studies."""

from __future__ import annotations

import pytest
from quick_train import MODEL_SPACING, make_tiny_model  # noqa: F401  (tests import them from here)


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory):
    """Two tiny synthetic studies (``petctfm synth --size tiny``) in autoPET, nnU-Net and DICOM layouts."""
    from petctfm.synth.writers import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n_cases=2, seed=0, size="tiny", progress=False)
    return out
