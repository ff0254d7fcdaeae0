"""Lesion fine-tuning with the organ map as auxiliary output classes (``task.aux_classes``, docs/finetune.md and
docs/segmentation-recipe.md round five): the cut label, the loss, the config checks, a run end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petctfm.core.config import ConfigError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data import format as fmt
from petctfm.data.loader import LabeledPatchDataset, PatchConfig
from toy_data import write_toy_dataset

AUX = {"liver": ORGAN_LABELS["liver"], "bone": ORGAN_LABELS["bone"], "spleen": ORGAN_LABELS["spleen"]}


@pytest.fixture(scope="module")
def organs_ds(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("auxdata"), n_cases=4, shape=(32, 32, 40), organs=True)


def test_cut_label_is_lesion_over_organ_classes_and_centres_stay_on_lesions(organs_ds):
    cfg = PatchConfig.from_dict({"patch_size": [16, 16, 16], "fg_prob": 1.0, "augment": False,
                                 "fg_balance": "lesion"})
    ds = LabeledPatchDataset(organs_ds, cfg, ["toy000", "toy001"], seed=0, aux_values=list(AUX.values()))
    assert ds.n_classes == 5
    d = fmt.case_dir(organs_ds, "toy000")
    lesion, organs = np.load(d / "label.npy"), np.load(d / "organs.npy")
    box = tuple(slice(0, n) for n in lesion.shape)
    got = ds.with_aux("toy000", (lesion > 0).astype(np.uint8), box, lesion.shape)
    want = np.zeros(lesion.shape, np.uint8)
    for i, v in enumerate(AUX.values()):
        want[organs == v] = i + 2
    want[lesion > 0] = 1  # a lesion voxel stays a lesion inside an organ
    assert np.array_equal(got, want) and {1, 2, 3} <= set(np.unique(got).tolist())
    # patch centres are the lesions' (the candidates read label.npy only), and the patches carry organ classes
    for i in range(6):
        item = ds[i]
        y = item["label"][0]
        assert item["label"].dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1, 2, 3, 4}
        assert y[8, 8, 8] == 1  # fg_prob 1, no augmentation: centred on a lesion voxel
    assert all(lesion[tuple(c)] > 0 for c in ds.lesions("toy000")[0])


def test_missing_organ_map_is_one_line(tmp_path):
    from petctfm.core.errors import InputError

    root = write_toy_dataset(tmp_path / "noorg", n_cases=2, shape=(24, 24, 24))
    cfg = PatchConfig.from_dict({"patch_size": [16, 16, 16], "fg_prob": 1.0, "augment": False})
    ds = LabeledPatchDataset(root, cfg, ["toy000"], seed=0, aux_values=[1])
    with pytest.raises(InputError, match=r"organs\.npy: missing: task\.aux_classes"):
        ds[0]


def test_aux_loss_keeps_the_lesion_share_of_the_dice_term():
    from monai.losses import DiceLoss

    from petctfm.methods.segmentation.task import AuxOrganLoss

    torch.manual_seed(0)
    k = 3
    logits, label = torch.randn(2, k + 2, 8, 8, 8), torch.randint(0, k + 2, (2, 1, 8, 8, 8))
    per = DiceLoss(to_onehot_y=True, softmax=True, batch=True, reduction="none")(logits, label).flatten()
    dice = AuxOrganLoss(k, 1.0, 0.0)(logits, label)
    assert float(dice) == pytest.approx(float((per[0] + 2 * per[1] + per[2:].mean()) / 4), rel=1e-5)
    ce = AuxOrganLoss(k, 0.0, 1.0)(logits, label)
    assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, label[:, 0])), rel=1e-5)


def test_config_checks():
    from petctfm.methods.segmentation.task import validate_config, DEFAULT_CONFIG
    import copy

    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg["task"] = {"name": "organs", "classes": {"liver": 1}, "aux_classes": {"bone": 11}}
    with pytest.raises(ConfigError, match="aux_classes"):
        validate_config(cfg)
    cfg["task"] = {"name": "lesions", "classes": {}, "aux_classes": {"liver": 1, "bone": 1}}
    with pytest.raises(ConfigError, match="share one label value"):
        validate_config(cfg)
    cfg["task"] = {"name": "lesions", "classes": {}, "aux_classes": {"liver": 300}}
    with pytest.raises(ConfigError, match="1..255"):
        validate_config(cfg)


def test_aux_run_trains_and_predicts_lesion_masks(organs_ds, tmp_path):
    from petctfm.inference.model import is_organ_model, output_classes
    from petctfm.methods.segmentation.api import finetune
    from petctfm.methods.segmentation.validation import validate
    from petctfm.train.checkpoint import load_model

    run = tmp_path / "aux"
    summary = finetune(organs_ds, run, backbone="unet-resenc-tiny", preset="tiny", max_steps=3, progress=False,
                       figure_every=3, checkpoint_every=3, num_workers=0, seed=1,
                       overrides={"data.patch_size": [16, 16, 16], "data.fg_balance": "lesion",
                                  "task.aux_classes": AUX})
    assert summary["steps"] == 3
    model, cfg = load_model(run / "checkpoints" / "step_0000003")
    assert cfg["task"]["aux_classes"] == AUX and not is_organ_model(cfg)
    assert output_classes(cfg) == {"background": 0, "lesion": 1}  # what predictions are written in
    out = model.eval()(torch.zeros(1, 2, 16, 16, 16))
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert out.shape == (1, 5, 16, 16, 16)  # background, lesion, 3 organs
    res = validate(model, cfg, organs_ds, split="val")
    assert res is not None and res["n_cases"] == 1 and 0.0 <= res["dice"] <= 1.0


def test_the_recipe_plan_adds_the_organs_when_every_case_has_them(organs_ds, tmp_path):
    from petctfm.core.labels import ORGAN_LABELS as LABELS
    from petctfm.methods.segmentation.api import finetune_configs

    task_cfg, _ = finetune_configs(organs_ds, tmp_path / "r1", backbone="nnunet-plain", plan="cpu", plan_step_seconds=0)
    assert task_cfg["plan"]["aux_organs"] and task_cfg["plan"]["fingerprint"]["cases_with_organs"] == 1.0
    assert task_cfg["task"]["aux_classes"] == {k: v for k, v in LABELS.items() if v}
    # turned off by an override; a dataset without organ maps trains lesions only
    task_cfg, _ = finetune_configs(organs_ds, tmp_path / "r2", backbone="nnunet-plain", plan="cpu", plan_step_seconds=0,
                                   overrides={"task.aux_classes": {}})
    assert task_cfg["task"]["aux_classes"] == {}
    plain = write_toy_dataset(tmp_path / "plain", n_cases=4, shape=(32, 32, 40))
    task_cfg, _ = finetune_configs(plain, tmp_path / "r3", backbone="nnunet-plain", plan="cpu", plan_step_seconds=0)
    assert not task_cfg["plan"]["aux_organs"] and not task_cfg["task"].get("aux_classes")


def test_organ_runs_are_not_timed_unless_asked(organs_ds, tmp_path, monkeypatch):
    """The cpu target's step-time budget was chosen on lesion runs: a lesion run is timed by default, an organ
    run plans the target's untimed patch (round nine: timed, the organs lost their context), unless a budget is
    given."""
    import numpy as np

    from petctfm.methods.segmentation import plan as P
    from petctfm.methods.segmentation.api import finetune_configs

    calls = []

    def fake_measure(backbone, net, patch, **kw):
        calls.append(list(patch))
        return float(np.prod(patch)) / 16 ** 3

    monkeypatch.setattr(P, "measure_step", fake_measure)
    # at the dataset's grid (plan_spacing=0): the timing is the subject here, not the cpu target's 6 mm grid
    untimed, _ = finetune_configs(organs_ds, tmp_path / "u", backbone="nnunet-plain", plan="cpu", plan_step_seconds=0,
                                  plan_spacing=0)
    lesion, _ = finetune_configs(organs_ds, tmp_path / "l", backbone="nnunet-plain", plan="cpu", plan_spacing=0)
    assert calls and "timing" in lesion["plan"] and lesion["plan"]["rule"]["step_seconds"] == P.STEP_SECONDS
    assert np.prod(lesion["data"]["patch_size"]) < np.prod(untimed["data"]["patch_size"])
    calls.clear()
    organs, _ = finetune_configs(organs_ds, tmp_path / "o", backbone="nnunet-plain", plan="cpu", task="organs")
    assert not calls and "timing" not in organs["plan"] and organs["plan"]["rule"]["step_seconds"] is None
    assert organs["data"]["patch_size"] == untimed["data"]["patch_size"]
    timed, _ = finetune_configs(organs_ds, tmp_path / "t", backbone="nnunet-plain", plan="cpu", task="organs",
                                plan_step_seconds=1.0)
    assert calls and timed["plan"]["rule"]["step_seconds"] == 1.0 and "timing" in timed["plan"]
