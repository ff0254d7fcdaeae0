"""petctfm: PET/CT foundation models for oncologic imaging.

Areas (one sub-package each): ``io`` (images, DICOM, layouts), ``synth`` (synthetic multi-center
PET/CT phantoms), ``harmonize`` (multi-center scans -> one training-ready dataset), ``data``
(harmonized dataset format and patch loading), ``models`` (backbones), ``pretrain`` (self-supervised
methods), ``finetune``, ``prompt``, ``evaluate``, ``predict``, ``viz`` and ``cli``.
"""

__version__ = "0.1.0"
