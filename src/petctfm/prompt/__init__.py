"""petctfm.prompt"""
