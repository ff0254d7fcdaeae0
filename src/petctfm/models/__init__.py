"""petctfm.models"""
