"""Evicting an open case without losing its undo history (docs/viewer.md, "Open cases").

The server holds at most ``max_open`` cases with their prompt sessions (the memory-heavy part). When another
case is opened, the least recently used one is evicted, but what its tab needs is kept: the label map and
object kinds it was opened with (its autosave), its whole-action undo and redo lists (voxel indices, boxes,
the automatic mask of a "Run automatic") and its version. Any later request for it (the tab still open)
re-opens it transparently: a fresh session, the opening mask, then every action of the undo list re-applied
(the networks are deterministic, as for redo), the redo list and the version put back. So the tab goes on at
the same version with the same undo/redo; the cost is one network evaluation per undoable click, paid once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Kept:
    """What an evicted case keeps: ``baseline`` (label map at opening, None when empty) and its object kinds,
    the undo (``done``) and redo (``undone``) actions, ``version`` and the last edited object."""

    baseline: np.ndarray | None
    meta0: dict[int, dict[str, str]] = field(default_factory=dict)
    done: list = field(default_factory=list)
    undone: list = field(default_factory=list)
    version: int = 0
    last_object: int | None = None


def opening(st: Any) -> Kept:
    """The opening state of a just-opened (and resumed) case :class:`~petctfm.serve.state.CaseState`."""
    lab = st.labels()
    return Kept(np.array(lab, copy=True) if st.session.objects else None, copy.deepcopy(st.meta))


def keep(st: Any, start: Kept) -> Kept:
    """``start`` (from :func:`opening`) with the case's current history, taken when it is evicted."""
    return Kept(start.baseline, start.meta0, list(st.done), list(st.undone), st.version, st.last_object)


def restore(st: Any, kept: Kept) -> None:
    """Bring a freshly built case state (nothing resumed) to what ``kept`` says: the opening objects, then the
    undo list re-applied, the redo list, the version."""
    if kept.baseline is not None:
        for k in [int(v) for v in np.unique(kept.baseline) if v]:
            st.session.set_mask(kept.baseline == k, object=k)
    st.meta = copy.deepcopy(kept.meta0)
    for act in kept.done:
        st._apply(act)
    st.done, st.undone = list(kept.done), list(kept.undone)
    st.version, st.last_object = kept.version, kept.last_object
    st._labels = None


__all__ = ["Kept", "keep", "opening", "restore"]
