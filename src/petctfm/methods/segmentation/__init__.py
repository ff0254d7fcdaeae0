"""Lesion segmentation fine-tuning from a pretrained encoder (or from scratch)."""
