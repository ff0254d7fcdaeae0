"""The ``sam`` promptable design (prompt encoder, two-way-transformer decoder, 3 candidates + IoU, SAM's loss) and
class prompts (both designs, the training data, the session, prompt files, the viewer's object menu)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toy_data import tiny_prompt_config, write_toy_dataset

from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.methods.promptable import sam as S
from petctfm.methods.promptable.config import SamSection
from petctfm.methods.promptable.model import build_model, class_table
from petctfm.methods.promptable.prompts import PREV, class_index, default_classes, encode_prompts
from petctfm.methods.promptable.segment import read_prompt_file
from petctfm.methods.promptable.session import PromptSession
from petctfm.methods.promptable.task import PromptPatchDataset, PromptTask
from petctfm.train.checkpoint import load_model, save_weights

P = 16  # patch side


def _cfg(design="sam", classes=False):
    cfg = tiny_prompt_config(patch=P)
    cfg["model"]["design"] = design
    cfg["model"]["class_prompts"] = classes
    cfg["model"]["sam"] = {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "stride": 4}
    return cfg


def _model(design="sam", classes=False, seed=0):
    torch.manual_seed(seed)
    return build_model(_cfg(design, classes)).eval()


def _one_click(b=1, point=(8, 8, 8)):
    pr = torch.from_numpy(encode_prompts((P,) * 3, [(point, True)]))[None].repeat(b, 1, 1, 1, 1)
    c, lab = S.sparse_array([(point, True)])
    return pr, S.SparsePrompts(torch.from_numpy(c)[None].repeat(b, 1, 1), torch.from_numpy(lab)[None].repeat(b, 1))


def test_prompt_encoder_and_decoder_shapes():
    m = _model(classes=True)
    assert m.design == "sam" and m.n_classes == len(default_classes(["spleen", "kidney_left", "kidney_right"]))
    x = torch.randn(2, 1, P, P, P)
    pr, sp = _one_click(2)
    sp = sp.append(torch.tensor([[3.0, 4.0, 5.0], [0.0, 0.0, 0.0]]), torch.tensor([S.NEG, S.PAD]))
    with torch.no_grad():
        emb = m.embed(x)
        tok = m.head.prompt_tokens(sp, (P,) * 3, torch.tensor([0, 2]))
        # 2 box slots (padding: no box) + the click + 1 appended slot + the class token, width model.sam.dim
        assert tok.shape == (2, S.BOX_SLOTS + 2 + 1, 16)
        # a padding slot is exactly the learned "not a point" token
        assert torch.equal(tok[1, 3], m.head.not_a_point.weight[0]) and torch.equal(tok[0, 0], tok[1, 1])
        logits, iou = m.decode_all(emb, pr, sp)
        assert logits.shape == (2, S.N_MASKS, P, P, P) and iou.shape == (2, S.N_MASKS)
        assert m.decode(emb, pr, sp).shape == (2, 1, P, P, P)
        assert m(x, pr, sparse=sp).shape == (2, 1, P, P, P)
        # no sparse prompt at all (mask only): one "not a point" token
        empty = S.SparsePrompts(torch.zeros(2, 0, 3), torch.zeros(2, 0, dtype=torch.long))
        assert m.decode(emb, pr, empty).shape == (2, 1, P, P, P)


def test_sparse_prompts_from_the_dense_channels():
    pr = encode_prompts((P,) * 3, [((4, 5, 6), True), ((12, 11, 10), False)], box=((2, 3, 4), (9, 10, 11)))
    sp = S.sparse_from_dense(torch.from_numpy(pr)[None])
    got = {(int(lab), tuple(np.round(c.tolist(), 3))) for c, lab in zip(sp.coords[0], sp.labels[0])}
    assert got == {(S.POS, (4, 5, 6)), (S.NEG, (12, 11, 10)), (S.BOX_LO, (2, 3, 4)), (S.BOX_HI, (9, 10, 11))}
    # a model called with the dense channels only decodes the same as with the sparse prompts they came from
    m = _model()
    c, lab = S.sparse_array([((4, 5, 6), True), ((12, 11, 10), False)], ((2, 3, 4), (9, 10, 11)))
    exact = S.SparsePrompts(torch.from_numpy(c)[None], torch.from_numpy(lab)[None])
    with torch.no_grad():
        emb = m.embed(torch.randn(1, 1, P, P, P))
        a = m.decode(emb, torch.from_numpy(pr)[None], exact)
        b = m.decode(emb, torch.from_numpy(pr)[None])
    assert torch.allclose(a, b, atol=1e-5)


def _soft_dice(p, t):
    return 1 - (2 * float((p * t).sum()) + 1e-5) / (float(p.sum() + t.sum()) + 1e-5)


def _focal_dice(x, t):
    """Hand computation of one mask's loss as SAM: 20 x mean sigmoid focal (gamma 2, alpha 0.25) + soft Dice."""
    p = 1 / (1 + np.exp(-x))
    pt = np.where(t > 0, p, 1 - p)
    at = np.where(t > 0, 0.25, 0.75)
    focal = float(np.mean(-at * (1 - pt) ** 2 * np.log(pt)))
    return 20 * focal + _soft_dice(p, t)


def _dice_ce(x, t, dice_weight=1.0, ce_weight=1.0):
    """Hand computation of the default loss of one mask: soft Dice + mean binary cross-entropy (DiceCELoss)."""
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    ce = float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))
    return dice_weight * _soft_dice(p, t) + ce_weight * ce


def _loss_case():
    rng = np.random.default_rng(0)
    target = np.zeros((1, 1, 4, 4, 4), np.float32)
    target[0, 0, 1:3, 1:3, 1:3] = 1
    logits = rng.normal(0, 2, (1, 4, 4, 4, 4)).astype(np.float32)
    logits[0, 2] = np.where(target[0, 0] > 0, 3.0, -3.0)  # candidate 2 is close to the target
    return logits, target


def test_best_candidate_loss_is_the_minimum_hand_computed():
    logits, target = _loss_case()
    per = [_dice_ce(logits[0, k], target[0, 0]) for k in range(4)]
    fn = S.mask_loss(SamSection(loss="dice_ce"))
    iou_pred = np.array([[0.1, 0.5, 0.9, 0.3]], np.float32)
    actual = []
    for k in range(4):
        pred, t = logits[0, k] > 0, target[0, 0] > 0
        actual.append((pred & t).sum() / (pred | t).sum())
    mse = float(np.mean((iou_pred[0] - np.array(actual)) ** 2))
    lt, tt, it = torch.from_numpy(logits), torch.from_numpy(target), torch.from_numpy(iou_pred)
    loss, parts = S.sam_loss(lt, it, tt, torch.tensor([True]), fn)
    assert min(per[1:]) == per[2]
    assert float(loss) == pytest.approx(per[2] + mse, rel=1e-4)
    assert parts["mask_loss"] == pytest.approx(per[2], rel=1e-4) and parts["iou_loss"] == pytest.approx(mse, rel=1e-4)
    # not ambiguous: the single mask (token 0) is trained, whatever the candidates
    loss, _ = S.sam_loss(lt, it, tt, torch.tensor([False]), fn)
    assert float(loss) == pytest.approx(per[0] + mse, rel=1e-4)
    # per-sample choice in a batch
    assert torch.allclose(S.candidate_losses(lt, tt, fn)[0], torch.tensor(per, dtype=torch.float32), rtol=1e-4)


def test_loss_choices_and_weights():
    logits, target = _loss_case()
    lt, tt = torch.from_numpy(logits), torch.from_numpy(target)
    # SAM's 20 : 1 focal : Dice is dice_focal with voxel_weight 20 (the loss before model.sam.loss existed)
    sam = S.candidate_losses(lt, tt, S.mask_loss(SamSection(loss="dice_focal", dice_weight=1.0, voxel_weight=20.0)))[0]
    assert torch.allclose(sam, torch.tensor([_focal_dice(logits[0, k], target[0, 0]) for k in range(4)]), rtol=1e-4)
    # the default: DiceFocal 1 : 1 (gamma 2, alpha 0.25) = (20 x focal + Dice) with the focal part / 20
    default = S.candidate_losses(lt, tt)[0]
    dice = torch.tensor([_dice_ce(logits[0, k], target[0, 0], 1.0, 0.0) for k in range(4)], dtype=torch.float32)
    assert torch.allclose(default, dice + (sam - dice) / 20, rtol=1e-4)
    ce3 = S.candidate_losses(lt, tt, S.mask_loss(SamSection(loss="dice_ce", dice_weight=0.5, voxel_weight=3.0)))[0]
    assert torch.allclose(ce3, torch.tensor([_dice_ce(logits[0, k], target[0, 0], 0.5, 3.0) for k in range(4)],
                                            dtype=torch.float32), rtol=1e-4)
    # typed config: the default, one-line errors, and a config saved before the loss keys gets the default
    from petctfm.core.config import ConfigError
    from petctfm.methods.promptable.config import CONFIG

    sc = CONFIG.from_dict(_cfg()).model.sam  # _cfg's model.sam has no loss keys, as a run saved before them
    assert (sc.loss, sc.dice_weight, sc.voxel_weight) == ("dice_focal", 1.0, 1.0)
    with pytest.raises(ConfigError, match=r"model.sam.loss='focal': must be one of dice_ce, dice_focal"):
        CONFIG.from_dict({"model": {"sam": {"loss": "focal"}}})
    with pytest.raises(ConfigError, match=r"model.sam.voxel_weight=-1"):
        CONFIG.from_dict({"model": {"sam": {"voxel_weight": -1}}})
    with pytest.raises(ConfigError, match=r"model.sam.voxel_weight=0.0: must be > 0 when dice_weight is 0"):
        CONFIG.from_dict({"model": {"sam": {"dice_weight": 0, "voxel_weight": 0}}}).check()


def test_one_click_returns_the_candidate_with_the_highest_predicted_iou():
    m = _model()
    x = torch.randn(1, 1, P, P, P)
    pr, sp = _one_click()
    with torch.no_grad():
        emb = m.embed(x)
        logits, iou = m.decode_all(emb, pr, sp)
        best = 1 + int(iou[0, 1:].argmax())
        assert torch.equal(m.decode(emb, pr, sp), logits[:, best:best + 1])
        # two clicks: the single mask
        pr2 = pr.clone()
        pr2[0, 1, 2, 2, 2] = 1
        sp2 = sp.append(torch.tensor([[2.0, 2.0, 2.0]]), torch.tensor([S.NEG]))
        l2, _ = m.decode_all(emb, pr2, sp2)
        assert torch.equal(m.decode(emb, pr2, sp2), l2[:, :1])
        # one click with a previous mask (a later, mask-carrying step): the single mask
        pr3 = pr.clone()
        pr3[0, PREV, 6:10, 6:10, 6:10] = 1
        l3, _ = m.decode_all(emb, pr3, sp)
        assert torch.equal(m.decode(emb, pr3, sp), l3[:, :1])
    # the rule itself, per sample
    lg = torch.arange(4.0).view(1, 4, 1, 1, 1).repeat(2, 1, 2, 2, 2)
    iou = torch.tensor([[0.9, 0.1, 0.2, 0.8], [0.9, 0.1, 0.2, 0.8]])
    out = S.select_mask(lg, iou, torch.tensor([True, False]))
    assert out[0].unique().tolist() == [3.0] and out[1].unique().tolist() == [0.0]


@pytest.mark.parametrize("design", ["sam", "cached"])
def test_class_embedding_changes_the_output_and_no_class_is_the_class_free_path(design):
    m = _model(design, classes=True)
    if design == "cached":  # FiLM starts at the identity: give it something to do
        with torch.no_grad():
            m.film.table.weight.normal_(0, 0.5)
    x = torch.randn(1, 1, P, P, P)
    pr, sp = _one_click()
    with torch.no_grad():
        emb = m.embed(x)
        free = m.decode(emb, pr, sp)
        none = m.decode(emb, pr, sp, torch.tensor([0]))
        liver = m.decode(emb, pr, sp, torch.tensor([class_index(class_table(_cfg(design, True)), "liver")]))
    assert torch.equal(free, none)
    assert not torch.allclose(free, liver)


def test_cached_design_without_class_prompts_is_unchanged():
    """A class-free cached model has the same modules, keys and outputs as before class prompts existed, from a
    config with or without the new keys; FiLM starts as the identity; channels + class prompts is refused."""
    old = tiny_prompt_config(patch=P)
    for k in ("sam", "class_prompts", "classes"):
        old["model"].pop(k, None)
    torch.manual_seed(0)
    a = build_model(old).eval()
    b = _model("cached", classes=False)
    c = _model("cached", classes=True)
    assert list(a.state_dict()) == list(b.state_dict())
    assert set(c.state_dict()) - set(a.state_dict()) == {"film.table.weight"}
    x, (pr, _) = torch.randn(1, 1, P, P, P), _one_click()
    with torch.no_grad():
        assert torch.equal(a(x, pr), b(x, pr))
        assert torch.equal(a(x, pr), c(x, pr, cls=torch.tensor([3])))  # zero-initialized FiLM
        with pytest.raises(InputError, match="without class prompts"):
            a.decode(a.embed(x), pr, cls=torch.tensor([1]))
    with pytest.raises(InputError, match="cached or sam"):
        build_model(_cfg("channels", classes=True))


def _organ_dataset(root):
    root = write_toy_dataset(root, n_cases=3, shape=(32, 32, 40), organs=True)
    return root


def test_training_items_carry_classes_and_sparse_prompts(tmp_path):
    root = _organ_dataset(tmp_path / "ds")
    base = _cfg("sam", classes=False)
    base["targets"]["kind_probs"] = {"lesion": 0.5, "organ": 0.5, "all_lesions": 0.0}
    plain = PromptPatchDataset(PromptTask(base, root).config)
    cfg = _cfg("sam", classes=True)
    cfg["targets"] = base["targets"]
    cfg["targets"]["class_dropout"] = 0.0
    task = PromptTask(cfg, root)
    assert task.config["model"]["classes"] == default_classes(cfg["targets"]["held_out"])
    assert "spleen" not in task.config["model"]["classes"]
    ds = PromptPatchDataset(task.config)
    names = {}
    for i in range(12):
        it, ref = ds[i], plain[i]
        for k in ref:  # the class is drawn last: the rest of the item is unchanged
            assert torch.equal(it[k], ref[k]), k
        case_id, kind, target = ds.pick(ds.rng(i))
        want = kind if kind != "organ" else [n for n, v in ORGAN_LABELS.items()
                                             if v == int(ds.targets(case_id)[2][target][0])][0]
        names[want] = int(it["cls"])
        assert int(it["cls"]) == class_index(task.config["model"]["classes"], want)
        # the first click is the sparse prompt's positive point (box corners first when a box was drawn)
        pos = it["points"][it["labels"] == S.POS]
        assert pos.shape == (1, 3) and it["prompts"][0][tuple(int(v) for v in pos[0])] == 1
    assert "lesion" in names and len(names) >= 2
    cfg["targets"]["class_dropout"] = 1.0
    ds1 = PromptPatchDataset(PromptTask(cfg, root).config)
    assert all(int(ds1[i]["cls"]) == 0 for i in range(6))
    # a held-out organ in the class table is refused
    cfg["model"]["classes"] = ["lesion", "spleen"]
    with pytest.raises(Exception, match="held-out"):
        PromptTask(cfg, root)


def test_sam_training_decreases_loss_and_the_checkpoint_reloads_identically(tmp_path):
    root = _organ_dataset(tmp_path / "ds")
    cfg = _cfg("sam", classes=True)
    cfg["clicks"].update(max_iter=1, box_prob=0.0)
    task = PromptTask(cfg, root)
    torch.manual_seed(0)
    model = task.build_model().train()
    ds = PromptPatchDataset(task.config)
    items = [ds[i] for i in range(2)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    batch["n_iter"][:] = 1
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):  # overfit one batch: the loss must go down
        loss, parts = task.training_step(model, batch)
        assert {"mask_loss", "iou_loss", "ambiguous"} <= set(parts) and parts["ambiguous"] == 0  # a mask after 1 round
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    batch["n_iter"][:] = 0  # the first click alone, no box: ambiguous, the best of the 3 candidates is trained
    assert task.training_step(model, batch)[1]["ambiguous"] == 1.0
    path = tmp_path / "run" / "model.safetensors"
    save_weights(model, path, task.config, step=5)
    loaded, lcfg = load_model(path)
    assert loaded.design == "sam" and lcfg["model"]["classes"] == task.config["model"]["classes"]
    model.eval()
    pr, sp = _one_click(1)
    x = batch["image"][:1]
    with torch.no_grad():
        for cls in (None, torch.tensor([1])):
            assert torch.equal(model(x, pr, sparse=sp, cls=cls), loaded(x, pr, sparse=sp, cls=cls))
    # the validation path (sparse prompts without the box, classes) runs
    assert 0.0 <= task.validation_dice(model) <= 1.0


@pytest.fixture
def sam_run(tmp_path):
    cfg = _cfg("sam", classes=True)
    cfg["model"]["classes"] = class_table(cfg)
    torch.manual_seed(0)
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    return tmp_path / "run"


def _pet():
    rng = np.random.default_rng(0)
    arr = rng.random((24, 24, 24)).astype(np.float32)
    arr[10:14, 10:14, 10:14] = 8.0
    return arr, np.diag([2.0, 2.0, 2.0, 1.0])


def test_session_with_design_sam_passes_sparse_prompts_and_classes(sam_run):
    arr, aff = _pet()
    s = PromptSession.from_run(sam_run, (arr, aff), max_zoom=1.0)
    assert s.sparse and "liver" in s.classes and "spleen" not in s.classes
    calls = []
    decode = s.model.decode

    def spy(emb, prompts, **kw):
        calls.append(kw)
        return decode(emb, prompts, **kw)

    s.model.decode = spy
    s.add_point((12, 12, 12), True, object=1)
    s.add_point((11, 12, 12), False, object=1, target_class="Liver")
    s.add_box((2, 2, 2), (6, 6, 6), object=2)
    assert [int((c["sparse"].labels >= 0).sum()) for c in calls] == [1, 2, 2]
    assert "cls" not in calls[0] and int(calls[1]["cls"][0]) == class_index(s.classes, "liver")
    assert s.objects[1].cls == "liver" and s.table()[0]["class"] == "liver"
    s.undo()
    s.undo()
    assert s.objects[1].cls is None  # undo restores the object's class too
    with pytest.raises(InputError, match="unknown class 'spleen'.*held-out organ"):
        s.add_point((12, 12, 12), True, object=3, target_class="spleen")
    assert 3 not in s.objects  # nothing changed


def test_segment_with_design_sam_and_class_prompts(sam_run, tmp_path):
    import nibabel as nib

    from petctfm.cli.main import main

    arr, aff = _pet()
    nib.save(nib.Nifti1Image(arr, aff), tmp_path / "pet.nii.gz")
    doc = {"objects": {"1": {"name": "hot", "class": "lesion"}, "2": {"name": "liver", "class": "liver"}, "3": "x"},
           "prompts": [{"object": 1, "point": [12, 12, 12]}, {"object": 2, "box": [[2, 2, 2], [8, 8, 8]]},
                       {"object": 3, "point": [20, 20, 20]}]}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    spec = read_prompt_file(tmp_path / "p.json")
    assert spec["classes"] == {1: "lesion", 2: "liver"} and spec["kinds"][2] == "organ"
    out = tmp_path / "out"
    assert main(["segment", "--model", str(sam_run), "--pet", str(tmp_path / "pet.nii.gz"), "--prompts",
                 str(tmp_path / "p.json"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["class"] for r in summary["objects"]] == ["lesion", "liver", ""]
    # a held-out organ as a class: one line, exit 3, before any prompt runs
    doc["objects"]["2"]["class"] = "spleen"
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert main(["segment", "--model", str(sam_run), "--pet", str(tmp_path / "pet.nii.gz"), "--prompts",
                 str(tmp_path / "p.json"), "--out", str(tmp_path / "o2")]) == 3
    # not a class name at all: refused when the file is read
    doc["objects"]["2"]["class"] = "banana"
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"objects\['2'\]\.class: \"banana\" is not a class"):
        read_prompt_file(tmp_path / "p.json")


def test_class_on_a_model_without_class_prompts_is_refused(tmp_path):
    cfg = _cfg("cached", classes=False)
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    s = PromptSession.from_run(tmp_path / "run", _pet(), max_zoom=1.0)
    assert s.classes == () and not s.sparse
    with pytest.raises(InputError, match="trained without class prompts"):
        s.add_point((12, 12, 12), True, target_class="lesion")
    s.add_point((12, 12, 12), True)  # class-free prompting as before


def test_viewer_object_menu_passes_known_classes_only():
    from petctfm.serve.state import CaseState

    st = SimpleNamespace(session=SimpleNamespace(classes=("lesion", "all_lesions", "liver")))
    assert CaseState._class_of(st, {"kind": "organ", "name": "liver"}) == {"class": "liver"}
    assert CaseState._class_of(st, {"kind": "lesion"}) == {"class": "lesion"}
    assert CaseState._class_of(st, {"kind": "organ", "name": "spleen"}) == {}  # held out: class-free, zero-shot
    assert CaseState._class_of(st, {}) == {}  # a plain click: no class
    st.session = SimpleNamespace()  # a model without class prompts
    assert CaseState._class_of(st, {"kind": "organ", "name": "liver"}) == {}


def test_experiment_interactive_runs_with_design_sam(sam_run, tmp_path):
    import csv

    from petctfm.cli.main import main

    root = write_toy_dataset(tmp_path / "ds", n_cases=2, shape=(32, 32, 40), organs=True)
    out = tmp_path / "exp"
    assert main(["experiment", "interactive", "--data", str(root), "--model", str(sam_run), "--out", str(out),
                 "--max-cases", "1", "--max-clicks", "2", "--max-targets", "1", "--no-progress",
                 "--protocols", "one_per_lesion,corrective"]) == 0
    with open(out / "steps.csv", newline="") as f:
        got = {(r["protocol"], r["arm"]) for r in csv.DictReader(f)}
    assert {("one_per_lesion", "model"), ("corrective", "model")} <= got


def test_experiment_interactive_class_prompts(sam_run, tmp_path):
    import csv

    from petctfm.cli.main import main

    root = write_toy_dataset(tmp_path / "ds", n_cases=2, shape=(32, 32, 40), organs=True)
    out = tmp_path / "exp"
    assert main(["experiment", "interactive", "--data", str(root), "--model", str(sam_run), "--out", str(out),
                 "--max-cases", "1", "--max-clicks", "2", "--max-targets", "1", "--no-progress",
                 "--protocols", "corrective", "--class-prompts"]) == 0
    info = json.loads((out / "info.json").read_text())
    assert info["class_prompts"] is True and info["design"] == "sam"
    assert "class prompts on" in (out / "results.md").read_text()
    with open(out / "steps.csv", newline="") as f:
        organs = {(r["target"], r["seen"]) for r in csv.DictReader(f) if r["kind"] == "organ"}
    assert ("spleen", "False") in organs  # the held-out organ is still evaluated (class-free)
    # a model without class prompts: one line, exit 3
    cfg = _cfg("cached", classes=False)
    save_weights(build_model(cfg), tmp_path / "plain" / "model.safetensors", cfg, step=0)
    assert main(["experiment", "interactive", "--data", str(root), "--model", str(tmp_path / "plain"), "--out",
                 str(tmp_path / "e2"), "--max-cases", "1", "--no-progress", "--class-prompts"]) == 3


def test_session_feeds_the_decoder_exactly_what_training_does(tmp_path):
    """The same click through the training path (a val-style item: first click, no box) and through PromptSession
    on the same case and crop: identical image crop, prompt channels, sparse prompts (padding slots included:
    they are transformer tokens) and logits. Before the sparse layout had one owner the session passed [click]
    and training [click, PAD, PAD], and the logits differed."""
    from petctfm.data import format as fmt
    from petctfm.methods.promptable.session import ObjectState
    from petctfm.methods.promptable.task import batch_sparse

    root = write_toy_dataset(tmp_path / "ds", n_cases=3, shape=(32, 32, 40))
    task = PromptTask(_cfg("sam"), root)
    ds = PromptPatchDataset(task.config)
    seen = {}
    cut = ds.cut
    ds.cut = lambda case_id, rng, label, box=None: seen.update(case=case_id, box=box) or cut(case_id, rng, label, box)
    net = _model()
    for i in range(40):  # an item whose click lies inside the crop's 1/8 margin (the session keeps that crop)
        item = ds[i]
        t = item["target"][0].numpy() > 0.5
        if t.any() and np.all(np.abs(_interior(t) - (P - 1) / 2) <= P / 2 - P / 8 - 1):
            break
    start = np.array([s.start for s in seen["box"]])
    first = _interior(t)
    prompts = item["prompts"][None].clone()
    prompts[:, 1:] = 0  # the first click only (NEG, BOX, PREV channels empty), as validation does
    sparse = batch_sparse({"points": item["points"][None], "labels": item["labels"][None]}).without_box()
    with torch.no_grad():
        want = net.decode(net.embed(item["image"][None]), prompts, sparse=sparse)
    case = fmt.load_case(root, seen["case"], mmap=False)
    img = np.asarray(case["image"], np.float32)
    aff = np.asarray(case["meta"]["affine"], float)
    s = PromptSession(net, task.config, (img[0], aff), ct=(img[1], aff), max_zoom=1.0, components="all")
    got = {}
    embed, decode = net.embed, net.decode
    net.embed = lambda x: got.update(image=x) or embed(x)
    net.decode = lambda e, pr, **kw: got.update(prompts=pr, **kw, logits=decode(e, pr, **kw)) or got["logits"]
    s.objects[1] = ObjectState(crop=(start, np.array([P] * 3)))  # the training item's crop
    s.add_point(start + first, True, object=1)
    assert s.objects[1].crop[0].tolist() == start.tolist()
    assert torch.equal(got["image"][0], item["image"])
    assert torch.equal(got["prompts"], prompts)
    assert got["sparse"].labels.tolist() == sparse.labels.tolist() == [[S.PAD, S.PAD, S.POS]]
    assert torch.equal(got["sparse"].coords, sparse.coords)
    assert torch.allclose(got["logits"], want, atol=1e-5)


def _interior(t):
    from petctfm.methods.promptable.prompts import interior_point

    return interior_point(t)
