"""petctfm.experiments: multi-run studies that call the Python API (never argv)."""
