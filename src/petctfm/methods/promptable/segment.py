"""The prompt file and ``petctfm segment``: prompts from JSON applied to one study, files out.

Prompt file (JSON; docs/promptable.md)::

    {"space": "lps",                                   # voxel | lps | ras (default voxel)
     "objects": {"1": "liver", "2": "lesion A",        # id -> name; ids 1..65535; a name of ORGAN_LABELS
                 "3": {"name": "node", "kind": "lesion"},  # is an organ, others lesions (or say "kind")
                 "4": {"name": "liver", "class": "liver"}},  # "class": steer a class-prompted model
     "prompts": [                                      # applied in order (sequential, object by object)
        {"object": 1, "point": [12.0, -40.5, 300.0], "positive": true},
        {"object": 2, "box": [[0, 0, 0], [10, 10, 10]]},
        {"object": 2, "point": [5, 5, 5], "positive": false}]}

Every problem is a one-line :class:`InputError` naming the file and the entry (``prompts[3]``). The file is
read with :func:`petctfm.io.bounded_json.load_bounded_file` (a regular file only: a FIFO is never opened, a
folder is refused; size, nesting depth and number length capped); types are strict (``"positive": "false"``,
a string, is refused; ``positive`` belongs to points only); at most :data:`MAX_PROMPTS` prompts per file.
An object's ``class`` (a lesion class or an organ of the model's class table, ``model.classes``) conditions a
model trained with class prompts; a class outside that table (a held-out organ, a model without class prompts)
is a one-line InputError (exit 3) naming the file and the object, before any prompt runs. A name alone never
sets a class.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.errors import InputError
from petctfm.io.dicom_seg import KINDS, organ_key
from petctfm.methods.promptable.prompts import LESION_CLASSES, class_key
from petctfm.methods.promptable.session import SPACES, PromptSession

OUTPUT_MASK = "mask.nii.gz"
OUTPUT_TABLE = "objects.csv"
OUTPUT_SUMMARY = "summary.json"
OUTPUT_SEG = "mask.seg.dcm"
#: Most prompts one prompt file may hold. Each prompt runs the mask decoder at least once (0.05-0.5 s on a CPU,
#: more with auto-zoom): 10,000 points ran for tens of minutes. Larger files are refused (split them).
MAX_PROMPTS = 1000
#: A progress line is logged every this many prompts (files with more prompts than this).
PROGRESS_EVERY = 50
#: ``--start-from`` on another grid is resampled (nearest neighbour) onto the PET grid; an object that keeps
#: less than this fraction of its volume there lies outside the PET and is refused.
START_KEPT_POSSIBLE = 0.5
_ID = re.compile(r"[0-9]{1,5}")

log = logging.getLogger(__name__)


def _xyz(v: Any, where: str) -> list[float]:
    if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                                  for c in v):
        raise InputError(f"{where}: expected 3 numbers, got {json.dumps(v)[:80]}")
    return [float(c) for c in v]


def read_prompt_file(path: str | os.PathLike, known_ids: set[int] | None = frozenset()) -> dict[str, Any]:
    """Parse and validate a prompt file -> ``{"space", "objects": {id: name}, "prompts": [...]}``.

    ``known_ids``: object ids that exist already (from ``--start-from``) and may be prompted without being
    declared; None: do not check the ids yet (:func:`check_object_ids` later)."""
    from petctfm.io.bounded_json import load_bounded_file

    path = Path(path)
    doc = load_bounded_file(path)
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object with 'prompts'")
    unknown = set(doc) - {"space", "objects", "prompts"}
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (allowed: space, objects, prompts)")
    space = doc.get("space", "voxel")
    if not isinstance(space, str) or space not in SPACES:
        raise InputError(f"{path}: space {space!r} is not one of {', '.join(SPACES)}")
    objects: dict[int, str] = {}
    raw = doc.get("objects", {})
    if not isinstance(raw, dict):
        raise InputError(f"{path}: 'objects' must map ids to names")
    kinds: dict[int, str] = {}
    classes: dict[int, str] = {}
    for k, name in raw.items():
        if not _ID.fullmatch(k) or not 1 <= int(k) <= 65535:
            raise InputError(f"{path}: objects[{k!r}]: id must be an integer 1..65535")
        if isinstance(name, dict):
            kind = name.get("kind", "lesion")
            if set(name) - {"name", "kind", "class"} or not isinstance(kind, str) or kind not in KINDS:
                raise InputError(f"{path}: objects[{k!r}]: expected {{\"name\": ..., \"kind\": \"lesion\" | \"organ\", "
                                 f"\"class\": ...}}")
            if not isinstance(name.get("name", ""), str):
                raise InputError(f"{path}: objects[{k!r}].name: must be a string")
            if "class" in name:
                cls = class_key(name["class"]) if isinstance(name["class"], str) else None
                if cls is None:
                    raise InputError(f"{path}: objects[{k!r}].class: {json.dumps(name['class'])[:40]} is not a class "
                                     "(lesion, all_lesions or an organ name)")
                classes[int(k)] = cls
                if "kind" not in name:
                    kinds[int(k)] = "lesion" if cls in LESION_CLASSES else "organ"
            kinds.setdefault(int(k), name.get("kind") or object_kind(name.get("name", "")))
            name = name.get("name", f"object_{k}")
        elif not isinstance(name, str):
            raise InputError(f"{path}: objects[{k!r}]: the name must be a string, got {json.dumps(name)[:40]}")
        objects[int(k)] = name
        kinds.setdefault(int(k), object_kind(objects[int(k)]))
    prompts = doc.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise InputError(f"{path}: 'prompts' must be a non-empty list")
    if len(prompts) > MAX_PROMPTS:
        raise InputError(f"{path}: {len(prompts):,} prompts, more than the limit of {MAX_PROMPTS:,} per file "
                         "(each runs the model; split the file)")
    out = []
    for i, p in enumerate(prompts):
        where = f"{path}: prompts[{i}]"
        if not isinstance(p, dict):
            raise InputError(f"{where}: expected an object")
        bad = set(p) - {"object", "point", "positive", "box"}
        if bad:
            raise InputError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        obj = p.get("object")
        if not isinstance(obj, int) or isinstance(obj, bool):
            raise InputError(f"{where}: 'object' must be an integer id")
        if ("point" in p) == ("box" in p):
            raise InputError(f"{where}: give exactly one of 'point' or 'box'")
        if "point" in p:
            pos = p.get("positive", True)
            if not isinstance(pos, bool):
                raise InputError(f"{where}: 'positive' must be true or false")
            out.append({"object": obj, "point": _xyz(p["point"], where + ".point"), "positive": pos})
        else:
            if "positive" in p:
                raise InputError(f"{where}: 'positive' applies to points only (a box is always positive)")
            b = p["box"]
            if not isinstance(b, list) or len(b) != 2:
                raise InputError(f"{where}: 'box' must be [[x0, y0, z0], [x1, y1, z1]]")
            out.append({"object": obj, "box": [_xyz(b[0], where + ".box[0]"), _xyz(b[1], where + ".box[1]")]})
    spec = {"space": space, "objects": objects, "kinds": kinds, "classes": classes, "prompts": out, "path": str(path)}
    if known_ids is not None:
        check_object_ids(spec, known_ids)
    return spec


def check_object_ids(spec: dict[str, Any], known_ids: set[int] = frozenset()) -> None:
    """Every prompted object id is declared in the file or in ``known_ids`` (e.g. from ``--start-from``)."""
    for i, p in enumerate(spec["prompts"]):
        if p["object"] not in spec["objects"] and p["object"] not in known_ids:
            raise InputError(f"{spec['path']}: prompts[{i}]: unknown object id {p['object']} "
                             f"(declared: {sorted(spec['objects']) or 'none'})")


def check_classes(spec: dict[str, Any], session: PromptSession) -> None:
    """Every declared object class is one the session's model has an embedding of (one-line InputError naming
    the file and the object, e.g. a held-out organ or a model trained without class prompts)."""
    for k, cls in sorted(spec.get("classes", {}).items()):
        try:
            session.check_class(cls)
        except InputError as exc:
            raise InputError(f"{spec['path']}: objects['{k}'].class: {exc}") from None


def object_kind(name: str) -> str:
    """"organ" when ``name`` is an organ of ``petctfm.core.labels.ORGAN_LABELS`` ("liver", "Kidney left"), else
    "lesion"."""
    return "organ" if organ_key(name) else "lesion"


def apply_prompts(session: PromptSession, spec: dict[str, Any]) -> None:
    """Apply a parsed prompt file to ``session`` in order; errors name the entry. A file with more than
    :data:`PROGRESS_EVERY` prompts logs a progress line every :data:`PROGRESS_EVERY` prompts."""
    n, t0 = len(spec["prompts"]), time.perf_counter()
    for i, p in enumerate(spec["prompts"]):
        if n > PROGRESS_EVERY and i and i % PROGRESS_EVERY == 0:
            s = time.perf_counter() - t0
            log.info("%s: prompt %d/%d (%.0f s, about %.0f s left)", spec["path"], i, n, s, s / i * (n - i))
        cls = spec.get("classes", {}).get(p["object"])
        kw = {} if cls is None else {"target_class": cls}
        try:
            if "point" in p:
                session.add_point(p["point"], positive=p["positive"], object=p["object"], space=spec["space"], **kw)
            else:
                session.add_box(p["box"][0], p["box"][1], object=p["object"], space=spec["space"], **kw)
        except InputError as exc:
            raise InputError(f"{spec['path']}: prompts[{i}]: {exc}") from None


def write_objects_seg(labels: np.ndarray, names: dict[int, str], kinds: dict[int, str], pt_datasets: list[Any],
                      path: str | os.PathLike, model_name: str, series_description: str = "petctfm segment",
                      identity: dict[str, Any] | None = None) -> Path:
    """One BINARY DICOM-SEG of the label map ``labels`` (X, Y, Z, on the grid of the PT series ``pt_datasets``
    in slice order) with one segment per nonzero object id, labelled with its name (``names``, default
    ``object <id>``) and coded as its kind (``kinds``: lesion | organ, default from the name,
    :func:`object_kind`); algorithm type SEMIAUTOMATIC (prompted / human-corrected), ``model_name`` identified.
    Shared by ``petctfm segment`` and ``petctfm serve``'s Save (:func:`petctfm.io.dicom_seg.build_seg`);
    ``identity``: more :func:`~petctfm.io.dicom_seg.build_seg` keywords (``serve --dicomweb``: the UIDs and
    ``content_creator_name``, the reader)."""
    from petctfm.core.version import __version__
    from petctfm.io.dicom_seg import SegmentSpec, build_seg, save_seg

    ids = sorted(int(v) for v in np.unique(labels) if v)
    if not ids:
        raise InputError(f"{path}: nothing segmented: no DICOM-SEG written")
    specs = []
    for k in ids:
        name = names.get(k) or f"object {k}"
        specs.append(SegmentSpec(k, name, kinds.get(k) or object_kind(name)))
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))  # [slice, rows, cols]
    seg = build_seg(frames, pt_datasets, series_number=910, series_description=series_description,
                    content_description="Objects segmented from prompts by petctfm (research use only)",
                    manufacturer_model_name="petctfm promptable", software_versions=__version__,
                    algorithm=(model_name, __version__), algorithm_type="SEMIAUTOMATIC", segments=specs,
                    tracking_id="object", content_label="OBJECTS", **(identity or {}))
    return save_seg(seg, path)


def start_mask(path: str | os.PathLike, pet: Any) -> tuple[np.ndarray, str | None]:
    """The label map ``path`` (X, Y, Z) on the grid of the SimpleITK image ``pet``, and a note saying how it
    was resampled (None when it already lay on that grid).

    Grids are compared by geometry (shape, spacing, origin, direction within
    :func:`petctfm.evaluate.geometry.grid_mismatch`'s header round-off tolerance), not by shape alone: a mask
    on another grid (shifted, another spacing) is resampled by nearest neighbour in patient coordinates, with
    a logged line. An object that keeps less than :data:`START_KEPT_POSSIBLE` of its volume on the PET grid
    lies outside the PET (a wrong affine, another study): one-line InputError naming the file."""
    import SimpleITK as sitk

    from petctfm.evaluate.geometry import grid_mismatch, grid_of
    from petctfm.io.images import array_xyz, read_image

    img = read_image(path)
    arr = array_xyz(img)
    if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise InputError(f"{path}: not a label map (non-integer values)")
    if arr.min() < 0 or arr.max() > 65535:
        raise InputError(f"{path}: label values must be 0..65535 (got {arr.min():g}..{arr.max():g})")
    problem = grid_mismatch(grid_of(pet), grid_of(img))
    if problem is None:
        return arr.astype(np.int64), None
    src = sitk.Cast(img, sitk.sitkUInt16)
    out = array_xyz(sitk.Resample(src, pet, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16))
    src_ml = float(np.prod(img.GetSpacing())) / 1000.0
    dst_ml = float(np.prod(pet.GetSpacing())) / 1000.0
    for v in np.unique(arr):
        if not v:
            continue
        before, after = float((arr == v).sum()) * src_ml, float((out == v).sum()) * dst_ml
        if after < START_KEPT_POSSIBLE * before:
            raise InputError(f"{path}: object {int(v)} lies outside the PET: {after:.1f} of {before:.1f} ml on the "
                             f"PET grid (the mask's grid differs: {problem})")
    note = f"{path}: on another grid than the PET ({problem}); resampled (nearest neighbour) onto the PET grid"
    log.warning("%s", note)
    return out.astype(np.int64), note


def check_options(max_zoom: float = 4.0, components: str = "prompted") -> None:
    """A session's settings, before the model or an image is read: ``max_zoom`` a finite number >= 1 (1 = no
    auto-zoom), ``components`` one of :data:`~petctfm.methods.promptable.session.COMPONENTS`; a value out of
    range is a UsageError naming it."""
    from petctfm.core.checks import check_choice, check_float
    from petctfm.methods.promptable.session import COMPONENTS

    check_float("max_zoom", max_zoom, lo=1)
    check_choice("components", components, COMPONENTS)


def segment(model: str | os.PathLike, pet: Any, prompts: str | os.PathLike, out: str | os.PathLike,
            ct: Any = None, start_from: str | os.PathLike | None = None,
            device: str = "cpu", overwrite: bool = False, max_zoom: float = 4.0, pt_datasets: list[Any] | None = None,
            pet_name: str | None = None, components: str = "prompted") -> dict[str, Any]:
    """``petctfm segment``: ``out/mask.nii.gz`` (label map on the input PET grid), ``out/objects.csv`` (one row
    per object: volume, SUVmax/mean/peak, TLG), ``out/summary.json``; returns the summary.

    ``pet`` / ``ct``: paths or images (:func:`~petctfm.methods.promptable.session.as_image`). ``pt_datasets``:
    the PT headers in slice order when the PET was read from DICOM (``pet`` then on that series' grid): a
    DICOM-SEG with one segment per object is written too (``out/mask.seg.dcm``, :func:`write_objects_seg`). ``start_from``: a mask / label map on the
    PET grid (e.g. ``petctfm predict``'s ``mask.nii.gz``); each nonzero value becomes an object with that id,
    which the prompts then correct. ``components``: ``"prompted"`` drops predicted components that no positive
    click or box reaches (:data:`~petctfm.methods.promptable.session.COMPONENTS`)."""
    import SimpleITK as sitk

    from petctfm.io.atomic import atomic_write_json, atomic_write_text
    from petctfm.io.images import write_image
    from petctfm.io.tables import csv_text

    from petctfm.io.atomic import ensure_output_dir

    check_options(max_zoom, components)
    ensure_output_dir(out)
    t0 = time.perf_counter()
    spec = read_prompt_file(prompts, known_ids=None)  # before the model: a bad file costs nothing
    session = PromptSession.from_run(model, pet, ct=ct, device=device, overwrite=overwrite, max_zoom=max_zoom,
                                     components=components, pet_name=str(pet_name) if pet_name else None)
    known: set[int] = set()
    start_note = None
    if start_from is not None:
        start, start_note = start_mask(start_from, session.pet_image)
        for v in np.unique(start):
            if v:
                session.set_mask(start == v, object=int(v))
                known.add(int(v))
    check_object_ids(spec, known)
    check_classes(spec, session)
    t1 = time.perf_counter()
    apply_prompts(session, spec)
    t2 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lab = session.mask()
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(lab, (2, 1, 0))))
    img.CopyInformation(session.pet_image)
    write_image(img, out / OUTPUT_MASK)
    names = {**{k: f"object_{k}" for k in known}, **spec["objects"]}
    rows = session.table(names)
    atomic_write_text(out / OUTPUT_TABLE, csv_text(rows))
    segs = [write_objects_seg(lab, names, spec["kinds"], pt_datasets, out / OUTPUT_SEG, Path(str(model)).name)
            ] if pt_datasets and lab.any() else []
    summary = {"model": str(model), "pet": str(pet_name or pet), "dicom_seg": [p.name for p in segs],
               "prompts": str(prompts), "n_objects": len(rows),
               "n_prompts": len(spec["prompts"]), "forwards": session.forwards, "encodes": session.encodes, "space": spec["space"],
               "timings_s": {"load": t1 - t0, "prompts": t2 - t1}, "flags": list(session.flags),
               "start_from_resampled": start_note,
               "s_per_prompt": (t2 - t1) / max(len(spec["prompts"]), 1), "objects": rows}
    atomic_write_json(out / OUTPUT_SUMMARY, summary)
    return summary


__all__ = ["OUTPUT_MASK", "OUTPUT_TABLE", "OUTPUT_SUMMARY", "OUTPUT_SEG", "MAX_PROMPTS", "check_options",
           "read_prompt_file", "check_object_ids", "check_classes", "start_mask",
           "object_kind", "apply_prompts", "write_objects_seg", "segment"]
