"""petctfm.evaluate"""
