"""Interactive promptable segmentation: :class:`PromptSession` (one study, many objects, click by click).

How a click becomes a mask (docs/promptable.md):

1. **Once per study** (cached): the input PET (and CT, resampled onto the PET grid) is reoriented to the
   model's RAS axes by axis permutation and flips only (no interpolation; an oblique grid is handled as its
   nearest axis-aligned orientation) and normalized with the model's statistics.
2. **Per prompt** (a point, a box): the crop follows the prompts, never a ground truth: it is centred on the
   bounding box of the object's positive points, box and current mask, and spans the model's patch at the
   model's training spacing (``patch * spacing`` mm). It is resampled to the patch (trilinear) and the image
   encoder runs **once per crop** (``model.embed``; the embedding is cached, ``cache_size`` crops). An object
   keeps its crop while its positive points and box stay inside it (1/8 of a side from every face), so a
   later click runs only the light mask decoder (``model.decode``) on the four prompt channels drawn at patch
   resolution. **Auto-zoom**: when the prediction touches a crop face that is not the image border, the crop
   grows by ``zoom_step`` (the same patch, coarser voxels; a new embedding) up to ``max_zoom`` and the step is
   re-run; the object keeps its zoom for later clicks. The logits are resampled back to the crop (trilinear)
   and thresholded at 0; voxels outside the crop keep the object's previous mask. With
   ``components="prompted"`` the predicted components that no positive click or box reaches are dropped
   first (spill into neighbouring physiological uptake; it then also triggers no zoom).
3. **Design ``sam`` and class prompts**: the decoder also gets the object's clicks and box as sparse prompts
   (the same positions in patch voxels as the channels; :class:`~.sam.SparsePrompts`), and, when the object has
   a class (``add_point(..., target_class="liver")``; the model's :attr:`PromptSession.classes`), its class
   index. With ``sam``, an object's first click alone (no box, no mask yet) returns the candidate with the
   highest predicted IoU, later prompts the single mask.
4. **Objects**: one label map, each object its id; with ``overwrite=False`` (default) an earlier object keeps
   its voxels. :meth:`undo` restores the exact previous state of the changed object.

Coordinates: ``space="voxel"`` (indices [x, y, z] of the input PET array, ITK / nibabel order), ``"lps"`` (DICOM /
ITK patient mm: +x Left, +y Posterior, +z Superior) or ``"ras"`` (nibabel / 3D Slicer mm: +x Right, +y Anterior).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from petctfm.core.errors import InputError
from petctfm.evaluate.geometry import Grid, grid_of
from petctfm.methods.promptable import prompts as P

SPACES = ("voxel", "lps", "ras")
#: ``components="prompted"`` (default): only the decoder's connected components (26-connected) that hold a
#: positive click (or a voxel next to one) or meet the box are kept; the others (hot structures the model
#: spilled into, away from every prompt) are dropped before auto-zoom and before the mask is stored.
#: ``"all"``: the decoder's mask as it is. docs/promptable.md has the measurement behind the default.
COMPONENTS = ("all", "prompted")


def as_image(obj: Any, what: str) -> "Any":
    """A SimpleITK image from a path, a SimpleITK image, a nibabel image or an ``(array, RAS affine)`` pair."""
    import SimpleITK as sitk

    from petctfm.io.images import image_from_array, read_image

    if isinstance(obj, (str, os.PathLike)):
        return read_image(obj)
    if isinstance(obj, sitk.Image):
        return obj
    if hasattr(obj, "affine") and hasattr(obj, "get_fdata"):
        arr, affine = np.asarray(obj.get_fdata(dtype=np.float32)), obj.affine
    elif isinstance(obj, tuple) and len(obj) == 2:
        arr, affine = np.asarray(obj[0], np.float32), obj[1]
    else:
        raise InputError(f"{what}: expected a path, a SimpleITK or nibabel image, or (array, affine)")
    if arr.ndim != 3:
        raise InputError(f"{what}: expected a 3D image, got shape {arr.shape}")
    g = grid_of(np.asarray(affine, float), arr.shape)
    return image_from_array(arr, tuple(g.spacing), tuple(g.origin), tuple(g.direction.ravel()))


@dataclass
class Orientation:
    """Input index axes -> model RAS axes by permutation and flips. ``perm[i]``: the RAS axis of input axis i;
    ``flip[i]``: input axis i runs against it."""

    perm: tuple[int, ...]
    flip: tuple[bool, ...]
    shape: tuple[int, ...]  # input shape

    @classmethod
    def of(cls, grid: Grid) -> "Orientation":
        ras = np.diag([-1.0, -1.0, 1.0]) @ grid.direction
        perm = tuple(int(np.argmax(np.abs(ras[:, i]))) for i in range(3))
        if sorted(perm) != [0, 1, 2]:
            raise InputError("image direction is too oblique to map onto RAS axes")
        return cls(perm, tuple(bool(ras[perm[i], i] < 0) for i in range(3)), tuple(grid.shape))

    def to_ras(self, arr: np.ndarray) -> np.ndarray:
        """(..., X, Y, Z) input order -> (..., R, A, S)."""
        lead = arr.ndim - 3
        arr = np.flip(arr, [lead + i for i in range(3) if self.flip[i]])
        inv = [self.perm.index(a) for a in range(3)]
        return np.ascontiguousarray(np.transpose(arr, list(range(lead)) + [lead + i for i in inv]))

    def from_ras(self, arr: np.ndarray) -> np.ndarray:
        lead = arr.ndim - 3
        arr = np.transpose(arr, list(range(lead)) + [lead + self.perm[i] for i in range(3)])
        return np.ascontiguousarray(np.flip(arr, [lead + i for i in range(3) if self.flip[i]]))

    def index_to_ras(self, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(3)
        for i in range(3):
            out[self.perm[i]] = (self.shape[i] - 1 - idx[i]) if self.flip[i] else idx[i]
        return out


@dataclass
class ObjectState:
    points: list = field(default_factory=list)  # [(RAS-array index (3,), positive)]
    box: tuple | None = None  # (lo (3,), hi (3,)) RAS-array indices
    mask: np.ndarray | None = None  # (R, A, S) bool
    zoom: float = 1.0
    crop: tuple | None = None  # (lo (3,), size (3,)) of the last crop, kept while the prompts stay inside it
    cls: str | None = None  # the target class (a name of the model's class table), None = no class


class PromptSession:
    """Segment objects in one PET (/CT) study from clicks and boxes; see the module docstring.

    Build with :meth:`from_run`. ``add_point`` / ``add_box`` run the model and return the object's mask on the
    input grid; :meth:`mask` is the label map (uint8 if ids <= 255, else uint16) on the input PET grid.
    The PET (and CT) pass the plausibility checks of predict first (:func:`petctfm.core.plausibility.
    check_pet_study`: one-line InputError naming ``pet_name``, default the PET's path); ``flags`` holds the
    unusual-but-kept findings.
    """

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], pet: Any, ct: Any = None,
                 device: str = "cpu", max_zoom: float = 4.0, zoom_step: float = 1.5, overwrite: bool = False,
                 cache_size: int = 4, components: str = "prompted", pet_name: str | None = None):
        import SimpleITK as sitk

        from petctfm.inference.normalize import normalized_input
        from petctfm.io.images import array_xyz

        self.model, self.config = model.to(device).eval(), config
        self.device, self.max_zoom, self.zoom_step, self.overwrite = device, float(max_zoom), float(zoom_step), overwrite
        if components not in COMPONENTS:
            raise InputError(f"components must be one of {', '.join(COMPONENTS)}, got {components!r}")
        self.components = components
        self.pet_image = as_image(pet, "PET")
        self.suv = array_xyz(self.pet_image).astype(np.float32)
        self.grid = grid_of(self.pet_image)
        self.orient = Orientation.of(self.grid)
        mode = config["data"]["mode"]
        if mode != "pet" and ct is None:
            raise InputError(f"this model reads PET and CT (mode {mode!r}): give ct=")
        if ct is not None and mode != "pet":
            ct_img = sitk.Resample(as_image(ct, "CT"), self.pet_image, sitk.Transform(), sitk.sitkLinear, -1000.0)
            ct_arr = array_xyz(ct_img).astype(np.float32)
        else:
            ct_arr = np.full(self.suv.shape, -1000.0, np.float32)
        from petctfm.core.plausibility import check_pet_study

        # the plausibility checks of harmonize / predict (a PET in Bq/ml, sign-flipped, a CT in the PET slot)
        name = pet_name or (str(pet) if isinstance(pet, (str, os.PathLike)) else "PET")
        self.flags = check_pet_study(self.suv, ct_arr if ct is not None and mode != "pet" else None, name)
        x, self.bg = normalized_input(np.stack([self.suv, ct_arr]), config)
        self.x = self.orient.to_ras(x)  # cached: (C, R, A, S) normalized
        self.shape = np.array(self.x.shape[1:])
        sp = np.zeros(3)
        for i in range(3):
            sp[self.orient.perm[i]] = self.grid.spacing[i]
        self.spacing_ras = sp
        model_sp = ((config.get("preprocessing") or {}).get("harmonize") or {}).get("spacing") or sp
        self.patch = np.array(config["data"]["patch_size"], int)
        self.base_extent = self.patch * np.asarray(model_sp, float) / sp  # crop size in input voxels at zoom 1
        self.click_radius = float(config.get("clicks", {}).get("click_radius", 2.0))
        self.objects: dict[int, ObjectState] = {}
        self.history: list[tuple[int, ObjectState | None]] = []
        self.forwards = 0  # mask-decoder evaluations so far (auto-zoom re-runs included)
        self.encodes = 0  # image-encoder evaluations (crops embedded; the rest came from the cache)
        self.cache_size = int(cache_size)
        self._cache: dict[tuple, torch.Tensor] = {}  # (crop lo, size) -> embedding, most recent last
        from petctfm.methods.promptable.model import class_table

        self.classes: tuple[str, ...] = tuple(class_table(config))  # class prompts the model knows; () = none
        self.sparse = getattr(model, "design", None) == "sam"  # the decoder reads sparse prompts

    @classmethod
    def from_run(cls, run: str | os.PathLike, pet: Any, ct: Any = None, device: str = "cpu", **kw: Any) -> "PromptSession":
        """Load a ``prompt-train`` run folder (its ``best/`` checkpoint by validation Dice, else the latest) or
        ``model.safetensors`` (safetensors only; :func:`petctfm.inference.model.load_run_model`)."""
        from petctfm.inference.model import load_run_model
        from petctfm.methods.promptable.model import METHOD

        model, cfg, _ = load_run_model(run, METHOD, what="promptable")
        return cls(model, cfg, pet, ct=ct, device=device, **kw)

    # -- coordinates ---------------------------------------------------------------------------------

    def to_index(self, xyz: Any, space: str = "voxel", what: str = "point") -> np.ndarray:
        """A point in ``space`` -> continuous index of the cached RAS array; InputError outside the image."""
        if space not in SPACES:
            raise InputError(f"{what}: unknown coordinate space {space!r} (choose {', '.join(SPACES)})")
        p = np.asarray(xyz, dtype=float).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InputError(f"{what}: expected 3 finite coordinates, got {xyz!r}")
        if space == "ras":
            p = p * np.array([-1.0, -1.0, 1.0])
        if space != "voxel":
            p = (np.linalg.inv(self.grid.index_to_lps) @ np.append(p, 1.0))[:3]
        if np.any(p < -0.5) or np.any(p > np.array(self.grid.shape) - 0.5):
            raise InputError(f"{what}: {list(np.round(np.asarray(xyz, float), 2))} ({space}) lies outside the image "
                             f"(voxel {list(np.round(p, 1))}, shape {list(self.grid.shape)})")
        return self.orient.index_to_ras(p)

    # -- prompts ---------------------------------------------------------------------------------------

    def _state(self, obj: int) -> ObjectState:
        if int(obj) < 1:
            raise InputError(f"object id must be >= 1, got {obj}")
        self.history.append((int(obj), copy.deepcopy(self.objects.get(int(obj)))))
        return self.objects.setdefault(int(obj), ObjectState())

    def check_class(self, name: str | None) -> str | None:
        """The class table spelling of ``name`` (None stays None); one-line InputError for a class this model
        has no embedding of (:func:`~.prompts.class_index`: a held-out organ, an unknown name, no class prompts)."""
        if name is None:
            return None
        P.class_index(self.classes, name)
        return P.class_key(name)

    def add_point(self, xyz: Any, positive: bool = True, object: int = 1, space: str = "voxel",
                  target_class: str | None = None) -> np.ndarray:
        """Add a click and re-segment ``object``; returns its mask (X, Y, Z) bool on the input grid.
        ``target_class``: set the object's class first (:meth:`check_class`; None keeps the object's class)."""
        idx = self.to_index(xyz, space)
        cls = self.check_class(target_class)
        st = self._state(object)
        st.points.append((idx, bool(positive)))
        if cls is not None:
            st.cls = cls
        return self._run(int(object))

    def add_box(self, lo: Any, hi: Any, object: int = 1, space: str = "voxel",
                target_class: str | None = None) -> np.ndarray:
        """Set ``object``'s 3D box (two opposite corners) and re-segment it; returns its mask on the input grid.
        ``target_class``: as :meth:`add_point`."""
        a, b = self.to_index(lo, space, "box corner"), self.to_index(hi, space, "box corner")
        cls = self.check_class(target_class)
        st = self._state(object)
        st.box = (np.minimum(a, b), np.maximum(a, b))
        if cls is not None:
            st.cls = cls
        return self._run(int(object))

    def set_class(self, name: str | None, object: int = 1) -> None:
        """Set (or with None clear) ``object``'s target class without running the model; undoable. The next
        prompt of the object is decoded with it."""
        cls = self.check_class(name)
        self._state(object).cls = cls

    def set_mask(self, mask: np.ndarray, object: int = 1) -> None:
        """Start ``object`` from a mask (X, Y, Z) on the input grid (e.g. ``petctfm predict``'s); undoable."""
        mask = np.asarray(mask)
        if mask.shape != tuple(self.grid.shape):
            raise InputError(f"start mask shape {mask.shape} != PET shape {tuple(self.grid.shape)}")
        self._state(object).mask = self.orient.to_ras(mask > 0)

    def undo(self) -> None:
        """Restore the state before the last ``add_point`` / ``add_box`` / ``set_mask`` / ``reset``."""
        if not self.history:
            raise InputError("nothing to undo")
        obj, before = self.history.pop()
        if before is None:
            self.objects.pop(obj, None)
        else:
            self.objects[obj] = before

    def clear(self) -> None:
        """Forget every object and the undo history (not undoable); the cached crop embeddings stay valid (they
        depend on the image only), so a new target on the same study reuses them."""
        self.objects, self.history = {}, []

    def in_crop(self, xyz: Any, object: int, space: str = "voxel") -> bool:
        """Whether a point lies inside ``object``'s current crop (False for an object not yet run)."""
        st = self.objects.get(int(object))
        if st is None or st.crop is None:
            return False
        q = self.to_index(xyz, space)
        lo, size = st.crop
        return bool(np.all(q >= lo) and np.all(q <= lo + size - 1))

    def reset(self, object: int = 1) -> None:
        """Forget ``object`` (its prompts and mask); undoable."""
        if int(object) in self.objects:
            self.history.append((int(object), self.objects.pop(int(object))))

    # -- the model ------------------------------------------------------------------------------------

    def _crop(self, st: ObjectState, zoom: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo (3,) int, size (3,) int) of the crop in the RAS array; may extend beyond the image."""
        pts = [p for p, pos in st.points if pos]
        if st.box is not None:
            pts += [st.box[0], st.box[1]]
        if st.mask is not None and st.mask.any():
            bb = P.bounding_box(st.mask)
            pts += [bb[0], bb[1]]
        if not pts:
            pts = [p for p, _ in st.points]
        pts = np.array(pts, float)
        centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
        size = np.maximum(np.rint(self.base_extent * zoom), 1).astype(int)
        return np.rint(centre - size / 2).astype(int), size

    def _fits(self, st: ObjectState, lo: np.ndarray, size: np.ndarray) -> bool:
        """Whether the object's positive points and box lie inside the crop, a margin of 1/8 of its side away
        from every face (then the crop, and its cached embedding, are kept for this prompt)."""
        pts = [p for p, pos in st.points if pos] + ([st.box[0], st.box[1]] if st.box is not None else [])
        m = size / 8.0
        return all(np.all(q >= lo + m) and np.all(q <= lo + size - 1 - m) for q in pts)

    def _embedding(self, lo: np.ndarray, size: np.ndarray) -> torch.Tensor:
        """The model's embedding of one crop (the image resampled to the patch), computed once per crop and kept
        in a small most-recently-used cache (``cache_size`` crops)."""
        key = (tuple(int(v) for v in lo), tuple(int(v) for v in size))
        emb = self._cache.pop(key, None)
        if emb is None:
            src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + size, self.shape)
            dst = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(src_lo, lo, src_hi))
            src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
            img = np.empty((self.x.shape[0], *size), np.float32)
            img[:] = self.bg[:, None, None, None]
            img[(slice(None), *dst)] = self.x[(slice(None), *src)]
            with torch.no_grad():
                t_img = F.interpolate(torch.from_numpy(img)[None], size=tuple(int(v) for v in self.patch),
                                      mode="trilinear", align_corners=False)
                emb = self.model.embed(t_img.to(self.device))
            self.encodes += 1
        self._cache[key] = emb
        while len(self._cache) > self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        return emb

    def _predict(self, st: ObjectState, lo: np.ndarray, size: np.ndarray) -> np.ndarray:
        """The mask decoder on one crop (its embedding cached) -> (size) bool prediction."""
        emb = self._embedding(lo, size)
        src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + size, self.shape)
        dst = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(src_lo, lo, src_hi))
        src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
        prev = np.zeros(tuple(size), np.float32)
        if st.mask is not None:
            prev[dst] = st.mask[src]
        scale = self.patch / size
        to_patch = lambda q: (np.asarray(q) - lo + 0.5) * scale - 0.5  # noqa: E731
        p = tuple(int(v) for v in self.patch)
        prompts = P.encode_prompts(p, [(to_patch(q), pos) for q, pos in st.points],
                                   box=None if st.box is None else (to_patch(st.box[0]), to_patch(st.box[1])),
                                   click_radius=self.click_radius)
        kw: dict[str, Any] = {}
        if self.sparse:
            from petctfm.methods.promptable.sam import SparsePrompts, sparse_array

            coords, labels = sparse_array([(to_patch(q), pos) for q, pos in st.points],
                                          None if st.box is None else (to_patch(st.box[0]), to_patch(st.box[1])))
            kw["sparse"] = SparsePrompts(torch.from_numpy(coords)[None], torch.from_numpy(labels)[None]).to(self.device)
        if st.cls is not None:
            kw["cls"] = torch.tensor([P.class_index(self.classes, st.cls)], device=self.device)
        with torch.no_grad():
            t_prev = F.interpolate(torch.from_numpy(prev)[None, None], size=p, mode="trilinear", align_corners=False)
            t_pr = torch.from_numpy(prompts)[None]
            t_pr[:, P.PREV] = (t_prev[:, 0] > 0.5).float()
            logits = self.model.decode(emb, t_pr.to(self.device), **kw).float().cpu()
            logits = F.interpolate(logits, size=tuple(int(s) for s in size), mode="trilinear", align_corners=False)
        self.forwards += 1
        out = logits[0, 0].numpy() > 0
        valid = np.zeros(tuple(size), bool)
        valid[dst] = True
        out &= valid
        return self._keep_prompted(st, out, lo) if self.components == "prompted" else out

    @staticmethod
    def _keep_prompted(st: ObjectState, pred: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """``pred`` (crop, bool) without its connected components that no positive prompt reaches: a component
        is kept when it holds a voxel within one voxel (3x3x3) of a positive click, or meets the box. An object
        with neither (a mask-only object) is returned unchanged."""
        import cc3d

        seeds = np.zeros(pred.shape, bool)
        for q, pos in st.points:
            if pos:
                c = np.rint(np.asarray(q) - lo).astype(int)
                sl = tuple(slice(max(int(v) - 1, 0), max(int(v) + 2, 0)) for v in c)
                seeds[sl] = True
        if st.box is not None:
            b0 = np.maximum(np.rint(np.asarray(st.box[0]) - lo).astype(int), 0)
            b1 = np.rint(np.asarray(st.box[1]) - lo).astype(int) + 1
            seeds[tuple(slice(int(a), max(int(b), 0)) for a, b in zip(b0, b1))] = True
        if not seeds.any() or not pred.any():  # mask-only object, or no prompt inside this crop: unchanged
            return pred
        labels = cc3d.connected_components(np.ascontiguousarray(pred, np.uint8), connectivity=26)
        keep = np.unique(labels[seeds & pred])
        return np.isin(labels, keep[keep > 0])

    def _run(self, obj: int) -> np.ndarray:
        st = self.objects[obj]
        if st.mask is None:
            st.mask = np.zeros(tuple(self.shape), bool)
        zoom = st.zoom  # an object that zoomed out once starts there (no re-zoom from 1 on every click)
        if st.crop is not None and self._fits(st, *st.crop):
            lo, size = st.crop  # same crop: the cached embedding, only the decoder runs
        else:
            lo, size = self._crop(st, zoom)
        while True:
            pred = self._predict(st, lo, size)
            touches = False
            for ax in range(3):
                first, last = np.take(pred, 0, axis=ax).any(), np.take(pred, -1, axis=ax).any()
                touches |= bool(first and lo[ax] > 0) or bool(last and lo[ax] + size[ax] < self.shape[ax])
            if not touches or zoom >= self.max_zoom:
                break
            zoom = min(zoom * self.zoom_step, self.max_zoom)
            lo, size = self._crop(st, zoom)
        src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + size, self.shape)
        src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
        dst = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(src_lo, lo, src_hi))
        st.mask[src] = pred[dst]
        st.zoom, st.crop = zoom, (lo, size)
        return self.orient.from_ras(st.mask)

    # -- results --------------------------------------------------------------------------------------

    def object_mask(self, object: int) -> np.ndarray:
        """(X, Y, Z) bool mask of one object on the input grid (before the label-map composition)."""
        st = self.objects.get(int(object))
        if st is None or st.mask is None:
            return np.zeros(tuple(self.grid.shape), bool)
        return self.orient.from_ras(st.mask)

    def mask(self) -> np.ndarray:
        """The label map (X, Y, Z) on the input PET grid: each object its id; objects in id order, an earlier
        object keeps its voxels unless ``overwrite``."""
        ids = sorted(self.objects)
        out = np.zeros(tuple(self.shape), np.uint16 if ids and ids[-1] > 255 else np.uint8)
        for k in ids:
            m = self.objects[k].mask
            if m is not None:
                out[m if self.overwrite else (m & (out == 0))] = k
        return self.orient.from_ras(out)

    def table(self, names: dict[int, str] | None = None) -> list[dict[str, Any]]:
        """One row per object of :meth:`mask`: volume (ml), SUVmax / SUVmean / SUVpeak (1 ml sphere), TLG."""
        from petctfm.evaluate.lesions import suv_peak

        lab, rows = self.mask(), []
        vox_ml = float(np.prod(self.grid.spacing)) / 1000.0
        for k in sorted(self.objects):
            m = lab == k
            n = int(m.sum())
            vals = self.suv[m]
            mean = float(vals.mean()) if n else float("nan")
            st = self.objects[k]
            rows.append({"object": k, "name": (names or {}).get(k, ""), "n_voxels": n, "volume_ml": n * vox_ml,
                         "suv_max": float(vals.max()) if n else float("nan"), "suv_mean": mean,
                         "suv_peak": suv_peak(self.suv, m, self.grid.spacing), "tlg": mean * n * vox_ml,
                         "n_points": len(st.points), "box": st.box is not None, "zoom": st.zoom,
                         "class": st.cls or ""})
        return rows


__all__ = ["SPACES", "as_image", "Orientation", "ObjectState", "PromptSession"]
