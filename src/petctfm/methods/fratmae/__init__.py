"""FratMAE (Oh et al. 2025, "Cross-Fraternal Twin Masked Autoencoder"): twin ViT encoders for PET and CT
(weights not shared), asymmetric cross-modal masking (per sample one modality loses 50 % of its tokens, the
other stays whole), cross-attention decoders (the masked modality's tokens query the other modality), on
whole-body coronal stacks; plus ContextAlign, a symmetric InfoNCE between the PET encoder's CLS token and a
small text encoder over the case's metadata (tracer, diagnosis, age, sex).

Read in this order: ``vit.py`` (patches, position codes, SDPA attention blocks, the ViT encoder),
``stacks.py`` (the coronal / axial stack stream from the harmonized dataset), ``context.py`` (metadata
vocabulary, text encoder, InfoNCE), ``fratmae.py`` (masking, decoders, model, loss, figure, TrainTask),
``presets.py``, ``api.py``. Choices the paper leaves open: ``docs/fratmae.md``.
"""
