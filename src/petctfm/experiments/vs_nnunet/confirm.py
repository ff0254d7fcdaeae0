"""A finished vs-nnU-Net experiment scored on a confirmation cohort: another harmonized dataset (a new synth
seed, or a new site), every case of it a test case, predicted by each trained arm's own predictor and by the
SUV floors, scored by the same code, petctfm paired against nnU-Net.

``run_confirm(exp_dir, data2, out)`` (what ``petctfm experiment vs-nnunet --confirm DATASET`` calls after the
arms): ``out/images/`` the cohort in nnU-Net's raw naming (``<case>_0000`` CT, ``_0001`` PET); per arm
``out/<arm>/pred/*.nii.gz`` and ``out/<arm>/eval/`` (``petctfm evaluate``'s report); ``out/results.md`` and
``out/results.json`` (per-arm means with bootstrap CIs, petctfm - nnU-Net paired per metric, seconds per case).

``cases``: ``"all"`` or ``"lesions"`` (only the cohort's cases with lesions: Dice, FN volume and lesion F1 are
defined on them; the false-positive volume of negative cases is then not compared). On a CPU nnU-Net's
predictor takes about half a minute to a minute per case, which is what the second choice is for; the choice is
the caller's, made before any prediction, and written into the results.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.errors import InputError
from petctfm.data import format as fmt
from petctfm.experiments.vs_nnunet.plan import (ARM_METRICS, BOOTSTRAP_SEED, CONFIGURATION, DONE_FILE,
                                                EXPERIMENT_FILE, N_RESAMPLES, PLANS, dataset_folder_name)

CONFIRM_CASES = ("all", "lesions")


def cohort_cases(data: str | Path, cases: str = "all") -> list[str]:
    """Case ids of a harmonized dataset (every case folder; ``"lesions"``: those whose label has a lesion)."""
    from petctfm.data.loader import list_cases

    if cases not in CONFIRM_CASES:
        raise InputError(f"--confirm-cases must be one of {', '.join(CONFIRM_CASES)}, got {cases!r}")
    ids = list_cases(data, "all")
    if cases == "lesions":
        ids = [c for c in ids if np.asarray(fmt.load_case(data, c, mmap=True)["label"]).any()]
    return ids


def _evaluate(pred_dir: Path, data: Path, ids: list[str], out_dir: Path) -> list[dict[str, Any]]:
    """``petctfm evaluate``'s per-case rows of ``ids``; its report in ``out_dir`` when ``ids`` are all the
    cohort's cases (a subset's rows are written as ``out_dir/per_case.json``)."""
    from petctfm.evaluate import evaluate_folder, write_report
    from petctfm.io.atomic import atomic_write_json, json_safe

    every = len(ids) == len(cohort_cases(data, "all"))
    res = evaluate_folder(pred_dir, data, n_resamples=N_RESAMPLES, seed=BOOTSTRAP_SEED, allow_missing=not every)
    wanted = set(ids)
    rows = [r for r in res["cases"] if r["case_id"] in wanted]
    missing = [r["case_id"] for r in rows if r.get("missing_prediction")]
    if missing or len(rows) != len(ids):
        raise InputError(f"{pred_dir}: no prediction for {', '.join(missing[:10]) or 'some cases'}")
    if every:
        write_report(res, out_dir)
    else:
        atomic_write_json(Path(out_dir) / "per_case.json", json_safe(rows))
    return rows


def _predict_petctfm(run_dir: Path, data: Path, ids: list[str], out: Path, device: str) -> dict[str, float]:
    """``predict_split`` on exactly ``ids``; per-case seconds as the experiment measures them."""
    from petctfm.experiments.vs_nnunet.run import seconds_from_mtimes
    from petctfm.predict.split import predict_split

    t0 = time.time()
    return seconds_from_mtimes(predict_split(run_dir, data, split="all", out_dir=out, device=device, cases=ids), t0)


def run_confirm(exp_dir: str | Path, data2: str | Path, out: str | Path | None = None, cases: str = "all",
                device: str | None = None, progress: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    """Score the finished experiment ``exp_dir``'s trained arms and floors on every case (``cases``) of the
    harmonized dataset ``data2``; returns ``{"out", "results_md", "results": {...}}``. Resumable per arm.

    ``only``: just these runs, finished or not (an nnU-Net run as soon as its ``checkpoint_final.pth`` exists,
    e.g. while its own test predictions still run); the results then cover what has been scored so far, and a
    later call without ``only`` completes them."""
    import yaml
    from rich.console import Console

    from petctfm.evaluate.bootstrap import mean_ci, paired_comparison
    from petctfm.experiments.vs_nnunet.export import write_images
    from petctfm.data.format import case_spacing
    from petctfm.experiments.vs_nnunet.floor import threshold_mask
    from petctfm.experiments.vs_nnunet.run import run_child
    from petctfm.io.atomic import atomic_write_json, atomic_write_text, json_safe
    from petctfm.predict.split import write_label_nifti

    console = Console(quiet=not progress)
    exp_dir, data2 = Path(exp_dir).resolve(), Path(data2).resolve()
    spec = yaml.safe_load((exp_dir / EXPERIMENT_FILE).read_text()) if (exp_dir / EXPERIMENT_FILE).is_file() else None
    if spec is None:
        raise InputError(f"{exp_dir}: not a vs-nnunet experiment folder (no {EXPERIMENT_FILE})")
    if not (data2 / fmt.SPLITS_JSON).is_file():
        raise InputError(f"{data2}: not a harmonized dataset (no {fmt.SPLITS_JSON})")
    settings = spec["settings"]
    device = device or settings["device"]
    out = Path(out or exp_dir / f"confirm_{data2.name}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    ids = cohort_cases(data2, cases)
    if only:
        arms = [a for a in spec["runs"] if a["name"] in set(only)]
    else:
        arms = [a for a in spec["runs"] if (exp_dir / a["name"] / DONE_FILE).is_file()]
        if not any(a["kind"] == "petctfm" for a in arms):
            raise InputError(f"{exp_dir}: no finished petctfm run to confirm")
    if not arms:
        raise InputError(f"{exp_dir}: none of the runs {only} in this experiment")
    console.rule(f"[bold]confirmation cohort {data2.name}: {len(ids)} cases ({cases}), {len(arms)} runs[/]")
    images = out / "images"
    write_images(data2, ids, images)
    per_arm: dict[str, dict[str, Any]] = {}
    for done_file in sorted(out.glob(f"*/{DONE_FILE}")):  # runs scored by earlier calls
        rec = json.loads(done_file.read_text())
        per_arm[rec["arm"]] = rec
    for arm in arms:
        name = arm["name"]
        adir = out / name
        done = adir / DONE_FILE
        if name in per_arm:  # scored by an earlier call (read above)
            continue
        pred = adir / "pred"
        pred.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if arm["kind"] == "floor":
            seconds = {}
            for cid in ids:
                t1 = time.perf_counter()
                case = fmt.load_case(data2, cid, mmap=True)
                mask = threshold_mask(np.asarray(case["image"][0]), case_spacing(case["meta"]),
                                      float(arm["threshold"]))
                write_label_nifti(mask, np.asarray(case["meta"]["affine"]), pred / f"{cid}.nii.gz")
                seconds[cid] = time.perf_counter() - t1
        elif arm["kind"] == "petctfm":
            seconds = _predict_petctfm(exp_dir / name / "run", data2, ids, pred, device)
        else:
            fold = _fold_dir(exp_dir / name)
            job = {"action": "predict", "dataset_name": dataset_folder_name(settings.get("dataset_id", 501)),
                   "configuration": CONFIGURATION, "plans_name": PLANS[arm["plan"]], "device": device,
                   "checkpoint": str(fold / "checkpoint_final.pth"), "mirroring": bool(settings.get("tta", True)),
                   "predict": {"images": str(images), "cases": ids, "out": str(pred)}}
            earlier = adir / "nnunet_predict_result.json"  # what run_child wrote for an earlier, cut-short call
            res = json.loads(earlier.read_text()) if earlier.is_file() else None
            if res is None or sorted(res["predict"]["seconds_per_case"]) != sorted(ids):
                res = run_child(job, adir, exp_dir, exp_dir / name / "nnUNet_results", device, "nnunet_predict")
            seconds = res["predict"]["seconds_per_case"]
        rows = _evaluate(pred, data2, ids, adir / "eval")
        rec = json_safe({"arm": name, "kind": arm["kind"], "seconds_per_case": seconds,
                         "time_s": round(time.perf_counter() - t0, 1),
                         "cases": [{k: r.get(k) for k in ("case_id", *ARM_METRICS)} for r in rows]})
        atomic_write_json(done, rec)
        per_arm[name] = rec
        d = [c["dice"] for c in rec["cases"] if c["dice"] is not None and math.isfinite(c["dice"])]
        console.print(f"[green]{name}[/]: Dice {np.mean(d) if d else float('nan'):.3f} on {len(d)} cases with "
                      f"lesions, {np.median(list(seconds.values())):.1f} s per case")

    # summary: per arm means with CIs; petctfm vs every nnU-Net run and floor, paired by case
    summary: dict[str, Any] = {"data": str(data2), "cases": cases, "n_cases": len(ids), "arms": {}, "paired": {}}
    for name, rec in per_arm.items():
        by = {m: [c[m] for c in rec["cases"]] for m in ARM_METRICS}
        summary["arms"][name] = {m: mean_ci(v, N_RESAMPLES, BOOTSTRAP_SEED) for m, v in by.items()}
        summary["arms"][name]["seconds_per_case_median"] = float(np.median(list(rec["seconds_per_case"].values())))
    pet = [n for n, r in per_arm.items() if r["kind"] == "petctfm"]
    for p in pet:
        pc = {c["case_id"]: c for c in per_arm[p]["cases"]}
        for other, rec in per_arm.items():
            if other in pet:
                continue
            oc = {c["case_id"]: c for c in rec["cases"]}
            common = sorted(set(pc) & set(oc))
            summary["paired"][f"{p} - {other}"] = {
                m: paired_comparison([pc[c][m] for c in common], [oc[c][m] for c in common], N_RESAMPLES,
                                     BOOTSTRAP_SEED) for m in ARM_METRICS}
    summary.update(arm_summary(per_arm, spec))
    atomic_write_json(out / "results.json", json_safe(summary))
    if summary["by_arm"]:
        _figure(summary, out / "confirm.png")
    md = _markdown(summary, spec)
    atomic_write_text(out / "results.md", md)
    console.print(f"confirmation: results in {out / 'results.md'}")
    return {"out": out, "results_md": out / "results.md", "results": summary}


def arm_summary(per_arm: dict[str, dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """The pre-registrable reading: per arm (petctfm, nnU-Net per plan, each floor) every case's metric averaged
    over the arm's seeds first (:func:`petctfm.experiments.vs_nnunet.report.seed_mean_cases`, as the
    experiment's own test report), then the mean and its bootstrap CI over cases; petctfm paired by case against
    every other arm. Returns ``{"by_arm": {arm: {metric: ci, "runs": [...], "per_run_dice": {...}}},
    "paired_by_arm": {"petctfm - <arm>": {metric: paired}}, "per_case": {arm: {case: {metric: value}}}}``."""
    from petctfm.evaluate.bootstrap import mean_ci, paired_comparison
    from petctfm.experiments.vs_nnunet.report import group_of, seed_mean_cases

    runs = {a["name"]: a for a in spec.get("runs", [])}
    records = [{"name": n, "kind": rec["kind"], "plan": runs.get(n, {}).get("plan"), "confirm": {"cases": rec["cases"]}}
               for n, rec in per_arm.items()]
    per_case = seed_mean_cases(records, "confirm")
    by_arm: dict[str, Any] = {}
    for arm, cases in per_case.items():
        by_arm[arm] = {m: mean_ci([c[m] for c in cases.values()], N_RESAMPLES, BOOTSTRAP_SEED) for m in ARM_METRICS}
        members = [r for r in records if group_of(r) == arm]
        by_arm[arm]["runs"] = [r["name"] for r in members]
        by_arm[arm]["per_run_dice"] = {r["name"]: _mean_dice(r["confirm"]["cases"]) for r in members}
    paired: dict[str, Any] = {}
    if "petctfm" in per_case:
        pc = per_case["petctfm"]
        for arm, oc in per_case.items():
            if arm == "petctfm":
                continue
            common = sorted(set(pc) & set(oc))
            paired[f"petctfm - {arm}"] = {m: paired_comparison([pc[c][m] for c in common], [oc[c][m] for c in common],
                                                               N_RESAMPLES, BOOTSTRAP_SEED) for m in ARM_METRICS}
    return {"by_arm": by_arm, "paired_by_arm": paired, "per_case": per_case}


def _mean_dice(cases: list[dict[str, Any]]) -> float:
    """Mean Dice over the cases where it is defined (NaN when none is): a run's point estimate, no bootstrap."""
    from petctfm.evaluate.bootstrap import defined

    d = defined(c["dice"] for c in cases)
    return float(d.mean()) if len(d) else float("nan")


def _figure(summary: dict[str, Any], png: Path) -> None:
    """``confirm.png``: per-case Dice of petctfm against each nnU-Net arm (seed means; above the diagonal petctfm
    is better), and every arm's per-case Dice with its mean and 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petctfm.experiments.vs_nnunet.report import _arm_order
    from petctfm.io.atomic import atomic_path

    per_case, by_arm = summary["per_case"], summary["by_arm"]
    arms = _arm_order(list(by_arm))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    pc = per_case.get("petctfm", {})
    for arm in [a for a in arms if a.startswith("nnunet")]:
        common = [c for c in sorted(set(pc) & set(per_case[arm]))
                  if math.isfinite(pc[c]["dice"]) and math.isfinite(per_case[arm][c]["dice"])]
        ax1.scatter([per_case[arm][c]["dice"] for c in common], [pc[c]["dice"] for c in common], s=22, alpha=0.8,
                    label=f"{arm} ({len(common)} cases)")
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax1.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="nnU-Net Dice (mean over seeds)",
            ylabel="petctfm Dice (mean over seeds)", title="per case (above the diagonal: petctfm better)")
    ax1.legend(loc="lower right", fontsize=8)
    rng = np.random.default_rng(0)
    for i, arm in enumerate(arms):
        d = np.array([v["dice"] for v in per_case[arm].values()], float)
        d = d[np.isfinite(d)]
        ax2.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.5)
        s = by_arm[arm]["dice"]
        if s["n"]:
            ax2.errorbar(i + 0.3, s["mean"], yerr=[[s["mean"] - s["ci_low"]], [s["ci_high"] - s["mean"]]], fmt="o",
                         color="k", capsize=4)
    ax2.set_xticks(range(len(arms)), arms, rotation=20, fontsize=8)
    ax2.set(ylim=(-0.02, 1.02), ylabel="Dice per case", title="per arm: cases, mean [95 % CI]")
    fig.suptitle(f"Confirmation cohort {Path(summary['data']).name}: {summary['n_cases']} cases ({summary['cases']}); "
                 "synthetic phantoms", fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _fold_dir(run_dir: Path) -> Path:
    found = sorted(run_dir.glob("nnUNet_results/*/*/fold_0/checkpoint_final.pth"))
    if not found:
        raise InputError(f"{run_dir}: no nnU-Net checkpoint_final.pth under nnUNet_results/")
    return found[0].parent


def _ci(s: dict[str, Any], digits: int = 3) -> str:
    if s.get("n", 0) == 0 or not math.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def _markdown(summary: dict[str, Any], spec: dict[str, Any]) -> str:
    lines = ["# Confirmation cohort", "",
             f"Synthetic phantoms: not clinical results. Cohort `{summary['data']}`: {summary['n_cases']} cases "
             f"({summary['cases']}), none seen in training or in any choice. Models: the finished runs of "
             f"`{spec['command']}`. Means over cases [95 % bootstrap CI]; Dice over cases with lesions.", "",
             "## Per arm (each case averaged over the arm's seeds first)", "",
             "| arm | runs | Dice | per-run Dice | FP ml | FN ml | lesion F1 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, s in summary.get("by_arm", {}).items():
        per_run = " / ".join(f"{v:.3f}" for v in s["per_run_dice"].values() if math.isfinite(v))
        lines.append(f"| {arm} | {len(s['runs'])} | {_ci(s['dice'])} | {per_run or 'n/a'} | {_ci(s['fp_volume_ml'], 1)} | "
                     f"{_ci(s['fn_volume_ml'], 1)} | {_ci(s['lesion_f1'])} |")
    lines += ["", "| petctfm - arm | metric | n | mean diff [95 % CI] | wins petctfm / arm / ties | Wilcoxon p |",
              "| --- | --- | ---: | --- | --- | ---: |"]
    for pair, ms in summary.get("paired_by_arm", {}).items():
        for m, r in ms.items():
            ci = f"{r['mean_diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["n"] else "n/a"
            lines.append(f"| {pair} | {m} | {r['n']} | {ci} | {r.get('wins_a')} / {r.get('wins_b')} / "
                         f"{r.get('ties')} | {r['p_value']:.3g} |")
    if summary.get("by_arm"):
        lines += ["", "![per case and per arm](confirm.png)", ""]
    lines += ["## Per run", "",
              "| run | Dice | FP ml | FN ml | lesion F1 | s/case (median) |", "| --- | --- | --- | --- | --- | ---: |"]
    for name, s in summary["arms"].items():
        lines.append(f"| {name} | {_ci(s['dice'])} | {_ci(s['fp_volume_ml'], 1)} | {_ci(s['fn_volume_ml'], 1)} | "
                     f"{_ci(s['lesion_f1'])} | {s['seconds_per_case_median']:.1f} |")
    lines += ["", "Paired differences (A - B) over the cases both scored: mean [95 % CI], Wilcoxon p.", "",
              "| A - B | metric | n | mean diff | p |", "| --- | --- | ---: | --- | ---: |"]
    for pair, ms in summary["paired"].items():
        for m, r in ms.items():
            ci = f"{r['mean_diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["n"] else "n/a"
            lines.append(f"| {pair} | {m} | {r['n']} | {ci} | {r['p_value']:.3g} |")
    return "\n".join(lines) + "\n"


__all__ = ["CONFIRM_CASES", "cohort_cases", "run_confirm"]
