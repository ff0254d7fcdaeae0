"""Tests of the synthetic PET/CT generator (size ``tiny``; one shared cohort of 30 cases)."""

from __future__ import annotations

import datetime as dt
import json
import math

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from petctfm.core.errors import InputError
from petctfm.core.labels import METADATA_FIELDS, ORGAN_LABELS
from petctfm.synth.generator import SIZES, TRACERS, generate_case
from petctfm.synth.sites import SITES

N_CASES = 30
SEED = 3


def arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)  # [z, y, x]


@pytest.fixture(scope="module")
def cohort():
    return [generate_case(i, SEED, "tiny") for i in range(N_CASES)]


def test_interface_and_types(cohort):
    assert SIZES == ("tiny", "small", "full") and TRACERS == ("fdg", "psma")
    assert len(SITES) >= 4
    with pytest.raises(Exception):
        next(iter(SITES.values())).pet_matrix = 1  # frozen
    c = cohort[0]
    assert c.case_id == "PETCT_0000" == c.meta["case_id"]
    assert arr(c.ct).dtype == np.int16
    for im in (c.pet, c.suv, c.ctres):
        assert arr(im).dtype == np.float32
    assert arr(c.seg).dtype == np.uint8 and arr(c.organs).dtype == np.uint8
    for im in (c.suv, c.ctres, c.seg, c.organs):  # all on the PET grid
        assert im.GetSize() == c.pet.GetSize()
        assert np.allclose(im.GetOrigin(), c.pet.GetOrigin()) and np.allclose(im.GetSpacing(), c.pet.GetSpacing())
        assert im.GetDirection() == c.pet.GetDirection()
    for case in cohort:
        missing = [f for f in METADATA_FIELDS if f not in case.meta]
        assert not missing, missing
        json.dumps(case.meta)  # plain types only
        assert case.meta["diagnosis"] in ("melanoma", "lymphoma", "lung_cancer", "prostate_cancer", "negative")
        assert 50 <= case.meta["uptake_min"] <= 90
        assert case.meta["arms"] in ("up", "down")
        assert set(np.unique(arr(case.organs))) <= set(ORGAN_LABELS.values())
    assert len(np.unique(arr(cohort[0].organs))) - 1 >= 10


def test_bad_arguments():
    with pytest.raises(InputError, match="size"):
        generate_case(0, 0, "huge")
    with pytest.raises(InputError, match="nowhere"):
        generate_case(0, 0, "tiny", sites=["nowhere"])
    with pytest.raises(InputError, match="tracer"):
        generate_case(0, 0, "tiny", tracers=["fes"])
    with pytest.raises(InputError):
        generate_case(-1, 0, "tiny")


def test_deterministic_and_seed_dependent(cohort):
    a, b = cohort[4], generate_case(4, SEED, "tiny")
    for name in ("ct", "pet", "suv", "ctres", "seg", "organs"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(arr(x), arr(y)), name
        assert x.GetOrigin() == y.GetOrigin() and x.GetDirection() == y.GetDirection()
    assert json.dumps(a.meta, sort_keys=True) == json.dumps(b.meta, sort_keys=True)
    other = generate_case(4, SEED + 1, "tiny")
    assert not np.array_equal(arr(a.pet), arr(other.pet)) if arr(a.pet).shape == arr(other.pet).shape else True
    assert a.meta["patient_id"] != other.meta["patient_id"] or a.meta["weight_kg"] != other.meta["weight_kg"]


def test_sites_differ_and_grids_differ(cohort):
    n = len(SITES)
    first = cohort[:n]
    assert [c.meta["site"] for c in first] == list(SITES)  # round-robin
    assert len({c.pet.GetSpacing() for c in first}) == n
    assert len({c.ct.GetSpacing() for c in first}) >= 3
    assert len({c.pet.GetDirection() for c in first}) >= 4
    for c in cohort:
        assert c.ct.GetDirection() == c.pet.GetDirection() == SITES[c.meta["site"]].direction
        assert c.ct.GetSpacing() != c.pet.GetSpacing()
        assert c.ct.GetSize() != c.pet.GetSize()
        assert not np.allclose(c.ct.GetOrigin(), c.pet.GetOrigin())


def _centroid_mm(img: sitk.Image, mask_zyx: np.ndarray) -> np.ndarray:
    zyx = np.argwhere(mask_zyx).mean(0)
    return np.array(img.TransformContinuousIndexToPhysicalPoint([float(zyx[2]), float(zyx[1]), float(zyx[0])]))


def test_orientation_keeps_anatomy_in_place(cohort):
    """Whatever the stored orientation, physical LPS positions of organs are anatomically right."""
    for c in cohort[:10]:
        o = arr(c.organs)
        liver = _centroid_mm(c.organs, o == ORGAN_LABELS["liver"])
        spleen = _centroid_mm(c.organs, o == ORGAN_LABELS["spleen"])
        lung_l = _centroid_mm(c.organs, o == ORGAN_LABELS["lung_left"])
        lung_r = _centroid_mm(c.organs, o == ORGAN_LABELS["lung_right"])
        brain = _centroid_mm(c.organs, o == ORGAN_LABELS["brain"])
        bladder = _centroid_mm(c.organs, o == ORGAN_LABELS["bladder"])
        assert liver[0] < 0 < spleen[0], c.meta["site"]  # LPS: +x = patient left
        assert lung_r[0] < 0 < lung_l[0]
        assert brain[2] > lung_l[2] > liver[2] > bladder[2]  # +z = superior
    # the same patient scanned at two sites with different orientations: organs at the same place
    a = generate_case(0, 9, "tiny", sites=["north_valley"])
    b = generate_case(0, 9, "tiny", sites=["lakeside_clinic"])
    assert a.pet.GetDirection() != b.pet.GetDirection()
    for organ in ("liver", "heart", "brain"):
        pa = _centroid_mm(a.organs, arr(a.organs) == ORGAN_LABELS[organ])
        pb = _centroid_mm(b.organs, arr(b.organs) == ORGAN_LABELS[organ])
        assert np.linalg.norm(pa - pb) < 12.0, organ


def test_suv_matches_pet_dose_and_decay(cohort):
    for c in cohort[:8]:
        m = c.meta
        uptake = (dt.datetime.fromisoformat(m["acquisition_time"]) - dt.datetime.fromisoformat(m["injection_time"])).total_seconds()
        assert uptake == m["uptake_s"]
        hl = {"fdg": 6586.2, "psma": 4062.6}[m["tracer"]]
        assert m["half_life_s"] == hl
        decayed = m["injected_activity_bq"] * math.exp(-math.log(2) * uptake / hl)
        expect = arr(c.pet).astype(np.float64) * m["weight_kg"] * 1000.0 / decayed
        np.testing.assert_allclose(arr(c.suv), expect, rtol=1e-5, atol=1e-6)
        assert arr(c.pet).min() >= 0 and arr(c.pet).max() > 1000  # Bq/ml scale


def _eroded(o: np.ndarray, label: int) -> np.ndarray:
    m = o == label
    e = ndimage.binary_erosion(m)
    return e if e.sum() >= 3 else m


def test_organ_hu_ranges(cohort):
    """Median HU in (eroded) organ masks of CTres is where the spec says."""
    spec = {"liver": (45, 70), "spleen": (30, 70), "kidney_left": (15, 45), "heart": (25, 55),
            "lung_left": (-900, -750), "lung_right": (-900, -750), "brain": (25, 50), "bladder": (-40, 30)}
    for c in cohort[:8]:
        o, ct = arr(c.organs), arr(c.ctres)
        for organ, (lo, hi) in spec.items():
            v = float(np.median(ct[_eroded(o, ORGAN_LABELS[organ])]))
            assert lo <= v <= hi, (organ, v, c.meta["site"])
        bone = ct[o == ORGAN_LABELS["bone"]]
        assert 250 < np.median(bone) < 1500 and np.percentile(bone, 95) > 600  # cortical shell is dense
        body = ct[(o == 0) & (ct > -300)]
        assert body.size and np.percentile(body, 5) < -60  # fat exists
        air = ct[(o == 0)]
        assert np.percentile(air, 10) < -950  # air outside the body


def test_fdg_and_psma_uptake(cohort):
    fdg = [c for c in cohort if c.meta["tracer"] == "fdg"][:6]
    psma = [c for c in cohort if c.meta["tracer"] == "psma"] or [generate_case(0, SEED, "tiny", tracers=["psma"])]
    for c in fdg:
        ref = c.meta["reference_suv"]
        assert 6 <= ref["suv_brain"] <= 12 and 1 <= ref["suv_myocardium"] <= 12
        assert 1.5 <= ref["suv_blood"] <= 2.2 and 1.8 <= ref["suv_liver"] <= 2.8 and 5 <= ref["suv_bladder"] <= 60
        assert 0.5 <= ref["suv_muscle"] <= 0.9 and ref["suv_fat"] <= 0.45 and ref["suv_lung_l"] <= 0.55
        o, s = arr(c.organs), arr(c.suv)
        med = lambda name: float(np.median(s[_eroded(o, ORGAN_LABELS[name])]))  # noqa: E731
        assert 4.5 <= med("brain") <= 13
        assert 1.5 <= med("liver") <= 3.2
        assert med("lung_left") < 0.8
        assert med("bladder") > med("liver")
    for c in psma[:2]:
        o, s = arr(c.organs), arr(c.suv)
        med = lambda name: float(np.median(s[_eroded(o, ORGAN_LABELS[name])]))  # noqa: E731
        assert med("brain") < 0.6
        assert med("salivary_glands") > med("liver") and med("kidney_left") > 8


def test_negatives_and_lesions(cohort):
    neg = [c for c in cohort if c.meta["diagnosis"] == "negative"]
    assert 0.2 <= len(neg) / len(cohort) <= 0.6
    for c in cohort:
        seg = arr(c.seg)
        n = c.meta["n_lesions"]
        if c.meta["diagnosis"] == "negative":
            assert n == 0 and seg.sum() == 0 and c.meta["stage"] == "none"
            continue
        # issue 15: realistic burden (up to 40 lesions, masses up to ~1 l, SUVmax up to 45; was 20 / 80 mm / 30)
        assert 1 <= n <= 40 and seg.sum() > 0
        assert abs(c.meta["lesion_volume_ml"] - seg.sum() * np.prod(c.seg.GetSpacing()) / 1000) < 1e-2
        assert len(c.meta["lesion_volumes_ml"]) == n
        assert abs(sum(c.meta["lesion_volumes_ml"]) - c.meta["lesion_volume_ml"]) < 1e-2
        for les in c.meta["lesions"]:
            assert 4 <= les["diameter_mm"] <= 160 and 2 <= les["suv_max"] <= 45
            idx = c.seg.TransformPhysicalPointToIndex(les["center_mm"])
            assert seg[idx[2], idx[1], idx[0]] == 1  # seg is where the lesion is
    assert sum(1 for c in cohort if c.meta["n_lesions"] > 1) >= 3


def test_lesions_hotter_than_surroundings(cohort):
    checked = 0
    for c in cohort:
        seg, s, o = arr(c.seg), arr(c.suv), arr(c.organs)
        # surroundings = local tissue; urine-filled organs (bladder, kidneys: SUV up to 60) are excluded
        urine = np.isin(o, [ORGAN_LABELS[k] for k in ("bladder", "kidney_left", "kidney_right")])
        urine = ndimage.binary_dilation(urine, iterations=2)  # and their PSF spill-over
        if not seg.any():
            continue
        comps = cc3d.connected_components(seg, connectivity=26)
        for k in range(1, int(comps.max()) + 1):
            m = comps == k
            others = ndimage.binary_dilation(seg.astype(bool) & ~m, iterations=2)  # other lesions' spill-over
            shell = ndimage.binary_dilation(m, iterations=2) & ~seg.astype(bool) & ~urine & ~others
            if shell.sum() < 5:
                continue
            assert s[m].max() > np.median(s[shell]), (c.case_id, k)
            checked += 1
    assert checked >= 10


def _stage_rule(m: dict) -> str:
    les = m["lesions"]
    if not les:
        return "none"
    if m["diagnosis"] == "lymphoma":
        nodal = all(x["kind"] == "node" for x in les)
        one_side = len({x["above_diaphragm"] for x in les}) == 1
        return "early" if nodal and one_side else "advanced"
    regions = {x["region"] for x in les}
    primary = {"lung_cancer": "lung_", "melanoma": "skin_", "prostate_cancer": "prostate"}[m["diagnosis"]]
    return "early" if len(regions) == 1 and next(iter(regions)).startswith(primary) else "advanced"


def test_stage_follows_lesion_regions(cohort):
    stages = []
    for c in cohort:
        assert c.meta["stage"] == _stage_rule(c.meta), c.meta["lesions"]
        stages.append(c.meta["stage"])
    assert {"early", "advanced", "none"} <= set(stages) | {"early"}
    assert "advanced" in stages
    # lymphoma nodes on both sides of the diaphragm are advanced
    for c in cohort:
        les = c.meta["lesions"]
        if c.meta["diagnosis"] == "lymphoma" and len({x["above_diaphragm"] for x in les}) == 2:
            assert c.meta["stage"] == "advanced"


def test_psma_only_cohort():
    for i in range(3):
        c = generate_case(i, 5, "tiny", tracers=["psma"])
        m = c.meta
        assert m["tracer"] == "psma" and m["sex"] == "M" and m["radionuclide"] == "Ga-68"
        assert m["diagnosis"] in ("prostate_cancer", "negative")
    c = generate_case(0, 5, "tiny", tracers=["fdg"], sites=["harbor_city"])
    assert c.meta["tracer"] == "fdg" and c.meta["site"] == "harbor_city" and c.meta["radionuclide"] == "F-18"
