"""petctfm.io"""
