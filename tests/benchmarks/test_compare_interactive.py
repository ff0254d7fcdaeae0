"""``benchmarks/compare_interactive.py``: two arms of ``experiment interactive`` head to head from their
``steps.csv`` (seed-averaged units, paired B - A, model - isocontour, later-click seconds)."""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["case_id", "site", "tracer", "cohort", "protocol", "arm", "kind", "target", "seen", "clicks", "dice",
           "fp_volume_ml", "fn_volume_ml", "fp_voxels_ml", "seconds"]


def _steps(folder: Path, lesion_dice: dict[str, float], organ_dice: float) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for case, d in lesion_dice.items():
        rows.append({"case_id": case, "protocol": "one_per_lesion", "arm": "model", "kind": "lesions",
                     "target": "lesions", "clicks": 1, "dice": d})
        rows.append({"case_id": case, "protocol": "one_per_lesion", "arm": "iso", "kind": "lesions",
                     "target": "lesions", "clicks": 1, "dice": 0.5})
        for k in range(1, 6):  # cumulative seconds: 0.1 s per click
            rows.append({"case_id": case, "protocol": "corrective", "arm": "model", "kind": "lesion",
                         "target": "lesion_1", "clicks": k, "dice": d, "seconds": 0.1 * k})
            rows.append({"case_id": case, "protocol": "corrective", "arm": "model", "kind": "organ",
                         "target": "spleen", "seen": "False", "clicks": k, "dice": organ_dice, "seconds": 0.1 * k})
    with open(folder / "steps.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return folder


def test_pairs_seed_means_of_two_arms(tmp_path):
    cases = [f"c{i}" for i in range(6)]
    a = [_steps(tmp_path / f"a{s}", {c: 0.4 + 0.1 * s for c in cases}, 0.3) for s in (0, 1)]  # seed mean 0.45
    b = [_steps(tmp_path / f"b{s}", {c: 0.2 for c in cases}, 0.6) for s in (0, 1)]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_interactive.py"), "--a", *map(str, a),
                          "--b", *map(str, b), "--names", "cached", "sam"], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}).stdout
    line = next(x for x in out.splitlines() if x.startswith("| one click per lesion, model |"))
    assert "| 6 | 0.450 [0.450, 0.450] | 0.200 [0.200, 0.200] | -0.250 [-0.250, -0.250] | 0 / 6 / 0 |" in line
    organ = next(x for x in out.splitlines() if x.startswith("| corrective, held-out organ, 5 clicks |"))
    assert "+0.300 [+0.300, +0.300]" in organ
    assert "cached: one click per lesion, model - 41 % isocontour -0.050" in out
    assert "later corrective click median 0.100 s (96 clicks)" in out  # 4 later x 2 targets x 6 cases x 2 seeds
