"""Evicting an open case without losing its undo history (docs/viewer.md, "Open cases").

The server holds at most ``max_open`` cases with their prompt sessions (the memory-heavy part). When another
case is opened, the least recently used one is evicted, but what its tab needs is kept: the label map and
object kinds it was opened with (its autosave), its whole-action undo and redo lists (voxel indices, boxes,
the automatic mask of a "Run automatic") and its version. Any later request for it (the tab still open)
re-opens it transparently: a fresh session, the opening mask, then every action of the undo list re-applied
(the networks are deterministic, as for redo), the redo list and the version put back. So the tab goes on at
the same version with the same undo/redo; the cost is one network evaluation per undoable click, paid once.

Memory: the opening label map is kept sparse (indices and labels of its non-zero voxels) for every case opened,
and the automatic masks of an evicted case's actions bit-packed (1/8 byte per voxel).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Kept:
    """What an evicted case keeps: ``baseline`` (label map at opening as (shape, flat indices, labels) of its
    non-zero voxels, None when empty) and its object kinds, the undo (``done``) and redo (``undone``) actions
    (automatic masks bit-packed), ``version`` and the last edited object."""

    baseline: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None
    meta0: dict[int, dict[str, str]] = field(default_factory=dict)
    done: list = field(default_factory=list)
    undone: list = field(default_factory=list)
    version: int = 0
    last_object: int | None = None


def opening(st: Any) -> Kept:
    """The opening state of a just-opened (and resumed) case :class:`~petctfm.serve.state.CaseState`."""
    if not st.session.objects:
        return Kept(None, copy.deepcopy(st.meta))
    lab = st.labels()
    idx = np.flatnonzero(lab)
    return Kept((lab.shape, idx, lab.ravel()[idx]), copy.deepcopy(st.meta))


def _packed(act: Any) -> Any:
    """The action with its automatic mask (if any) bit-packed; the action itself is not changed."""
    mask = act.args.get("mask")
    if not isinstance(mask, np.ndarray):
        return act
    return dataclasses.replace(act, args={**act.args, "mask": ("packbits", mask.shape, np.packbits(mask.ravel() > 0))})


def _unpacked(act: Any) -> Any:
    mask = act.args.get("mask")
    if not (isinstance(mask, tuple) and mask and mask[0] == "packbits"):
        return act
    _, shape, bits = mask
    act.args["mask"] = np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
    return act


def keep(st: Any, start: Kept) -> Kept:
    """``start`` (from :func:`opening`) with the case's current history, taken when it is evicted."""
    return Kept(start.baseline, start.meta0, [_packed(a) for a in st.done], [_packed(a) for a in st.undone],
                st.version, st.last_object)


def restore(st: Any, kept: Kept) -> None:
    """Bring a freshly built case state (nothing resumed) to what ``kept`` says: the opening objects, then the
    undo list re-applied, the redo list, the version."""
    if kept.baseline is not None:
        shape, idx, values = kept.baseline
        lab = np.zeros(shape, values.dtype)
        lab.ravel()[idx] = values
        for k in [int(v) for v in np.unique(values)]:
            st.session.set_mask(lab == k, object=k)
    st.meta = copy.deepcopy(kept.meta0)
    done, undone = [_unpacked(a) for a in kept.done], [_unpacked(a) for a in kept.undone]
    for act in done:
        st._apply(act)
    st.done, st.undone = done, undone
    st.version, st.last_object = kept.version, kept.last_object
    st._labels = None


__all__ = ["Kept", "keep", "opening", "restore"]
