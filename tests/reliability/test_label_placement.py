"""Quiet label problems (issue 28, item 5): a lesion label that sits where no lesion is was kept with no flag
(moved 2-3 voxels) or only a weak one. harmonize QA now flags a label mostly outside the body and lesions whose
mean SUV is below the body around them (``core.plausibility.check_label_placement``; the rule and its
false-flag rate on ``petctfm synth`` phantoms are in docs/reliability.md)."""

from __future__ import annotations

import csv

import numpy as np
import SimpleITK as sitk

from harmonize_phantoms import synth_case
from petctfm.core import plausibility as plaus
from petctfm.synth.layouts import write_autopet_case
from test_values_and_outputs import run_cli


def _move_label(folder, dy_mm: float) -> None:
    """The label array moved ``dy_mm`` along y on its own grid (its header unchanged): off the lesion."""
    seg = sitk.ReadImage(str(folder / "SEG.nii.gz"))
    a = sitk.GetArrayFromImage(seg)
    n = int(round(dy_mm / seg.GetSpacing()[1]))
    b = np.zeros_like(a)
    b[:, n:, :] = a[:, :-n, :]
    out = sitk.GetImageFromArray(b)
    out.CopyInformation(seg)
    sitk.WriteImage(out, str(folder / "SEG.nii.gz"))


def test_harmonize_flags_a_label_moved_off_its_lesion_and_not_a_sound_one(tmp_path, capsys):
    src = tmp_path / "in"
    write_autopet_case(synth_case("GOOD"), src)
    write_autopet_case(synth_case("MOVED"), src)
    _move_label(src / "MOVED", 52.0)  # the 30 mm lesion label now straddles the body surface, mostly in air
    out = tmp_path / "ds"
    rc, _, err = run_cli(["harmonize", "--in", src, "--out", out, "--spacing", "4", "4", "4", "--no-thumbnails"],
                         capsys)
    assert rc == 0, err  # flagged, not quarantined: the case is kept for a person to look at
    manifest = {r["source_path"]: r for r in csv.DictReader(open(out / "manifest.csv", encoding="utf-8"))}
    ids = {k: r["case_id"] for k, r in manifest.items()}
    rows = {r["case_id"]: r for r in csv.DictReader(open(out / "qa" / "qa.csv", encoding="utf-8"))}
    assert "lesion label" not in rows[ids["GOOD"]]["warnings"]
    moved = rows[ids["MOVED"]]
    assert moved["status"] == "warn"
    assert "inside the body outline" in moved["warnings"] and "with mean SUV below" in moved["warnings"]
    assert "lesion label" in manifest["MOVED"]["qa_flags"]


def test_label_on_cold_tissue_inside_the_body_is_flagged_by_its_uptake():
    """A label inside the body (so not 'outside') but on a lung-like cold region: the uptake rule alone."""
    shape = (40, 40, 40)
    ct = np.full(shape, -1000.0, np.float32)
    pet = np.zeros(shape, np.float32)
    ct[5:35, 5:35, 5:35], pet[5:35, 5:35, 5:35] = 40.0, 1.0  # the body
    ct[12:22, 12:22, 12:22], pet[12:22, 12:22, 12:22] = -800.0, 0.3  # a lung inside it
    ct[26:30, 26:30, 26:30], pet[26:30, 26:30, 26:30] = 40.0, 6.0  # a hot lesion
    label = np.zeros(shape, np.uint8)
    label[26:30, 26:30, 26:30] = 1
    assert plaus.check_label_placement(pet, ct, label, (4.0, 4.0, 4.0)) == []
    moved = np.zeros(shape, np.uint8)
    moved[12:16, 12:16, 12:16] = 1  # in the lung: inside the body outline, far colder than the tissue around it
    flags = plaus.check_label_placement(pet, ct, moved, (4.0, 4.0, 4.0))
    assert len(flags) == 1 and "1 of 1 lesion(s) with mean SUV below" in flags[0], flags
    outside = np.zeros(shape, np.uint8)
    outside[0:4, 0:4, 0:4] = 1
    assert any("0% of its voxels inside the body outline" in f
               for f in plaus.check_label_placement(pet, ct, outside, (4.0, 4.0, 4.0)))
