"""``benchmarks/bench_fratmae.py --smoke``: the reference and ours are both measured in one run (samples/s,
FLOPs, MFU, the ratio) and the loader rate is reported; the JSON holds it all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_fratmae_smoke(tmp_path):
    out = tmp_path / "fratmae.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fratmae.py"), "--smoke", "--steps", "1",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    r = json.loads(out.read_text())
    runs = {x["name"]: x for x in r["runs"]}
    assert set(runs) == {"reference", "ours"} and r["smoke"] and r["tokens_per_modality"] == 24
    for x in runs.values():
        assert x["samples_per_s"] > 0 and x["flops_per_sample"] > 1e6 and x["mfu"] > 0
    assert runs["ours"]["speedup_vs_reference"] > 0 and runs["reference"]["speedup_vs_reference"] == 1.0
    assert r["loader"]["stacks_per_s"] > 0 and r["loader"]["stacks"] >= 8
    assert "x the reference" in p.stdout and "stacks/s" in p.stdout
