"""``petctfm serve``: a local web viewer where clicks segment and correct lesions (docs/viewer.md).

* :mod:`~petctfm.serve.cases`: the served case list (a folder in any layout petctfm reads, a harmonized dataset,
  or one ``--pet``/``--ct`` pair) and reading one case's images; ids outside the list are refused.
* :mod:`~petctfm.serve.state`: one open case: the :class:`~petctfm.methods.promptable.session.PromptSession`,
  undo/redo of whole user actions, the version check and lock, autosave, audit log, save.
* :mod:`~petctfm.serve.app`: the FastAPI application (token, size limit, routes) and :func:`serve`.

Application layer (like ``experiments``): imported only by ``cli``.
"""
