"""Clicks make the mask: on held-out lesions of a tiny promptable model, Dice rises from 0 clicks to 1 and 3.

The 0-click Dice is measured, not assumed: the same model, on the same crop around the lesion that the first
click selects, decodes with every prompt channel empty (what the image alone gives). If the clicks changed
nothing (a session that drops them, or keeps every hot component whatever was clicked), 1 click scores what
0 clicks score and the test fails. At this training budget (40 steps) the rise comes mostly from the session
keeping the prompted components; the decoder's own use of the click is small.
"""

import numpy as np
import pytest
from quick_train import train_and_save
from toy_data import write_toy_dataset

from petctfm.core.config import deep_merge
from petctfm.data import format as fmt
from petctfm.evaluate.metrics import voxel_overlap
from petctfm.methods.promptable.presets import get_preset
from petctfm.methods.promptable.prompts import corrective_click, interior_point
from petctfm.methods.promptable.session import ObjectState, PromptSession
from petctfm.methods.promptable.task import DEFAULT_CONFIG, PromptTask

STEPS = 40


def _zero_click_mask(session: PromptSession, obj: int) -> np.ndarray:
    """The model's mask with no prompt at all, on the crop ``obj``'s last run used, pasted on the input grid."""
    lo, size = session.objects[obj].crop
    pred = session._predict(ObjectState(), lo, size)  # no point, no box, no previous mask
    full = np.zeros(tuple(session.shape), bool)
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + size, session.shape)
    src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
    dst = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(src_lo, lo, src_hi))
    full[src] = pred[dst]
    return session.orient.from_ras(full)


@pytest.mark.slow
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
        assert not s.object_mask(1).any()  # no prompt yet: the object is empty
        s.add_point(interior_point(gt), True, 1)
        d1.append(voxel_overlap(s.object_mask(1), gt)["dice"])
        d0.append(voxel_overlap(_zero_click_mask(s, 1), gt)["dice"])
        for _ in range(2):
            click = corrective_click(gt, s.object_mask(1))
            if click is not None:
                s.add_point(click[0], click[1], 1)
        d3.append(voxel_overlap(s.object_mask(1), gt)["dice"])
    print(f"Dice 0/1/3 clicks: {np.mean(d0):.3f} {np.mean(d1):.3f} {np.mean(d3):.3f} over {len(d1)} lesions")
    assert len(d1) >= 2, "the val case should hold several lesions"
    assert np.mean(d1) > 0.3, (d0, d1, d3)
    assert np.mean(d1) > np.mean(d0) + 0.15, (d0, d1)  # the click, not the image alone, makes the mask
    assert np.mean(d3) >= np.mean(d1) - 0.05 and np.mean(d3) > np.mean(d0) + 0.15, (d0, d1, d3)
