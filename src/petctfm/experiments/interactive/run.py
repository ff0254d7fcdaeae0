"""``petctfm experiment interactive``: a promptable model click by click on the test split (docs/promptable.md).

Per test case of a harmonized dataset (RAS arrays at the dataset spacing; SUV and HU), one
:class:`~petctfm.methods.promptable.session.PromptSession` (crop embeddings cached across targets):

1. **autoPET IV protocol** (``protocol = "autopet"``, target ``lesions``: every lesion voxel of the case): clicks
   fixed in advance (:func:`~.clicks.autopet_clicks`); step k = 0..``max_clicks`` adds lesion click k (a new
   object: lesion-wise sequential prompting, objects fused into one lesion mask) and background click k (a
   negative click given to the object whose positive click is nearest; a background click before any lesion
   click, or on a case without lesions, has nothing to correct and is recorded as unused). Arms: ``model``,
   ``iso`` (the union of the 41 % isocontours of the lesion clicks so far, :func:`~.clicks.isocontour`).
2. **Corrective protocol** (``protocol = "corrective"``): the first click at the interior point of the largest
   component, then up to ``max_clicks`` - 1 clicks on the largest error region
   (:func:`~petctfm.methods.promptable.prompts.corrective_click`). Targets: ``lesions`` (a missed lesion outside
   every object's crop becomes a new object; a false positive is a negative click for the object that drew it),
   each single ``lesion`` component, each ``organ`` of ``organs.npy`` (``seen``: not in the model's
   ``targets.held_out``; the ``max_targets`` largest seen and the ``max_targets`` largest held-out organs).
3. **One click per lesion** (``protocol = "one_per_lesion"``, recorded as ``clicks = 1``): every lesion click
   (up to ``max_clicks``) and nothing else, for ``model`` and ``iso`` (and ``model_isoprior`` with ``iso_prior``:
   each lesion object starts from its click's 41 % isocontour as the previous-mask prompt); **automatic** (``protocol = "auto"``, zero clicks): a
   ``petctfm finetune`` model's lesion mask (``auto=RUN``).

4. **Annotation effort** (``protocol = "effort"``; rows under ``corrective``): each single ``lesion`` and each
   ``organ`` target as in 2 (arm ``model``), beside arm ``iso_brush``: the 41 % isocontour from the same first
   click, then one simulated brush stroke per interaction on the largest error region (:func:`~.clicks.iso_brush`,
   radius ``brush_mm``). Each corrective row has ``seconds``: the tool's compute on that target so far
   (``time.perf_counter`` around the session's click and mask read-out, or the isocontour and strokes; the
   simulated user's choice is not timed). :func:`.report.effort_table` turns them into interactions and seconds
   to reach Dice ``effort_dice``.

**Which cases**: the split's, less those failing ``test_filter`` (``manifest.csv`` filters,
:mod:`petctfm.data.filters`); with ``ood`` (the out-of-distribution protocol) they are split by the model's
training filter (``targets.train_filter``) into cohorts ``in`` and ``out`` (the ``cohort`` column), summarized
each on its own and side by side.

**Class prompts** (``class_prompts=True``, ``--class-prompts``; a model trained with ``--class-prompts``): every
lesion object is prompted with the class "lesion", each organ target with its organ's class when the model has
one; a held-out organ has none and stays class-free (zero-shot). Off: every prompt class-free, as before.

Metrics per (case, target, arm, step): Dice, autoPET false-positive and false-negative volume (ml,
18-connectivity; :func:`petctfm.evaluate.metrics.case_metrics`). Aggregation and files: :mod:`.report`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from petctfm.core.errors import InputError
from petctfm.evaluate.metrics import case_metrics, voxel_overlap
from petctfm.experiments.interactive import clicks as C

METRICS = ("dice", "fp_volume_ml", "fn_volume_ml", "fp_voxels_ml")


def _metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, float]:
    """autoPET Dice, FP and FN volume (:func:`~petctfm.evaluate.metrics.case_metrics`) and ``fp_voxels_ml``:
    every predicted voxel outside the ground truth (ml). autoPET's FP volume counts only predicted components
    that miss the ground truth, so over-segmentation connected to a lesion (a spill into neighbouring uptake) is
    in ``fp_voxels_ml`` only."""
    m = case_metrics(pred, gt, spacing)
    out = {k: m[k] for k in METRICS if k in m}
    out["fp_voxels_ml"] = float(np.count_nonzero(pred & ~gt) * np.prod(np.asarray(spacing, float)) / 1000.0)
    return out


class CaseRunner:
    """The protocols on one case; rows are dicts (see the module docstring) appended to ``self.rows``."""

    def __init__(self, session, case_id: str, suv: np.ndarray, lesion: np.ndarray, organs: np.ndarray | None,
                 spacing, held_out: set[int], meta: dict[str, Any], max_clicks: int, iso_box_mm: float,
                 max_targets: int, iso_prior: bool = False, class_prompts: bool = False, cohort: str = "",
                 brush_mm: float = C.BRUSH_MM):
        self.iso_prior, self.class_prompts, self.brush_mm = iso_prior, class_prompts, brush_mm
        self.s, self.case_id, self.suv, self.lesion, self.organs = session, case_id, suv, lesion, organs
        self.spacing, self.held_out, self.max_clicks, self.max_targets = np.asarray(spacing, float), held_out, \
            max_clicks, max_targets
        self.half_box = np.maximum(np.rint(iso_box_mm / 2 / self.spacing), 1).astype(int)
        self.base = {"case_id": case_id, "site": meta.get("site", ""), "tracer": meta.get("tracer", ""),
                     "cohort": cohort}
        self.rows: list[dict[str, Any]] = []
        self.clicks_drawn: dict[str, Any] = {}  # for the figures: the autoPET clicks and the model's last mask

    def _cls(self, name: str) -> dict[str, str]:
        """``{"target_class": name}`` with class prompts when the model has that class (a held-out organ has
        none: class-free), else ``{}``."""
        return {"target_class": name} if self.class_prompts and name in self.s.classes else {}

    def _row(self, protocol: str, arm: str, kind: str, target: str, step: int, m: dict, seen: Any = "") -> None:
        self.rows.append({**self.base, "protocol": protocol, "arm": arm, "kind": kind, "target": target,
                          "seen": seen, "clicks": step, **m})

    def _lesion_mask(self) -> np.ndarray:
        return self.s.mask() > 0

    def autopet(self) -> None:
        fg, bg = C.autopet_clicks(self.suv, self.lesion, self.max_clicks)
        self.s.clear()
        iso = np.zeros(self.suv.shape, bool)
        empty = {k: v for k, v in _metrics(iso, self.lesion, self.spacing).items()}
        for arm in ("model", "iso"):
            self._row("autopet", arm, "lesions", "lesions", 0, empty)
        positives: list[tuple[np.ndarray, int]] = []
        unused = 0
        for k in range(1, self.max_clicks + 1):
            if k <= len(fg):
                positives.append((fg[k - 1], k))
                self.s.add_point(fg[k - 1], True, object=k, **self._cls("lesion"))
                iso |= C.isocontour(self.suv, fg[k - 1], self.half_box)
            if k <= len(bg):
                if positives:
                    obj = min(positives, key=lambda t: float(np.sum((t[0] - bg[k - 1]) ** 2)))[1]
                    self.s.add_point(bg[k - 1], False, object=obj)
                else:
                    unused += 1
            self._row("autopet", "model", "lesions", "lesions", k, _metrics(self._lesion_mask(), self.lesion,
                                                                              self.spacing))
            self._row("autopet", "iso", "lesions", "lesions", k, _metrics(iso, self.lesion, self.spacing))
        self.clicks_drawn = {"fg": fg, "bg": bg, "mask": self._lesion_mask(), "iso": iso, "unused_bg": unused}

    def one_per_lesion(self) -> None:
        fg = C.component_points(self.lesion, self.max_clicks)
        if not fg:
            return
        self.s.clear()
        iso = np.zeros(self.suv.shape, bool)
        for k, p in enumerate(fg, 1):
            self.s.add_point(p, True, object=k, **self._cls("lesion"))
            iso |= C.isocontour(self.suv, p, self.half_box)
        # clicks = 1: one click per lesion (the case's lesion count is in n_lesion_clicks)
        arms = [("model", self._lesion_mask()), ("iso", iso)]
        if self.iso_prior:  # the isocontour-informed first click: its 41 % region as the previous-mask prompt
            self.s.clear()
            for k, p in enumerate(fg, 1):
                self.s.set_mask(C.isocontour(self.suv, p, self.half_box, fallback=False), object=k)
                self.s.add_point(p, True, object=k, **self._cls("lesion"))
            arms.append(("model_isoprior", self._lesion_mask()))
        for arm, pred in arms:
            self._row("one_per_lesion", arm, "lesions", "lesions", 1, {**_metrics(pred, self.lesion, self.spacing),
                                                                        "n_lesion_clicks": len(fg)})

    def _score(self, target: np.ndarray, kind: str) -> Callable[[np.ndarray], dict]:
        """A target's metrics: autoPET's for all lesions of a case, voxel Dice for one lesion or organ."""
        if kind == "lesions":
            return lambda p: _metrics(p, target, self.spacing)
        return lambda p: {"dice": voxel_overlap(p, target)["dice"]}

    def corrective(self, target: np.ndarray, kind: str, name: str, seen: Any = "", multi: bool = False) -> None:
        """Corrective clicks on one target; ``multi``: missed regions outside every crop become new objects.
        ``seconds`` per row: the session's compute so far on this target (each click's ``add_point`` and the
        mask read-out, by ``time.perf_counter``; the simulated user's choice of the click is not counted)."""
        from petctfm.methods.promptable.prompts import corrective_click

        first = C.component_points(target, 1)
        if not first:
            return
        self.s.clear()
        cls = self._cls("lesion" if kind in ("lesion", "lesions") else name)
        t0 = time.perf_counter()
        self.s.add_point(first[0], True, object=1, **cls)
        pred = self._lesion_mask()
        seconds = time.perf_counter() - t0
        score = self._score(target, kind)
        self._row("corrective", "model", kind, name, 1, {**score(pred), "seconds": seconds}, seen)
        for k in range(2, self.max_clicks + 1):
            click = corrective_click(target, pred)
            if click is not None:
                point, positive = click
                if not positive:
                    obj = int(self.s.mask()[tuple(point)]) or 1
                elif multi and not any(self.s.in_crop(point, o) for o in self.s.objects):
                    obj = max(self.s.objects) + 1
                else:
                    obj = min(self.s.objects, key=lambda o: 0 if self.s.in_crop(point, o) else 1)
                t0 = time.perf_counter()
                self.s.add_point(point, positive, object=obj, **cls)
                pred = self._lesion_mask()
                seconds += time.perf_counter() - t0
            self._row("corrective", "model", kind, name, k, {**score(pred), "seconds": seconds}, seen)

    def iso_brush(self, target: np.ndarray, kind: str, name: str, seen: Any = "") -> None:
        """The annotation-effort baseline on one target (arm ``iso_brush``, protocol ``corrective``): the 41 %
        isocontour from the model's first click, then brush strokes on the largest error region
        (:func:`~.clicks.iso_brush`, radius ``brush_mm``), one row per interaction up to ``max_clicks``."""
        first = C.component_points(target, 1)
        if not first:
            return
        for r in C.iso_brush(self.suv, target, first[0], self.half_box, self.max_clicks, self._score(target, kind),
                             self.brush_mm, self.spacing):
            k = r.pop("clicks")
            self._row("corrective", "iso_brush", kind, name, k, r, seen)

    def targets(self, all_lesions: bool = True, brush: bool = False) -> None:
        """The corrective protocol on all lesions (``all_lesions``), each lesion, each organ (at most
        ``max_targets`` of each); ``brush``: also the isocontour-plus-brush baseline on each lesion and organ
        (the annotation-effort protocol)."""
        import cc3d

        from petctfm.core.labels import ORGAN_LABELS

        def both(target, kind, name, seen=""):
            self.corrective(target, kind, name, seen)
            if brush:
                self.iso_brush(target, kind, name, seen)

        if self.lesion.any():
            if all_lesions:
                self.corrective(self.lesion, "lesions", "lesions", multi=True)
            comps = cc3d.connected_components(np.ascontiguousarray(self.lesion, np.uint8), connectivity=18)
            sizes = np.bincount(comps.ravel())[1:]
            for j in np.argsort(-sizes, kind="stable")[:self.max_targets]:
                both(comps == j + 1, "lesion", f"lesion_{j + 1}")
        if self.organs is not None:
            names = {v: k for k, v in ORGAN_LABELS.items()}
            counts = np.bincount(np.asarray(self.organs, np.int64).ravel())
            values = [int(v) for v in np.argsort(-counts, kind="stable") if v and counts[v]]  # largest first
            seen = [v for v in values if v not in self.held_out][:self.max_targets]
            held = [v for v in values if v in self.held_out][:self.max_targets]  # zero-shot: always evaluated
            for v in seen + held:
                both(self.organs == v, "organ", names.get(v, str(v)), seen=v not in self.held_out)


def auto_masks(auto: str | os.PathLike, root: Path, case_ids: list[str], device: str) -> Callable[[str], np.ndarray]:
    """A function case id -> the automatic lesion mask (X, Y, Z) bool of a ``petctfm finetune`` run."""
    from petctfm.data import format as fmt
    from petctfm.inference.model import load_segmenter
    from petctfm.inference.normalize import normalized_input
    from petctfm.inference.postprocess import lesion_mask, min_lesion_ml, suppression
    from petctfm.inference.sliding_window import predict_case

    model, cfg, _ = load_segmenter(auto)
    patch = cfg["data"]["patch_size"]
    sup = suppression(cfg)

    def predict(case_id: str) -> np.ndarray:
        case = fmt.load_case(root, case_id)
        x, bg = normalized_input(np.asarray(case["image"]), cfg)
        prob = predict_case(model, x, patch, device=device, bg=bg, suppress=sup)[0]
        return lesion_mask(prob, fmt.case_spacing(case["meta"]), min_lesion_ml(cfg)) > 0

    return predict


#: The click protocols (docs/promptable.md): the autoPET IV protocol, one click per lesion against the
#: isocontour, corrective clicks per target, and the annotation effort (corrective clicks on each lesion and
#: organ against the isocontour plus simulated brush strokes; its table in results.md and effort.csv).
PROTOCOLS = ("autopet", "one_per_lesion", "corrective", "effort")
#: the cohorts of ``ood=True``: cases that pass the model's ``targets.train_filter`` and those that do not
COHORTS = ("in", "out")


def check_arguments(max_cases: int | None = None, max_clicks: int = 10, max_targets: int = 10,
                    iso_box_mm: float = 60.0, n_figures: int = 3, max_zoom: float = 4.0, components: str = "prompted",
                    protocols: str | Sequence[str] = PROTOCOLS, test_filter: str | Sequence[str] | None = None,
                    brush_mm: float = C.BRUSH_MM, effort_dice: float = 0.8) -> tuple[str, ...]:
    """:func:`run_interactive`'s settings, before the model or a case is read: a value out of range (or a
    malformed ``test_filter``) is a UsageError naming the argument. ``protocols`` may be comma-separated text;
    returns them as a tuple."""
    from petctfm.core.checks import check_choices, check_float, check_int, parse_list
    from petctfm.data.filters import parse_filters
    from petctfm.methods.promptable.segment import check_options

    if max_cases is not None:
        check_int("max_cases", max_cases, lo=1)
    check_int("max_clicks", max_clicks, lo=1)
    check_int("max_targets", max_targets, lo=1)
    check_float("iso_box_mm", iso_box_mm, lo=0, lo_open=True)
    check_int("n_figures", n_figures, lo=0)
    check_float("brush_mm", brush_mm, lo=0, lo_open=True)
    check_float("effort_dice", effort_dice, lo=0, hi=1, lo_open=True)
    check_options(max_zoom, components)
    parse_filters(test_filter, "test_filter")
    return tuple(check_choices("protocols", parse_list("protocols", protocols, str, "a protocol"), PROTOCOLS))


def select_test_cases(root: Path, split: str, cfg: dict[str, Any], model: Any, test_filter: Sequence[str] = (),
                      ood: bool = False, max_cases: int | None = None) -> dict[str, str]:
    """{case id: cohort} of the evaluated cases, in split order: the split's cases that pass ``test_filter``
    (:func:`petctfm.data.filters.select_cases`; cohort ``""``), or with ``ood`` those split by the model's
    ``targets.train_filter`` into ``"in"`` (pass it) and ``"out"`` (fail it), the first ``max_cases`` of each.
    InputError (exit 3): a filter column or value the manifest lacks, no case left, ``ood`` with a model trained
    on every case, or an empty cohort."""
    from petctfm.data.filters import partition, select_cases
    from petctfm.data.loader import list_cases

    ids = select_cases(root, list_cases(root, split), list(test_filter or ()), "test_filter", f"split {split!r}")
    if not ood:
        return {c: "" for c in ids[: max_cases if max_cases else None]}
    trained = list(cfg.get("targets", {}).get("train_filter") or [])
    if not trained:
        raise InputError(f"{model}: ood asked, but this model was trained on every case (no prompt-train "
                         "--train-filter): no case is out of its training distribution", arg="ood")
    inside, outside = partition(root, ids, trained, "train_filter")
    for name, got in (("in-distribution", inside), ("out-of-distribution", outside)):
        if not got:
            raise InputError(f"{root}: the model's train_filter {' and '.join(trained)} leaves no {name} case of "
                             f"split {split!r} ({len(ids)} cases after the test filter)")
    keep = {**{c: "in" for c in inside[: max_cases if max_cases else None]},
            **{c: "out" for c in outside[: max_cases if max_cases else None]}}
    return {c: keep[c] for c in ids if c in keep}


def run_interactive(data: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
                    auto: str | os.PathLike | None = None, split: str = "test", max_cases: int | None = None,
                    max_clicks: int = 10, max_targets: int = 10, organs: bool = True, iso_box_mm: float = 60.0,
                    n_figures: int = 3, device: str = "cpu", max_zoom: float = 4.0,
                    progress: bool = True, iso_prior: bool = False, components: str = "prompted",
                    protocols: tuple[str, ...] = PROTOCOLS, class_prompts: bool = False,
                    test_filter: Sequence[str] | str | None = None, ood: bool = False, brush_mm: float = C.BRUSH_MM,
                    effort_dice: float = 0.8) -> dict[str, Any]:
    """Run both protocols and both baselines on ``split`` of ``data``; writes ``out/results.md``,
    ``results.csv``, ``steps.csv``, ``dice_vs_clicks.png``, ``cases/*.png``; returns :func:`.report.write_report`'s
    paths plus ``rows`` and ``summary``. ``max_zoom``: the session's auto-zoom limit (1 = no zoom). ``iso_prior``:
    also the arm ``model_isoprior`` at one click per lesion (each lesion object starts from the 41 % isocontour
    containing its click as the previous-mask prompt, then the click; reported separately from the model).
    ``components``: the session's :data:`~petctfm.methods.promptable.session.COMPONENTS` rule (``"prompted"``:
    drop predicted components no positive prompt reaches). ``protocols``: a subset of :data:`PROTOCOLS` to run
    (``("one_per_lesion",)``: only the one-click comparison, a fraction of the time). ``class_prompts``: prompt
    lesions and seen organs with their class (a model trained with class prompts; else a one-line InputError).
    ``test_filter``: ``manifest.csv`` filters (``["tracer=psma"]``, AND-ed; :mod:`petctfm.data.filters`) selecting
    the evaluated cases. ``ood``: the out-of-distribution protocol: the cases that pass the model's training
    filter (``prompt-train --train-filter``) are the in-distribution cohort, the others the out-of-distribution
    one (``max_cases`` per cohort), summarized side by side (``cohort`` column). ``brush_mm``, ``effort_dice``:
    the annotation-effort protocol's brush radius and Dice goal (docs/promptable.md)."""
    from petctfm.data import format as fmt
    from petctfm.experiments.interactive import report
    from petctfm.methods.promptable.model import METHOD
    from petctfm.methods.promptable.session import PromptSession
    from petctfm.methods.promptable.task import held_out_values
    from petctfm.inference.model import load_run_model

    protocols = check_arguments(max_cases=max_cases, max_clicks=max_clicks, max_targets=max_targets,
                                iso_box_mm=iso_box_mm, n_figures=n_figures, max_zoom=max_zoom, components=components,
                                protocols=protocols, test_filter=test_filter, brush_mm=brush_mm,
                                effort_dice=effort_dice)
    from petctfm.data.filters import describe, parse_filters

    test_filter = describe(parse_filters(test_filter, "test_filter"))
    root, out = Path(data), Path(out)
    net, cfg, _ = load_run_model(model, METHOD, what="promptable")  # best/ (by val Dice) when the run kept one
    if class_prompts:
        from petctfm.methods.promptable.model import class_table

        if not class_table(cfg):
            raise InputError(f"{model}: class prompts asked, but this model was trained without them "
                             "(prompt-train --class-prompts)")
    cohorts = select_test_cases(root, split, cfg, model, test_filter, ood, max_cases)
    case_ids = list(cohorts)
    held = held_out_values(cfg) if "targets" in cfg else set()
    auto_fn = auto_masks(auto, root, case_ids, device) if auto else None
    rows: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for i, cid in enumerate(case_ids):
        case = fmt.load_case(root, cid, mmap=False)
        img, meta = np.asarray(case["image"], np.float32), case.get("meta", {})
        affine = np.asarray(meta.get("affine", np.diag([*meta.get("spacing", [2.0] * 3), 1.0])), float)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        lesion = np.asarray(case["label"]) > 0
        session = PromptSession(net, cfg, (img[0], affine), ct=(img[1], affine), device=device, cache_size=64,
                                max_zoom=max_zoom, components=components)
        r = CaseRunner(session, cid, img[0], lesion, np.asarray(case["organs"]) if organs and "organs" in case
                       else None, spacing, held, meta, max_clicks, iso_box_mm, max_targets, iso_prior,
                       class_prompts, cohorts[cid], brush_mm)
        if "autopet" in protocols:
            r.autopet()
        if "one_per_lesion" in protocols:
            r.one_per_lesion()
        if "corrective" in protocols or "effort" in protocols:  # effort: each lesion and organ, + the brush
            r.targets(all_lesions="corrective" in protocols, brush="effort" in protocols)
        if auto_fn is not None:
            r._row("auto", "auto", "lesions", "lesions", 0, _metrics(auto_fn(cid), lesion, spacing))
        rows += r.rows
        if len(figures) < n_figures and lesion.any() and r.clicks_drawn:  # the figure draws the autoPET clicks
            figures.append({"case_id": cid, "suv": img[0], "ct": img[1], "gt": lesion, **r.clicks_drawn})
        if progress:
            print(f"interactive: {i + 1}/{len(case_ids)} {cid}: {len(r.rows)} rows, {session.encodes} embeddings, "
                  f"{session.forwards} decoder runs, {time.perf_counter() - t0:.0f}s", flush=True)
    info = {"data": str(root), "provenance": fmt.load_dataset_info(root).get("provenance"),  # synthetic or not
            "model": str(model), "auto": str(auto) if auto else None, "split": split,
            "n_cases": len(case_ids), "max_clicks": max_clicks, "iso_box_mm": iso_box_mm, "max_zoom": max_zoom,
            "iso_prior": iso_prior, "components": components, "protocols": list(protocols),
            "class_prompts": bool(class_prompts), "design": cfg["model"].get("design", "channels"),
            "held_out": sorted(cfg.get("targets", {}).get("held_out", [])), "seconds": time.perf_counter() - t0,
            "test_filter": test_filter, "train_filter": list(cfg.get("targets", {}).get("train_filter") or []),
            "ood": bool(ood), "cohorts": {c: sum(v == c for v in cohorts.values()) for c in COHORTS} if ood else {},
            "brush_mm": brush_mm, "effort_dice": effort_dice}
    return report.write_report(rows, figures, info, out)


__all__ = ["METRICS", "PROTOCOLS", "COHORTS", "CaseRunner", "auto_masks", "check_arguments", "select_test_cases",
           "run_interactive"]
