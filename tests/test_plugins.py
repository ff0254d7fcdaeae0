"""Methods plug in from outside petctfm (issue 22): a toy method in a temporary folder, declared by an entry
point in the group ``petctfm.methods`` (a ``.dist-info`` folder, as ``pip install`` writes one), runs end to
end through the CLI with no edit to petctfm: ``pretrain --method toy-denoise`` (in a fresh process that finds
it by its entry point alone), ``finetune --init RUN``, ``probe`` and ``predict``. Also: the registry's own
rules, and a grep that the generic layers never name a method."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petctfm.cli.main import main
from petctfm.core import registry
from petctfm.core.errors import UsageError
from toy_data import write_toy_dataset

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "petctfm"


def _install_toy(site: Path) -> Path:
    """The toy plugin as an installed distribution: its package and a dist-info with the entry point."""
    pkg = site / "toy_petctfm_plugin"
    pkg.mkdir(parents=True)
    shutil.copy(HERE / "plugins" / "toy_method.py", pkg / "__init__.py")
    dist = site / "toy_petctfm_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-petctfm-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[petctfm.methods]\ntoy-denoise = toy_petctfm_plugin:METHOD\n")
    return site


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory):
    """(site folder on sys.path with the plugin, tiny dataset at an 8 mm grid); the plugin is removed after."""
    from petctfm.data import format as fmt
    from petctfm.io.atomic import atomic_write_json

    site = _install_toy(tmp_path_factory.mktemp("site"))
    data = write_toy_dataset(tmp_path_factory.mktemp("data") / "ds", n_cases=4, shape=(24, 24, 32))
    info = json.loads((data / fmt.DATASET_JSON).read_text())
    info.update(spacing=[8.0, 8.0, 8.0], ct_window=[-1000.0, 1000.0])
    atomic_write_json(data / fmt.DATASET_JSON, info)
    splits = json.loads((data / "splits.json").read_text())
    splits["kshot"] = {"2": ["toy000", "toy001"]}
    atomic_write_json(data / "splits.json", splits)
    registry.methods()  # the built-ins, loaded before the plugin is "installed"
    sys.path.insert(0, str(site))
    try:
        assert registry.rescan() == ["toy-denoise"]
        yield site, data
    finally:
        sys.path.remove(str(site))
        registry.unregister_method("toy-denoise")
        sys.modules.pop("toy_petctfm_plugin", None)


@pytest.mark.slow
def test_toy_method_end_to_end_through_the_cli(toy_env, tmp_path, capsys):
    site, data = toy_env
    run = tmp_path / "toy_run"
    # 1. pretrain in a fresh process: petctfm finds the method by its entry point alone
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    help_text = subprocess.run([sys.executable, "-m", "petctfm.cli.main", "pretrain", "--help"], env=env,
                               capture_output=True, text=True, check=True).stdout
    assert "toy-denoise" in help_text and "--sigma" in help_text
    proc = subprocess.run([sys.executable, "-m", "petctfm.cli.main", "pretrain", "--method", "toy-denoise",
                           "--data", str(data), "--out", str(run), "--sigma", "0.3", "--max-steps", "2",
                           "--no-progress", "--log-every", "1"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pretrain: 2 steps" in proc.stdout
    from petctfm.train.checkpoint import load_model

    model, cfg = load_model(run)  # rebuilt through the registry from the checkpoint's kind
    assert cfg["method"] == "toy_denoise" and cfg["noise"]["sigma"] == pytest.approx(0.3)
    assert type(model).__name__ == "ToyDenoiser"
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 2 and all(np.isfinite(losses))

    # an option of another method is a usage error; the toy's option is refused for the built-in one
    assert main(["pretrain", "--method", "toy-denoise", "--data", str(data), "--out", str(tmp_path / "x"),
                 "--mask-ratio", "0.5"]) == 2
    assert "--mask-ratio: not an option of --method toy-denoise" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "y"), "--sigma", "0.5"]) == 2
    assert "--sigma: not an option of --method early-fusion-mae" in capsys.readouterr().err

    # 2. fine-tune from the toy run (its Method.finetune: petctfm's UNet fine-tuning on its encoder)
    ft = tmp_path / "ft"
    assert main(["finetune", "--data", str(data), "--out", str(ft), "--init", str(run), "--preset", "tiny",
                 "--patch", "16", "--max-steps", "2", "--no-progress", "--figure-every", "0",
                 "--set", "data.batch_size=2"]) == 0
    ft_cfg = json.loads(json.dumps(load_model(ft)[1]))
    assert ft_cfg["method"] == "finetune_segmentation" and ft_cfg["init"]["method"] == "toy_denoise"

    # 3. probe the toy encoder (frozen), 2-shot
    probe = tmp_path / "probe"
    assert main(["probe", "--data", str(data), "--encoder", str(run), "--out", str(probe), "--kshot", "2",
                 "--steps", "2", "--bootstrap", "10", "--points", "enc", "--no-progress"]) == 0
    summary = json.loads((probe / "summary.json").read_text())
    assert summary["head_in_channels"] == sum(model.backbone.filters) * 1  # every encoder scale of the toy UNet
    assert 0.0 <= summary["dice"]["mean"] <= 1.0

    # 4. predict a study with the fine-tuned model
    from petctfm.data import format as fmt

    case = fmt.load_case(data, sorted(p.name for p in (data / "cases").iterdir())[0])
    study = _write_study(tmp_path / "study", case)
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(ft), "--pet", str(study / "SUV.nii.gz"), "--ct",
                 str(study / "CT.nii.gz"), "--out", str(out)]) == 0
    import nibabel as nib

    mask = nib.load(str(next(out.rglob("*.nii.gz")))).get_fdata()
    assert mask.shape == tuple(case["image"].shape[1:]) and set(np.unique(mask)) <= {0.0, 1.0}


def _write_study(folder: Path, case: dict) -> Path:
    """A PET (SUV) / CT NIfTI pair of a harmonized case, 8 mm voxels."""
    import nibabel as nib

    folder.mkdir(parents=True)
    img = np.asarray(case["image"], np.float32)
    aff = np.diag([8.0, 8.0, 8.0, 1.0])
    nib.save(nib.Nifti1Image(img[0], aff), str(folder / "SUV.nii.gz"))
    nib.save(nib.Nifti1Image(img[1], aff), str(folder / "CT.nii.gz"))
    return folder


# ------------------------------------------------------------------------------------------------ registry rules


def test_builtin_methods_come_from_entry_points():
    names = registry.method_names()
    assert {"early-fusion-mae", "fratmae", "segmentation", "promptable"} <= set(names)
    assert [m.name for m in registry.pretraining_methods()][:2] == ["early-fusion-mae", "fratmae"]
    assert set(registry.kinds_with_role("segmenter")) >= {"finetune_segmentation", "fratmae_segmentation"}
    assert registry.owner_of("fratmae_segmentation").name == "fratmae"
    assert registry.backbone_owner("fratmae-unetr").name == "fratmae"
    assert registry.backbone_owner("unet-resenc-tiny").name == "segmentation"
    assert registry.backbone_owner("no-such-net") is None


def test_register_method_rules():
    m = registry.Method("unit-test-method", "", (registry.ModelKind("unit_test_kind", lambda cfg: None),))
    registry.register_method(m)
    try:
        assert registry.get_method("unit-test-method") is m and registry.owner_of("unit_test_kind") is m
        registry.register_method(m)  # the same record again: no-op
        with pytest.raises(ValueError, match="already registered"):
            registry.register_method(registry.Method("unit-test-method", "", m.kinds))
        with pytest.raises(ValueError, match="already method 'fratmae'"):  # a kind belongs to one method
            registry.register_method(registry.Method("thief", "", (registry.ModelKind("fratmae", lambda c: None),)))
        assert "thief" not in registry.method_names()
    finally:
        registry.unregister_method("unit-test-method")
    assert "unit_test_kind" not in registry.kinds_with_role("other")
    with pytest.raises(UsageError, match="no such method"):
        registry.get_method("unit-test-method")
    with pytest.raises(ValueError, match="role"):
        registry.ModelKind("k", lambda c: None, role="bogus")
    with pytest.raises(ValueError, match="no checkpoint kind"):
        registry.Method("empty", "", ())


def test_clashing_options_are_refused():
    a = registry.Method("opt-a", "", (registry.ModelKind("opt_a", lambda c: None),), pretrain=lambda *a, **k: {},
                        options=(registry.Option("--zz", "zz", int),))
    b = registry.Method("opt-b", "", (registry.ModelKind("opt_b", lambda c: None),), pretrain=lambda *a, **k: {},
                        options=(registry.Option("--zz", "zz", float),))
    registry.register_method(a)
    registry.register_method(b)
    try:
        with pytest.raises(ValueError, match="--zz of method 'opt-b' clashes"):
            registry.options_of(["opt-a", "opt-b"])
    finally:
        registry.unregister_method("opt-a")
        registry.unregister_method("opt-b")


def test_a_broken_plugin_is_skipped_with_a_warning(tmp_path, caplog):
    site = tmp_path / "site"
    dist = site / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[petctfm.methods]\nbroken = no_such_module_xyz:METHOD\n")
    registry.methods()
    sys.path.insert(0, str(site))
    try:
        with caplog.at_level("WARNING"):
            assert registry.rescan() == []
        assert "broken" in caplog.text and "no_such_module_xyz" in caplog.text
        assert "early-fusion-mae" in registry.method_names()  # petctfm still works
    finally:
        sys.path.remove(str(site))


def test_an_unknown_checkpoint_kind_is_one_line(tmp_path):
    import torch

    from petctfm.core.errors import InputError
    from petctfm.train.checkpoint import load_model, save_weights

    save_weights(torch.nn.Linear(1, 1), tmp_path / "m.safetensors", {"method": "from_a_missing_plugin"})
    with pytest.raises(InputError, match="'from_a_missing_plugin' is not a registered checkpoint kind"):
        load_model(tmp_path / "m.safetensors")


# ------------------------------------------------------------------------------------------------ no method names


GENERIC = ["core", "train", "inference", "models", "data", "predict", "methods/probe.py", "methods/staging.py",
           "methods/finetune.py", "cli/pretrain.py", "cli/finetune.py", "cli/probe.py", "cli/stage.py",
           "cli/predict.py"]
METHOD_WORDS = re.compile(r"fratmae|early[_-]?fusion|promptable|seganypet|finetune_segmentation|twin_?vit|\bmae\b",
                          re.IGNORECASE)


def _code_without_comments_and_docstrings(path: Path) -> str:
    """The source of ``path`` with comments and docstrings removed (identifiers, strings, imports stay)."""
    import ast
    import io
    import tokenize

    tree = ast.parse(path.read_text())
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                    and isinstance(first.value.value, str):
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.COMMENT or tok.start[0] in doc_lines:
            continue
        out.append(tok.string)
    return " ".join(out)


@pytest.mark.parametrize("where", GENERIC)
def test_generic_layers_never_name_a_method(where):
    base = SRC / where
    files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
    hits = [f"{f.relative_to(SRC)}: {m.group(0)}" for f in files
            for m in METHOD_WORDS.finditer(_code_without_comments_and_docstrings(f))]
    assert not hits, hits


def test_the_method_grep_finds_a_planted_name(tmp_path):
    f = tmp_path / "x.py"
    f.write_text('"""docstrings may say FratMAE."""\n# and comments: fratmae\nKIND = "fratmae_segmentation"\n')
    assert [m.group(0) for m in METHOD_WORDS.finditer(_code_without_comments_and_docstrings(f))] == [
        "fratmae"]  # the code line; not the docstring, not the comment


def test_show_config_prints_the_typed_defaults_with_the_preset(capsys):
    import yaml

    assert main(["pretrain", "--show-config", "--preset", "tiny"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    from petctfm.methods.early_fusion_mae.config import CONFIG
    from petctfm.methods.early_fusion_mae.presets import PRESETS

    assert shown["task"]["method"] == "early_fusion_mae" and set(shown["task"]) == set(CONFIG().to_dict())
    assert shown["task"]["model"]["backbone"] == PRESETS["tiny"]["task"]["model"]["backbone"] == "unet-resenc-tiny"
    assert shown["task"]["mask"]["ratio"] == CONFIG().mask.ratio  # not in the preset: the typed default
    assert shown["train"] == PRESETS["tiny"]["train"]
    assert main(["pretrain", "--method", "fratmae", "--show-config", "--preset", "tiny"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["task"]["method"] == "fratmae"
    with pytest.raises(UsageError, match="preset='huge'"):
        registry.get_method("fratmae").default_config("huge")


def test_an_empty_registry_says_reinstall(monkeypatch):
    """Stale metadata (an old egg-info first on sys.path) hides every entry point: one line saying what to do."""
    from petctfm.core.errors import InputError

    monkeypatch.setattr(registry, "_REGISTRY", registry._Registry())
    monkeypatch.setattr(registry._Registry, "load_entry_points", lambda self: setattr(self, "loaded", True))
    for call in (registry.pretraining_methods, lambda: registry.get_method("fratmae"),
                 lambda: registry.model_kind("fratmae")):
        with pytest.raises(InputError, match="reinstall petctfm"):
            call()
    assert main(["pretrain", "--data", "d", "--out", "o"]) == 3
