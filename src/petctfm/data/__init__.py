"""petctfm.data"""
