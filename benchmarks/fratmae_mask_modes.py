"""FratMAE masking at equal steps on the toy dataset (CPU, ~1 min): MAE-style dropping (``mask.mode=drop``)
vs the paper's Eq. 1 zeroing (``mask.mode=zero``), FratMAE without ContextAlign (reconstruction only), tiny
preset, 40 steps, seeds 0 and 1: masked-patch MSE of the first vs the last 8 steps and seconds per step.
Synthetic toy data; a training-signal check, not a downstream comparison. docs/fratmae.md."""
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import numpy as np  # noqa: E402
from toy_data import write_toy_dataset  # noqa: E402
from petctfm.cli.main import main  # noqa: E402

STEPS = 40
d = pathlib.Path(tempfile.mkdtemp())
toy = write_toy_dataset(d / "toy", n_cases=5, shape=(40, 40, 56))
for mode in ("drop", "zero"):
    for seed in (0, 1):
        out = d / f"{mode}_{seed}"
        t = time.time()
        main(["pretrain", "--method", "fratmae", "--variant", "fratmae-noca", "--mask-mode", mode, "--data", str(toy),
              "--out", str(out), "--preset", "tiny", "--no-progress", "--log-every", "1", "--max-steps", str(STEPS),
              "--figure-every", "0", "--seed", str(seed)])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        first, last = np.mean([r["recon"] for r in rows[:8]]), np.mean([r["recon"] for r in rows[-8:]])
        print(f"{mode} seed {seed}: recon first8 {first:.3f} last8 {last:.3f}  {(time.time() - t) / STEPS:.3f} s/step")
