"""``petctfm serve``: a local web viewer where clicks segment and correct lesions (docs/viewer.md).

* :mod:`~petctfm.serve.cases`: the served case list (a folder in any layout petctfm reads, a harmonized dataset,
  or one ``--pet``/``--ct`` pair) and reading one case's images; ids outside the list are refused.
* :mod:`~petctfm.serve.state`: one open case: the :class:`~petctfm.methods.promptable.session.PromptSession`,
  undo/redo of whole user actions, the version check and lock, autosave, audit log, save.
* :mod:`~petctfm.serve.app`: the FastAPI application (routes) and :func:`serve`.
* :mod:`~petctfm.serve.security`: the guard in front of every route (Host, token, per-port cookie, Origin +
  CSRF on state-changing requests, the body cap while streaming, security headers), the persistent token,
  symlink checks.
* :mod:`~petctfm.serve.bodies`: request bodies, bounded and strictly typed (422).
* :mod:`~petctfm.serve.history`: an evicted case's undo history, kept and re-applied when its tab goes on.
* :mod:`~petctfm.serve.launch`: binding the port before the URL is printed, ``--allow-host``, TLS.

Application layer (like ``experiments``): imported only by ``cli``.
"""
