"""Opt-in lesions inside the brain, kidneys, heart and bladder (``petctfm synth --organ-metastases``): the plan's
rates and ranges, placement inside each organ, the rest of the case unchanged, the metadata column and the CLI.
That the default bytes are unchanged is checked with the golden hashes of tests/synth/test_metabolic.py."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.synth.burden import (ORGAN_METASTASES, ORGAN_METASTASIS_REGIONS, draw_organ_metastases, draw_plan)
from petctfm.synth.lesions import ORGAN_LESION_TISSUES, allowed_tissues
from petctfm.synth.tissues import ORGAN_OF_TISSUE

from synth_site_tables import check_same_case_with_flag, check_site_table, place_one


def test_plan_rates_ranges_and_early_cases():
    check_site_table(ORGAN_METASTASES, draw_organ_metastases, ORGAN_METASTASIS_REGIONS, seed=6)
    # an early or negative plan gets none, and the draw is pure in its arguments
    early = draw_plan("melanoma", False, np.random.default_rng(1))
    assert draw_organ_metastases(early, np.random.default_rng(2)).lesions == ()
    assert draw_organ_metastases(draw_plan("negative", True, np.random.default_rng(1)),
                                 np.random.default_rng(2)).lesions == ()
    adv = draw_plan("lung_cancer", True, np.random.default_rng(3))
    assert draw_organ_metastases(adv, np.random.default_rng(9)) == draw_organ_metastases(adv, np.random.default_rng(9))


@pytest.mark.parametrize("region", ORGAN_METASTASIS_REGIONS)
def test_placed_inside_its_organ(body, region):
    anat, les, occ = place_one(body, region, "melanoma", 3.0)
    tissues, inclusive = allowed_tissues(les)
    assert inclusive and tissues == ORGAN_LESION_TISSUES[region]
    lab = anat.labels[occ > 0]
    assert lab.size > 0 and np.isin(lab, tissues).all(), np.unique(lab)
    assert les.volume_ml > 0


def _arr(img) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


def test_case_with_them_keeps_everything_else():
    # case 10 of seed 3 at tiny: advanced melanoma that draws a brain metastasis (found by scanning the cohort)
    off, on = check_same_case_with_flag(10, 3, "organ_metastases", "organ_metastases", ORGAN_METASTASIS_REGIONS)
    # the new lesion is labelled inside its organ on the PET grid
    organs, seg_on, seg_off = _arr(on.organs), _arr(on.seg) > 0, _arr(off.seg) > 0
    from petctfm.synth.tissues import T

    brain = ORGAN_OF_TISSUE[T.BRAIN]
    assert (seg_on & (organs == brain)).sum() > 0 and (seg_off & (organs == brain)).sum() == 0


def test_cli_flag_and_metadata_column(tmp_path, capsys):
    from petctfm.cli.main import main

    assert main(["synth", "--out", str(tmp_path / "om"), "--cases", "2", "--seed", "3", "--size", "tiny",
                 "--formats", "autopet", "--organ-metastases", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "om" / "metadata.csv")))
    assert [r["organ_metastases"] for r in rows] == ["0", "0"]
    assert main(["synth", "--out", str(tmp_path / "fu"), "--cases", "2", "--seed", "3", "--size", "tiny",
                 "--followup", "--organ-metastases", "--no-progress"]) == 2
    assert "--organ-metastases does not apply to --followup" in capsys.readouterr().err
