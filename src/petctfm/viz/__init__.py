"""petctfm.viz: pictures of PET/CT cases (``petctfm view``, QA thumbnails, prediction reports); rendering only.

:mod:`petctfm.viz.render` draws the figure (:func:`render_case`), :mod:`petctfm.viz.display` brings the images
onto one display grid and picks the slices (:func:`to_display`, :func:`select_focus`). Reading a case from
disk is :mod:`petctfm.io.layouts.read`. This package does not import matplotlib on its own.
"""

__all__ = ["render_case", "select_focus", "to_display"]


def __getattr__(name):  # lazy: keep ``import petctfm.viz`` cheap
    if name == "render_case":
        from petctfm.viz.render import render_case

        return render_case
    if name in ("select_focus", "to_display"):
        from petctfm.viz import display

        return getattr(display, name)
    raise AttributeError(name)
