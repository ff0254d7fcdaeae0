"""Early-fusion masked autoencoder (Liu et al. 2026): PET and CT as channels of one hierarchical UNet."""
