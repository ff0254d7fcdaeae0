"""Follow-up phantoms (``petctfm synth --followup``): baseline + follow-up studies of one synthetic patient with a
known treatment response, for ``petctfm response`` and ``petctfm experiment response`` (docs/response.md).

One pair, all randomness from ``np.random.default_rng([seed, index, FOLLOWUP_STREAM, attempt])`` besides the
baseline's own generator:

- **Baseline** = the normal case ``index`` (:func:`petctfm.synth.generator.generate_case`, the same bytes).
- **Same patient**: the same anatomy, physiology and placed lesions (:func:`~petctfm.synth.generator.prepare_patient`
  once, the lesion-free truth maps copied before the baseline is rendered). The anatomy is not reshaped for the
  weight change (it changes the SUV normalization, the dose and the lean body mass).
- **Its own position**: a rigid pose of the body in the scanner (``Grid.pose``): rotations up to
  ``rotation_deg`` about each axis and a shift of ``shift_mm`` (drawn length: most of it along the table, up to
  ``xy_shift_mm`` across), so shifts of 3 cm and more are common. The scanned range follows the body along z.
- **Its own scan**: the same or another site (``other_site`` probability; the site model of
  :mod:`petctfm.synth.sites`: grids, PSF, noise, calibration), a body-weight change, a new dose, a study date
  ``interval_days`` after the baseline.
- **The response** (pair ``k`` gets ``CATEGORIES[k % 4]``, so every four pairs cover CMR / PMR / SMD / PMD):
  every baseline lesion keeps its shape and place; CMR: all disappear; PMR: each lesion's peak uptake is scaled
  by ``pmr_factor`` (shrunk by ``pmr_shrink`` in diameter) or, for a lesion other than the hottest, it
  disappears (``pmr_disappear``); SMD: scaled by ``smd_factor``; PMD: all grow (``pmd_factor``,
  ``pmd_grow``) or, with ``pmd_new`` probability, stay as in SMD and a new nodal lesion appears, hotter than
  the follow-up's measurability threshold.
- **Unambiguous**: PERCIST 1.0's thresholds (Wahl 2009: +-30 % and 0.8 SUL of the hottest lesion's SULpeak; a
  new measurable lesion -> PMD; CMR when no lesion is left above the liver) are applied to the **planted**
  (rendered, noise- and blur-free) mean lesion SUL (SULmean) with margins (:class:`FollowupConfig`), and then to
  what ``petctfm response`` measures in the rendered, blurred and noisy images with the truth masks
  (:func:`measure_study`: the SULpeak of every truth lesion and the liver reference sphere), with margins of their
  own (``meas_*``): PERCIST on the measured numbers must read the drawn category, away from every threshold.
  Partial volume (a small lesion's SULpeak falls below the threshold; another site's scanner blurs it less) is
  thereby in the truth. A draw that lands within a margin is redrawn (``attempts``); a patient whose baseline has
  no lesion clearly above the measurability threshold (negative controls; faint disease) is skipped, and the pair
  takes the next candidate index (``k``, ``k + n``, ``k + 2n``, ...).

Truth (``response_truth.json``, :func:`truth_json`): the category, every lesion with its id in both studies
(the ids of ``LESIONS.nii.gz``), its status (matched / disappeared / new), planted SUV and SUL (mean and max),
centre and volume at each time point and its % change, the hottest lesion's change, both study dates, weights, height,
sex, sites and the pose. Layout: docs/response.md ("Follow-up phantoms").
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from petctfm.core.lbm import lean_body_mass
from petctfm.io.layouts.autopet import STUDY_SIDECAR
from petctfm.synth import generator as G
from petctfm.synth.body import Patient
from petctfm.synth.burden import LOWER_STATIONS, UPPER_STATIONS, LesionPlan, PlannedLesion
from petctfm.synth.lesions import place_lesions
from petctfm.synth.sites import SITES, scaled_spacing

CATEGORIES: tuple[str, ...] = ("CMR", "PMR", "SMD", "PMD")
FOLLOWUP_STREAM = 2727  # the follow-up's own random stream: [seed, index, FOLLOWUP_STREAM, attempt]
PAIRS_DIR = "pairs"
TRUTH_JSON = "response_truth.json"
STUDY_JSON = STUDY_SIDECAR  # per study folder: date, weight, height, sex, site (read by petctfm response)
INSTANCES = "LESIONS.nii.gz"  # per study folder: lesion instance ids (the ids of response_truth.json)
ROLES = ("baseline", "followup")
PAIRS_CSV = "pairs.csv"


@dataclass(frozen=True)
class FollowupConfig:
    """How a follow-up differs from its baseline, and the margins that keep the response category clear.

    Factors multiply a lesion's planted peak SUV; ``*_shrink`` / ``*_grow`` its diameters. Margins are on the
    planted SULmean of the hottest lesion (``hottest``): ``threshold_liver`` x liver SULmean stands in for PERCIST's
    1.5 x liver SULmean + 2 SD (the planted liver has no noise), and a baseline is used only when its hottest
    lesion reaches ``measurable_margin`` x that."""

    interval_days: tuple[int, int] = (42, 150)
    shift_mm: tuple[float, float] = (10.0, 60.0)  # length of the body shift
    xy_shift_mm: float = 25.0  # at most this across the table (each of x, y)
    rotation_deg: float = 3.0  # at most this about each axis
    weight_change: tuple[float, float] = (-0.10, 0.06)  # relative
    other_site: float = 0.5  # probability of another site's scanner (when more than one site is allowed)
    pmr_factor: tuple[float, float] = (0.3, 0.45)
    pmr_shrink: float = 0.8
    pmr_disappear: float = 0.3
    smd_factor: tuple[float, float] = (0.95, 1.05)
    pmd_factor: tuple[float, float] = (1.9, 2.4)
    pmd_grow: float = 1.12
    pmd_new: float = 0.5
    new_lesion_ml: tuple[float, float] = (6.0, 12.0)
    # margins (planted SUL)
    threshold_liver: float = 2.0
    measurable_margin: float = 1.6
    min_baseline_ml: float = 3.0  # the hottest baseline lesion is at least this big (partial volume)
    pmr_max_change: float = -50.0  # PMR: hottest change <= this (%)
    smd_max_abs_change: float = 10.0  # SMD: |hottest change| <= this (%)
    pmd_min_change: float = 60.0  # PMD by growth: hottest change >= this (%)
    min_abs_change: float = 1.5  # PMR / PMD by growth: |change| >= this (SUL)
    residual_liver: float = 2.0  # PMR / SMD / PMD: hottest follow-up >= this x liver SULmean (not CMR)
    new_margin: float = 1.6  # a new lesion >= this x threshold_liver x liver SULmean
    # margins on the measured PERCIST numbers: SULpeak (1 ml sphere) of the truth lesions and the liver reference
    # (3 cm sphere: 1.5 x SULmean + 2 SD) in the rendered, blurred and noisy PET, as `petctfm response` reads
    # them with ground-truth masks (:func:`measure_study`)
    meas_measurable: float = 1.2  # baseline hottest SULpeak >= this x the measurability threshold
    meas_new: float = 1.2  # a new lesion's SULpeak >= this x the follow-up threshold
    meas_residual_liver: float = 1.5  # PMR / SMD / PMD: hottest follow-up SULpeak >= this x liver SULmean
    meas_pmr_change: float = -40.0  # PMR: hottest SULpeak change <= this (%) ...
    meas_pmd_change: float = 40.0  # PMD by growth: >= this (%) ...
    meas_min_abs_change: float = 1.0  # ... and |change| >= this (SUL) (PERCIST: 30 %, 0.8)
    meas_smd_change: float = 20.0  # SMD: |change| <= this (%) (PERCIST: < 30 %)
    attempts: int = 6
    max_candidates: int = 80  # candidate indices tried per pair


@dataclass
class FollowupPair:
    """One generated pair: both cases (``SynthCase``), their lesion instance maps (int (z, y, x), PET grid of
    each case; values are truth ids) and the truth dict (:func:`truth_json`)."""

    pair_id: str
    baseline: Any
    followup: Any
    instances: tuple[np.ndarray, np.ndarray]
    truth: dict[str, Any]


def _sul_factor(weight_kg: float, height_cm: float, sex: str) -> float:
    return float(lean_body_mass(weight_kg, height_cm, sex) / weight_kg)


def _scale_shape(les, s: float) -> None:
    les.diameter_mm = float(les.diameter_mm * s)
    les.parts = [(np.asarray(o, float) * s, float(d) * s, lb) for o, d, lb in les.parts]


def _set_mean(les, suv_mean: float) -> None:
    """Render ``les`` with this mean SUV (outside a necrotic core; ``render_lesions``' mean mode, as the plan's
    lesions are), without the low-contrast rule."""
    les.suv_mean, les.suv_max, les.low_contrast = float(suv_mean), 1.5 * float(suv_mean), False


def _base_mean(placed_les, rendered) -> float:
    """The mean SUV a baseline lesion was rendered towards: its plan's (rim) mean, or for a low-contrast lesion
    (drawn against its background) the mean it got."""
    return float(rendered.suv_mean if placed_les.low_contrast or placed_les.suv_mean <= 0 else placed_les.suv_mean)


def _followup_grids(st: G.PreparedPatient, profile, size: str, cfg: FollowupConfig, rng: np.random.Generator):
    """The follow-up's CT and PET grids (the site ``profile``) covering the baseline's body range along z, and
    the pose (body -> scanner). Returns ``(ct_grid, pet_grid, pose dict)``."""
    rot = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, 3))
    length = rng.uniform(*cfg.shift_mm)
    txy = rng.uniform(-cfg.xy_shift_mm, cfg.xy_shift_mm, 2)
    tz = math.sqrt(max(length ** 2 - float((txy ** 2).sum()), 0.0)) * (1 if rng.random() < 0.5 else -1)
    t = np.array([txy[0], txy[1], tz])
    lo, hi = st.pet_grid.bounds()
    centre = (lo + hi) / 2.0
    pose = tuple(float(v) for v in (*centre, *rot, *t))
    grids = []
    for modality, base in (("ct", st.ct_grid), ("pet", st.pet_grid)):
        sp = scaled_spacing(profile, size, modality)
        fov = (profile.ct_matrix * profile.ct_spacing_mm[0] if modality == "ct"
               else profile.pet_matrix * profile.pet_spacing_mm[0])
        n_xy = int(round(fov / sp[0]))
        blo, bhi = base.bounds()
        n_z = int(np.ceil((bhi[2] - blo[2]) / sp[2])) + 1
        off = profile.center_offset_mm[0 if modality == "pet" else 1]
        c = (off[0] + rng.uniform(-5, 5), off[1] + rng.uniform(-5, 5), (blo[2] + bhi[2]) / 2.0 + t[2])
        g = G.Grid.centered(c, sp, (n_xy, n_xy, n_z), profile.direction)
        grids.append(replace(g, pose=pose))
    info = {"translation_mm": [round(float(v), 2) for v in t], "shift_mm": round(float(np.linalg.norm(t)), 2),
            "rotation_deg": [round(float(np.rad2deg(a)), 3) for a in rot],
            "center_mm": [round(float(v), 2) for v in centre]}
    return grids[0], grids[1], info


def _followup_times(base_times: dict, tracer: str, weight: float, profile, age: int, cfg: FollowupConfig,
                    rng: np.random.Generator) -> tuple[dict, int]:
    """Dose and times of the follow-up (``generator._draw_times``) on a day ``interval_days`` after the
    baseline's; returns ``(times, interval days)``."""
    t = G._draw_times(rng, tracer, weight, profile, age)
    interval = int(rng.integers(cfg.interval_days[0], cfg.interval_days[1] + 1))
    day = dt.datetime.strptime(base_times["study_date"], "%Y%m%d").date() + dt.timedelta(days=interval)
    inj = dt.datetime.combine(day, dt.datetime.fromisoformat(t["injection_time"]).time())
    acq = inj + dt.timedelta(seconds=int(t["uptake_s"]))
    t.update(injection_time=inj.isoformat(), acquisition_time=acq.isoformat(), study_date=day.strftime("%Y%m%d"),
             birth_date=base_times["birth_date"])
    return t, interval


def _new_lesion(st: G.PreparedPatient, existing: list, peak: float, cfg: FollowupConfig,
                rng: np.random.Generator) -> list:
    """One new nodal lesion (a station of the patient's anatomy, clear of ``existing``) with mean SUV ``peak``."""
    upper = rng.random() < 0.5
    region = str(rng.choice(UPPER_STATIONS if upper else LOWER_STATIONS))
    vol = float(rng.uniform(*cfg.new_lesion_ml))
    plan = LesionPlan(st.clin["diagnosis"], bool(st.clin["advanced"]), vol,
                      (PlannedLesion(region, "node", vol, peak / 1.5, 0.1, False, False),))
    lo, hi = st.pet_grid.bounds()
    margin = np.array([0.0, 0.0, 30.0])  # the follow-up's range along z moves with the pose
    gap = 1.5 * max(st.pet_grid.spacing)
    min_d = float(np.mean(st.pet_grid.spacing)) if st.size == "tiny" else 4.0
    new = place_lesions(st.anat, st.clin["diagnosis"], plan, rng, min_gap_mm=gap, bounds=(lo + margin, hi - margin),
                        min_diameter_mm=min_d, existing=existing)
    for les in new:
        _set_mean(les, peak)
    return new


def _edit(category: str, placed: list, base_kept: list, kept_idx: list[int], liver_suv: float,
          st: G.PreparedPatient, cfg: FollowupConfig, rng: np.random.Generator) -> tuple[list, list[int], str]:
    """The follow-up lesions of ``category``: copies of the placed baseline lesions (``placed``, not rendered)
    edited from the rendered ones (``base_kept``, at ``kept_idx`` in ``placed``). Returns ``(lesions, truth
    ids, how)``: ids 1.. of the baseline lesions they continue, ``len(base_kept) + j`` for new ones."""
    hottest = int(np.argmax([les.suv_mean for les in base_kept]))
    out, ids, how = [], [], category
    if category == "CMR":
        return out, ids, "all lesions disappear"
    pmd_new = category == "PMD" and rng.random() < cfg.pmd_new
    for j, (les_b, i) in enumerate(zip(base_kept, kept_idx)):
        les = copy.deepcopy(placed[i])
        if category == "PMR":
            if j != hottest and rng.random() < cfg.pmr_disappear:
                continue
            f, s = rng.uniform(*cfg.pmr_factor), cfg.pmr_shrink
        elif category == "PMD" and not pmd_new:
            f, s = rng.uniform(*cfg.pmd_factor), cfg.pmd_grow
        else:
            f, s = rng.uniform(*cfg.smd_factor), 1.0
        _set_mean(les, min(_base_mean(placed[i], les_b) * f, 25.0))
        _scale_shape(les, s)
        out.append(les)
        ids.append(j + 1)
    if pmd_new:
        peak = max(max(les.suv_mean for les in base_kept), 1.3 * cfg.new_margin * cfg.threshold_liver * liver_suv)
        new = _new_lesion(st, out, float(peak * rng.uniform(1.0, 1.2)), cfg, rng)
        out += new
        ids += [len(base_kept) + 1 + k for k in range(len(new))]
        how = "PMD: a new lesion" if new else "PMD: no room for a new lesion"
    elif category == "PMD":
        how = "PMD: every lesion grows"
    return out, ids, how


def _check(category: str, how: str, b_sul: list[float], f_sul: dict[int, float], new_ids: list[int],
           liver_sul_b: float, liver_sul_f: float, cfg: FollowupConfig) -> str | None:
    """None when the planted values give ``category`` with the margins; else why not."""
    hb = max(b_sul)
    old = [v for k, v in f_sul.items() if k not in new_ids]
    hf = max(f_sul.values()) if f_sul else None
    if category == "CMR":
        return None if not f_sul else "lesions left"
    if hf is None or hf < cfg.residual_liver * liver_sul_f:
        return "follow-up hottest too close to the liver (would read CMR)"
    thr_f = cfg.threshold_liver * liver_sul_f
    if new_ids and category != "PMD":
        return "new lesion outside PMD"
    if category == "PMD" and new_ids:
        if max(f_sul[k] for k in new_ids) < cfg.new_margin * thr_f:
            return "new lesion not clearly measurable"
        return None
    if category == "PMD" and "new" in how:
        return "no new lesion placed"
    ho = max(old) if old else None
    if ho is None:
        return "no lesion left"
    pct, ab = 100.0 * (ho - hb) / hb, ho - hb
    if category == "PMR":
        return None if pct <= cfg.pmr_max_change and ab <= -cfg.min_abs_change else f"change {pct:+.1f} %"
    if category == "SMD":
        return None if abs(pct) <= cfg.smd_max_abs_change else f"change {pct:+.1f} %"
    return None if pct >= cfg.pmd_min_change and ab >= cfg.min_abs_change else f"change {pct:+.1f} %"


def measure_study(case, instances: np.ndarray, sul_factor: float) -> dict[str, Any]:
    """PERCIST's numbers of one rendered study as ``petctfm response`` reads them with its ground-truth masks:
    the liver reference (predict's readout, :func:`petctfm.evaluate.organs.reference_rows`: the 3 cm sphere away
    from the lesions of ``SEG``) and each truth lesion's SULpeak (:func:`petctfm.evaluate.lesions.suv_peak`, 1 ml
    sphere) in the PET as written (``SUV.nii.gz``); SUL = SUV x ``sul_factor`` (LBM / weight).

    ``instances``: (z, y, x) truth ids on the PET grid (``LESIONS.nii.gz``). Returns ``{"liver_sul_mean",
    "liver_sul_sd", "threshold" (None without a liver sphere), "sul_peak": {id: SULpeak}}``."""
    from petctfm.core.labels import ORGAN_LABELS
    from petctfm.evaluate.lesions import suv_peak
    from petctfm.evaluate.organs import LIVER_REFERENCE, reference_rows
    from petctfm.evaluate.percist import Reference, measurability_threshold
    from petctfm.io.images import array_xyz, ras_affine

    suv = array_xyz(case.suv).astype(np.float32, copy=False)
    ids = np.transpose(np.asarray(instances), (2, 1, 0))
    spacing = np.asarray(case.suv.GetSpacing(), np.float64)
    rows = reference_rows(suv, array_xyz(case.organs), array_xyz(case.seg) > 0, spacing, ORGAN_LABELS,
                          ras_affine(case.suv), sul_factor)
    liver = next(r for r in rows if r["organ"] == LIVER_REFERENCE)
    mean, sd = liver["suv_mean"] * sul_factor, liver["suv_sd"] * sul_factor
    threshold, _ = measurability_threshold(Reference("liver", mean, sd), None)
    peaks = {int(t): suv_peak(suv, ids == t, spacing) * sul_factor for t in np.unique(ids) if t}
    return {"liver_sul_mean": mean, "liver_sul_sd": sd, "threshold": threshold, "sul_peak": peaks}


def _baseline_measurable(m: dict[str, Any], cfg: FollowupConfig) -> bool:
    """The baseline's hottest measured SULpeak is clearly above PERCIST's measurability threshold."""
    return m["threshold"] is not None and bool(m["sul_peak"]) and (
        max(m["sul_peak"].values()) >= cfg.meas_measurable * m["threshold"])


def _check_measured(category: str, mb: dict[str, Any], mf: dict[str, Any], new_ids: list[int],
                    cfg: FollowupConfig) -> str | None:
    """None when the measured numbers (:func:`measure_study` of both studies) give ``category`` with the
    measured margins; else why not. The category itself is PERCIST's (:func:`petctfm.evaluate.percist.percist`)
    on those numbers, and the margins keep it away from every threshold."""
    from petctfm.evaluate.percist import percist

    hb = max(mb["sul_peak"].values())
    new = {k: v for k, v in mf["sul_peak"].items() if k in new_ids}
    hf = max(mf["sul_peak"].values()) if mf["sul_peak"] else None  # response's target: any follow-up lesion
    read = percist(hb, hf, mb["threshold"], mf["threshold"], mf["liver_sul_mean"], new)
    if read.category != category:
        return f"measured PERCIST reads {read.category}"
    if category == "CMR":
        return None
    if hf is None or hf < cfg.meas_residual_liver * mf["liver_sul_mean"]:
        return "measured follow-up hottest too close to the liver"
    if new:
        return None if min(new.values()) >= cfg.meas_new * (mf["threshold"] or math.inf) else "new lesion faint"
    pct, ab = read.change_percent, read.change_absolute
    if category == "PMR":
        ok = pct <= cfg.meas_pmr_change and ab <= -cfg.meas_min_abs_change
    elif category == "PMD":
        ok = pct >= cfg.meas_pmd_change and ab >= cfg.meas_min_abs_change
    else:
        ok = abs(pct) <= cfg.meas_smd_change
    return None if ok else f"measured change {pct:+.1f} % ({ab:+.2f})"


def _instances(case, kept: list, owner, st: G.PreparedPatient, grid, ids: list[int]) -> np.ndarray:
    """``LESIONS.nii.gz`` of a case: :func:`generator.lesion_instances` renumbered to truth ``ids``."""
    seg = sitk.GetArrayFromImage(case.seg)
    if not kept:
        return np.zeros(seg.shape, np.uint16)
    inst = G.lesion_instances(seg, owner, st.axes, grid, case.pet, kept)
    lut = np.zeros(len(kept) + 1, np.uint16)
    lut[1:] = ids
    return lut[inst]


def _lesion_json(les, sul_factor: float, centre, volume_ml: float) -> dict[str, Any]:
    return {"suv_mean": round(float(les.suv_mean), 4), "sul_mean": round(float(les.suv_mean) * sul_factor, 4),
            "suv_max": round(float(les.suv_max), 4), "sul_max": round(float(les.suv_max) * sul_factor, 4),
            "center_mm": [round(float(v), 2) for v in centre], "volume_ml": round(float(volume_ml), 3)}


def make_pair(k: int, n_pairs: int, seed: int, size: str = "tiny", sites: Sequence[str] | None = None,
              tracers: Sequence[str] | None = None, cfg: FollowupConfig | None = None,
              metabolic_structure: bool = False) -> FollowupPair:
    """Pair ``k`` of ``n_pairs`` (category ``CATEGORIES[k % 4]``; module docstring). Candidate patients are the
    case indices ``k, k + n_pairs, ...`` (at most ``cfg.max_candidates``); raises ``RuntimeError`` when none
    gives a clear pair (not expected: about half the cases qualify)."""
    cfg = cfg or FollowupConfig()
    category = CATEGORIES[k % len(CATEGORIES)]
    site_names = list(sites) if sites else list(SITES)
    for c in range(cfg.max_candidates):
        index = k + c * n_pairs
        st = G.prepare_patient(index, seed, size, list(sites) if sites else None,
                               list(tracers) if tracers else None, metabolic_structure)
        if not st.lesions:
            continue
        hu0, suv0, placed = st.hu.copy(), st.suv_true.copy(), copy.deepcopy(st.lesions)
        scan_b = G.Acquisition(st.site, st.profile, st.patient, st.times, st.ct_grid, st.pet_grid)
        base, kept_b, owner_b = G.acquire_study(st, st.lesions, scan_b, st.rng)
        if not kept_b:
            continue
        kept_idx = [next(i for i, q in enumerate(st.lesions) if q is les) for les in kept_b]
        w_b, h, sex = st.patient.weight_kg, st.patient.height_cm, st.patient.sex
        fb = _sul_factor(w_b, h, sex)
        liver_suv = float(base.meta["reference_suv"]["suv_liver"])
        b_sul = [les.suv_mean * fb for les in kept_b]
        hot = int(np.argmax(b_sul))
        if (b_sul[hot] < cfg.measurable_margin * cfg.threshold_liver * liver_suv * fb
                or base.meta["lesions"][hot]["seg_volume_ml"] < cfg.min_baseline_ml):
            continue
        inst_b = _instances(base, kept_b, owner_b, st, st.pet_grid, list(range(1, len(kept_b) + 1)))
        meas_b = measure_study(base, inst_b, fb)
        if not _baseline_measurable(meas_b, cfg):
            continue
        for attempt in range(cfg.attempts):
            rng = np.random.default_rng([int(seed), int(index), FOLLOWUP_STREAM, attempt])
            pair = _try_followup(k, category, st, base, kept_b, owner_b, kept_idx, placed, hu0, suv0, fb,
                                 liver_suv, site_names, cfg, rng, inst_b, meas_b)
            if pair is not None:
                pair.truth["candidates_skipped"], pair.truth["attempt"] = c, attempt
                return pair
    raise RuntimeError(f"pair {k}: no clear {category} pair among {cfg.max_candidates} candidate patients")


def _try_followup(k, category, st, base, kept_b, owner_b, kept_idx, placed, hu0, suv0, fb, liver_suv,
                  site_names, cfg: FollowupConfig, rng: np.random.Generator, inst_b: np.ndarray,
                  meas_b: dict[str, Any]) -> FollowupPair | None:
    """One attempt at the follow-up of pair ``k``; None when the planted values or the measured ones
    (:func:`measure_study`; ``inst_b`` / ``meas_b`` the baseline's) miss a margin."""
    p = st.patient
    weight_f = round(p.weight_kg * (1.0 + rng.uniform(*cfg.weight_change)), 1)
    patient_f = Patient(p.sex, p.age, p.height_cm, weight_f, p.arms)
    others = [s for s in site_names if s != st.site]
    site_f = str(rng.choice(others)) if others and rng.random() < cfg.other_site else st.site
    profile_f = SITES[site_f]
    times_f, interval = _followup_times(st.times, st.clin["tracer"], weight_f, profile_f, p.age, cfg, rng)
    ct_f, pet_f, pose = _followup_grids(st, profile_f, st.size, cfg, rng)
    lesions_f, ids_f, how = _edit(category, placed, kept_b, kept_idx, liver_suv, st, cfg, rng)
    n_b = len(kept_b)
    ident = {key: base.meta[key] for key in ("patient_name", "patient_id", "birth_date", "referring_physician",
                                             "patient_position")}
    ident["study_date"] = times_f["study_date"]
    ident["accession_number"] = f"ACC{int(rng.integers(10 ** 6, 10 ** 7))}"
    extra = {"study": "followup", "baseline_case": base.case_id, "interval_days": interval, "pose": pose}
    scan_f = G.Acquisition(site_f, profile_f, patient_f, times_f, ct_f, pet_f, identity=ident, extra_meta=extra)
    st_f = replace(st, hu=hu0.copy(), suv_true=suv0.copy())
    fu, kept_f, owner_f = G.acquire_study(st_f, lesions_f, scan_f, rng)
    kept_ids = [ids_f[next(i for i, q in enumerate(lesions_f) if q is les)] for les in kept_f]
    ff = _sul_factor(weight_f, p.height_cm, p.sex)
    f_sul = {tid: les.suv_mean * ff for tid, les in zip(kept_ids, kept_f)}
    new_ids = [tid for tid in kept_ids if tid > n_b]
    b_sul = [les.suv_mean * fb for les in kept_b]
    why = _check(category, how, b_sul, f_sul, new_ids, liver_suv * fb, liver_suv * ff, cfg)
    if why is not None:
        return None
    inst_f = _instances(fu, kept_f, owner_f, st, pet_f, kept_ids)
    meas_f = measure_study(fu, inst_f, ff)
    if _check_measured(category, meas_b, meas_f, new_ids, cfg) is not None:
        return None
    truth = truth_json(k, category, how, base, fu, kept_b, kept_f, kept_ids, fb, ff, liver_suv, pose, interval,
                       pet_f, cfg, (meas_b, meas_f))
    return FollowupPair(f"{base.case_id}", base, fu, (inst_b, inst_f), truth)


def truth_json(k: int, category: str, how: str, base, fu, kept_b: list, kept_f: list, kept_ids: list[int],
               fb: float, ff: float, liver_suv: float, pose: dict, interval: int, pet_f: G.Grid,
               cfg: FollowupConfig, measured: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """The ``response_truth.json`` dict (module docstring; docs/response.md lists the fields). Lesion centres
    are in each study's scanner frame (the follow-up's through ``pet_f.to_scanner``); ``measured``: both
    studies' :func:`measure_study` (written under ``measured``)."""
    n_b = len(kept_b)
    vols_b, vols_f = base.meta["lesion_volumes_ml"], fu.meta["lesion_volumes_ml"]
    by_id_f = {tid: (les, vols_f[j]) for j, (tid, les) in enumerate(zip(kept_ids, kept_f))}
    lesions = []
    for tid in list(range(1, n_b + 1)) + sorted(t for t in kept_ids if t > n_b):
        b = None if tid > n_b else _lesion_json(kept_b[tid - 1], fb, kept_b[tid - 1].center, vols_b[tid - 1])
        f = None
        if tid in by_id_f:
            les, v = by_id_f[tid]
            f = _lesion_json(les, ff, pet_f.to_scanner(les.center), v)
        status = "matched" if b and f else ("disappeared" if b else "new")
        ch = None if not (b and f) else round(100.0 * (f["sul_mean"] - b["sul_mean"]) / b["sul_mean"], 2)
        lesions.append({"id": tid, "status": status, "baseline": b, "followup": f,
                        "sul_change_percent": -100.0 if status == "disappeared" else ch})
    hb = max(les["baseline"]["sul_mean"] for les in lesions if les["baseline"])
    hf = max((les["followup"]["sul_mean"] for les in lesions if les["followup"]), default=None)

    def study(case, factor, role):
        m = case.meta
        return {"folder": role, "case_id": m["case_id"], "study_date": m["study_date"], "site": m["site"],
                "weight_kg": m["weight_kg"], "height_cm": m["height_cm"], "sex": m["sex"],
                "sul_factor": round(factor, 5), "liver_suv_mean": round(liver_suv, 4),
                "liver_sul_mean": round(liver_suv * factor, 4), "lesion_count": m["n_lesions"],
                "hottest_sul_mean": None}

    out = {
        "pair_id": base.case_id, "pair_number": k, "category": category, "how": how,
        "criteria": "PERCIST 1.0 (Wahl 2009) thresholds with margins (synth.followup), on the planted lesion "
                    "SULmean and on the SULpeak and liver reference measured in the rendered images with the "
                    "truth masks (`measured`)",
        "baseline": {**study(base, fb, "baseline"), "hottest_sul_mean": round(hb, 4)},
        "followup": {**study(fu, ff, "followup"), "hottest_sul_mean": None if hf is None else round(hf, 4),
                     "interval_days": interval, "pose": pose, "same_site": fu.meta["site"] == base.meta["site"]},
        "hottest": {"baseline_sul_mean": round(hb, 4), "followup_sul_mean": None if hf is None else round(hf, 4),
                    "change_percent": -100.0 if hf is None else round(100.0 * (hf - hb) / hb, 2),
                    "change_absolute": round((0.0 if hf is None else hf) - hb, 4)},
        "lesions": lesions,
        "counts": {s: sum(les["status"] == s for les in lesions) for s in ("matched", "disappeared", "new")},
        "measured": None if measured is None else {role: _measured_json(m) for role, m in zip(ROLES, measured)},
        "margins": asdict(cfg),
        "instances": f"{INSTANCES} in each study folder: lesion id per voxel of SEG.nii.gz (0 outside)",
        "note": "synthetic phantoms; lesion values are planted (noise- and blur-free) uptake, `measured` is "
                "read from the images; not clinical",
    }
    return out


def _measured_json(m: dict[str, Any]) -> dict[str, Any]:
    def r(v):
        return None if v is None else round(float(v), 4)

    return {"liver_sul_mean": r(m["liver_sul_mean"]), "liver_sul_sd": r(m["liver_sul_sd"]),
            "threshold": r(m["threshold"]), "sul_peak": {str(k): r(v) for k, v in sorted(m["sul_peak"].items())}}


def _study_json(case, role: str) -> dict[str, Any]:
    m = case.meta
    return {"role": role, "case_id": m["case_id"], "study_date": m["study_date"], "weight_kg": m["weight_kg"],
            "height_cm": m["height_cm"], "sex": m["sex"], "site": m["site"], "tracer": m["tracer"],
            "acquisition_time": m["acquisition_time"], "note": "synthetic phantom (petctfm synth --followup)"}


def write_pair(pair: FollowupPair, root: str | os.PathLike) -> Path:
    """Write ``root/<pair_id>/{baseline,followup}/`` (autoPET files + ``LESIONS.nii.gz`` + ``study.json``) and
    ``root/<pair_id>/response_truth.json``; the pair folder appears whole (``atomic_dir``)."""
    from petctfm.core.provenance import SYNTH_MARK
    from petctfm.io.atomic import atomic_dir, atomic_write_json
    from petctfm.io.images import write_image
    from petctfm.synth.layouts import write_autopet_case

    target = Path(root) / pair.pair_id
    with atomic_dir(target) as tmp:
        for role, case, inst in zip(ROLES, (pair.baseline, pair.followup), pair.instances):
            folder = write_autopet_case(case, tmp, name=role)
            img = sitk.GetImageFromArray(inst.astype(np.uint16))
            img.CopyInformation(case.seg)
            write_image(img, folder / INSTANCES, notes=SYNTH_MARK)
            atomic_write_json(folder / STUDY_JSON, _study_json(case, role))
        atomic_write_json(tmp / TRUTH_JSON, pair.truth)
    return target


def _make_and_write(k: int, n_pairs: int, seed: int, size: str, sites, tracers, root: str,
                    metabolic_structure: bool) -> dict[str, Any]:
    pair = make_pair(k, n_pairs, seed, size, sites, tracers, metabolic_structure=metabolic_structure)
    write_pair(pair, root)
    t = pair.truth
    return {"pair_id": pair.pair_id, "pair_number": k, "category": t["category"], "how": t["how"],
            "baseline_site": t["baseline"]["site"], "followup_site": t["followup"]["site"],
            "shift_mm": t["followup"]["pose"]["shift_mm"], "interval_days": t["followup"]["interval_days"],
            "baseline_weight_kg": t["baseline"]["weight_kg"], "followup_weight_kg": t["followup"]["weight_kg"],
            **{f"n_{s}": v for s, v in t["counts"].items()}, "hottest_change_percent": t["hottest"]["change_percent"]}


def synthesize_pairs(out_dir: str | os.PathLike, n_pairs: int, seed: int, size: str = "small",
                     sites: Sequence[str] | None = None, tracers: Sequence[str] | None = None, workers: int = 1,
                     progress: bool = True, metabolic_structure: bool = False) -> list[dict[str, Any]]:
    """``petctfm synth --followup``: ``n_pairs`` baseline + follow-up pairs under ``out_dir/pairs/<pair_id>/``
    and ``out_dir/pairs/pairs.csv`` (one row per pair, by pair number); returns the rows. Deterministic in
    ``(n_pairs, seed, size, sites, tracers)`` for any ``workers``."""
    from concurrent.futures import ProcessPoolExecutor

    from petctfm.core.checks import check_choice, check_int
    from petctfm.io.atomic import atomic_write_text
    from petctfm.io.tables import csv_text

    n_pairs = check_int("n_cases", n_pairs, lo=1)
    workers = check_int("workers", workers, lo=1)
    seed = check_int("seed", seed, lo=0)
    check_choice("size", size, G.SIZES)
    root = Path(out_dir) / PAIRS_DIR
    root.mkdir(parents=True, exist_ok=True)
    args = (int(n_pairs), int(seed), size, list(sites) if sites else None, list(tracers) if tracers else None,
            str(root), bool(metabolic_structure))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    rows: list[dict[str, Any]] = []
    with Progress(TextColumn("[bold]synth --followup[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress) as bar:
        task = bar.add_task("pairs", total=int(n_pairs))
        if workers == 1:
            for k in range(n_pairs):
                rows.append(_make_and_write(k, *args))
                bar.advance(task)
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, n_pairs), mp_context=ctx) as pool:
                for row in pool.map(_make_and_write, range(n_pairs), *[[a] * n_pairs for a in args]):
                    rows.append(row)
                    bar.advance(task)
    rows.sort(key=lambda r: r["pair_number"])
    atomic_write_text(root / PAIRS_CSV, csv_text(rows, list(rows[0])))
    return rows


__all__ = ["CATEGORIES", "FollowupConfig", "FollowupPair", "make_pair", "write_pair", "synthesize_pairs",
           "TRUTH_JSON", "STUDY_JSON", "INSTANCES", "PAIRS_DIR", "PAIRS_CSV", "ROLES"]
