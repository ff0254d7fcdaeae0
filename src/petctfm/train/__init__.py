"""The trainer shared by pretraining and fine-tuning (DDP, bf16, checkpoints, resume)."""
