"""petctfm: PET/CT foundation models for oncologic imaging.

Layers (docs/architecture.md): ``core`` and ``io`` at the bottom; ``synth``, ``harmonize``, ``data``,
``models``, ``evaluate``, ``viz``; ``train`` and ``inference``; ``methods`` (one folder per seed method) and
``predict``; ``experiments``; ``cli`` on top.
"""

from petctfm.core.version import __version__

__all__ = ["__version__"]
