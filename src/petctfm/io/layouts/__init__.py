"""Read the on-disk layouts of PET/CT cases: detection, file roles and channel mapping, one owner each.

* :mod:`~petctfm.io.layouts.names`: the role of an image file from its name (``suv``/``ct``/``seg``/``organs``)
  and the case key that remains when the role word is removed (the ``pairs`` layout, the viewer's files);
* :mod:`~petctfm.io.layouts.autopet`: the autoPET case folder (``SUV.nii.gz``, ``CTres.nii.gz``, ...);
* :mod:`~petctfm.io.layouts.nnunet`: nnU-Net v2 raw datasets (``dataset.json`` ``channel_names``, ``imagesTr``);
* :mod:`~petctfm.io.layouts.detect`: which layout a collection folder holds (nnU-Net, DICOM, autoPET, pairs);
* :mod:`~petctfm.io.layouts.read`: the images of one case from a case folder or explicit files (``petctfm view``).

``petctfm.harmonize.discover`` builds its case lists from these; the writers of synthetic cases in these
layouts are :mod:`petctfm.synth.layouts`. docs/data-layouts.md describes every layout.
"""
