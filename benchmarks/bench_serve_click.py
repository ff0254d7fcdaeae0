"""Click latency of ``petctfm serve`` on the CPU: HTTP round trip of a click (network + table + autosave + audit)
and of the page's mask fetch, through the real FastAPI app (in-process TestClient, no browser).

Usage::

    petctfm synth --out /tmp/syn --cases 1 --seed 0 --size small --formats autopet
    python benchmarks/bench_serve_click.py --data /tmp/syn/autopet --preset tiny --clicks 5 --out click.json

The prompt model is a ``prompt-train`` checkpoint with random weights of the chosen preset (speed does not
depend on the weights; random weights often touch the crop border, so auto-zoom re-runs the network: the
number of network evaluations per click is reported). Clicks land on the hottest voxels of the PET (a new
object each). Timings: ``open`` (read + session set-up), per click the request's wall time and the server's
split (``last_change_s`` = PromptSession step, ``last_autosave_s`` = NIfTI write), the mask fetch (the
labels of the box the click changed, as the page fetches them), median over ``--clicks``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder of cases (autoPET layout etc.)")
    ap.add_argument("--preset", default="tiny", help="promptable preset (tiny: unet-resenc-tiny 32^3)")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-zoom", type=float, default=4.0, help="PromptSession max_zoom (1: exactly one network "
                    "evaluation per click, what a trained model that stays inside its crop costs)")
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from fastapi.testclient import TestClient

    from petctfm.core.config import deep_merge
    from petctfm.methods.promptable.model import build_model
    from petctfm.methods.promptable.presets import get_preset
    from petctfm.methods.promptable.task import DEFAULT_CONFIG
    from petctfm.serve.app import create_app, make_server
    from petctfm.serve.security import csrf_token
    from petctfm.train.checkpoint import save_weights

    tmp = Path(tempfile.mkdtemp())
    cfg = deep_merge(DEFAULT_CONFIG, get_preset(args.preset)["task"])
    cfg["preprocessing"] = {"channels": ["PET", "CT"], "normalization": {
        "PET": {"mean": 0.6, "std": 1.2, "clip": [0.0, 30.0]},
        "CT": {"mean": -400.0, "std": 500.0, "clip": [-1000.0, 1500.0]}}, "harmonize": {"spacing": [4.0, 4.0, 4.0]}}
    torch.manual_seed(0)
    save_weights(build_model(cfg), tmp / "run" / "model.safetensors", cfg, step=0)
    server = make_server(str(tmp / "run"), data=args.data, out=str(tmp / "out"))
    from petctfm.methods.promptable.session import PromptSession

    server.session_factory = lambda pet, ct: PromptSession.from_run(tmp / "run", pet, ct=ct, max_zoom=args.max_zoom)
    base = "http://127.0.0.1:8765"  # the page's origin: an allowed Host, JSON, the CSRF header (serve/security.py)
    c = TestClient(create_app(server), base_url=base)
    c.headers.update({"X-Petctfm-Token": server.token, "Origin": base, "Content-Type": "application/json",
                      "X-CSRF-Token": csrf_token(server.token)})
    case = server.cases.ids()[0]
    t0 = time.perf_counter()
    st = c.post(f"/api/cases/{case}/open").json()
    open_s = time.perf_counter() - t0
    state = server.open_cases[case]
    suv = state.session.suv
    order = np.argsort(suv.ravel())[::-1]
    rows, version = [], st["version"]
    for flat in order[:: max(1, len(order) // 2000)][: args.clicks]:
        v = np.array(np.unravel_index(flat, suv.shape))
        lps = (state.session.grid.index_to_lps @ np.append(v.astype(float), 1.0))[:3]
        before = state.session.forwards
        t0 = time.perf_counter()
        r = c.post(f"/api/cases/{case}/click", json={"version": version, "ras": (lps * [-1, -1, 1]).tolist(),
                                                     "object": len(rows) + 1})
        wall = time.perf_counter() - t0
        r.raise_for_status()
        body = r.json()
        version = body["version"]
        t0 = time.perf_counter()
        box = body["changed"]
        c.get(f"/api/cases/{case}/mask", params=None if box is None else {
            "box": ",".join(str(int(x)) for x in box["lo"] + box["hi"])}).raise_for_status()
        rows.append({"request_s": wall, "mask_fetch_s": time.perf_counter() - t0,
                     "network_evaluations": state.session.forwards - before, **body["timings_s"]})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "open_s"}
    out = {"case": case, "shape": list(state.session.grid.shape), "preset": args.preset,
           "backbone": cfg["model"]["backbone"], "patch": cfg["data"]["patch_size"], "threads": args.threads, "max_zoom": args.max_zoom,
           "open_s": open_s, "median": med, "clicks": rows}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
