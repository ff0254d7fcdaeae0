"""petctfm.synth"""
