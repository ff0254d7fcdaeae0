"""The viewer's test fixtures (tests/serve/serve_fixtures.py: a stub promptable session, a threshold model) for the
PACS tests that drive ``petctfm serve --dicomweb``."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def serve_fixtures():
    """tests/serve/serve_fixtures.py as a module (it is not on the import path of tests/pacs)."""
    spec = importlib.util.spec_from_file_location("_serve_fixtures",
                                                  Path(__file__).parents[1] / "serve" / "serve_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
