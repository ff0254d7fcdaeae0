"""Score trained lesion models through the product: ``petctfm predict`` on a harmonized dataset's NIfTI export,
``petctfm evaluate`` against its labels (round ten of the segmentation recipe, docs/segmentation-recipe.md).

A model trained at another spacing than the dataset's is judged on the dataset's grid: ``predict`` resamples
each case to the model's own spacing and brings the lesion probability back onto the input grid before the
threshold, as it does for any user's study. So models trained on differently harmonized copies of the same
phantoms (4 mm and 6 mm) are scored on the same voxels against the same labels.

Arms are named groups of runs (one run per training seed). Per arm the report gives the Dice over the cases with
lesions, averaged per case over the arm's runs, with a bootstrap CI; the paired, seed-averaged difference against
the first arm (or ``--against``); per-run Dice; FP / FN volume and lesion F1 over all scored cases; and predict's
inference seconds per case.

    # predict + evaluate every run (one worker per run, one thread each); OUT/<arm>_<k>/{pred,eval}
    OMP_NUM_THREADS=1 python benchmarks/score_via_predict.py --data DS --split val --out OUT \\
        --arm 4mm=RUN_A0,RUN_A1 --arm 6mm=RUN_B0,RUN_B1 --overlap 0.25 --workers 2
    # the table again from OUT
    python benchmarks/score_via_predict.py --report OUT
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark scripts (organ_suppression, seg_recipe_ablation)

def export_split(data: str, split: str | None) -> list[str]:
    """The case ids of ``split`` (None: every case of splits.json), each exported once to ``DATA/nifti/<id>``."""
    from organ_suppression import _ids

    from petctfm.harmonize.export import export_nifti

    ids = _ids(data, split, "all")
    if not ids:
        raise SystemExit(f"{data}: no case in split {split!r}")
    for cid in ids:
        if not (Path(data) / "nifti" / cid / "SEG.nii.gz").is_file():
            export_nifti(data, cid)
    return ids


def _petctfm(*args: str) -> None:
    exe = shutil.which("petctfm") or str(Path(sys.executable).with_name("petctfm"))
    cmd = [exe, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")


def score_run(data: str, split: str | None, ids: list[str], run: str, dest: Path, overlap: float | None) -> dict:
    """``predict`` then ``evaluate`` one run into ``dest``; returns per-case metrics and inference seconds."""
    dest.mkdir(parents=True, exist_ok=True)
    batch = dest / "cases.csv"
    with batch.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "pet", "ct"])
        for cid in ids:
            case = (Path(data) / "nifti" / cid).resolve()
            w.writerow([cid, case / "SUV.nii.gz", case / "CTres.nii.gz"])
    opts = ["--overlap", str(overlap)] if overlap is not None else []
    _petctfm("predict", "--model", run, "--batch", str(batch), "--out", str(dest / "pred"), "--no-report",
             "--no-progress", "--device", "cpu", *opts)
    ev = ["evaluate", "--pred", str(dest / "pred"), "--gt", data, "--out", str(dest / "eval")]
    _petctfm(*ev, *(["--split", split] if split else []))
    with (dest / "eval" / "per_case.csv").open() as f:
        cases = {r["case_id"]: {k: _num(r.get(k)) for k in ("dice", "fp_volume_ml", "fn_volume_ml", "lesion_f1",
                                                            "gt_tmtv_ml")} for r in csv.DictReader(f)}
    secs = [json.loads((dest / "pred" / c / "summary.json").read_text())["timings_s"]["inference"] for c in ids]
    res = {"run": run, "data": data, "split": split, "overlap": overlap, "cases": cases,
           "inference_s_per_case": float(np.mean(secs))}
    (dest / "result.json").write_text(json.dumps(res, indent=1))
    return res


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _lesion_cases(res: dict) -> set[str]:
    return {c for c, m in res["cases"].items() if m["gt_tmtv_ml"] > 0}


def report(out: Path, against: str | None = None) -> str:
    """The markdown table of every arm scored in ``out``."""
    from seg_recipe_ablation import _ci_text as ci

    spec = json.loads((out / "arms.json").read_text())
    arms = {a: [json.loads((out / f"{a}_{k}" / "result.json").read_text()) for k in range(len(runs))
                if (out / f"{a}_{k}" / "result.json").is_file()] for a, runs in spec["arms"].items()}
    arms = {a: r for a, r in arms.items() if r}
    if not arms:
        raise SystemExit(f"{out}: nothing scored yet")
    ref = against or next(iter(arms))
    lesions = set.intersection(*(_lesion_cases(r) for rs in arms.values() for r in rs))

    def seed_mean(rs: list[dict], key: str, cases) -> dict[str, float]:
        return {c: float(np.mean([r["cases"][c][key] for r in rs])) for c in sorted(cases)}

    base = seed_mean(arms[ref], "dice", lesions)
    n_all = len(next(iter(arms.values()))[0]["cases"])
    lines = [f"data {spec['data']} ({spec['split'] or 'all'}): {n_all} cases, {len(lesions)} with lesions; "
             f"overlap {spec['overlap']}", "",
             f"| arm | runs | Dice [95 % CI] | per run | paired − {ref} | FP ml / case | FN ml / case | lesion F1 "
             "| inference s / case |", "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for a, rs in arms.items():
        d = seed_mean(rs, "dice", lesions)
        per = " / ".join(f"{np.mean([r['cases'][c]['dice'] for c in lesions]):.3f}" for r in rs)
        diff = "" if a == ref else ci([d[c] - base[c] for c in sorted(lesions)], sign=True)
        fp = np.mean([np.mean([m["fp_volume_ml"] for m in r["cases"].values()]) for r in rs])
        fn = np.mean([np.mean([m["fn_volume_ml"] for m in r["cases"].values()]) for r in rs])
        f1 = np.nanmean([np.nanmean([r["cases"][c]["lesion_f1"] for c in lesions]) for r in rs])
        sec = np.mean([r["inference_s_per_case"] for r in rs])
        lines.append(f"| {a} | {len(rs)} | {ci(list(d.values()), sign=False)} | {per} | {diff} | {fp:.1f} | "
                     f"{fn:.1f} | {f1:.2f} | {sec:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="harmonized dataset whose grid and labels the arms are judged on")
    ap.add_argument("--split", default="val", help="the split scored (default val; 'all': every case)")
    ap.add_argument("--out")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=RUN[,RUN...]")
    ap.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: each model's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report", metavar="OUT", help="print the table of a scored OUT and stop")
    ap.add_argument("--against", default=None, metavar="NAME", help="the arm paired differences are taken against")
    a = ap.parse_args(argv)
    if a.report:
        print(report(Path(a.report), a.against))
        return 0
    if not (a.data and a.out and a.arm):
        ap.error("--data, --out and at least one --arm are needed (or --report OUT)")
    split = None if a.split == "all" else a.split
    if split == "test":
        ap.error("--split test: this script chooses between arms, so it scores validation data, never test")
    arms = {}
    for spec in a.arm:
        name, sep, runs = spec.partition("=")
        if not sep or not name or not runs:
            ap.error(f"--arm {spec!r}: expected NAME=RUN[,RUN...]")
        arms[name] = runs.split(",")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "arms.json").write_text(json.dumps({"data": a.data, "split": split, "overlap": a.overlap, "arms": arms},
                                              indent=1))
    ids = export_split(a.data, split)
    jobs = [(run, out / f"{name}_{k}") for name, runs in arms.items() for k, run in enumerate(runs)
            if not (out / f"{name}_{k}" / "result.json").is_file()]
    with ProcessPoolExecutor(a.workers) as ex:
        futs = [ex.submit(score_run, a.data, split, ids, run, dest, a.overlap) for run, dest in jobs]
        for f in futs:
            r = f.result()
            print(f"scored {r['run']}: {r['inference_s_per_case']:.1f} s per case", flush=True)
    print(report(out, a.against))
    return 0


if __name__ == "__main__":
    sys.exit(main())
