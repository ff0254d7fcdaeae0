"""The opt-in metabolic structure of the phantoms (synth.metabolic, ``petctfm synth --metabolic-structure``):
default cases stay bit-identical, the planted correlation is what the draws give, the cohort files."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.synth import metabolic
from petctfm.synth.generator import generate_case
from petctfm.synth.writers import ORGAN_COVARIANCE_JSON, synthesize


def _case_hash(case) -> str:
    h = hashlib.sha256()
    for name in ("ct", "pet", "suv", "ctres", "seg", "organs"):
        img = getattr(case, name)
        a = sitk.GetArrayFromImage(img)
        if a.dtype.kind == "f":  # 2 decimals: a platform's last-bit float differences must not fail the test
            a = np.round(a.astype(np.float64), 2)
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((img.GetSpacing(), img.GetOrigin(), img.GetDirection())).encode())
    h.update(json.dumps(case.meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


# Hashes of every image (floats rounded to 2 decimals) and the metadata of two default cases. The branch's default
# outputs were first checked byte-identical to main before the metabolic structure existed (commit e901e9a); these
# rounded hashes were taken then. A change here means that existing seeds no longer reproduce their phantoms.
GOLDEN = {
    0: "864515aaf4eca27422bdc13a776eba413c975fa5c633b4bc4beab88e7e08dd19",  # FDG lymphoma
    4: "86fec17584c1cafae276290fbd405a6b705d51558b46298a57b917ab47198c9a",  # PSMA prostate cancer
}


@pytest.mark.parametrize("index", sorted(GOLDEN))
def test_default_case_is_bit_identical_to_before(index):
    assert _case_hash(generate_case(index, 0, size="tiny")) == GOLDEN[index]
    assert _case_hash(generate_case(index, 0, size="tiny", metabolic_structure=False)) == GOLDEN[index]
    assert _case_hash(generate_case(index, 0, size="tiny", organ_metastases=False)) == GOLDEN[index]


def test_structure_changes_organ_uptake_only():
    plain = generate_case(0, 0, size="tiny")
    meta = generate_case(0, 0, size="tiny", metabolic_structure=True)
    for name in ("ct", "seg", "organs"):  # same patient, anatomy, lesions and CT noise
        assert np.array_equal(sitk.GetArrayViewFromImage(getattr(plain, name)),
                              sitk.GetArrayViewFromImage(getattr(meta, name))), name
    assert not np.array_equal(sitk.GetArrayViewFromImage(plain.suv), sitk.GetArrayViewFromImage(meta.suv))
    assert meta.meta["metabolic_structure"] == metabolic.VERSION
    assert meta.meta["metabolic_group"] == "lymphoma" == metabolic.group_of(plain.meta["diagnosis"])
    assert len(meta.meta["metabolic_log_uptake"]) == len(metabolic.ORGANS)
    assert "metabolic_structure" not in plain.meta
    # deterministic
    again = generate_case(0, 0, size="tiny", metabolic_structure=True)
    assert _case_hash(again) == _case_hash(meta)


@pytest.mark.parametrize("group", metabolic.GROUPS)
def test_draws_have_the_planted_correlation_and_shift(group):
    rng = np.random.default_rng(3)
    n = 6000
    draws = [metabolic.draw(rng, group, 60.0) for _ in range(n)]
    z = np.array([[d[o] for o in metabolic.ORGANS] for d in draws])
    r = np.corrcoef(z, rowvar=False)
    planted = metabolic.correlation(group)
    assert np.abs(r - planted).max() < 0.05
    assert np.abs(z.mean(0) - metabolic.mean_shift(group)).max() < 0.03
    assert np.allclose(z.std(0), [metabolic.LOG_SD[o] for o in metabolic.ORGANS], rtol=0.06)
    assert np.all(np.linalg.eigvalsh(planted) > 0)  # a valid correlation matrix
    edges = {(metabolic.ORGANS[i], metabolic.ORGANS[j]) for i, j in zip(*np.triu_indices(len(planted), 1))
             if abs(planted[i, j]) >= 0.3}
    assert ("liver", "aorta") in edges and ("spleen", "bone") in edges and ("lung_left", "lung_right") in edges
    # the age covariate: brain falls with age
    old = np.array([metabolic.draw(rng, group, 80.0)["brain"] for _ in range(2000)]).mean()
    assert old == pytest.approx(metabolic.AGE_SLOPE["brain"] * 20, abs=0.02)


def test_group_difference_is_planted():
    ref, lym = metabolic.correlation("reference"), metabolic.correlation("lymphoma")
    i, j = metabolic.ORGANS.index("spleen"), metabolic.ORGANS.index("bone")
    assert lym[i, j] - ref[i, j] > 0.4
    assert metabolic.mean_shift("lymphoma")[i] > 0.1 and not metabolic.mean_shift("reference").any()
    diffs = metabolic.planted()["groups"]["differences"]
    assert [(d["organ_a"], d["organ_b"]) for d in diffs] == [("spleen", "bone")]


def test_synth_writes_organ_covariance_only_with_the_flag(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["synth", "--out", str(out), "--cases", "2", "--seed", "0", "--size", "tiny", "--formats", "autopet",
                 "--metabolic-structure", "--no-progress"]) == 0
    assert "organ_covariance.json" in capsys.readouterr().out
    cov = json.loads((out / ORGAN_COVARIANCE_JSON).read_text())
    assert cov["organs"] == list(metabolic.ORGANS)
    r = np.array(cov["correlation"])
    assert r.shape == (12, 12) and np.allclose(r, r.T) and np.allclose(np.diag(r), 1)
    assert np.allclose(r, metabolic.correlation("reference"), atol=1e-4)
    assert set(cov["groups"]) >= {"column", "reference", "lymphoma", "differences"}
    assert cov["groups"]["lymphoma"]["cases"] + cov["groups"]["reference"]["cases"] == 2
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["metabolic_structure"] == "1" and r["metabolic_group"] in metabolic.GROUPS for r in rows)
    assert len(json.loads(rows[0]["metabolic_log_uptake"])) == 12
    # the same folder without the flag: the default bytes, and the stale planted file is gone
    synthesize(out, n_cases=2, seed=0, size="tiny", formats=["autopet"], progress=False)
    assert not (out / ORGAN_COVARIANCE_JSON).exists()
    assert "metabolic_structure" not in (out / "metadata.csv").read_text().splitlines()[0]
