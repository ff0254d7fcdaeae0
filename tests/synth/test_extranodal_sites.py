"""Opt-in adrenal, pleural and peritoneal lesions (``petctfm synth --extranodal-sites``): the plan's rates, ranges
and sides, placement where each belongs, the rest of the case unchanged, the metadata column and the CLI. That
the default bytes are unchanged is checked with the golden hashes of tests/synth/test_metabolic.py."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.synth.burden import (EXTRANODAL_REGIONS, EXTRANODAL_SITES, draw_extranodal_sites, draw_plan)
from petctfm.synth.generator import generate_case
from petctfm.synth.lesions import (EXTRANODAL_TISSUES, allowed_tissues, extranodal_candidates, stage_of)
from petctfm.synth.tissues import T

from synth_site_tables import check_same_case_with_flag, check_site_table, place_one


def test_plan_rates_ranges_and_sides():
    drawn = check_site_table(EXTRANODAL_SITES, draw_extranodal_sites, EXTRANODAL_REGIONS, seed=7)
    for per_site in drawn.values():  # a case's pleural deposits lie on one pleura
        assert all(len({les.region for les in c}) <= 1 for c in per_site.get("pleura", []))
    # adrenal lesions of lung cancer fall on both sides
    lung = [draw_extranodal_sites(draw_plan("lung_cancer", True, np.random.default_rng([5, i])),
                                  np.random.default_rng([7, i])) for i in range(400)]
    sides = {les.region for e in lung for les in e.lesions if les.region.startswith("adrenal")}
    assert sides == {"adrenal_left", "adrenal_right"}
    assert draw_extranodal_sites(draw_plan("melanoma", False, np.random.default_rng(1)),
                                 np.random.default_rng(2)).lesions == ()


@pytest.mark.parametrize("region", EXTRANODAL_REGIONS)
def test_placed_where_it_belongs(body, region):
    anat, les, occ = place_one(body, region, "lung_cancer", 2.0)
    tissues, inclusive = allowed_tissues(les)
    assert (tissues, inclusive) == EXTRANODAL_TISSUES[region]
    lab = anat.labels[occ > 0]
    assert lab.size > 0 and les.volume_ml > 0
    assert np.isin(lab, tissues).all() == inclusive and (inclusive or not np.isin(lab, tissues).any())
    z = np.asarray(anat.axes[2], float)
    c = les.center
    if region.startswith("adrenal"):
        kidney = np.argwhere(anat.labels == (T.KIDNEY_L if region.endswith("left") else T.KIDNEY_R))
        kz = z[kidney[:, 2]]
        assert c[2] > np.median(kz) and c[2] < kz.max() + 40.0  # at the upper pole
        pts = np.stack([np.asarray(anat.axes[k], float)[kidney[:, k]] for k in range(3)], 1)
        assert np.min(np.linalg.norm(pts - c, axis=1)) < 30.0
        assert not np.isin(lab, (T.KIDNEY_L, T.KIDNEY_R, T.LIVER, T.SPLEEN, T.AORTA)).any()
    elif region.startswith("pleura"):
        lung = T.LUNG_L if region.endswith("left") else T.LUNG_R
        assert anat.labels[tuple(anat.index_of(c))] == lung and (lab == lung).any()  # pleural-based, in its lung
    else:
        assert c[2] < anat.z_diaphragm and anat.labels[tuple(anat.index_of(c))] in (T.FAT, T.SOFT, T.BOWEL, T.COLON)
    assert stage_of("lymphoma", [les]) == "advanced"  # extranodal


def test_candidates_of_each_site(body):
    anat = body[0]
    z = np.asarray(anat.axes[2], float)
    for region in EXTRANODAL_REGIONS:
        idx = extranodal_candidates(anat, region)
        assert len(idx) > 0, region
        lab = anat.labels[idx[:, 0], idx[:, 1], idx[:, 2]]
        if region.startswith("pleura"):
            assert (lab == (T.LUNG_L if region.endswith("left") else T.LUNG_R)).all()
        elif region == "peritoneum":
            assert (lab == T.FAT).all() and (z[idx[:, 2]] < anat.z_diaphragm).all()
        else:
            assert np.isin(lab, (T.FAT, T.SOFT)).all()
            x = np.asarray(anat.axes[0], float)[idx[:, 0]]
            assert (np.sign(x) == (1 if region.endswith("left") else -1)).mean() > 0.9  # its side (left = +x)


#: case 21 of seed 3 at tiny: advanced melanoma that draws two right adrenal lesions (found by scanning the cohort)
CASE = (21, 3)


def _arr(img) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def test_case_with_them_keeps_everything_else():
    off, on = check_same_case_with_flag(*CASE, "extranodal_sites", "extranodal_lesions", EXTRANODAL_REGIONS)
    assert (_arr(on.seg) > 0).sum() > (_arr(off.seg) > 0).sum()
    # with both flags, each stream adds its own lesions
    both = generate_case(CASE[0], CASE[1], size="tiny", organ_metastases=True, extranodal_sites=True)
    assert both.meta["extranodal_lesions"] >= 1 and "organ_metastases" in both.meta


def test_cli_flag_and_metadata_column(tmp_path, capsys):
    from petctfm.cli.main import main

    assert main(["synth", "--out", str(tmp_path / "xs"), "--cases", "2", "--seed", "3", "--size", "tiny",
                 "--formats", "autopet", "--extranodal-sites", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "xs" / "metadata.csv")))
    assert all(r["extranodal_lesions"].isdigit() for r in rows) and len(rows) == 2
    assert main(["synth", "--out", str(tmp_path / "fu"), "--cases", "2", "--seed", "3", "--size", "tiny",
                 "--followup", "--extranodal-sites", "--no-progress"]) == 2
    assert "--extranodal-sites does not apply to --followup" in capsys.readouterr().err
