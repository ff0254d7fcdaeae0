"""petctfm.predict: one PET/CT study in, lesion mask and report out: sources (files, folder, CSV list) ->
:class:`~petctfm.predict.predictor.Predictor` (in memory) -> batch runner (folders) -> outputs (files)."""
