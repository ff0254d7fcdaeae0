"""The cohort table of the metabolic network: per case, the SUVmean of each organ and the case's metadata.

Two sources:

- a harmonized dataset (``data``): the ground-truth organ maps ``cases/<id>/organs.npy``, or with ``model`` the
  organ maps an organ model predicts on each case, on the PET channel of ``image.npy``, ground-truth lesion voxels
  (``label.npy`` > 0) excluded, each organ eroded (:func:`petctfm.evaluate.organs.organ_suv_means`, the one
  owner of that value); metadata from ``manifest.csv``;
- a folder of tables (``tables``): ``DIR/<case_id>/organs.csv`` with at least the columns ``organ, suv_mean``
  (what an organ readout such as ``petctfm predict --organs`` writes per case; lesion exclusion is then the
  writer's job), and a metadata CSV with a ``case_id`` column (``DIR/metadata.csv`` or ``DIR/manifest.csv``, or
  the file given as ``metadata``).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from petctfm.core.errors import InputError, PetctfmError
from petctfm.experiments.metabolic_network.plan import TABLE_COLUMNS, TABLE_FILE, TABLE_METADATA

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    """``values[i, j]``: SUVmean of organ ``organs[j]`` in case ``case_ids[i]`` (NaN: organ absent);
    ``meta[i]``: that case's metadata (strings as read); ``notes``: what was left out and why."""

    case_ids: list[str]
    organs: list[str]
    values: np.ndarray
    meta: list[dict[str, Any]]
    source: str
    notes: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)  # {"case", "reason"}: cases a model failed on


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
            return [c.strip() for c in reader.fieldnames or []], rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot be read as CSV ({exc})") from None


def _metadata_by_id(path: Path) -> dict[str, dict[str, str]]:
    columns, rows = _read_csv(path)
    if "case_id" not in columns:
        raise InputError(f"{path}: no case_id column (columns: {', '.join(columns[:12]) or 'none'})")
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        cid = r["case_id"]
        if cid in out:
            raise InputError(f"{path}: case_id {cid!r} on two rows")
        out[cid] = r
    return out


@dataclass
class OrganModel:
    """An organ model (``finetune --task organs``) loaded for the cohort: network on its device, config, weights
    file, organ classes (name -> value, background left out), sliding-window overlap."""

    net: Any
    cfg: dict[str, Any]
    path: Path
    labels: dict[str, int]
    overlap: float


def load_organ_model(model: str | Path, device: str | None = None) -> OrganModel:
    """The organ model of ``model`` (a run folder: its best checkpoint, else the latest; or a ``.safetensors``
    file), loaded the way ``petctfm predict --organs`` loads it (:func:`petctfm.inference.model.load_segmenter`).
    A missing path, a file that is not a petctfm segmentation model, or a lesion model is a one-line
    :class:`InputError` naming it."""
    from petctfm.core.device import resolve_device
    from petctfm.inference.model import is_organ_model, load_segmenter, output_classes, run_weights
    from petctfm.train.checkpoint import read_checkpoint_config

    if not Path(model).exists():
        raise InputError(f"{model}: organ model not found (a 'petctfm finetune --task organs' run folder or "
                         "model.safetensors)")
    cfg, path = read_checkpoint_config(run_weights(model))  # metadata only: refuse a lesion model before building
    if not is_organ_model(cfg):
        raise InputError(f"{path}: not an organ model (trained with task lesions); the model must be a "
                         "'petctfm finetune --task organs' run")
    net, cfg, path = load_segmenter(model)
    labels = {k: v for k, v in output_classes(cfg).items() if v != 0}
    return OrganModel(net.to(resolve_device(device)).eval(), cfg, Path(path), labels,
                       float((cfg.get("val") or {}).get("overlap", 0.5)))


def _spacing_note(info: dict[str, Any], om: OrganModel) -> list[str]:
    """A note when the dataset's grid differs from the one the organ model was trained on."""
    trained = ((om.cfg.get("preprocessing") or {}).get("harmonize") or {}).get("spacing")
    have = info.get("spacing")
    if trained and have and not np.allclose(np.asarray(trained, float), np.asarray(have, float), atol=1e-3):
        return [f"the organ model was trained at {' x '.join(f'{float(v):g}' for v in trained)} mm, the dataset is "
                f"at {' x '.join(f'{float(v):g}' for v in have)} mm: predicted on the dataset's grid as it is"]
    return []


def _case_means(data: Path, cid: str, labels: dict[str, int], erode: int, om: OrganModel | None
                ) -> tuple[dict[str, float], int]:
    """One case's organ SUVmeans (:func:`petctfm.evaluate.organs.organ_suv_means`): the ground-truth organ map,
    or ``om``'s prediction on the case's grid (:func:`petctfm.predict.split.case_label_map`, the inference path
    of ``finetune --predict``); ground-truth lesion voxels (``label.npy`` > 0) excluded either way."""
    from petctfm.data import format as fmt
    from petctfm.evaluate.organs import organ_suv_means

    case = fmt.load_case(data, cid)
    if om is None:
        organs = case["organs"]
    else:
        from petctfm.predict.split import case_label_map

        organs = case_label_map(om.net, om.cfg, case["image"], om.overlap)
    means, whole = organ_suv_means(case["image"][0], organs, case.get("label"), labels, erode)
    return means, len(whole)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def from_dataset(data: str | Path, erode: int = 1, model: str | Path | None = None, device: str | None = None,
                 progress: bool = False) -> Cohort:
    """The cohort of a harmonized dataset: every case of ``manifest.csv`` with an ``organs.npy`` (ground-truth
    organ maps), or, with ``model`` (an organ model, :func:`load_organ_model`), every case of the manifest with
    its organ map predicted. Each organ is eroded by ``erode`` voxels and lesion voxels of the ground truth
    (``label.npy``) are left out (:func:`petctfm.evaluate.organs.organ_suv_means`). With a model, a case that
    fails is left out with a one-line warning and listed in ``Cohort.failed``; the others go on."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.data import format as fmt
    from petctfm.evaluate.organs import MIN_ERODED_VOXELS

    data = Path(data)
    if not data.is_dir():
        raise InputError(f"{data}: dataset folder not found")
    info = fmt.load_dataset_info(data)
    manifest = data / fmt.MANIFEST_CSV
    if not manifest.is_file():
        raise InputError(f"{manifest}: not found; is {data} a finished harmonized dataset?")
    meta = _metadata_by_id(manifest)
    om = load_organ_model(model, device) if model is not None else None
    if om is None:
        labels = {k: int(v) for k, v in (info.get("organ_labels") or ORGAN_LABELS).items() if k != "background"}
    else:
        labels = dict(om.labels)
    ids, values, metas, missing, failed = [], [], [], [], []
    whole = 0
    todo = sorted(meta)
    with _progress(progress, f"organ maps predicted by {om.path.name}" if om else "organ SUVs", len(todo)) as step:
        for cid in todo:
            if om is None and not (fmt.case_dir(data, cid) / "organs.npy").is_file():
                missing.append(cid)
                step()
                continue
            try:
                means, n_whole = _case_means(data, cid, labels, erode, om)
            except Exception as exc:  # noqa: BLE001 - one case; quarantined with its reason, the run goes on
                if om is None:  # a ground-truth map that cannot be read is the dataset's fault: stop
                    raise
                reason = _one_line(exc)
                if not isinstance(exc, PetctfmError):
                    reason = f"{type(exc).__name__}: {reason}"
                log.warning("case %s left out: %s", cid, reason)
                failed.append({"case": cid, "reason": reason})
                step()
                continue
            whole += n_whole
            ids.append(cid)
            values.append([means[o] for o in labels])
            metas.append(meta[cid])
            step()
    if not ids:
        if om is not None:
            raise InputError(f"{data}: the organ model failed on every case ({len(failed)}; first: "
                             f"{failed[0]['case'] if failed else '-'}: {failed[0]['reason'] if failed else ''})")
        raise InputError(f"{data}: no case has a ground-truth organ map (cases/<id>/organs.npy); harmonize data "
                         "with organ labels (autoPET ORGANS.nii.gz) or give per-case organ tables with --tables")
    notes = [f"{len(missing)} case(s) without organs.npy left out ({', '.join(missing[:3])}"
             f"{', ...' if len(missing) > 3 else ''})"] if missing else []
    if failed:
        notes.append(f"{len(failed)} case(s) failed and left out (failed.csv): "
                     + "; ".join(f"{f['case']}: {f['reason'][:120]}" for f in failed[:3])
                     + ("; ..." if len(failed) > 3 else ""))
    if om is not None:
        notes += _spacing_note(info, om)
    if whole:
        notes.append(f"{whole} organ value(s) (of {len(ids) * len(labels)}) measured on the whole organ: eroded by "
                     f"{erode} voxel(s) it kept fewer than {MIN_ERODED_VOXELS} voxels")
    eroded = f", organs eroded by {erode} voxel(s)" if erode else ""
    if om is None:
        source = f"ground-truth organ maps of {data} (lesion voxels excluded{eroded})"
    else:
        source = f"organ maps of {data} predicted by {om.path} (ground-truth lesion voxels excluded{eroded})"
    return Cohort(ids, list(labels), np.array(values, np.float64), metas, source, notes, failed)


@contextlib.contextmanager
def _progress(enabled: bool, what: str, total: int) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar over the cases (nothing shown when not ``enabled``); yields the function
    that advances it by one case."""
    from rich.progress import Progress

    with Progress(disable=not enabled, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def from_tables(tables: str | Path, metadata: str | Path | None = None) -> Cohort:
    """The cohort of per-case ``organs.csv`` tables under ``tables`` (the contract in the module docstring)."""
    tables = Path(tables)
    if not tables.is_dir():
        raise InputError(f"{tables}: tables folder not found")
    files = sorted(p for p in tables.glob(f"*/{TABLE_FILE}") if p.is_file())
    if not files:
        raise InputError(f"{tables}: no <case_id>/{TABLE_FILE} found (each case's table needs the columns "
                         f"{', '.join(TABLE_COLUMNS)})")
    if metadata is not None:
        meta_path: Path | None = Path(metadata)
        if not meta_path.is_file():
            raise InputError(f"{meta_path}: metadata file not found")
    else:
        meta_path = next((tables / n for n in TABLE_METADATA if (tables / n).is_file()), None)
    meta = _metadata_by_id(meta_path) if meta_path is not None else {}
    per_case: dict[str, dict[str, float]] = {}
    organs: list[str] = []
    for path in files:
        columns, rows = _read_csv(path)
        lacking = [c for c in TABLE_COLUMNS if c not in columns]
        if lacking:
            raise InputError(f"{path}: no {', '.join(lacking)} column (columns: {', '.join(columns) or 'none'})")
        vals: dict[str, float] = {}
        for r in rows:
            try:
                v = float(r["suv_mean"]) if r["suv_mean"] != "" else math.nan
            except ValueError:
                raise InputError(f"{path}: suv_mean {r['suv_mean']!r} of organ {r['organ']!r} is not a number") \
                    from None
            if r["organ"] in vals:
                raise InputError(f"{path}: organ {r['organ']!r} on two rows")
            vals[r["organ"]] = v
            if r["organ"] not in organs:
                organs.append(r["organ"])
        per_case[path.parent.name] = vals
    notes: list[str] = []
    if meta_path is None:
        notes.append(f"no metadata file ({' or '.join(TABLE_METADATA)} in {tables}): no covariates, no groups")
    else:
        unknown = sorted(set(per_case) - set(meta))
        if unknown:
            raise InputError(f"{meta_path}: no row for case(s) {', '.join(unknown[:3])}"
                             f"{', ...' if len(unknown) > 3 else ''} of {tables}")
    ids = sorted(per_case)
    values = np.array([[per_case[c].get(o, math.nan) for o in organs] for c in ids], np.float64)
    return Cohort(ids, organs, values, [dict(meta.get(c, {})) for c in ids],
                  f"per-case {TABLE_FILE} tables in {tables}" + (f", metadata {meta_path}" if meta_path else ""),
                  notes)


__all__ = ["Cohort", "OrganModel", "from_dataset", "from_tables", "load_organ_model"]
