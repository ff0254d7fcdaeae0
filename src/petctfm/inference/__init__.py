"""petctfm.inference: one sliding-window path and one input normalization, used by validation, probes and predict."""
