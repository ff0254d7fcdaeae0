"""petctfm.core: the bottom layer (errors, label/channel names, config helpers, device choice); imports nothing else of petctfm."""
