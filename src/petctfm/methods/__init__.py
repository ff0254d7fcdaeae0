"""petctfm.methods: one home per seed method (early_fusion_mae/, segmentation/, probe, staging)."""
