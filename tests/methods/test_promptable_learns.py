"""A tiny promptable model learns from clicks: Dice on held-out lesions rises from 0 clicks to 1 and 3 clicks."""

import numpy as np
from quick_train import train_and_save
from toy_data import write_toy_dataset

from petctfm.core.config import deep_merge
from petctfm.data import format as fmt
from petctfm.evaluate.metrics import voxel_overlap
from petctfm.methods.promptable.presets import get_preset
from petctfm.methods.promptable.prompts import corrective_click, interior_point
from petctfm.methods.promptable.session import PromptSession
from petctfm.methods.promptable.task import DEFAULT_CONFIG, PromptTask

STEPS = 40


def test_dice_rises_with_clicks(tmp_path):
    import cc3d

    root = write_toy_dataset(tmp_path / "ds", n_cases=5, seed=3)
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["targets"]["kind_probs"] = {"lesion": 1.0, "organ": 0.0, "all_lesions": 0.0}
    cfg["data"]["batch_size"] = 2
    run = train_and_save(PromptTask(cfg, root), tmp_path / "run", STEPS)
    case = fmt.load_case(root, "toy004", mmap=False)  # the val case: never trained on
    comps = cc3d.connected_components(case["label"], connectivity=18)
    d0, d1, d3 = [], [], []
    for k in range(1, int(comps.max()) + 1):
        gt = comps == k
        s = PromptSession.from_run(run, (case["image"][0], np.diag([2.0, 2.0, 2.0, 1.0])))
        d0.append(0.0)  # no prompt: the object is empty
        s.add_point(interior_point(gt), True, 1)
        d1.append(voxel_overlap(s.object_mask(1), gt)["dice"])
        for _ in range(2):
            click = corrective_click(gt, s.object_mask(1))
            if click is not None:
                s.add_point(click[0], click[1], 1)
        d3.append(voxel_overlap(s.object_mask(1), gt)["dice"])
    print(f"Dice 0/1/3 clicks: {np.mean(d0):.3f} {np.mean(d1):.3f} {np.mean(d3):.3f} over {len(d1)} lesions")
    assert np.mean(d1) > 0.3, (d1, d3)
    assert np.mean(d3) >= np.mean(d1) - 0.05 and np.mean(d3) > np.mean(d0)
