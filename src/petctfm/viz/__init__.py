"""petctfm.viz"""
