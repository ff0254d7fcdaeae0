"""Unit tests of the anatomy, physiology tables, lesion shapes and the stage rule (truth grid, no scanner)."""

from __future__ import annotations

import numpy as np
import pytest

from petctfm.synth.anatomy import Anatomy, build_anatomy
from petctfm.synth.body import Patient, body_extent
from petctfm.synth.lesions import Lesion, render_lesions, stage_of
from petctfm.synth.physiology import draw_physiology, render
from petctfm.synth.tissues import T

SP = (6.0, 6.0, 8.0)


def _anatomy(p: Patient, seed: int = 0):
    lo, hi = body_extent(p)
    axes = tuple(np.arange(lo[k], hi[k] + SP[k], SP[k]) for k in range(3))
    rng = np.random.default_rng(seed)
    return build_anatomy(axes, p, rng), rng


@pytest.fixture(scope="module")
def male():
    anat, rng = _anatomy(Patient("M", 60, 178, 82, "down"))
    phys = draw_physiology("fdg", rng)
    hu, suv = render(anat, phys, rng)
    return anat, hu, suv


def test_truth_tissue_values(male):
    anat, hu, suv = male
    lab = anat.labels
    mean = lambda arr, t: float(arr[lab == t].mean())  # noqa: E731
    assert -120 <= mean(hu, T.FAT_SC) <= -80 and -120 <= mean(hu, T.FAT) <= -75
    assert 30 <= mean(hu, T.MUSCLE) <= 60
    assert -900 <= np.median(hu[lab == T.LUNG_L]) <= -780
    assert mean(hu, T.CORTICAL) > 1000 and 200 <= mean(hu, T.MARROW) <= 400
    assert hu[lab == T.AIR].max() == -1000
    assert 0.2 <= mean(suv, T.FAT_SC) <= 0.45 and 0.5 <= mean(suv, T.MUSCLE) <= 0.9
    assert 1.1 <= mean(suv, T.MARROW) <= 2.0 and 0.25 <= np.median(suv[lab == T.LUNG_R]) <= 0.6
    # lung vessels exist: a fraction of lung voxels is much denser than parenchyma
    assert (hu[(lab == T.LUNG_L) | (lab == T.LUNG_R)] > -600).mean() > 0.005
    # all major tissues are present
    for t in (T.LIVER, T.SPLEEN, T.KIDNEY_L, T.KIDNEY_R, T.MYOCARDIUM, T.AORTA, T.BLADDER, T.BRAIN, T.SALIVARY,
              T.PROSTATE, T.STOMACH, T.COLON, T.TABLE):
        assert (lab == t).sum() > 0, t


def _centroid(anat: Anatomy, t: int) -> np.ndarray:
    return anat.point_of(np.argwhere(anat.labels == t)).mean(0)


def test_anatomical_layout(male):
    anat = male[0]
    liver, spleen = _centroid(anat, T.LIVER), _centroid(anat, T.SPLEEN)
    heart, brain, bladder = _centroid(anat, T.MYOCARDIUM), _centroid(anat, T.BRAIN), _centroid(anat, T.BLADDER)
    assert liver[0] < 0 < spleen[0]  # liver on the right (-x in LPS)
    assert heart[0] > 0 and heart[1] < 0  # heart left and anterior
    assert brain[2] > heart[2] > liver[2] > bladder[2]
    assert _centroid(anat, T.LUNG_L)[0] > 0 > _centroid(anat, T.LUNG_R)[0]
    assert _centroid(anat, T.TABLE)[1] > _centroid(anat, T.MARROW)[1]  # table is posterior


def test_body_varies_with_weight_sex_and_arms():
    thin, _ = _anatomy(Patient("M", 50, 175, 58, "down"))
    heavy, _ = _anatomy(Patient("M", 50, 175, 115, "down"))

    def abdomen_area(anat: Anatomy) -> int:
        iz = int(np.argmin(np.abs(anat.axes[2] - (-0.40 * 1750))))
        sl = anat.labels[:, :, iz]
        return int(((sl != T.AIR) & (sl != T.TABLE)).sum())

    assert abdomen_area(heavy) > 1.4 * abdomen_area(thin)
    assert (heavy.labels == T.FAT_SC).sum() > 1.5 * (thin.labels == T.FAT_SC).sum()
    up, _ = _anatomy(Patient("F", 40, 165, 65, "up"))
    above_head = up.labels[:, :, up.axes[2] > 50]
    assert (above_head == T.MUSCLE).sum() > 0  # arms above the vertex
    assert (up.labels == T.PROSTATE).sum() == 0 and (thin.labels == T.PROSTATE).sum() > 0


def _lesion(region="liver", kind="organ", above=False, necrotic=False, lobes=None, d=30.0):
    lobes = np.zeros((0, 4)) if lobes is None else lobes
    return Lesion(region, kind, np.zeros(3), d, 10.0, necrotic, False, "soft", above, lobes)


def test_stage_rule():
    node = lambda r, above: _lesion(r, "node", above)  # noqa: E731
    assert stage_of("negative", []) == "none"
    assert stage_of("lymphoma", [node("neck_left", True), node("axilla_left", True)]) == "early"
    assert stage_of("lymphoma", [node("neck_left", True), node("iliac_left", False)]) == "advanced"
    assert stage_of("lymphoma", [node("neck_left", True), _lesion("spleen", above=False)]) == "advanced"
    assert stage_of("lung_cancer", [_lesion("lung_left"), _lesion("lung_left")]) == "early"
    assert stage_of("lung_cancer", [_lesion("lung_left"), node("mediastinum", True)]) == "advanced"
    assert stage_of("prostate_cancer", [_lesion("prostate")]) == "early"
    assert stage_of("prostate_cancer", [_lesion("prostate"), _lesion("bone")]) == "advanced"
    assert stage_of("melanoma", [_lesion("skin_trunk")]) == "early"
    assert stage_of("melanoma", [_lesion("skin_trunk"), _lesion("liver")]) == "advanced"


def _grid(n=41, sp=1.0):
    ax = (np.arange(n) - n // 2) * sp
    return Anatomy(labels=np.full((n, n, n), T.LIVER, np.uint8), vessel=np.zeros((n, n, n), np.float32),
                   axes=(ax, ax, ax), z_diaphragm=100.0, stations={})


def test_lesions_are_irregular_and_heterogeneous():
    anat = _grid()
    rng = np.random.default_rng(1)
    lobes = np.array([[1, 0, 0, 0.35], [0, 0.6, 0.8, 0.3], [0, 0, -1, 0.25]], dtype=float)
    hu = np.full(anat.labels.shape, 55.0, np.float32)
    suv = np.full(anat.labels.shape, 2.0, np.float32)
    les = _lesion(lobes=lobes, necrotic=True)
    occ = render_lesions(anat, [les], hu, suv, rng)
    inside = occ > 0.5
    # not a sphere: the radius differs by direction
    ax = anat.axes[0]
    ext = lambda vec: max(t for t in range(0, 20) if inside[tuple(20 + np.round(np.array(vec) * t).astype(int))])  # noqa: E731
    assert ext((1, 0, 0)) >= ext((-1, 0, 0)) + 3
    assert abs(les.volume_ml - occ.sum() / 1000) < 1e-6 and ax[1] - ax[0] == 1.0
    # necrotic core: centre colder than the rim, rim reaches SUVmax, CT hypodense-ish / soft tissue
    assert suv[20, 20, 20] < 0.3 * les.suv_max
    assert suv[inside].max() == pytest.approx(les.suv_max, rel=1e-3)
    assert hu[20, 20, 20] < 40
