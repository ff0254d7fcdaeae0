"""One open case on the server: the prompt session, whole-action undo/redo, the version check, autosave, audit.

Every change (a click, a box, "Run automatic", deleting a lesion, undo, redo) runs under the case's lock and
only if the request names the case's current ``version`` (else :class:`Conflict`, HTTP 409): two tabs on one
case cannot interleave their edits or build on a mask they have not seen. Each change bumps the version,
autosaves the label map (NIfTI on the input PET grid, atomic) and appends one line to the case's audit log.

Objects are lesions or organs (``kind``; an organ has an ``ORGAN_LABELS`` name, e.g. one of the model's
held-out organs for a zero-shot try): each has its own id in one label map (:meth:`PromptSession.mask`); organs
are listed apart and not counted in MTV / TLG. "Run automatic" turns each 18-connected component of the
automatic mask into a lesion object. Kinds and names are autosaved beside the mask (``objects.json``). Undo/redo work on whole user actions (one
"Run automatic" is one action however many objects it made); redo re-applies the action (the network is
deterministic, so a redone click gives the same mask).

The manual tools (:mod:`petctfm.serve.tools`: ``brush``, ``erase``, ``grow`` = isocontour, ``threshold`` in a box,
``confirm`` an implausible object) are actions like clicks: each changes objects through
``PromptSession.set_mask`` / ``reset`` (one history step per object), so they are undone, redone, autosaved and
audited the same way. A negative click never grows its object (:func:`petctfm.serve.tools.negative_click`).
A click or box whose object-menu choice (an organ, "lesion") is a class of a class-prompted model
(``model.class_prompts``) passes it to the session as the object's target class, which steers the network; a
held-out organ or a model without class prompts is prompted class-free, as before.
After each change :attr:`CaseState.changed` is the voxel box where the label map differs from the version
before (the page fetches only that box).
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from petctfm.core.errors import InputError
from petctfm.serve import tools

MAX_OBJECTS = 255  # uint8 label map
USER_MAX = 64
OBJECTS_FILE = "objects.json"  # {id: {"kind", "name"}} beside the autosaved mask


class Conflict(Exception):
    """The request's version is not the case's current one (another tab changed it): HTTP 409."""


#: the page's planes -> the RAS axis normal to them (a 2D brush paints in the voxel slice closest to that plane)
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}
MAX_STROKE = 2000  # points of one brush / eraser stroke


@dataclass
class Action:
    kind: str  # click | box | auto | delete | brush | erase | grow | threshold | confirm
    args: dict[str, Any]
    steps: int = 0  # PromptSession history entries it made (undone one by one)
    meta_before: dict | None = None  # the objects' kinds / names / confirmations before it (restored by undo)


@dataclass
class CaseState:
    """An open case. ``session``: a PromptSession on the case's PET (and CT); ``out``: its output folder."""

    case_id: str
    session: Any
    pet: Any  # SimpleITK PET (SUV), the input grid
    ct_on_pet: Any  # SimpleITK CT resampled onto the PET grid (display)
    out: Path
    pt_datasets: list | None = None
    auto: Callable[[], np.ndarray] | None = None  # () -> (X, Y, Z) mask on the PET grid
    model_name: str = "petctfm promptable"
    version: int = 0
    done: list[Action] = field(default_factory=list)
    undone: list[Action] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_object: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _labels: tuple[int, np.ndarray] | None = None  # (version, label map) of the current version
    _peaks: dict[tuple, float] = field(default_factory=dict)  # SUVpeak by (object, voxel count, SUV sum, bbox)
    meta: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> {"kind", "name", "confirmed"}; absent = a lesion
    organ_map: np.ndarray | None = None  # (X, Y, Z) ORGAN_LABELS values on the PET grid, when the case has one
    max_ml: float = tools.MAX_ML  # objects over this volume are flagged
    changed: dict | None = None  # {"lo", "hi"} voxel box (hi exclusive) where the last change altered the label map
    info: dict | None = None  # what the last tool measured (isocontour threshold, ...), for the page
    # serve --dicomweb: (labels, reader) -> build_seg keywords (UIDs, content creator) of the saved SEG, and
    # (SEG file) -> a line saying where it was stored (STOW-RS); None for cases read from files
    seg_identity: Callable[[np.ndarray, str], dict[str, Any]] | None = None
    push: Callable[[Path], str] | None = None

    def kind_name(self, obj: int) -> tuple[str, str]:
        m = self.meta.get(int(obj)) or {}
        return m.get("kind", "lesion"), m.get("name") or f"lesion {obj}"

    def labels(self) -> np.ndarray:
        """:meth:`PromptSession.mask` (X, Y, Z), computed once per version."""
        if self._labels is None or self._labels[0] != self.version:
            self._labels = (self.version, self.session.mask())
        return self._labels[1]

    # -- geometry ---------------------------------------------------------------------------------------

    def ras_of(self, voxel: Any) -> list[float]:
        """Voxel [x, y, z] of the PET array -> RAS mm (the page's world coordinates), (3,)."""
        lps = (np.asarray(self.session.grid.index_to_lps) @ np.append(np.asarray(voxel, float), 1.0))[:3]
        return [float(c) for c in lps * np.array([-1.0, -1.0, 1.0])]

    def voxel_of(self, ras_mm: Any) -> np.ndarray:
        """RAS mm (the page's world coordinates) -> nearest voxel [x, y, z] of the PET array (checked inside)."""
        p = np.asarray(ras_mm, float).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InputError(f"expected 3 finite coordinates, got {ras_mm!r}")
        lps = p * np.array([-1.0, -1.0, 1.0])
        idx = (np.linalg.inv(self.session.grid.index_to_lps) @ np.append(lps, 1.0))[:3]
        v = np.rint(idx).astype(int)
        if np.any(v < 0) or np.any(v >= np.array(self.session.grid.shape)):
            raise InputError(f"point {list(np.round(p, 1))} (RAS mm) lies outside the image")
        return v

    # -- changes ----------------------------------------------------------------------------------------

    def change(self, version: int, user: str, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Apply one user action at ``version``; returns :meth:`state`. Raises Conflict / InputError."""
        with self.lock:
            if int(version) != self.version:
                raise Conflict(f"case {self.case_id} changed in another tab or window (now version {self.version}, "
                               f"this page has {version}): reload it")
            t0 = time.perf_counter()
            before = self.labels()
            self.info = None
            if kind == "undo":
                if not self.done:
                    raise InputError("nothing to undo")
                act = self.done.pop()
                for _ in range(act.steps):
                    self.session.undo()
                if act.meta_before is not None:
                    self.meta = act.meta_before
                self.undone.append(act)
                logged = {"undone": act.kind}
            elif kind == "redo":
                if not self.undone:
                    raise InputError("nothing to redo")
                act = self.undone.pop()
                act.meta_before = copy.deepcopy(self.meta)
                self._apply(act)
                self.done.append(act)
                logged = {"redone": act.kind, **act.args}
            else:
                act = Action(kind, self._resolve(kind, args), meta_before=copy.deepcopy(self.meta))
                self._apply(act)
                self.done.append(act)
                self.undone.clear()
                logged = dict(act.args)
            self.timings["last_change_s"] = time.perf_counter() - t0
            self.version += 1
            self._labels = None
            self.changed = tools.changed_box(before, self.labels())
            self._autosave()
            self.timings["last_autosave_s"] = time.perf_counter() - t0 - self.timings["last_change_s"]
            self._audit(user, kind, logged)
            return self.state()

    def _resolve(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Fill in the object a click goes to and turn page coordinates into voxel indices (what is replayed)."""
        ids = sorted(self.session.objects)
        what = parse_kind(args) if kind in ("click", "box", "brush", "grow", "threshold") else {}
        if what.get("kind") == "organ" and args.get("object") is None:  # an organ's clicks go to that organ
            same = [k for k in ids if {n: v for n, v in (self.meta.get(k) or {}).items() if n != "confirmed"} == what]
            args = {**args, "object": same[0]} if same else args
        if kind == "click":
            v = self.voxel_of(args.get("ras"))
            positive = bool(args.get("positive", True))
            obj = args.get("object")
            if obj is None and what.get("kind") == "organ" and not positive:
                raise InputError(f"no {what['name']} yet: start it with a positive click")
            if obj is None and what.get("kind") == "organ":
                obj = max(ids, default=0) + 1
            if obj is None:
                under = int(self.labels()[tuple(v)])
                if positive:
                    obj = under or (max(ids, default=0) + 1)
                else:
                    obj = under or self.last_object
                    if obj is None:
                        raise InputError("a negative click (shift-click) must land on a lesion to remove it")
            return {"voxel": v.tolist(), "positive": positive, "object": self._check_object(obj), **what,
                    **self._class_of(what)}
        if kind == "box":
            a, b = self.voxel_of(args.get("lo")), self.voxel_of(args.get("hi"))
            obj = args.get("object") or (max(ids, default=0) + 1)
            return {"lo": np.minimum(a, b).tolist(), "hi": np.maximum(a, b).tolist(), "object": self._check_object(obj),
                    **what, **self._class_of(what)}
        if kind == "delete":
            obj = int(args.get("object", 0))
            if obj not in self.session.objects:
                raise InputError(f"no object {obj}")
            return {"object": obj}
        if kind == "auto":
            if self.auto is None:
                raise InputError("no automatic model: start petctfm serve with --auto-model RUN")
            return {}
        if kind in ("brush", "erase"):
            pts = args.get("points") if args.get("points") is not None else [args.get("ras")]
            if not isinstance(pts, list) or not 1 <= len(pts) <= MAX_STROKE:
                raise InputError(f"a stroke needs 1..{MAX_STROKE} points (RAS mm)")
            vox = np.unique(np.array([self.voxel_of(p) for p in pts]), axis=0)
            plane = args.get("plane")
            if plane is not None and plane not in PLANES:
                raise InputError(f"plane must be one of {', '.join(PLANES)} or null (a 3D sphere), got {str(plane)[:20]!r}")
            out = {"voxels": vox.tolist(), "radius_mm": _number(args.get("radius_mm", 5.0), "radius_mm"),
                   "axis": None if plane is None else self._voxel_axis(PLANES[plane]), "plane": plane}
            if kind == "erase":
                obj = args.get("object")
                return {**out, "object": None if obj is None else self._existing(obj)}
            return {**out, "object": self._target(args, vox[0], ids), **what}
        if kind == "grow":
            v = self.voxel_of(args.get("ras"))
            out = {"voxel": v.tolist(), "box_mm": _number(args.get("box_mm", tools.ISO_BOX_MM), "box_mm")}
            if args.get("suv") is not None:
                out["suv"] = _number(args["suv"], "suv")
            else:
                out["fraction"] = _number(args.get("fraction", tools.ISO_FRACTION), "fraction")
            return {**out, "object": self._target(args, v, ids), **what}
        if kind == "threshold":
            a, b = self.voxel_of(args.get("lo")), self.voxel_of(args.get("hi"))
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            if args.get("suv") is not None:
                thr = _number(args["suv"], "suv")
            else:
                box = tuple(slice(int(x), int(y) + 1) for x, y in zip(lo, hi))
                thr = _number(args.get("fraction", tools.ISO_FRACTION), "fraction") * float(self.session.suv[box].max())
            obj = args.get("object") or (max(ids, default=0) + 1)
            return {"lo": lo.tolist(), "hi": hi.tolist(), "suv": thr, "object": self._check_object(obj), **what}
        if kind == "confirm":
            return {"object": self._existing(args.get("object"))}
        raise InputError(f"unknown action {kind!r}")

    def _class_of(self, what: dict[str, str]) -> dict[str, str]:
        """``{"class": name}`` when the object menu's choice (an organ's name, or "lesion") is a class the model
        was trained with (``model.class_prompts``): the click / box then steers the network; ``{}`` otherwise (a
        model without class prompts, a held-out organ: prompted class-free, zero-shot)."""
        name = what.get("name") if what.get("kind") == "organ" else what.get("kind")
        classes = getattr(self.session, "classes", ())
        return {"class": name} if name and name in classes else {}

    def _existing(self, obj: Any) -> int:
        try:
            obj = int(obj)
        except (TypeError, ValueError):
            raise InputError(f"object must be an object id, got {str(obj)[:20]!r}") from None
        if obj not in self.session.objects:
            raise InputError(f"no object {obj}")
        return obj

    def _target(self, args: dict[str, Any], v: np.ndarray, ids: list[int]) -> int:
        """The object a brush stroke / isocontour goes to: the one named (the selected row, or the chosen organ's),
        else the object under the voxel ``v`` (3,), else a new one."""
        obj = args.get("object")
        if obj is None:
            obj = int(self.labels()[tuple(v)]) or (max(ids, default=0) + 1)
        return self._check_object(obj)

    def _voxel_axis(self, ras_axis: int) -> int:
        """The voxel axis (0..2) closest to RAS axis ``ras_axis`` (LPS and RAS share the axes, not the signs)."""
        return int(np.argmax(np.abs(np.asarray(self.session.grid.index_to_lps)[ras_axis, :3])))

    @staticmethod
    def _check_object(obj: Any) -> int:
        obj = int(obj)
        if not 1 <= obj <= MAX_OBJECTS:
            raise InputError(f"lesion id must be in 1..{MAX_OBJECTS}, got {obj}")
        return obj

    def _apply(self, act: Action) -> None:
        s, a = self.session, act.args
        new_object = act.kind in ("click", "box", "brush", "grow", "threshold") and a["object"] not in s.objects
        if act.kind == "brush":
            k, lab = a["object"], self.labels()
            paint = tools.brush_mask(lab.shape, s.grid.spacing, a["voxels"], a["radius_mm"], a["axis"])
            paint &= (lab == 0) | (lab == k)  # another object keeps its voxels: erase them first
            if not paint.any():
                raise InputError("the brush found no free voxel there (another object holds them: erase first)")
            s.set_mask(s.object_mask(k) | paint, object=k)
            act.steps, self.last_object = 1, k
        elif act.kind == "erase":
            rub = tools.brush_mask(s.grid.shape, s.grid.spacing, a["voxels"], a["radius_mm"], a["axis"])
            hit = {k: m for k in ([a["object"]] if a["object"] is not None else sorted(s.objects))
                   if (m := s.object_mask(k)) is not None and (m & rub).any()}
            if not hit:
                raise InputError("the eraser touched no object")
            for k, m in hit.items():
                if (m & ~rub).any():
                    s.set_mask(m & ~rub, object=k)
                else:
                    s.reset(k)  # nothing left: the object goes
            act.steps = len(hit)
            a["objects"] = sorted(hit)
        elif act.kind == "grow":
            kw = {"threshold": a["suv"]} if "suv" in a else {"fraction": a["fraction"]}
            region, info = tools.isocontour(s.suv, s.grid.spacing, a["voxel"], box_mm=a["box_mm"], **kw)
            s.set_mask(region, object=a["object"])
            act.steps, self.last_object = 1, a["object"]
            a["threshold"], self.info = round(info["threshold"], 4), {"tool": "grow", "object": a["object"], **info}
        elif act.kind == "threshold":
            region = tools.box_threshold(s.suv, a["lo"], a["hi"], a["suv"])
            if not region.any():
                raise InputError(f"no voxel of the box reaches SUV {a['suv']:.2f}")
            inside = np.zeros(region.shape, bool)
            inside[tuple(slice(lo, hi + 1) for lo, hi in zip(a["lo"], a["hi"]))] = True
            s.set_mask((s.object_mask(a["object"]) & ~inside) | region, object=a["object"])
            act.steps, self.last_object = 1, a["object"]
            self.info = {"tool": "threshold", "object": a["object"], "threshold": a["suv"]}
        elif act.kind == "confirm":
            self.meta[a["object"]] = {**(self.meta.get(a["object"]) or {"kind": "lesion"}), "confirmed": True}
        if new_object:  # a new object: its kind and name
            self.meta[a["object"]] = {k: a[k] for k in ("kind", "name") if k in a} or {"kind": "lesion"}
        if act.kind == "click" and not a["positive"] and a["object"] in s.objects:
            k = a["object"]
            st = s.objects[k]
            prompted = st.box is not None or any(pos for _, pos in st.points)
            before = s.object_mask(k)
            s.add_point(a["voxel"], positive=False, object=k, space="voxel",
                        **({"target_class": a["class"]} if "class" in a else {}))
            new = tools.negative_click(before, s.object_mask(k), a["voxel"], prompted)
            s.objects[k].mask = s.orient.to_ras(new)  # the same history step: undo restores ``before``
            act.steps, self.last_object = 1, k
            if not new.any():  # nothing left: the object goes (one more undoable step)
                s.reset(k)
                act.steps, self.last_object = 2, None
        elif act.kind == "click":
            s.add_point(a["voxel"], positive=a["positive"], object=a["object"], space="voxel",
                        **({"target_class": a["class"]} if "class" in a else {}))
            act.steps, self.last_object = 1, a["object"]
        elif act.kind == "box":
            s.add_box(a["lo"], a["hi"], object=a["object"], space="voxel",
                      **({"target_class": a["class"]} if "class" in a else {}))
            act.steps, self.last_object = 1, a["object"]
        elif act.kind == "delete":
            s.reset(a["object"])
            act.steps = 1
        elif act.kind == "auto":
            from petctfm.evaluate.lesions import label_lesions

            if "mask" not in a:  # computed once; redo re-uses it
                a["mask"] = np.asarray(self.auto() > 0)  # type: ignore[misc]
            labels, n = label_lesions(a["mask"], 18)
            first = max(s.objects, default=0) + 1
            n = min(n, MAX_OBJECTS - first + 1)
            for k in range(n):
                s.set_mask(labels == k + 1, object=first + k)
                self.meta[first + k] = {"kind": "lesion"}
            act.steps = n
            a["lesions"] = n

    # -- reading ----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the page shows: version, one row per lesion and per organ (volume, SUVmax/mean/peak, TLG, kind,
        name), lesion totals (organs not counted), undo/redo."""
        t0 = time.perf_counter()
        rows = self.table()
        self.timings["last_table_s"] = time.perf_counter() - t0
        organs = [r for r in rows if r["kind"] == "organ"]
        rows = [r for r in rows if r["kind"] != "organ"]
        return {"case": self.case_id, "version": self.version, "lesions": rows, "organs": organs,
                "shape": [int(n) for n in self.session.grid.shape], "changed": self.changed, "info": self.info,
                "max_ml": self.max_ml, "organ_map": self.organ_map is not None,
                "totals": {"count": sum(r["n_voxels"] > 0 for r in rows),
                           "mtv_ml": float(sum(r["volume_ml"] for r in rows)),
                           "tlg": float(sum(r["tlg"] for r in rows))},
                "can_undo": bool(self.done), "can_redo": bool(self.undone),
                "has_auto": self.auto is not None, "dicom": self.pt_datasets is not None,
                "timings_s": dict(self.timings)}

    def table(self) -> list[dict[str, Any]]:
        """One row per object: the quantities of :meth:`PromptSession.table` (volume ml, SUVmax, SUVmean,
        SUVpeak = :func:`petctfm.evaluate.lesions.suv_peak`, TLG = SUVmean x volume), computed in one pass over
        the label map (bincount / find_objects) with SUVpeak re-computed only for objects that changed: a
        click costs the same with 2 objects or 50 (PromptSession.table scans the volume once per object).

        For the page, each row also has ``lo`` / ``hi`` (the object's voxel bounding box, ``hi`` exclusive),
        ``peak_voxel`` / ``peak_ras`` (its SUVmax voxel, in the object: where the page's cursor jumps to),
        ``flags`` (:func:`petctfm.serve.tools.implausible`, lesions only) and ``confirmed`` (the reader kept it)."""
        from scipy import ndimage

        from petctfm.evaluate.lesions import SPHERE_1ML_RADIUS_MM, suv_peak

        lab, suv, s = self.labels(), self.session.suv, self.session
        pad = [int(np.ceil(SPHERE_1ML_RADIUS_MM / sp)) + 1 for sp in s.grid.spacing]
        ids = sorted(s.objects)
        if not ids:
            return []
        boxes = ndimage.find_objects(lab, max_label=max(ids))
        vox_ml = float(np.prod(s.grid.spacing)) / 1000.0
        rows = []
        for k in ids:
            st, found = s.objects[k], boxes[k - 1] if k <= len(boxes) else None
            row = {"object": k, "kind": self.kind_name(k)[0], "name": self.kind_name(k)[1], "n_voxels": 0, "volume_ml": 0.0, "suv_max": None, "suv_mean": None,
                   "suv_peak": None, "tlg": 0.0, "n_points": len(st.points), "box": st.box is not None,
                   "flags": [], "confirmed": bool((self.meta.get(k) or {}).get("confirmed"))}
            if found is not None:
                # the bounding box grown by the SUVpeak sphere (clipped to the image): all work is in this crop
                box = tuple(slice(max(b.start - h, 0), min(b.stop + h, e)) for b, h, e in zip(found, pad, lab.shape))
                inside = lab[box] == k
                vals = suv[box][inside]
                nk, total = int(vals.size), float(vals.sum(dtype=np.float64))
                key = (k, nk, total, tuple((b.start, b.stop) for b in box))
                if key not in self._peaks:
                    self._peaks[key] = suv_peak(suv[box], inside, s.grid.spacing)
                mean = total / nk
                at = np.unravel_index(int(np.argmax(np.where(inside, suv[box], -np.inf))), inside.shape)
                peak_voxel = [int(b.start + i) for b, i in zip(box, at)]
                row.update(n_voxels=nk, volume_ml=nk * vox_ml, suv_max=float(vals.max()), suv_mean=mean,
                           suv_peak=self._peaks[key], tlg=mean * nk * vox_ml,
                           lo=[int(b.start) for b in found], hi=[int(b.stop) for b in found],
                           peak_voxel=peak_voxel, peak_ras=self.ras_of(peak_voxel))
                if row["kind"] == "lesion":
                    organs = None
                    if self.organ_map is not None:
                        from petctfm.core.labels import ORGAN_LABELS

                        counts = np.bincount(self.organ_map[box][inside], minlength=len(ORGAN_LABELS))
                        organs = {n: int(counts[v]) for n, v in ORGAN_LABELS.items() if v and v < counts.size}
                    row["flags"] = tools.implausible(nk, nk * vox_ml, organs, self.max_ml)
            if row["n_voxels"] or st.points:
                rows.append(row)
        return rows

    def label_bytes(self, lo: Any = None, hi: Any = None) -> bytes:
        """The label map's voxels in the box ``lo`` (3,) .. ``hi`` (3,, exclusive; default the whole image) as
        uint8 bytes in NIfTI voxel order (x fastest): what the page repaints after a change (only the box that
        :attr:`changed`)."""
        lab = self.labels()
        lo = np.zeros(3, int) if lo is None else np.asarray(lo, int)
        hi = np.array(lab.shape) if hi is None else np.asarray(hi, int)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo < 0) or np.any(hi > lab.shape) or np.any(lo >= hi):
            raise InputError(f"box {lo.tolist()}..{hi.tolist()} is not inside the image {list(lab.shape)}")
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        return np.ascontiguousarray(lab[box].astype(np.uint8).ravel(order="F")).tobytes()

    # -- files ------------------------------------------------------------------------------------------

    def _autosave(self) -> None:
        from petctfm.io.atomic import atomic_write_json
        from petctfm.predict.outputs import write_mask

        write_mask(self.labels(), self.pet, self.out / "mask.nii.gz")
        atomic_write_json(self.out / OBJECTS_FILE, {str(k): v for k, v in self.meta.items() if k in self.session.objects})

    def save(self, user: str) -> dict[str, Any]:
        """mask.nii.gz (input PET grid), lesions.csv (+ organs.csv when there are organs) and, for DICOM input,
        mask.seg.dcm (one segment per object, lesions and organs coded as such, SEMIAUTOMATIC); all atomic. A case
        of ``serve --dicomweb``: the SEG names the reader (``user``) as its content creator and is stored back into
        its study (:attr:`push`; ``pushed`` in the answer)."""
        from petctfm.io.atomic import atomic_write_text
        from petctfm.io.tables import csv_text
        from petctfm.methods.promptable.segment import write_objects_seg
        from petctfm.predict.outputs import write_mask

        with self.lock:
            lab = self.labels()
            files = [write_mask(lab, self.pet, self.out / "mask.nii.gz")]
            rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in self.table()]
            cols = ["object", "kind", "name", "n_voxels", "volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg",
                    "n_points", "box"]
            files.append(atomic_write_text(self.out / "lesions.csv",
                                           csv_text([r for r in rows if r["kind"] != "organ"], cols)))
            if any(r["kind"] == "organ" for r in rows):
                files.append(atomic_write_text(self.out / "organs.csv",
                                               csv_text([r for r in rows if r["kind"] == "organ"], cols)))
            seg = None
            if self.pt_datasets is not None and lab.any():
                ids = [int(v) for v in np.unique(lab) if v]
                identity = self.seg_identity(lab, clean_user(user)) if self.seg_identity is not None else None
                seg = write_objects_seg(lab, {k: self.kind_name(k)[1] for k in ids},
                                        {k: self.kind_name(k)[0] for k in ids}, self.pt_datasets,
                                        self.out / "mask.seg.dcm", self.model_name, "petctfm serve", identity)
                files.append(seg)
            self._audit(user, "save", {"files": [p.name for p in files]})
            answer: dict[str, Any] = {"version": self.version, "files": [str(p) for p in files]}
            if seg is not None and self.push is not None:
                answer["pushed"] = self.push(seg)
                self._audit(user, "push", {"files": [seg.name]})
            return answer

    def _audit(self, user: str, action: str, detail: dict[str, Any]) -> None:
        """One JSON line: time (UTC), user, case id, action, voxel indices / object ids. No image data, no PHI."""
        detail = {k: v for k, v in detail.items() if k != "mask"}
        line = json.dumps({"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                           "user": clean_user(user), "case": self.case_id, "action": action,
                           "version": self.version, **detail}) + "\n"
        self.out.mkdir(parents=True, exist_ok=True)
        # an append-only log: one write() of one line with O_APPEND (POSIX appends it whole), then fsync
        fd = os.open(self.out / "audit.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def parse_kind(args: dict[str, Any]) -> dict[str, str]:
    """The validated ``kind`` / ``name`` of a click or box: ``{}`` (a lesion, named by its id), ``{"kind":
    "lesion"}`` or ``{"kind": "organ", "name": <an ORGAN_LABELS name>}``."""
    from petctfm.io.dicom_seg import KINDS, organ_key

    kind = args.get("kind", "lesion")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {str(kind)[:40]!r}")
    if kind == "lesion":
        return {"kind": "lesion"} if "kind" in args else {}
    name = organ_key(str(args.get("name", ""))[:64])
    if name is None:
        raise InputError(f"unknown organ {str(args.get('name', ''))[:40]!r}")
    return {"kind": "organ", "name": name}


def _number(value: Any, what: str) -> float:
    """A finite float from a request (InputError naming ``what`` otherwise; booleans and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {str(value)[:20]!r}")
    return float(value)


def clean_user(user: Any) -> str:
    """A user name as logged: printable, at most 64 characters, ``anonymous`` when empty."""
    text = "".join(ch for ch in str(user or "") if ch.isprintable())[:USER_MAX].strip()
    return text or "anonymous"


def nifti_bytes(img: Any, dtype: Any = np.float32) -> bytes:
    """A SimpleITK image as gzip-compressed NIfTI-1 bytes (RAS affine of its LPS geometry), for the page."""
    import nibabel as nib

    from petctfm.evaluate.geometry import grid_of
    from petctfm.io.images import array_xyz

    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid_of(img).index_to_lps
    nii = nib.Nifti1Image(array_xyz(img).astype(dtype), affine)
    nii.header.set_xyzt_units("mm")
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    return gzip.compress(nii.to_bytes(), compresslevel=1)


__all__ = ["Action", "CaseState", "Conflict", "MAX_OBJECTS", "OBJECTS_FILE", "PLANES", "clean_user", "nifti_bytes",
           "parse_kind"]
