"""manifest.csv carries per-lesion volumes measured on the harmonized label, for every case."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from petctfm.harmonize.api import finalize_dataset, harmonize_folder
from petctfm.harmonize.pipeline import lesion_volumes
from petctfm.synth.writers import synthesize


def _manifest(ds):
    with open(ds / "manifest.csv", newline="") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def test_lesion_volumes_counts_components_largest_first():
    label = np.zeros((10, 10, 10), np.uint8)
    label[0:2, 0:2, 0:2] = 1  # 8 voxels
    label[5:8, 5:8, 5:8] = 1  # 27 voxels
    label[9, 0, 9] = 1  # 1 voxel
    assert lesion_volumes(label, (2.0, 2.0, 2.5)) == [0.27, 0.08, 0.01]  # voxel = 10 mm^3
    assert lesion_volumes(np.zeros((3, 3, 3), np.uint8), (1, 1, 1)) == []


@pytest.fixture(scope="module")
def harmonized(tmp_path_factory):
    root = tmp_path_factory.mktemp("vols")
    rows = synthesize(root / "synth", 2, seed=0, size="tiny", tracers=["fdg"], formats=["autopet"], progress=False)
    harmonize_folder(root / "synth" / "autopet", root / "ds", spacing=(4, 4, 4), thumbnails=False)
    return root / "ds", {r["case_id"]: r for r in rows}


def test_manifest_lists_each_lesion_volume(harmonized):
    ds, synth_rows = harmonized
    rows = _manifest(ds)
    assert len(rows) == 2
    for cid, r in rows.items():
        vols = json.loads(r["lesion_volumes_ml"])
        assert len(vols) == int(r["lesion_count"]) and vols == sorted(vols, reverse=True)
        assert sum(vols) == pytest.approx(float(r["lesion_volume_ml"]), abs=1e-3)
        meta = json.loads((ds / "cases" / cid / "meta.json").read_text())
        assert meta["stats"]["lesion_volumes_ml"] == vols
        src = synth_rows[r["source_path"].split("/")[0]]  # autoPET folder = the synth case id
        total = float(src["lesion_volume_ml"])  # the generator's SEG volume, measured on its own grid
        assert float(r["lesion_volume_ml"]) == pytest.approx(total, rel=0.25, abs=2.0)
    assert any(json.loads(r["lesion_volumes_ml"]) for r in rows.values())  # some case has lesions


def test_refinalize_measures_cases_written_before_the_field(harmonized):
    ds, _ = harmonized
    before = _manifest(ds)
    for cid in before:  # an older dataset: meta.json without lesion_volumes_ml
        p = ds / "cases" / cid / "meta.json"
        meta = json.loads(p.read_text())
        del meta["stats"]["lesion_volumes_ml"]
        p.write_text(json.dumps(meta))
    finalize_dataset(ds)
    after = _manifest(ds)
    assert {c: r["lesion_volumes_ml"] for c, r in after.items()} == {c: r["lesion_volumes_ml"]
                                                                    for c, r in before.items()}
