"""petctfm.harmonize"""
