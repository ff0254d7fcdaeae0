"""FratMAE on tiny ViTs (CPU): masking counts, masked-only loss, coronal stacks, InfoNCE by hand, metadata text
and vocabulary, ablation variants, ``petctfm pretrain --method fratmae`` (learning, files, reload, exact resume,
errors)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml

from petctfm.cli.main import main
from petctfm.core.config import deep_merge
from petctfm.core.errors import InputError, UsageError
from petctfm.data import format as fmt
from petctfm.io.atomic import atomic_write_json
from petctfm.methods.fratmae.context import UNK, Vocabulary, default_vocabulary, info_nce, metadata_words, positives
from petctfm.methods.fratmae.fratmae import DEFAULT_CONFIG, VARIANTS, FratMAE, FratMAETask, fratmae_loss, masked_mse, token_mask
from petctfm.methods.fratmae.presets import get_preset
from petctfm.methods.fratmae.stacks import cut_stack, resize
from petctfm.train.checkpoint import load_model
from toy_data import write_toy_dataset

ARGS = ["--method", "fratmae", "--preset", "tiny", "--no-progress", "--log-every", "1", "--seed", "3"]
METAS = [{"tracer": "FDG", "diagnosis": "melanoma", "age": 61, "sex": "M"},
         {"tracer": "PSMA", "diagnosis": "prostate_cancer", "age": 70.2, "sex": "M"},
         {"tracer": "FDG", "diagnosis": "lymphoma", "age": None, "sex": "F"},  # age null -> <unk>
         {"tracer": "FDG", "sex": "F"}]  # diagnosis and age missing -> <unk>


def _set_meta(root, case_id, **fields):
    path = fmt.case_dir(root, case_id) / "meta.json"
    meta = json.loads(path.read_text())
    for k, v in fields.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    atomic_write_json(path, meta)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = write_toy_dataset(tmp_path_factory.mktemp("toy"), n_cases=5, shape=(40, 40, 56))
    train = fmt.load_splits(root)["train"]
    for cid, meta in zip(train, METAS):
        _set_meta(root, cid, **{k: meta.get(k) for k in ("tracer", "diagnosis", "age", "sex")})
    return root


def tiny_config(variant="fratmae", **sections):
    cfg = deep_merge(DEFAULT_CONFIG, get_preset("tiny")["task"])
    cfg["model"]["arch"], cfg["context_align"]["enabled"] = VARIANTS[variant]
    return deep_merge(cfg, sections)


def _losses(run, key="loss"):
    return {r["step"]: r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


# ------------------------------------------------------------------------------------------------ masking, loss


def test_half_of_the_chosen_modality_is_dropped_and_the_other_is_complete(toy):
    task = FratMAETask(tiny_config(), toy)
    torch.manual_seed(0)
    model = task.build_model()
    n, n_keep = model.n_tokens, model.n_keep
    assert (n, n_keep) == (24, 12)  # 4 x 1 x 6 tokens of 8^3 in a 32 x 8 x 48 stack; exactly 50 % dropped
    seen = {"pet": [], "ct": []}
    for name in seen:
        model.encoders[name].register_forward_hook(lambda m, a, out, name=name: seen[name].append(tuple(out.shape[:2])))
    batch = next(task.batches(0, 1, 0))
    batch["target"] = torch.tensor([0, 1, 0, 1])
    out = model(batch["image"], batch["target"], batch["perm"], batch["text"])
    # S = PET samples (0, 2): PET encoder sees CLS + 12 visible tokens, CT encoder all 24; and vice versa
    assert seen["pet"] == [(2, 1 + n_keep), (2, 1 + n)] and seen["ct"] == [(2, n), (2, n_keep)]
    assert out["mask"].sum(1).tolist() == [n - n_keep] * 4
    assert torch.equal(out["mask"], token_mask(batch["perm"], n_keep))
    for b in range(4):  # the masked tokens are exactly those after the first n_keep of the permutation
        assert set(torch.nonzero(out["mask"][b]).flatten().tolist()) == set(batch["perm"][b, n_keep:].tolist())


def test_loss_counts_masked_tokens_only():
    pred = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [1.0, 2.0], [9.0, -9.0]]])
    target = torch.zeros(1, 4, 2)
    mask = torch.tensor([[True, False, True, False]])
    # masked tokens 0 and 2: per-token MSE (1 + 1) / 2 = 1 and (1 + 4) / 2 = 2.5 -> mean 1.75
    assert float(masked_mse(pred, target, mask)) == pytest.approx(1.75)
    pred.requires_grad_(True)
    masked_mse(pred, target, mask).backward()
    assert torch.all(pred.grad[0, [1, 3]] == 0) and torch.all(pred.grad[0, [0, 2]] != 0)


def test_model_gradient_reaches_only_masked_predictions(toy):
    task = FratMAETask(tiny_config("fratmae-noca"), toy)
    model = task.build_model()
    batch = next(task.batches(0, 1, 0))
    out = model(batch["image"], batch["target"], batch["perm"], batch["text"])
    out["pred"].retain_grad()
    loss, logs = fratmae_loss(model, out, batch["image"], batch["target"], batch["text"], task.config)
    loss.backward()
    g = out["pred"].grad.abs().sum(-1)
    assert torch.all(g[~out["mask"]] == 0) and torch.all(g[out["mask"]] > 0)
    assert set(logs) == {"recon", "recon_pet", "recon_ct"}


# ------------------------------------------------------------------------------------------------ stacks


def test_cut_stack_keeps_every_kth_slice():
    vol = torch.arange(2 * 3 * 10 * 4, dtype=torch.float32).reshape(2, 3, 10, 4)
    s = cut_stack(vol, axis=1, depth=4, k=2, start=1)
    assert s.shape == (2, 3, 4, 4)
    assert torch.equal(s, vol[:, :, [1, 3, 5, 7], :])


def test_coronal_and_axial_stacks_from_the_loader(toy):
    task = FratMAETask(tiny_config(), toy)
    ds = task.dataset()
    item = ds[5]
    assert item["image"].shape == (2, 32, 8, 48)  # grid 32 x 32 x 48, 8 coronal slices of 16
    assert item["perm"].shape == (24,) and sorted(item["perm"].tolist()) == list(range(24))
    rng = np.random.default_rng([ds.seed, ds.rank, 5])
    case = ds.case_ids[int(rng.integers(len(ds.case_ids)))]
    vol = resize(fmt.normalize(np.load(fmt.case_dir(toy, case) / "image.npy"), ds.info), (32, 32, 48))
    starts = [s for s in range(0, 32 - 16 + 1) if torch.allclose(item["image"], vol[:, :, s:s + 16:2, :])]
    assert len(starts) == 1  # the stack is exactly every 2nd coronal slice of one 16-slice block
    axial = FratMAETask(tiny_config(data={"stack": "axial"}), toy).dataset()[5]["image"]
    assert axial.shape == (2, 32, 32, 8)
    with pytest.raises(UsageError, match="do not fit"):  # a config value: usage error (exit 2)
        FratMAETask(tiny_config(data={"depth": 20}), toy)


def test_pretraining_reads_no_label(toy, tmp_path):
    root = shutil.copytree(toy, tmp_path / "nolabel")
    for p in root.glob("cases/*/label.npy"):
        p.unlink()
    batch = next(FratMAETask(tiny_config(), root).batches(0, 1, 0))
    assert batch["image"].shape == (4, 2, 32, 8, 48)


# ------------------------------------------------------------------------------------------------ ContextAlign


def test_info_nce_matches_a_hand_computation_with_duplicate_metadata():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 2.0]])  # row 2 not unit: normalized inside
    ids = torch.tensor([[1, 5, 7], [1, 5, 7], [1, 6, 7]])  # samples 0 and 1 share their metadata string
    pos = positives(ids)
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    scale = 1 / 0.5
    cos = [[0.8, 1.0, 0.0], [0.96, 0.6, 0.8], [0.6, 0.0, 1.0]]  # <img_i, txt_j / |txt_j|> by hand
    pairs = [[0, 1], [0, 1], [2]]

    def direction(sim):
        total = 0.0
        for i in range(3):
            den = sum(math.exp(scale * sim[i][j]) for j in range(3))
            num = sum(math.exp(scale * sim[i][j]) for j in pairs[i])
            total += -math.log(num / den)
        return total / 3

    expected = 0.5 * (direction(cos) + direction([list(r) for r in zip(*cos)]))
    loss, logs = info_nce(img, txt, pos, torch.tensor(math.log(scale)))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(logs["tau"]) == pytest.approx(0.5)
    # top-1: img->txt rows pick 1, 0, 2 (all positives); txt->img columns pick 1, 0, 2 (all positives)
    assert float(logs["retrieval_acc"]) == pytest.approx(1.0)


def test_metadata_text_unknown_missing_and_vocabulary():
    words = metadata_words({"tracer": "FDG", "diagnosis": "Glioma", "age": 61.4, "sex": "male", "stage": "IV"})
    assert words == ["<tracer>", "fdg", "<diagnosis>", "glioma", "<age>", "61", "<sex>", "M"]  # no stage
    vocab = Vocabulary(default_vocabulary())
    ids = vocab.encode(words)
    assert ids[4] == UNK and vocab.decode(ids) == ["<tracer>", "fdg", "<diagnosis>", "<unk>", "<age>", "61", "<sex>", "M"]
    assert metadata_words({}) == ["<tracer>", "<unk>", "<diagnosis>", "<unk>", "<age>", "<unk>", "<sex>", "<unk>"]
    reloaded = Vocabulary(yaml.safe_load(yaml.safe_dump(vocab.words)))
    assert reloaded.encode(words) == ids
    with pytest.raises(InputError, match="must start with"):
        Vocabulary(["a", "b"])


@pytest.mark.parametrize("field,value,match", [("age", "sixty", "malformed age"), ("age", 200, "0..130"),
                                               ("age", True, "malformed age"), ("sex", ["M"], "malformed sex"),
                                               ("tracer", 18, "malformed tracer")])
def test_malformed_metadata_is_a_one_line_error(field, value, match):
    with pytest.raises(InputError, match=match) as err:
        metadata_words({field: value}, "cases/x/meta.json")
    assert "cases/x/meta.json" in str(err.value) and "\n" not in str(err.value)


def test_malformed_metadata_in_the_dataset_names_the_file(toy, tmp_path):
    root = shutil.copytree(toy, tmp_path / "bad")
    cid = fmt.load_splits(root)["train"][0]
    _set_meta(root, cid, age="old")
    task = FratMAETask(tiny_config(data={"split": "all"}), root)
    with pytest.raises(InputError, match=f"{cid}/meta.json: malformed age"):
        for i in range(40):
            task.dataset()[i]


# ------------------------------------------------------------------------------------------------ variants


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_ablation_variant_trains_one_step(toy, variant):
    task = FratMAETask(tiny_config(variant), toy)
    model = task.build_model()
    assert isinstance(model, FratMAE)
    assert sorted(model.encoders) == (["joint"] if variant.startswith("mae") else ["ct", "pet"])
    assert hasattr(model, "text_encoder") == (variant in ("mae+ca", "fratmae"))
    loss, logs = task.training_step(model, next(task.batches(0, 1, 0)))
    loss.backward()
    assert torch.isfinite(loss) and ("info_nce" in logs) == hasattr(model, "text_encoder")
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)  # every parameter in the graph (DDP without unused parameters)


# ------------------------------------------------------------------------------------------------ CLI runs


def test_pretrain_fratmae_learns_and_reloads(toy, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(toy), "--out", str(run), *ARGS, "--max-steps", "40",
                 "--checkpoint-every", "20", "--figure-every", "20"]) == 0
    losses = _losses(run)
    first = np.mean([losses[s] for s in range(1, 9)])
    last = np.mean([losses[s] for s in range(33, 41)])
    assert last < 0.8 * first, losses
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"recon", "recon_pet", "recon_ct", "info_nce", "retrieval_acc", "tau"} <= set(rows[-1])
    assert (run / "figures" / "recon_step0000020.png").read_bytes()[:4] == b"\x89PNG"
    model, cfg = load_model(run)
    assert isinstance(model, FratMAE) and cfg["method"] == "fratmae" and cfg["model"]["arch"] == "fratmae"
    saved = yaml.safe_load((run / "config.yaml").read_text())["task"]["context_align"]["vocab"]
    assert saved == cfg["context_align"]["vocab"] == default_vocabulary()


def test_kill_and_resume_gives_same_losses(toy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--data", str(toy), *ARGS, "--checkpoint-every", "3", "--figure-every", "0"]
    assert main(["pretrain", "--out", str(full), *common, "--max-steps", "6"]) == 0
    assert main(["pretrain", "--out", str(part), *common, "--max-steps", "6", "--max-time", "1e-9"]) == 0
    assert max(_losses(part)) < 6
    # resume without --method: the saved run's method is used
    assert main(["pretrain", "--out", str(part), "--resume", "--preset", "tiny", "--no-progress", "--log-every", "1",
                 "--checkpoint-every", "3", "--figure-every", "0", "--max-steps", "6",
                 "--set", "train.max_time_s=none"]) == 0
    a, b = _losses(full), _losses(part)
    assert sorted(b) == list(range(1, 7))
    for s in range(1, 7):
        assert b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-6), (s, a, b)


def test_cli_option_mixups_are_one_line_errors(toy, tmp_path, capsys):
    assert main(["pretrain", "--data", str(toy), "--out", str(tmp_path / "a"), "--preset", "tiny",
                 "--variant", "mae"]) == 2  # usage error: an option of another method
    assert "--variant: not an option of --method early-fusion-mae" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(toy), "--out", str(tmp_path / "b"), *ARGS, "--mode", "pet"]) == 2
    assert "--mode: not an option of --method fratmae" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(toy), "--out", str(tmp_path / "c"), *ARGS, "--patch", "7"]) == 2
    assert "model.patch=7: does not tile the stack" in capsys.readouterr().err
