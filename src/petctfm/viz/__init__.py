"""petctfm.viz: pictures of PET/CT cases (``petctfm view``, QA thumbnails, prediction reports).

Import the functions from :mod:`petctfm.viz.view`; this package does not import matplotlib on its own.
"""

__all__ = ["render_case", "load_case_images", "describe_case", "select_focus", "to_display"]


def __getattr__(name):  # lazy: keep ``import petctfm.viz`` cheap
    if name in __all__:
        from petctfm.viz import view

        return getattr(view, name)
    raise AttributeError(name)
