"""Promptable 3D PET segmentation (after SegAnyPET, Zhang et al., "Developing Foundation Models for Universal
Segmentation from 3D Whole-Body PET"): segment any target (organ, lesion, all lesions in view) from positive /
negative clicks, a 3D box and the previous mask, and correct the result click by click.

Design (docs/promptable.md): by default (``cached``) prompts are input channels of a light decoder over a
cached image embedding (nnInteractive-style); ``sam`` is the SAM-style alternative (point / box tokens, a
two-way transformer, 3 candidate masks + IoU, ``sam.py``). ``prompts.py`` encodes prompts, simulates clicks and
holds the class table of class prompts, ``model.py`` builds the network (and transfers a pretrained encoder), ``task.py`` trains it on the generic trainer, ``session.py`` is the
interactive :class:`PromptSession` and the ``petctfm segment`` API, ``api.py`` is :func:`prompt_train`.
"""
