"""Promptable designs at equal steps on the toy set (CPU): ``channels`` (prompts as input channels, the whole
network per click) vs ``cached`` (image embedding once per crop, a light mask decoder per click) vs ``sam``
(the same cached embedding, a SAM-style prompt encoder + two-way-transformer decoder; ``--designs sam``).

Each design x seed: ``unet-resenc-tiny``, 32^3 patch, lesion targets only, ``--steps`` AdamW steps of batch 2 on
the 4 training cases of a toy dataset; then, through ``PromptSession`` on every lesion of a second toy dataset
never trained on: Dice after 1, 2, 3 clicks (1 interior click, then corrective clicks on the largest error),
and the seconds of the first and of each later click. Synthetic toy data; docs/promptable.md.

    PYTHONPATH=src python benchmarks/promptable_designs.py --steps 60 --seeds 0 1
"""
import argparse
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import cc3d  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from quick_train import train_and_save  # noqa: E402
from toy_data import write_toy_dataset  # noqa: E402

from petctfm.core.config import deep_merge  # noqa: E402
from petctfm.data import format as fmt  # noqa: E402
from petctfm.data.loader import list_cases  # noqa: E402
from petctfm.evaluate.bootstrap import mean_ci, paired_comparison  # noqa: E402
from petctfm.evaluate.metrics import voxel_overlap  # noqa: E402
from petctfm.methods.promptable.presets import get_preset  # noqa: E402
from petctfm.methods.promptable.prompts import corrective_click, interior_point  # noqa: E402
from petctfm.methods.promptable.session import PromptSession  # noqa: E402
from petctfm.methods.promptable.task import DEFAULT_CONFIG, PromptTask  # noqa: E402


def evaluate(run, root, n_clicks=3):
    dice, t_first, t_later = [], [], []
    for cid in list_cases(root, "all"):
        case = fmt.load_case(root, cid, mmap=False)
        comps = cc3d.connected_components(case["label"], connectivity=18)
        for k in range(1, int(comps.max()) + 1):
            gt = comps == k
            s = PromptSession.from_run(run, (case["image"][0], np.diag([2.0, 2.0, 2.0, 1.0])))
            row, click = [], (interior_point(gt), True)
            for c in range(n_clicks):
                if click is not None:
                    t = time.perf_counter()
                    s.add_point(click[0], click[1], 1)
                    (t_first if c == 0 else t_later).append(time.perf_counter() - t)
                row.append(voxel_overlap(s.object_mask(1), gt)["dice"])
                click = corrective_click(gt, s.object_mask(1))
            dice.append(row)
    return np.array(dice), t_first, t_later


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--designs", nargs="+", default=["channels", "cached"],
                    help="channels | cached | sam | cached-norefine (the cached decoder without its full-resolution "
                         "refinement); each later design is paired against the first")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    d = pathlib.Path(tempfile.mkdtemp())
    train_root = write_toy_dataset(d / "train", n_cases=5, seed=3)
    test_root = write_toy_dataset(d / "test", n_cases=4, seed=99)
    res = {}
    for design in a.designs:
        per_seed = []
        for seed in a.seeds:
            cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
            cfg["model"]["design"], cfg["seed"] = design.split("-")[0], seed
            cfg["model"]["head_refine"] = design != "cached-norefine"
            cfg["targets"]["kind_probs"] = {"lesion": 1.0, "organ": 0.0, "all_lesions": 0.0}
            t = time.perf_counter()
            torch.manual_seed(seed)
            run = train_and_save(PromptTask(cfg, train_root), d / f"{design}_{seed}", a.steps)
            train_s = time.perf_counter() - t
            dice, tf, tl = evaluate(run, test_root)
            per_seed.append(dice)
            print(f"{design} seed {seed}: train {train_s:.0f}s; Dice 1/2/3 clicks {dice.mean(0).round(3).tolist()} "
                  f"({len(dice)} lesions); first click {np.median(tf):.3f}s, later {np.median(tl) if tl else float('nan'):.3f}s",
                  flush=True)
            res.setdefault(design, {"train_s": [], "first_click_s": [], "later_click_s": []})
            res[design]["train_s"].append(train_s)
            res[design]["first_click_s"] += tf
            res[design]["later_click_s"] += tl
        allv = np.concatenate(per_seed)
        res[design]["dice"] = allv.tolist()
        res[design]["dice_ci"] = [mean_ci(allv[:, c]) for c in range(allv.shape[1])]
    ref = a.designs[0]  # every other design is paired against the first one given, lesion by lesion and seed
    for design in a.designs[1:]:
        for c in range(3):
            cmp = paired_comparison(np.array(res[design]["dice"])[:, c], np.array(res[ref]["dice"])[:, c])
            r, o = res[ref]["dice_ci"][c], res[design]["dice_ci"][c]
            print(f"{c + 1} click(s): {ref} {r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  "
                  f"{design} {o['mean']:.3f} [{o['ci_low']:.3f}, {o['ci_high']:.3f}]  "
                  f"{design} - {ref} {cmp['mean_diff']:+.3f} [{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}]")
            res[design].setdefault("vs_" + ref, []).append(cmp)
    for design in res:
        print(f"{design}: median first click {np.median(res[design]['first_click_s']):.3f}s, later "
              f"{np.median(res[design]['later_click_s']):.3f}s, train {np.mean(res[design]['train_s']):.0f}s/run")
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
