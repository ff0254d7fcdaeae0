"""Typed configs: the generic machinery (core/config.py), every method's CONFIG (defaults = the dicts saved by
runs), old-layout configs loading, and the command-line battery: every wrong config value is one line, exit 2
(a UsageError), naming the key (or flag), the value and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from petctfm.cli.main import main
from petctfm.core.config import (ConfigError, TypedConfig, apply_overrides, build_config, parse_overrides,
                                 setting)
from petctfm.core.errors import UsageError
from petctfm.train.config import check_memory, finish_configs, train_config
from toy_data import write_toy_dataset


@dataclass
class Sub(TypedConfig):
    ratio: float = setting(0.5, ge=0, lt=1)
    kind: str = setting("a", choices=("a", "b"))
    sizes: tuple[int, int, int] = setting((4, 4, 4), ge=1)
    free: dict = field(default_factory=dict)


@dataclass
class Top(TypedConfig):
    seed: int = setting(0, ge=0)
    name: str | None = None
    sub: Sub = field(default_factory=Sub)

    def validate(self, prefix: str = "") -> None:
        if self.sub.sizes[0] > 100:
            raise ConfigError("sub.sizes", list(self.sub.sizes), "first side must be <= 100")


def test_machinery_types_ranges_unknown_keys():
    c = build_config(Top, {"sub": {"ratio": 0.25, "sizes": [8, 8, 8]}})
    assert (c.sub.ratio, c.sub.sizes, c.seed) == (0.25, (8, 8, 8), 0)
    assert c.to_dict() == {"seed": 0, "name": None, "sub": {"ratio": 0.25, "kind": "a", "sizes": [8, 8, 8],
                                                            "free": {}}}
    cases = {
        "sub.ratoi=0.5: unknown config key; known in sub: ratio, kind, sizes, free": ["sub.ratoi=0.5"],
        "sub.ratio=1.5: must be in [0, 1)": ["sub.ratio=1.5"],
        "sub.ratio='abc': must be a number": ["sub.ratio=abc"],
        "sub.ratio=nan: must be a finite number": ["sub.ratio=nan"],
        "sub.kind='c': must be one of a, b": ["sub.kind=c"],
        "sub.sizes=[4, 4]: must be a list of 3 integers": ["sub.sizes=[4,4]"],
        "sub.sizes=[4, 0, 4]: each value must be >= 1": ["sub.sizes=[4,0,4]"],
        "seed=1.5: must be an integer": ["seed=1.5"],
        "seed=true: must be an integer": [("seed", True)],
    }
    for msg, ov in cases.items():
        with pytest.raises(UsageError) as exc:
            apply_overrides(c, ov)
        assert str(exc.value) == msg and "\n" not in msg
    with pytest.raises(UsageError, match=r"sub.sizes=\[200, 4, 4\]: first side must be <= 100"):
        apply_overrides(c, ["sub.sizes=[200,4,4]"]).check()
    with pytest.raises(UsageError, match="bogus=1: unknown config key; known: seed, name, sub"):
        Top.from_dict({"bogus": 1})
    d = apply_overrides(c, {"sub.free.x.y": 3, "name": "n", "seed": "7"})  # free-form dicts take any sub-key
    assert d.sub.free == {"x": {"y": 3}} and d.name == "n" and d.seed == 7 and c.sub.free == {}
    e = apply_overrides(c, ["sub={kind: b}", "name=2020"])  # a whole section merges; a number may name a string
    assert (e.sub.kind, e.sub.ratio, e.sub.sizes, e.name) == ("b", 0.25, (8, 8, 8), "2020")
    assert parse_overrides(["a.b=[1, 2]", ("c", None)]) == [("a.b", [1, 2]), ("c", None)]
    with pytest.raises(UsageError, match="key=value"):
        parse_overrides(["novalue"])


def test_trainer_settings_one_parser_and_argument_names():
    # a named Python argument is named as such (the CLI words it as its flag); a --set key as the key
    with pytest.raises(UsageError) as exc:
        train_config({}, {"max_steps": -5})
    assert str(exc.value) == "max_steps=-5: must be >= 1" and exc.value.arg == "max_steps"
    with pytest.raises(UsageError, match=r"^lr=-1.0: must be > 0$"):
        train_config({}, {"lr": "-1"})
    with pytest.raises(UsageError, match=r"^train.lr=nan: must be a finite number$"):
        train_config({}, {}, ["train.lr=nan"])
    assert train_config({}, {"lr": "3e-4"}, ["train.lr=1e-4"]).lr == 1e-4  # YAML '1e-4' is a string: parsed


@pytest.mark.parametrize("module", ["early_fusion_mae.config", "segmentation.config", "promptable.config",
                                    "fratmae.config"])
def test_method_configs_match_saved_dict_layout(module):
    import importlib

    mod = importlib.import_module(f"petctfm.methods.{module}")
    cls = mod.CONFIG
    d = cls().to_dict()
    assert cls.from_dict(d).to_dict() == d  # round trip, same keys and order
    # an old-layout dict missing newer keys still loads (defaults fill in)
    old = {k: v for k, v in d.items() if k != "preprocessing"}
    old["data"] = {k: v for k, v in d["data"].items() if k not in ("pet_transform", "sampling", "hot_quantile")}
    assert cls.from_dict(old).to_dict() == d


OLD_MAE_CONFIG_YAML = """
task:
  method: early_fusion_mae
  seed: 3
  dataset: /somewhere/toy
  model: {backbone: unet-resenc-tiny, overrides: {}}
  mask: {ratio: 0.6, block: 8, token: zero}
  loss: {w_masked: 1.0, w_visible: 0.1, kind: l2}
  data: {patch_size: [32, 32, 32], mode: joint, split: train, fg_prob: 0.33, sampling: suv, hot_suv: 4.0,
         hot_quantile: null, body_hu: -500.0, pet_transform: clip, augment: true, flip_prob: 0.5, affine_prob: 0.0,
         rotate_deg: 10.0, scale_range: 0.1, intensity_prob: 0.5, intensity_scale: 0.1, intensity_shift: 0.1,
         batch_size: 2, num_workers: 0, extra: {}}
  preprocessing: {channels: [PET, CT], normalization: {}, harmonize: {spacing: [4, 4, 4], ct_window: null}}
train: {max_steps: 30, max_time_s: null, schedule_steps: null, batch_size: 2, grad_accum: 1, lr: 0.003,
        weight_decay: 0.05, beta1: 0.9, beta2: 0.999, warmup_steps: 2, min_lr_ratio: 0.0, clip_grad: 1.0,
        ema_decay: null, seed: 3, precision: auto, device: auto, checkpoint_every: 10, keep_checkpoints: 3,
        log_every: 5, figure_every: 10, progress: false, compile: false, fused_optimizer: true,
        channels_last: false, num_workers: 0, find_unused_parameters: false}
"""


def test_old_config_yaml_loads_unchanged():
    from petctfm.methods.early_fusion_mae.config import CONFIG

    saved = yaml.safe_load(OLD_MAE_CONFIG_YAML)
    task, train = finish_configs(CONFIG, saved["task"], saved["train"], {})
    # every saved value unchanged; trainer fields added since then take their defaults (the old behaviour)
    added = {"lr_schedule": "cosine", "optimizer": "adamw"}
    added_data = {"hot_neg_prob": 0.0, "fg_balance": "voxel", "flip_axes": [0, 1, 2]}  # the old sampling and flips
    assert task == {**saved["task"], "data": {**saved["task"]["data"], **added_data}}
    assert train.to_dict() == {**saved["train"], **added}


def test_saved_values_keep_their_form():
    """A resumed run compares its config with config.yaml value for value: loading must not retype values
    (FratMAE fine-tuning stores the pretrained step as the checkpoint metadata's string)."""
    from petctfm.methods.fratmae.config import FINETUNE_CONFIG

    d = FINETUNE_CONFIG().to_dict()
    d["init"] = {"source": "/x/model.safetensors", "method": "fratmae", "step": "2"}
    assert FINETUNE_CONFIG.from_dict(d).check().to_dict()["init"] == d["init"]


def test_batch_size_zero_and_memory_estimate():
    from petctfm.methods.early_fusion_mae.config import CONFIG

    base = CONFIG().to_dict()
    for sets, opts in ((["train.batch_size=0"], {}), ([], {"batch_size": 0})):
        with pytest.raises(UsageError, match="batch_size=0: must be >= 1 in a training run"):
            finish_configs(CONFIG, base, {}, {}, sets, opts)
    _, t = finish_configs(CONFIG, base, {}, {}, ["train.batch_size=3"])
    assert t.batch_size == 3
    with pytest.raises(UsageError, match=r"needs about \d+\.\d GiB .* more than the"):
        finish_configs(CONFIG, base, {}, {"patch": ("data.patch_size", 1024)})
    check_memory(10, "cpu")  # small: nothing


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=3, shape=(32, 32, 40))


BATTERY = [
    (["pretrain"], ["--set", "train.batch_size=0"], "train.batch_size=0: must be >= 1"),
    (["pretrain"], ["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["pretrain"], ["--set", "data.patch_size=[32,32]"], "data.patch_size=[32, 32]: must be a list of 3 integers"),
    (["pretrain"], ["--patch", "1024"], "GiB"),
    (["pretrain"], ["--patch", "0"], "--patch 0: must be >= 1"),
    (["pretrain"], ["--lr", "-1"], "--lr -1.0: must be > 0"),
    (["pretrain"], ["--lr", "nan"], "--lr nan: must be a finite number"),
    (["pretrain"], ["--max-steps", "-5"], "--max-steps -5: must be >= 1"),
    (["pretrain"], ["--max-time", "-1"], "--max-time -1.0: must be > 0"),
    (["pretrain"], ["--set", "mask.ratio=2"], "mask.ratio=2.0: must be in [0, 1)"),
    (["pretrain"], ["--set", "mask.token=x"], "mask.token='x': must be one of zero, learnable"),
    (["pretrain"], ["--set", "train.lr=abc"], "train.lr='abc': must be a number"),
    (["pretrain"], ["--set", "nokey=1"], "nokey=1: unknown config key"),
    (["pretrain", "--method", "fratmae"], ["--patch", "7"], "model.patch=7: does not tile the stack"),
    (["prompt-train"], ["--patch", "-8"], "--patch -8: must be >= 1"),
    (["prompt-train"], ["--set", "clicks.max_iter=-1"], "clicks.max_iter=-1: must be >= 0"),
    (["finetune", "--init", "scratch", "--backbone", "unet-resenc-tiny"], ["--overlap", "1"],
     "--overlap 1.0: must be in [0, 1)"),
    (["finetune", "--init", "scratch", "--backbone", "unet-resenc-tiny"], ["--set", "val.overlap=-0.1"],
     "val.overlap=-0.1: must be in [0, 1)"),
]


@pytest.mark.parametrize("command,args,needle", BATTERY, ids=[" ".join(b[1]) for b in BATTERY])
def test_cli_config_errors_are_one_line_exit_2(toy, tmp_path, capsys, command, args, needle):
    rc = main([*command, "--data", str(toy), "--out", str(tmp_path / "run"), "--preset", "tiny", "--no-progress",
               "--max-steps", "1", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_missing_dataset_stays_input_error(tmp_path, capsys):
    rc = main(["pretrain", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--preset", "tiny"])
    assert rc == 3 and "nothing" in capsys.readouterr().err


def test_optimizer_choice_builds_adamw_or_nesterov_sgd():
    """``optimizer: sgd`` is nnU-Net's SGD (Nesterov, momentum = beta1), with the same no-decay rule for 1-D
    parameters as AdamW; an unknown name is a one-line UsageError."""
    import torch

    from petctfm.core.errors import UsageError
    from petctfm.train.config import TrainConfig
    from petctfm.train.schedule import build_optimizer

    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, affine=True))
    sgd = build_optimizer(model, TrainConfig.from_dict({"optimizer": "sgd", "lr": 1e-2, "beta1": 0.99,
                                                        "weight_decay": 3e-5}), torch.device("cpu"))
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.99 and g["lr"] == 1e-2 for g in sgd.param_groups)
    assert sorted(g["weight_decay"] for g in sgd.param_groups) == [0.0, 3e-5]
    adamw = build_optimizer(model, TrainConfig.from_dict({}), torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW)
    with pytest.raises(UsageError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "lion"}).check("train.")
