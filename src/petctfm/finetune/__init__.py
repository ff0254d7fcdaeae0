"""petctfm.finetune"""
