"""petctfm.predict"""
