"""FratMAE as the paper trains it (issue 26): the prompt tokenizer on the paper's own prompt and on what DICOM /
TCIA metadata write, the tracer / isotope kept by harmonize, the Eq. 1 masking beside MAE-style dropping, the
schedule in epochs and ``--recipe paper`` (tiny CPU configs)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from pydicom.dataset import Dataset

from petctfm.cli.main import main
from petctfm.core.config import deep_merge
from petctfm.core.errors import InputError, UsageError
from petctfm.data import format as fmt
from petctfm.harmonize.load import dicom_demographics
from petctfm.harmonize.metadata import KEPT_FIELDS, meta_from_row
from petctfm.io.atomic import atomic_write_json
from petctfm.methods.fratmae.api import pretrain_configs
from petctfm.methods.fratmae.context import (PAD, PROMPT_LEN, TEXT_LEN, UNK, TextEncoder, Vocabulary,
                                             default_vocabulary, metadata_tokens, parse_prompt, prompt_words,
                                             tracer_words)
from petctfm.methods.fratmae.finetune import finetune_configs
from petctfm.methods.fratmae.fratmae import DEFAULT_CONFIG, VARIANTS, FratMAE, FratMAETask, validate_config
from petctfm.methods.fratmae.presets import get_preset
from toy_data import write_toy_dataset

PAPER_PROMPT = "<tracer> 18F FDG <diagnosis> melanoma <age> 61 <sex> M"  # Sec. 2.4, Stage 1
VOCAB = Vocabulary(default_vocabulary())


def _no_unk(words):
    ids = VOCAB.encode(words)
    assert UNK not in ids, (words, VOCAB.decode(ids))
    return ids


# ------------------------------------------------------------------------------------------------ tokenizer


def test_the_papers_prompt_tokenizes_without_unk():
    words = parse_prompt(PAPER_PROMPT)
    assert words == ["<tracer>", "18f", "fdg", "<diagnosis>", "melanoma", "<age>", "61", "<sex>", "M"]
    ids = _no_unk(words)
    assert VOCAB.decode(ids) == words
    # the same text from a case's metadata, however the tracer is written
    for tracer in ("18F-FDG", "FDG", "fdg", "Fludeoxyglucose F^18^"):
        meta = {"tracer": tracer, "diagnosis": "Melanoma", "age": "061Y", "sex": "male"}
        assert prompt_words(meta) == words


@pytest.mark.parametrize("text,expected", [
    ("18F-FDG", ["18f", "fdg"]), ("Fludeoxyglucose F^18^", ["18f", "fdg"]), ("[18F]FDG", ["18f", "fdg"]),
    ("Fluorodeoxyglucose", ["18f", "fdg"]), ("fludeoxyglucose f18", ["18f", "fdg"]),  # harmonize's cleaned form
    ("18fluorine fluorodeoxyglucose", ["18f", "fdg"]),  # nuclide code meaning + name (harmonize, DICOM)
    ("68Ga-PSMA-11", ["68ga", "psma-11"]), ("Ga-68 PSMA-11", ["68ga", "psma-11"]), ("Gozetotide", ["68ga", "psma-11"]),
    ("18F-PSMA-1007", ["18f", "psma-1007"]), ("[18F]PSMA-1007", ["18f", "psma-1007"]),
    ("18F-DCFPyL", ["18f", "dcfpyl"]), ("Piflufolastat F 18", ["18f", "dcfpyl"]), ("Pylarify", ["18f", "dcfpyl"]),
    ("68Ga-DOTATATE", ["68ga", "dotatate"]), ("Gallium-68 DOTATOC", ["68ga", "dotatoc"]),
    ("64Cu-DOTATATE", ["64cu", "dotatate"]), ("18F-FLT", ["18f", "flt"]), ("Fluorothymidine F 18", ["18f", "flt"]),
    ("18F-Fluciclovine", ["18f", "fluciclovine"]), ("11C-Choline", ["11c", "choline"]),
    ("18F-psma", ["18f", "psma"]), ("68ga-psma", ["68ga", "psma"]), ("psma", ["psma"]),
])
def test_radiopharmaceuticals_and_isotopes_tokenize_without_unk(text, expected):
    assert tracer_words(text) == expected
    _no_unk(["<tracer>", *expected])


def test_18f_and_68ga_psma_stay_distinct_through_harmonize():
    """harmonize's ``tracer`` merges both into ``psma`` (unchanged); ``radiopharmaceutical`` keeps the isotope
    and the prompt reads it."""
    def pt(name, nuclide):
        rp, code = Dataset(), Dataset()
        rp.Radiopharmaceutical, code.CodeMeaning = name, nuclide
        rp.RadionuclideCodeSequence = [code]
        ds = Dataset()
        ds.RadiopharmaceuticalInformationSequence = [rp]
        return dicom_demographics(ds)

    ga, f18 = pt("Ga-68 PSMA-11", "^68^Gallium"), pt("18F-PSMA-1007", "^18^Fluorine")
    assert ga["tracer"] == f18["tracer"] == "psma"  # the existing field is unchanged
    assert ga["radiopharmaceutical"] == "ga-68 psma-11" and f18["radiopharmaceutical"] == "18f-psma-1007"
    assert pt("Fluorodeoxyglucose", "^18^Fluorine")["radiopharmaceutical"] == "18fluorine fluorodeoxyglucose"
    assert "radiopharmaceutical" in KEPT_FIELDS
    for fdg in ("Fludeoxyglucose F^18^", "Fluorodeoxyglucose", "18F-FDG", "Fluordesoxyglucose"):  # DICOM spellings
        assert pt(fdg, "^18^Fluorine")["tracer"] == "fdg", fdg
    assert pt("Sodium fluoride", "^18^Fluorine").get("tracer") is None
    assert meta_from_row({"radiopharmaceutical": "68Ga-PSMA-11"})["radiopharmaceutical"] == "68ga-psma-11"
    t_ga = prompt_words({**ga, "diagnosis": "prostate_cancer"})
    t_f = prompt_words({**f18, "diagnosis": "prostate_cancer"})
    assert t_ga[:3] == ["<tracer>", "68ga", "psma-11"] and t_f[:3] == ["<tracer>", "18f", "psma-1007"]
    assert VOCAB.encode(t_ga) != VOCAB.encode(t_f)
    _no_unk(t_ga[:6]), _no_unk(t_f[:6])  # age and sex not given here


@pytest.mark.parametrize("text,expected", [
    ("lymphoma", ["lymphoma"]), ("LYMPHOMA", ["lymphoma"]), ("DLBCL", ["dlbcl", "lymphoma"]),
    ("Diffuse large B-cell lymphoma", ["dlbcl", "lymphoma"]), ("Hodgkin", ["hodgkin", "lymphoma"]),
    ("Hodgkin lymphoma", ["hodgkin", "lymphoma"]), ("Hodgkin's disease", ["hodgkin", "lymphoma"]),
    ("hodgkin_lymphoma", ["hodgkin", "lymphoma"]), ("non-Hodgkin lymphoma", ["non-hodgkin", "lymphoma"]),
    ("melanoma", ["melanoma"]), ("Malignant melanoma", ["melanoma"]), ("NSCLC", ["nsclc", "lung", "cancer"]),
    ("non-small cell lung cancer", ["nsclc", "lung", "cancer"]), ("lung cancer", ["lung", "cancer"]),
    ("Lung_Cancer", ["lung", "cancer"]), ("prostate cancer", ["prostate", "cancer"]),
    ("prostate_cancer", ["prostate", "cancer"]), ("PCa", ["prostate", "cancer"]), ("negative", ["negative"]),
    ("NEGATIVE", ["negative"]), ("Negative control", ["negative"]), ("no findings", ["negative"]),
])
def test_diagnoses_in_common_spellings_tokenize_without_unk(text, expected):
    words = prompt_words({"diagnosis": text})
    i = words.index("<diagnosis>") + 1
    assert words[i:i + len(expected)] == expected and words[i + len(expected)] == "<age>"
    _no_unk(words[i:i + len(expected)])


@pytest.mark.parametrize("age,word", [(61, "61"), (61.4, "61"), ("61", "61"), ("061Y", "61"), ("006M", "0"),
                                      ("018M", "1"), ("012W", "0"), ("030D", "0"), ("61 years", "61"), (0, "0"),
                                      ("130Y", "130")])
def test_age_in_years_or_dicom_age_string(age, word):
    words = prompt_words({"age": age})
    assert words[4:6] == ["<age>", word]
    _no_unk(words[4:6])


@pytest.mark.parametrize("sex,word", [("M", "M"), ("F", "F"), ("male", "M"), ("Female", "F"), ("O", "O")])
def test_sex(sex, word):
    assert prompt_words({"sex": sex})[-2:] == ["<sex>", word]


def test_prompt_tokens_pad_and_unknowns_and_malformed():
    ids = metadata_tokens({"tracer": "FDG", "sex": "F"}, VOCAB, tokenizer="prompt")
    assert ids.shape == (PROMPT_LEN,) and ids[0] == 1 and (ids[10:] == PAD).all()
    assert VOCAB.decode(ids) == ["<tracer>", "18f", "fdg", "<diagnosis>", "<unk>", "<age>", "<unk>", "<sex>", "F"]
    assert prompt_words({"diagnosis": "glioma", "tracer": "unobtainium"})[1:4] == ["<unk>", "<diagnosis>", "<unk>"]
    with pytest.raises(InputError, match="cases/x/meta.json: malformed age"):
        prompt_words({"age": "sixty"}, "cases/x/meta.json")
    with pytest.raises(InputError, match="0..130"):
        prompt_words({"age": "200Y"})
    with pytest.raises(InputError, match="malformed radiopharmaceutical"):
        prompt_words({"radiopharmaceutical": 18})


def test_text_encoder_ignores_padding():
    torch.manual_seed(0)
    enc = TextEncoder(len(VOCAB), 24, 1, 2, PROMPT_LEN).eval()
    ids = metadata_tokens({"tracer": "FDG", "diagnosis": "melanoma"}, VOCAB, tokenizer="prompt")[None]
    before = enc(ids)
    with torch.no_grad():
        enc.embed.weight[PAD] += 5.0
        enc.pos[:, -3:] += 5.0  # positions only padding occupies here
    assert torch.allclose(enc(ids), before, atol=1e-6)


def test_new_runs_use_the_prompt_and_old_configs_keep_the_field_tokenizer():
    new = validate_config(deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"]))
    assert new["context_align"]["tokenizer"] == "prompt" and new["context_align"]["vocab"] == default_vocabulary()
    old = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    old["context_align"]["vocab"] = default_vocabulary("field")
    old["context_align"].pop("tokenizer")
    old["mask"].pop("mode")
    old = validate_config(old)
    assert old["context_align"]["tokenizer"] == "field" and old["mask"]["mode"] == "drop"
    assert FratMAE(old).text_encoder.pos.shape[1] == TEXT_LEN  # an old checkpoint's shape: it loads
    assert FratMAE(new).text_encoder.pos.shape[1] == PROMPT_LEN


# ------------------------------------------------------------------------------------------------ masking


def _tiny(variant="fratmae", mode="drop"):
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["model"]["arch"], cfg["context_align"]["enabled"] = VARIANTS[variant]
    cfg["mask"]["mode"] = mode
    return validate_config(cfg)


@pytest.mark.parametrize("variant", ["fratmae-noca", "mae"])
def test_eq1_zeroing_vs_dropping(variant):
    """Same weights: both modes ignore what the masked patches hold, the zero mode feeds every token to the
    masked modality's encoder (Eq. 1) and so predicts differently; both train (every parameter has a gradient)."""
    torch.manual_seed(0)
    drop = FratMAE(_tiny(variant, "drop"))
    zero = FratMAE(_tiny(variant, "zero"))
    zero.load_state_dict(drop.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 32, 8, 48, generator=g)
    target = torch.tensor([0, 1])
    perm = torch.stack([torch.randperm(24, generator=g) for _ in range(2)])
    outs = {}
    for name, model in (("drop", drop), ("zero", zero)):
        seen = []
        hooks = [e.register_forward_hook(lambda m, i, o: seen.append(o.shape[1])) for e in model.encoders.values()]
        out = model(x, target, perm)
        for h in hooks:
            h.remove()
        mask = out["mask"]
        # scribble on the masked patches of the masked modality (MAE arm: both channels): same prediction
        from petctfm.methods.fratmae.vit import unpatchify
        vox = unpatchify(mask.float()[..., None].expand(-1, -1, 8**3), 8, model.grid, 1).bool()
        x2 = x.clone()
        for b in range(2):
            chans = [0, 1] if variant == "mae" else [int(target[b])]
            for c in chans:
                x2[b, c][vox[b, 0]] = 7.0
        assert torch.allclose(model(x2, target, perm)["pred"], out["pred"], atol=1e-5), name
        outs[name] = (out, seen)
    n, n_keep = 24, 12
    if variant == "fratmae-noca":  # per modality: S's encoder, then the other's; PET has a CLS token
        assert sorted(outs["drop"][1]) == sorted([1 + n_keep, n, n_keep, 1 + n])
        assert sorted(outs["zero"][1]) == sorted([1 + n, n, n, 1 + n])
    else:
        assert outs["drop"][1] == [1 + n_keep] and outs["zero"][1] == [1 + n]
    assert not torch.allclose(outs["drop"][0]["pred"], outs["zero"][0]["pred"], atol=1e-4)
    assert torch.equal(outs["drop"][0]["mask"], outs["zero"][0]["mask"])
    out = zero(x, target, perm)
    out["pred"].square().mean().backward()
    assert all(p.grad is not None for p in zero.parameters())


# ------------------------------------------------------------------------------------------------ schedule / recipe


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=6, shape=(40, 40, 56))
    metas = TOY_METAS
    for cid, meta in zip(fmt.load_splits(root)["train"], metas):
        path = fmt.case_dir(root, cid) / "meta.json"
        atomic_write_json(path, {**json.loads(path.read_text()), **meta})
    return root


TOY_METAS = [{"tracer": "psma", "radiopharmaceutical": "ga-68 psma-11", "diagnosis": "prostate_cancer", "age": 70},
             {"tracer": "psma", "radiopharmaceutical": "18f-psma-1007", "diagnosis": "prostate_cancer", "age": 64},
             {"tracer": "fdg", "diagnosis": "lymphoma", "age": "034Y", "sex": "F"},
             {"tracer": "fdg", "diagnosis": "melanoma", "age": 61, "sex": "M"},
             {"tracer": "fdg", "diagnosis": "negative", "sex": "F"}]


def test_dataset_texts_have_no_unk(toy):
    task = FratMAETask(deep_merge(_tiny(), {"data": {"split": "train"}}), toy)
    ds = task.dataset()
    words = {c: VOCAB.decode(ds.text(c)) for c in ds.case_ids}
    assert len({tuple(w) for w in words.values()}) == 5
    first, second, third = (words[c] for c in ds.case_ids[:3])
    assert first == ["<tracer>", "68ga", "psma-11", "<diagnosis>", "prostate", "cancer", "<age>", "70", "<sex>", "<unk>"]
    assert second[:3] == ["<tracer>", "18f", "psma-1007"]
    assert third == ["<tracer>", "18f", "fdg", "<diagnosis>", "lymphoma", "<age>", "34", "<sex>", "F"]
    assert all(w.count("<unk>") == sum(f not in m for f in ("age", "sex"))
               for w, m in zip(words.values(), TOY_METAS))  # only the fields a case lacks


def test_recipe_paper_sets_the_papers_hyperparameters(toy, tmp_path):
    task, train = pretrain_configs(toy, tmp_path / "paper", recipe="paper")
    assert task["recipe"] == "paper" and task["epochs"] == 30
    assert {k: task["model"][k] for k in ("arch", "patch", "dim", "depth", "heads")} == {
        "arch": "fratmae", "patch": 16, "dim": 768, "depth": 12, "heads": 12}  # ViT-B twins
    assert task["mask"] == {"ratio": 0.5, "mode": "zero"}
    assert task["context_align"]["tokenizer"] == "prompt" and task["context_align"]["enabled"]
    assert (task["context_align"]["dim"], task["context_align"]["depth"], task["context_align"]["heads"]) == (512, 12, 8)
    assert task["data"]["grid"] == [160, 160, 192] and task["data"]["depth"] == 32 and task["data"]["k"] == 2
    assert task["data"]["stack"] == "coronal" and task["data"]["batch_size"] == 24
    assert (train.optimizer, train.lr, train.lr_schedule) == ("adamw", 1e-4, "cosine")
    n = len(fmt.load_splits(toy)["train"])
    assert train.max_steps == train.schedule_steps == math.ceil(30 * n / 24)
    # 1,292 cases (autoPET III) at 24: 1,615 steps, not the gpu preset's 20,000 (~370 epochs)
    from petctfm.methods.fratmae.schedule import epoch_steps
    assert epoch_steps(30, 1292, train, world=1) == 1615 and epoch_steps(3, 1292, train, world=8) == 21
    # an explicit step count wins (the config then records no epochs); both given is a usage error
    task, train = pretrain_configs(toy, tmp_path / "p2", recipe="paper", max_steps=3)
    assert train.max_steps == 3 and task["epochs"] is None
    with pytest.raises(UsageError, match="epochs or as max_steps"):
        pretrain_configs(toy, tmp_path / "p3", preset="tiny", epochs=2, max_steps=3)
    with pytest.raises(UsageError, match="recipe"):
        pretrain_configs(toy, tmp_path / "p4", recipe="theirs")


def test_recipe_paper_for_fine_tuning(toy, tmp_path):
    task, train = finetune_configs(toy, tmp_path / "ft", None, "tiny", recipe="paper")
    assert task["recipe"] == "paper" and task["epochs"] == 200 and task["data"]["crop"] == "native"
    assert task["data"]["batch_size"] == 16 and train.lr == 1e-4
    assert train.max_steps == math.ceil(200 * len(task["subset"]["cases"]) / 16)
    assert train.warmup_steps < train.max_steps


def test_pretrain_in_epochs_with_eq1_masking_cli(toy, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "fratmae", "--preset", "tiny", "--no-progress", "--data", str(toy),
                 "--out", str(run), "--epochs", "2", "--mask-mode", "zero", "--figure-every", "0",
                 "--log-every", "1"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    n = len(fmt.load_splits(toy)["train"])
    assert cfg["task"]["epochs"] == 2 and cfg["task"]["mask"]["mode"] == "zero"
    assert cfg["train"]["max_steps"] == math.ceil(2 * n / 4)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == cfg["train"]["max_steps"] and all(math.isfinite(r["loss"]) for r in rows)


# ------------------------------------------------------------------------------------------------ staging


def test_staging_fine_tunes_the_encoder_end_to_end():
    """The paper's staging: encoder + MLP trained together with cross-entropy; the encoder's weights move and
    four cases are fitted."""
    from petctfm.methods.fratmae.stage_finetune import StageFinetuneConfig, StagingNet, predict_staging, train_staging
    from petctfm.methods.fratmae.vit import TwinViT

    torch.manual_seed(0)
    net = StagingNet(TwinViT("fratmae", (4, 1, 6), 8, 48, 2, 3), hidden=32, dropout=0.0)
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 32, 8, 48, generator=g)
    y = torch.tensor([0, 1, 0, 1])
    x[y == 1, 0] += 1.0  # "advanced": more uptake
    log = train_staging(net, x, y, StageFinetuneConfig(lr=1e-3, epochs=15, batch_size=2), torch.device("cpu"))
    assert log["epochs_run"] == 15 and log["steps"] == 30
    assert log["history"][-1]["train_loss"] < 0.5 * log["history"][0]["train_loss"]
    moved = [k for k, v in net.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoders.pet.blocks") for k in moved) and any(k.startswith("encoders.ct") for k in moved)
    prob = predict_staging(net, x, torch.device("cpu"))
    assert ((prob >= 0.5) == y.numpy().astype(bool)).all()
    with pytest.raises(UsageError):
        StageFinetuneConfig(lr=0)


def test_run_stage_finetune_writes_metrics(toy, tmp_path):
    from petctfm.methods.fratmae.api import pretrain_fratmae
    from petctfm.methods.fratmae.stage_finetune import StageFinetuneConfig, run_stage_finetune

    data = tmp_path / "staged"
    import shutil

    shutil.copytree(toy, data)
    ids = sorted(p.name for p in (data / fmt.CASES_DIR).iterdir())
    splits = fmt.load_splits(data)
    stages = dict(zip(ids, ["early", "advanced"] * 3))
    (data / fmt.MANIFEST_CSV).write_text("case_id,stage\n" + "".join(f"{c},{s}\n" for c, s in stages.items()))
    run = tmp_path / "frat"
    pretrain_fratmae(data, run, preset="tiny", max_steps=1, progress=False, figure_every=0)
    m = run_stage_finetune(data, run, tmp_path / "stage", StageFinetuneConfig(epochs=2, n_resamples=10))
    assert m["n_train"] == len(splits["train"]) and m["training"]["epochs_run"] == 2
    assert m["config"]["lr"] == 5e-5 and m["config"]["batch_size"] == 2  # the paper's
    assert 0 <= m["balanced_accuracy"]["value"] <= 1 and m["stack"]["stack"] == "coronal"
    rows = (tmp_path / "stage" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "case_id,stage,label,prob_advanced,pred" and len(rows) == 1 + len(splits["test"])
    atomic_write_json(data / fmt.SPLITS_JSON, {**splits, "fractions": {"20": splits["train"][:1]}})
    with pytest.raises(InputError, match="need early and advanced"):  # a fraction without both stages
        run_stage_finetune(data, run, tmp_path / "stage2", StageFinetuneConfig(epochs=1, fraction=20))
