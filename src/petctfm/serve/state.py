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
"""

from __future__ import annotations

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

MAX_OBJECTS = 255  # uint8 label map
USER_MAX = 64
OBJECTS_FILE = "objects.json"  # {id: {"kind", "name"}} beside the autosaved mask


class Conflict(Exception):
    """The request's version is not the case's current one (another tab changed it): HTTP 409."""


@dataclass
class Action:
    kind: str  # click | box | auto | delete
    args: dict[str, Any]
    steps: int = 0  # PromptSession history entries it made (undone one by one)


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
    meta: dict[int, dict[str, str]] = field(default_factory=dict)  # id -> {"kind", "name"}; absent = a lesion

    def kind_name(self, obj: int) -> tuple[str, str]:
        m = self.meta.get(int(obj)) or {}
        return m.get("kind", "lesion"), m.get("name") or f"lesion {obj}"

    def labels(self) -> np.ndarray:
        """:meth:`PromptSession.mask` (X, Y, Z), computed once per version."""
        if self._labels is None or self._labels[0] != self.version:
            self._labels = (self.version, self.session.mask())
        return self._labels[1]

    # -- geometry ---------------------------------------------------------------------------------------

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
            if kind == "undo":
                if not self.done:
                    raise InputError("nothing to undo")
                act = self.done.pop()
                for _ in range(act.steps):
                    self.session.undo()
                self.undone.append(act)
                logged = {"undone": act.kind}
            elif kind == "redo":
                if not self.undone:
                    raise InputError("nothing to redo")
                act = self.undone.pop()
                self._apply(act)
                self.done.append(act)
                logged = {"redone": act.kind, **act.args}
            else:
                act = Action(kind, self._resolve(kind, args))
                self._apply(act)
                self.done.append(act)
                self.undone.clear()
                logged = dict(act.args)
            self.timings["last_change_s"] = time.perf_counter() - t0
            self.version += 1
            self._labels = None
            self._autosave()
            self.timings["last_autosave_s"] = time.perf_counter() - t0 - self.timings["last_change_s"]
            self._audit(user, kind, logged)
            return self.state()

    def _resolve(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Fill in the object a click goes to and turn page coordinates into voxel indices (what is replayed)."""
        ids = sorted(self.session.objects)
        what = parse_kind(args) if kind in ("click", "box") else {}
        if what.get("kind") == "organ" and args.get("object") is None:  # an organ's clicks go to that organ
            same = [k for k in ids if self.meta.get(k) == what]
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
            return {"voxel": v.tolist(), "positive": positive, "object": self._check_object(obj), **what}
        if kind == "box":
            a, b = self.voxel_of(args.get("lo")), self.voxel_of(args.get("hi"))
            obj = args.get("object") or (max(ids, default=0) + 1)
            return {"lo": np.minimum(a, b).tolist(), "hi": np.maximum(a, b).tolist(), "object": self._check_object(obj),
                    **what}
        if kind == "delete":
            obj = int(args.get("object", 0))
            if obj not in self.session.objects:
                raise InputError(f"no object {obj}")
            return {"object": obj}
        if kind == "auto":
            if self.auto is None:
                raise InputError("no automatic model: start petctfm serve with --auto-model RUN")
            return {}
        raise InputError(f"unknown action {kind!r}")

    @staticmethod
    def _check_object(obj: Any) -> int:
        obj = int(obj)
        if not 1 <= obj <= MAX_OBJECTS:
            raise InputError(f"lesion id must be in 1..{MAX_OBJECTS}, got {obj}")
        return obj

    def _apply(self, act: Action) -> None:
        s, a = self.session, act.args
        if act.kind in ("click", "box") and a["object"] not in s.objects:  # a new object: its kind and name
            self.meta[a["object"]] = {k: a[k] for k in ("kind", "name") if k in a} or {"kind": "lesion"}
        if act.kind == "click":
            s.add_point(a["voxel"], positive=a["positive"], object=a["object"], space="voxel")
            act.steps, self.last_object = 1, a["object"]
        elif act.kind == "box":
            s.add_box(a["lo"], a["hi"], object=a["object"], space="voxel")
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
        click costs the same with 2 objects or 50 (PromptSession.table scans the volume once per object)."""
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
                   "suv_peak": None, "tlg": 0.0, "n_points": len(st.points), "box": st.box is not None}
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
                row.update(n_voxels=nk, volume_ml=nk * vox_ml, suv_max=float(vals.max()), suv_mean=mean,
                           suv_peak=self._peaks[key], tlg=mean * nk * vox_ml)
            if row["n_voxels"] or st.points:
                rows.append(row)
        return rows

    def mask_bits(self) -> bytes:
        """The label map > 0, bit-packed (``np.packbits``, little bit order) in NIfTI voxel order (x fastest)."""
        return np.packbits(self.labels().ravel(order="F") > 0, bitorder="little").tobytes()

    # -- files ------------------------------------------------------------------------------------------

    def _autosave(self) -> None:
        from petctfm.io.atomic import atomic_write_json
        from petctfm.predict.outputs import write_mask

        write_mask(self.labels(), self.pet, self.out / "mask.nii.gz")
        atomic_write_json(self.out / OBJECTS_FILE, {str(k): v for k, v in self.meta.items() if k in self.session.objects})

    def save(self, user: str) -> dict[str, Any]:
        """mask.nii.gz (input PET grid), lesions.csv (+ organs.csv when there are organs) and, for DICOM input,
        mask.seg.dcm (one segment per object, lesions and organs coded as such, SEMIAUTOMATIC); all atomic."""
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
            if self.pt_datasets is not None and lab.any():
                ids = [int(v) for v in np.unique(lab) if v]
                files.append(write_objects_seg(lab, {k: self.kind_name(k)[1] for k in ids},
                                               {k: self.kind_name(k)[0] for k in ids}, self.pt_datasets,
                                               self.out / "mask.seg.dcm", self.model_name, "petctfm serve"))
            self._audit(user, "save", {"files": [p.name for p in files]})
            return {"version": self.version, "files": [str(p) for p in files]}

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


__all__ = ["Action", "CaseState", "Conflict", "MAX_OBJECTS", "OBJECTS_FILE", "clean_user", "nifti_bytes", "parse_kind"]
