"""One rank of the two-process test: ``python -m torch.distributed.run --standalone --nproc_per_node 2
ddp_worker.py RUN_DIR [DEVICE]``. Trains the tiny task a few steps and writes what this rank saw to RUN_DIR/rank<r>.json."""

import hashlib
import sys
from pathlib import Path


from petctfm.io.atomic import atomic_write_json
from petctfm.core.device import unwrap_model
from petctfm.train.config import TrainConfig
from petctfm.train.trainer import train
from tiny_train_task import TinyTask

run_dir = Path(sys.argv[1])
task = TinyTask(batch_size=2)
cfg = TrainConfig(max_steps=3, grad_accum=2, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=2,
                  figure_every=0, progress=False, seed=1,
                  device=sys.argv[2] if len(sys.argv) > 2 else "cpu")
summary = train(task, cfg, run_dir)
weights = unwrap_model(task.last_model).state_dict()
digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in weights.values())).hexdigest()
rank = int(__import__("os").environ["RANK"])
atomic_write_json(run_dir / f"rank{rank}.json", {"seen": task.seen, "weights_sha256": digest, "summary": summary})
