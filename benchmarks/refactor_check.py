"""Fingerprints of the outputs a behaviour-preserving refactor must not change (issue 22, item 6).

Run it once with the old code and once with the new one, then diff the two folders::

    git worktree add /tmp/base <old commit> --detach
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/base/src python benchmarks/refactor_check.py --out /tmp/rc_before
    OMP_NUM_THREADS=1 PYTHONPATH=src           python benchmarks/refactor_check.py --out /tmp/rc_after
    diff -r /tmp/rc_before/check /tmp/rc_after/check && echo IDENTICAL

Everything under ``OUT/check/`` is meant to be byte-identical; ``OUT/work/`` holds the raw outputs
(datasets, runs) and ``OUT/env.txt`` which ``petctfm`` was imported. Parts (``--parts``, default all):

- ``synth``: :func:`petctfm.synth.generator.generate_case` for 18 cases (every site, FDG and PSMA, sizes
  ``tiny`` and ``small``): sha256 of every returned image array and its geometry, and the case's ``meta``
  (exercises ``generate_case``, ``place_lesions`` and ``render_lesions``).
- ``harmonize``: ``petctfm synth`` (6 tiny cases) + one exact duplicate case + one unreadable case, then
  ``petctfm harmonize``; then :func:`petctfm.harmonize.manifest.finalize` again with another seed and a
  held-out site. ``dataset.json``, ``manifest.csv``, ``splits.json``, ``quarantine.csv``,
  ``duplicates.csv`` and ``qa/`` tables are copied with the output folder written as ``<OUT>`` (the only
  field that depends on where the check runs); per-case arrays are hashed.
- ``pretrain``: ``petctfm pretrain --preset tiny`` on that dataset, 4 steps (log every 3 steps and at the
  end, figure every 4, checkpoint every 2), then ``--resume`` to 6 steps (the figure hook then runs on the
  final weights): ``metrics.jsonl`` without its time fields (``time_s``,
  ``samples_per_s``, ``steps_per_s``), ``summary.json`` without ``time_s`` / ``samples_per_s``, and the
  sha256 of every checkpoint's ``model.safetensors`` (tensor bytes; header with the output folder as ``<OUT>``).
- ``report``: the label-efficiency report (``summarize``, ``result_rows``, ``results_markdown``) on fixed
  fake records (fine-tuning arms, probes with AP, a held-out site, a missing run, with and without
  ``--separated``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

TIME_KEYS = {"time_s", "samples_per_s", "steps_per_s"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cli(*args: str) -> int:
    """``petctfm ARGS`` with this interpreter (so PYTHONPATH decides which petctfm runs); returns the exit code."""
    r = subprocess.run([sys.executable, "-m", "petctfm.cli.main", *args], capture_output=True, text=True)
    if r.returncode not in (0, 5):
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"petctfm {' '.join(args)} failed with exit code {r.returncode}")
    return r.returncode


# ------------------------------------------------------------------------------------------------ synth


SYNTH_CASES = ([(size, i, tr) for size in ("tiny", "small") for i, tr in
                enumerate([["fdg"], ["psma"], None, ["fdg"], ["psma"]])]
               + [("tiny", i, None) for i in (5, 6, 7, 8, 9, 10, 14, 15)])  # 14, 15: confluent nodes, near a ureter


def check_synth(check: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    from petctfm.synth.generator import generate_case

    lines = []
    for size, index, tracers in SYNTH_CASES:
        case = generate_case(index, seed=7, size=size, tracers=tracers)
        m = case.meta
        lines.append(f"{case.case_id} size={size} tracers={tracers} site={m['site']} tracer={m['tracer']} "
                     f"diagnosis={m['diagnosis']} stage={m['stage']} n_lesions={m['n_lesions']}")
        for name in ("ct", "pet", "suv", "ctres", "seg", "organs"):
            img = getattr(case, name)
            arr = np.ascontiguousarray(sitk.GetArrayFromImage(img))
            geo = (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
            lines.append(f"  {name:6s} {arr.dtype} {arr.shape} {_sha(arr.tobytes())} "
                         f"geometry {_sha(repr(geo).encode())}")
        meta_json = json.dumps(m, default=str)  # not sorted: the key order is part of meta.json
        lines.append(f"  meta   {_sha(meta_json.encode())}")
    (check / "synth.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------ harmonize


def _copy_normalized(src: Path, dst: Path, out: Path) -> None:
    """Copy a text output with the absolute output folder replaced by ``<OUT>``."""
    text = src.read_text(encoding="utf-8").replace(str(out), "<OUT>")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text, encoding="utf-8")


def _snapshot_dataset(ds: Path, dst: Path, out: Path) -> None:
    for name in ("dataset.json", "manifest.csv", "splits.json", "quarantine.csv", "duplicates.csv"):
        if (ds / name).is_file():
            _copy_normalized(ds / name, dst / name, out)
    for p in sorted((ds / "qa").glob("*")) if (ds / "qa").is_dir() else []:
        if p.suffix in (".csv", ".json", ".md", ".txt"):
            _copy_normalized(p, dst / "qa" / p.name, out)
        elif p.is_file():
            (dst / "qa").mkdir(parents=True, exist_ok=True)
            (dst / "qa" / (p.name + ".sha256")).write_text(_sha(p.read_bytes()) + "\n")
    lines = []
    for d in sorted((ds / "cases").iterdir()):
        for f in sorted(d.iterdir()):
            if f.is_file():
                data = f.read_bytes()
                if f.suffix == ".json":
                    data = data.decode().replace(str(out), "<OUT>").encode()
                lines.append(f"{d.name}/{f.name} {_sha(data)}")
    (dst / "cases.txt").write_text("\n".join(lines) + "\n")


def check_harmonize(check: Path, work: Path) -> Path:
    from petctfm.harmonize.manifest import finalize

    src = work / "synth"
    _cli("synth", "--out", str(src), "--cases", "6", "--seed", "3", "--size", "tiny", "--formats", "autopet",
         "--no-progress")
    cases = sorted(p for p in (src / "autopet").iterdir() if p.is_dir())
    shutil.copytree(cases[0], src / "autopet" / "PETCT_9000")  # an exact duplicate: duplicates.csv
    broken = src / "autopet" / "PETCT_9001"  # unreadable: quarantine.csv
    broken.mkdir()
    for name in ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"):
        (broken / name).write_bytes(b"not a nifti file")
    ds = work / "harmonized"
    rc = _cli("harmonize", "--in", str(src / "autopet"), "--out", str(ds), "--no-thumbnails")
    (check / "harmonize_exit_code.txt").write_text(f"{rc}\n")
    _snapshot_dataset(ds, check / "harmonize_seed0", work)
    site = json.loads((ds / "dataset.json").read_text())["sites"][0]
    res = finalize(ds, seed=1, holdout_site=site)
    (check / "finalize_seed1_holdout_return.json").write_text(
        json.dumps(res, sort_keys=True, indent=1, default=str).replace(str(work), "<OUT>") + "\n")
    _snapshot_dataset(ds, check / "finalize_seed1_holdout", work)
    finalize(ds, seed=0)  # back to the dataset the CLI wrote (pretraining reads it)
    _snapshot_dataset(ds, check / "finalize_seed0_again", work)
    return ds


# ------------------------------------------------------------------------------------------------ pretrain


def check_pretrain(check: Path, work: Path, ds: Path) -> None:
    run = work / "mae"
    common = ["--data", str(ds), "--out", str(run), "--preset", "tiny", "--log-every", "3",
              "--figure-every", "4", "--checkpoint-every", "2", "--no-progress"]
    _cli("pretrain", *common, "--max-steps", "4")
    _cli("pretrain", *common, "--max-steps", "6", "--resume")
    lines = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = {k: v for k, v in json.loads(line).items() if k not in TIME_KEYS}
        lines.append(json.dumps(rec, sort_keys=True))
    (check / "pretrain_metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in TIME_KEYS}
    (check / "pretrain_summary.json").write_text(
        json.dumps(summary, sort_keys=True, indent=1).replace(str(work), "<OUT>") + "\n")
    (check / "pretrain_weights.txt").write_text("\n".join(weights_lines(run, work)) + "\n")


def weights_lines(run: Path, work: Path) -> list[str]:
    """sha256 of every checkpoint's weights: the tensor bytes, and the header (keys sorted, the output folder
    as ``<OUT>``). A safetensors file is an 8-byte header length, a JSON header (padded with spaces; its
    metadata, which holds the dataset path, comes in no fixed key order), then the tensor bytes."""
    lines = []
    for p in sorted((run / "checkpoints").glob("*/*.safetensors")):
        data = p.read_bytes()
        n = int.from_bytes(data[:8], "little")
        header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True).replace(str(work), "<OUT>")
        lines.append(f"{p.parent.name}/{p.name} header {_sha(header.encode())} tensors {_sha(data[8 + n:])}")
    return lines


# ------------------------------------------------------------------------------------------------ report


def _fake_records() -> list[dict]:
    """Finished-run records as ``label_efficiency.run`` writes them (fixed numbers, no randomness)."""
    cases = [f"PETCT_{i:04d}" for i in range(8)]
    held_cases = [f"PETCT_{i:04d}" for i in range(20, 25)]

    def per_case(ids: list[str], k: int, off: float, negative: int = 2) -> dict[str, float | None]:
        return {c: (None if j < negative else round((0.137 * (j + 1) * (k + 3) + off) % 1.0, 4))
                for j, c in enumerate(ids)}

    def metrics(k: int) -> dict:
        return {"dice": {"n": 6, "mean": 0.1 + 0.05 * k, "ci_low": 0.05 * k, "ci_high": 0.2 + 0.05 * k},
                "fp_volume_ml": {"mean": 1.5 + k}, "fn_volume_ml": {"mean": 2.25 - 0.1 * k},
                "lesion_f1": {"mean": 0.3 + 0.01 * k}}

    records = []
    k = 0
    for arm in ("pretrained", "scratch"):
        for fraction in (10.0, 20.0, 100.0):
            for seed in (0, 1):
                if arm == "pretrained" and fraction == 100.0:
                    continue
                k += 1
                r = {"name": f"{arm}_f{fraction:g}_s{seed}", "kind": "finetune", "arm": arm, "fraction": fraction,
                     "kshot": None, "seed": seed, "n_train_cases": int(fraction), "n_test_cases": len(cases),
                     "metrics": metrics(k), "case_dice": per_case(cases, k, 0.01 * seed),
                     "train": {"steps": 10 * k, "stopped": "max_steps"}, "time_s": 1.5 * k,
                     "per_case": "per_case.csv"}
                if fraction != 20.0:
                    r["holdout"] = {"site": "river_bend", "n_test_cases": len(held_cases), "metrics": metrics(k + 1),
                                    "case_dice": per_case(held_cases, k, 0.3, negative=1)}
                records.append(r)
    for arm in ("joint", "separated"):
        for seed in (0, 1):
            k += 1
            r = {"name": f"probe_{arm}_k5_s{seed}", "kind": "probe", "arm": arm, "fraction": None, "kshot": 5,
                 "seed": seed, "n_train_cases": 5, "n_test_cases": len(cases), "metrics": metrics(k),
                 "case_dice": per_case(cases, k, 0.0), "case_ap": per_case(cases, k, 0.5),
                 "train": {"steps": 7, "stopped": "max_time"}, "time_s": 0.5, "per_case": "per_case.csv",
                 "holdout": {"site": "river_bend", "n_test_cases": len(held_cases), "metrics": metrics(k),
                             "case_dice": per_case(held_cases, k, 0.1, negative=1),
                             "case_ap": per_case(held_cases, k, 0.7, negative=1)}}
            records.append(r)
    return records


def check_report(check: Path) -> None:
    import dataclasses

    from petctfm.experiments.label_efficiency.plan import PlannedRun, Settings
    from petctfm.experiments.label_efficiency.report import RESULT_COLUMNS, result_rows, results_markdown, summarize
    from petctfm.io.tables import csv_text

    records = _fake_records()
    plan = [PlannedRun(r["name"], r["kind"], r["arm"], r["seed"], "subset", [], r["fraction"], r["kshot"])
            for r in records] + [PlannedRun("scratch_f40_s0", "finetune", "scratch", 0, "subset", [], 40.0)]
    base = Settings(data="data/harmonized", pretrained="runs/mae/model.safetensors", preset="tiny",
                    backbone="unet-resenc-tiny", mode="joint", model_overrides={}, max_steps=20, max_time=30.5,
                    overrides=["train.lr=0.001"], holdout_site="river_bend")
    variants = {
        "all": (records, base, ["scratch_f40_s0"]),
        "separated": (records, dataclasses.replace(base, separated=["runs/pet", "runs/ct"], max_time=None,
                                                   overrides=[]), []),
        "finetune_one_seed": ([r for r in records if r["kind"] == "finetune" and r["seed"] == 0],
                              dataclasses.replace(base, probe_kshot=None, max_steps=None), []),
        "probes_only": ([r for r in records if r["kind"] == "probe"], base, []),
        "empty": ([], base, ["scratch_f40_s0"]),
    }
    for name, (recs, settings, missing) in variants.items():
        summary = summarize(recs)
        (check / f"report_{name}_summary.json").write_text(
            json.dumps(summary, sort_keys=True, indent=1, default=str) + "\n")
        (check / f"report_{name}_results.csv").write_text(csv_text(result_rows(recs, summary), RESULT_COLUMNS))
        (check / f"report_{name}_results.md").write_text(
            results_markdown(recs, summary, plan, settings, "petctfm experiment label-efficiency ...", missing))


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="new folder for this run's fingerprints")
    p.add_argument("--parts", default="synth,harmonize,pretrain,report")
    args = p.parse_args()
    parts = args.parts.split(",")
    out = args.out.resolve()
    check, work = out / "check", out / "work"
    check.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    import petctfm

    from importlib.metadata import version

    (out / "env.txt").write_text(f"petctfm {petctfm.__file__}\npython {sys.version.split()[0]}\n"
                                 f"torch {version('torch')}  numpy {version('numpy')}  "
                                 f"SimpleITK {version('SimpleITK')}\n"
                                 f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")
    if "report" in parts:
        check_report(check)
    if "synth" in parts:
        check_synth(check)
    if "harmonize" in parts or "pretrain" in parts:
        ds = check_harmonize(check, work)
        if "pretrain" in parts:
            check_pretrain(check, work, ds)
    print(f"fingerprints in {check}")


if __name__ == "__main__":
    main()
