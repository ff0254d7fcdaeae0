"""Tiny FratMAE variants on the toy dataset (CPU, ~15 s): loss of the first vs last 8 of 40 steps per Table 3 arm.
Synthetic toy data; shows that every arm trains, not which is better. docs/fratmae.md."""
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import numpy as np
from toy_data import write_toy_dataset
from petctfm.cli.main import main
from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_write_json
d = pathlib.Path(tempfile.mkdtemp())
toy = write_toy_dataset(d / "toy", n_cases=5, shape=(40, 40, 56))
M = [{"diagnosis": "melanoma", "age": 61, "sex": "M"}, {"tracer": "PSMA", "diagnosis": "prostate_cancer", "age": 70, "sex": "M"},
     {"diagnosis": "lymphoma", "sex": "F"}, {"sex": "F"}]
for cid, m in zip(fmt.load_splits(toy)["train"], M):
    p = fmt.case_dir(toy, cid) / "meta.json"
    meta = json.loads(p.read_text())
    meta.update(m)
    atomic_write_json(p, meta)
for v in ["mae", "mae+ca", "fratmae-noca", "fratmae"]:
    t = time.time()
    main(["pretrain", "--method", "fratmae", "--variant", v, "--data", str(toy), "--out", str(d / v), "--preset", "tiny",
          "--no-progress", "--log-every", "1", "--max-steps", "40", "--figure-every", "0"])
    rows = [json.loads(line) for line in (d / v / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([r["loss"] for r in rows[:8]])
    last = np.mean([r["loss"] for r in rows[-8:]])
    extra = {k: round(rows[-1][k], 3) for k in ("info_nce", "retrieval_acc") if k in rows[-1]}
    print(f"{v}: loss first8 {first:.3f} last8 {last:.3f}  {time.time()-t:.1f}s {extra}")
