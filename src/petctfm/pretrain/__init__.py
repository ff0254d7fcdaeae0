"""petctfm.pretrain"""
