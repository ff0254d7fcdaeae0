"""``petctfm experiment vs-nnunet``: petctfm's automatic lesion segmenter against nnU-Net v2 itself, at the same
wall time on the same device (issue 30, item 3).

- :mod:`.plan`: names, settings, the nnU-Net environment (``nnUNet_raw`` / ``_preprocessed`` / ``_results``
  inside the experiment folder, set in the child process only).
- :mod:`.export`: the harmonized train/val/test splits -> nnU-Net raw (channel 0 CT, 1 PET in SUV, label 1 =
  lesion) and a ``splits_final.json`` that makes nnU-Net's fold 0 our train/val split.
- :mod:`.nnunet_job`: what runs in the child process (imports ``nnunetv2``): fingerprint, planning (default
  and CPU-sized plan), preprocessing, the budget trainer, nnU-Net's own validation and predictor.
- :mod:`.floor`: the non-learned floor (fixed SUV threshold, components >= 1 ml).
- :mod:`.run`: the experiment (resumable), :mod:`.report`: results.md / results.csv / vs_nnunet.png.

See docs/vs-nnunet.md.
"""
