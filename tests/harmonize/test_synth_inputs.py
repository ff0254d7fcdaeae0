"""The real synthetic generator's layouts (autoPET NIfTI and multi-site DICOM) harmonize to the same arrays."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.data import format as fmt
from petctfm.synth.layouts import write_metadata_csv
from petctfm.synth.generator import generate_case
from petctfm.synth.writers import write_case


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cases = [generate_case(i, seed=1, size="tiny") for i in (0, 3)]  # 0: FDG with lesions, 3: PSMA, other site
    rows = [write_case(c, root, formats=["autopet", "dicom"]) for c in cases]
    write_metadata_csv(rows, root / "metadata.csv")
    return root, cases


def _by_source(out: Path) -> dict[str, dict]:
    res = {}
    for r in csv.DictReader(open(out / "manifest.csv")):
        res[Path(r["source_path"]).name] = {**fmt.load_case(out, r["case_id"], mmap=False), "row": r}
    return res


def test_dicom_and_autopet_of_synthetic_cases_agree(synth_dir, tmp_path):
    root, cases = synth_dir
    for layout in ("autopet", "dicom"):
        assert main(["harmonize", "--in", str(root / layout), "--out", str(tmp_path / layout),
                     "--spacing", "4", "4", "4", "--no-thumbnails"]) == 0
    a, d = _by_source(tmp_path / "autopet"), _by_source(tmp_path / "dicom")
    assert set(a) == set(d) == {c.case_id for c in cases}
    for c in cases:
        x, y = a[c.case_id], d[c.case_id]
        assert x["image"].shape == y["image"].shape
        np.testing.assert_allclose(y["image"][0], x["image"][0], atol=0.01 * max(1.0, float(x["image"][0].max())))
        np.testing.assert_allclose(y["image"][1], x["image"][1], atol=1.0)
        assert (x["label"] != y["label"]).mean() < 1e-3
        for key in ("site", "tracer", "sex"):
            assert x["row"][key] == y["row"][key] == str(c.meta[key])
        assert x["row"]["lesion_count"] == y["row"]["lesion_count"]
    assert int(a["PETCT_0000"]["row"]["lesion_count"]) >= 1
    liver = float(a["PETCT_0000"]["row"]["liver_suv_mean"])  # organ labels only in the autoPET layout
    assert 1.0 <= liver <= 4.0
    # nothing of the fake identifiers of the generator leaks into the DICOM-derived dataset
    needles = {str(c.meta[k]).lower().encode() for c in cases for k in ("patient_name", "patient_id", "birth_date")}
    needles |= {str(c.meta.get("institution_name", "")).lower().encode() for c in cases} - {b""}
    for path in (tmp_path / "dicom").rglob("*"):
        if path.is_file():
            data = path.read_bytes().lower()
            assert not any(n in data for n in needles), path
    info = json.loads((tmp_path / "dicom" / "dataset.json").read_text())
    assert info["normalization"]["PET"]["std"] > 0 and info["num_cases"] == 2
