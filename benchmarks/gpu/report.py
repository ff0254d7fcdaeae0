"""Markdown summaries of the GPU scripts' outputs, ready to paste into docs/performance.md / docs/results.md.

``python benchmarks/gpu/report.py speed OUT --seconds S --smoke 0|1``: reads ``OUT/predict.json`` and
``OUT/pretrain_{swin,unet,compile}.json`` (whichever exist: a stage cut by its budget leaves what it
measured) and writes ``OUT/speed.md``.

``python benchmarks/gpu/report.py science OUT --seconds S --smoke 0|1 --stages STAGES.tsv --command CMD``:
writes ``OUT/science.md`` (stage seconds, the command lines, and the experiment's ``results.md`` below it).

Each summary starts with the date, the device and the command, as the docs record them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        return f"CPU ({platform.machine()}), torch {torch.__version__}"
    except ImportError:  # pragma: no cover - torch is a dependency
        return platform.machine()


def _header(title: str, seconds: float, smoke: bool, command: str) -> list[str]:
    return [f"# {title}", "",
            f"- date: {datetime.date.today().isoformat()}",
            f"- device: {_device()}",
            f"- command: `{command}`" + (" (**smoke**: CPU, tiny sizes: checks the code path, not a measurement)"
                                         if smoke else ""),
            f"- wall: {seconds:.0f} s", "", "All data synthetic (toy volumes / petctfm phantoms).", ""]


def _f(v, nd=1, pct=False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.{nd}f} %" if pct else f"{v:.{nd}f}"


def pretrain_rows(res: dict) -> list[str]:
    """One table row per measured step variant (reference first), ratios against that run's reference."""
    rows = []
    for r in res.get("runs", []):
        if "error" in r:
            rows.append(f"| {r['name']} | {r.get('batch', '')} | error: {r['error'][:80]} | | | |")
            continue
        rows.append(f"| {r['name']} | {r['batch']} | {_f(r['samples_per_s'])} | {_f(r.get('mfu'), 1, True)} | "
                    f"{_f(r.get('speedup_vs_reference'), 2)} | {_f(r.get('peak_mem_gib'))} |")
    return rows


def speed_md(out: Path, seconds: float, smoke: bool) -> str:
    lines = _header("GPU speed run (benchmarks/gpu/speed.sh)", seconds, smoke,
                    "benchmarks/gpu/speed.sh" + (" --smoke" if smoke else ""))
    pred = _load(out / "predict.json")
    lines += ["## petctfm predict, end to end (target <= 3 s)", ""]
    if pred:
        s = pred["seconds"]
        lines += [f"{pred['backbone']}, patch {pred['patch']}, TTA {pred['tta']}, {pred['precision']}; PET "
                  f"{pred['pet_shape']} + CT {pred.get('ct_shape')} -> harmonized {pred['harmonized_shape']}.", "",
                  "| stage | s |", "| --- | ---: |", *[f"| {k} | {v:.3f} |" for k, v in s.items()], "",
                  f"Reference (plain MONAI sliding window, fp32, network only): "
                  f"{pred.get('reference_monai_fp32_s', '—')} s; end to end / reference = "
                  f"{pred.get('ratio_end_to_end_vs_reference', '—')}, inference / reference = "
                  f"{pred.get('ratio_inference_vs_reference', '—')}. "
                  + ("**Target met.**" if s.get("wall", 1e9) <= 3.0 and not smoke else
                     "Target not met." if not smoke else ""), ""]
        if "resampling_s" in pred:
            lines += [f"Resampling NumPy vs torch: `{json.dumps(pred['resampling_s'])}`", ""]
    else:
        lines += ["not measured (see speed.log: the stage failed or ran out of its budget)", ""]
    lines += ["## Pretraining step (early-fusion MAE, 2x96^3, bf16; target >= 3x the reference)", "",
              "| variant | batch | samples/s | MFU | x reference | peak GiB |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    extra = []
    for name in ("swin", "unet", "compile"):
        res = _load(out / f"pretrain_{name}.json")
        if res is None:
            lines.append(f"| ({name}: not measured, see speed.log) | | | | | |")
            continue
        lines += pretrain_rows(res)
        if res.get("loader", {}).get("patches_per_s"):
            extra.append(f"Loader alone ({name} run): {res['loader']['patches_per_s']:.1f} patches/s with "
                         f"{res['loader']['workers']} workers from an on-disk harmonized dataset.")
        if res.get("end_to_end"):
            e = res["end_to_end"]
            extra.append(f"Best eager variant fed by the loader: {e['variant']} {e['samples_per_s']:.1f} samples/s, "
                         f"mean GPU utilization {_f(e.get('gpu_util_mean_pct'))} % ({e.get('gpu_util_samples')} "
                         f"NVML samples) {e.get('nvml_note') or ''}.")
    lines += ["", *extra, "", "MFU: FLOPs of one step (torch.utils.flop_counter) x samples/s / 989 TFLOP/s "
              "(H100/H200 SXM bf16 dense). Each JSON holds every field (step_s, warm-up, loss).", ""]
    frat = _load(out / "fratmae.json")  # benchmarks/bench_fratmae.py
    if frat:
        lines += [f"## FratMAE pretraining step ({frat['preset']}, stack {frat['stack_shape']}, batch {frat['batch']}; "
                  "targets MFU >= 35 %, >= 4x the naive MONAI reference)", "",
                  "| variant | batch | samples/s | MFU | x reference | peak GiB |", "| --- | ---: | ---: | ---: | ---: | ---: |",
                  *pretrain_rows(frat), ""]
        if frat.get("loader"):
            lines += [f"Loader: {frat['loader']['stacks_per_s']:.1f} stacks/s with {frat['loader']['workers']} workers.", ""]
    return "\n".join(lines) + "\n"


def science_md(out: Path, seconds: float, smoke: bool, stages: Path | None, command: str) -> str:
    lines = _header("GPU-scale label efficiency (benchmarks/gpu/science.sh)", seconds, smoke, command)
    if stages and stages.is_file():
        lines += ["| stage | s | command |", "| --- | ---: | --- |"]
        for row in stages.read_text().splitlines():
            name, secs, cmd = (row.split("\t") + ["", ""])[:3]
            lines.append(f"| {name} | {secs} | `{cmd}` |")
        lines.append("")
    res = out / "results.md"
    lines += ["## Results (the experiment's results.md)", "",
              res.read_text() if res.is_file() else "no results.md (the experiment did not finish; see science.log)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("speed", "science"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=0.0)
    ap.add_argument("--smoke", type=int, default=0)
    ap.add_argument("--stages", type=Path)
    ap.add_argument("--command", default="benchmarks/gpu/science.sh")
    a = ap.parse_args(argv)
    if a.what == "speed":
        text, name = speed_md(a.out, a.seconds, bool(a.smoke)), "speed.md"
    else:
        text, name = science_md(a.out, a.seconds, bool(a.smoke), a.stages, a.command), "science.md"
    from petctfm.io.atomic import atomic_write_text

    atomic_write_text(a.out / name, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
