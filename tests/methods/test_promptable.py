"""Promptable segmentation: click simulation, held-out organs, geometry of the session, undo, prompt files."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from toy_data import tiny_prompt_config, write_toy_dataset

from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data import format as fmt
from petctfm.methods.promptable.model import build_model, load_pretrained_encoder
from petctfm.methods.promptable.prompts import ball, corrective_click, encode_prompts, interior_point
from petctfm.methods.promptable.segment import read_prompt_file, segment
from petctfm.methods.promptable.session import Orientation, PromptSession
from petctfm.methods.promptable.task import PromptPatchDataset, PromptTask
from petctfm.evaluate.geometry import grid_of
from petctfm.train.checkpoint import save_weights

SHAPE = (24, 24, 24)


def _cfg():
    return tiny_prompt_config()


def test_interior_point_is_the_centre_of_a_box():
    m = np.zeros(SHAPE, bool)
    m[4:11, 6:13, 8:15] = True
    assert interior_point(m).tolist() == [7, 9, 11]
    assert interior_point(np.zeros(SHAPE, bool)) is None


def test_corrective_click_positive_in_missed_part_negative_in_false_positive():
    target = ball(SHAPE, (12, 12, 12), 6)
    pred = target.copy()
    pred[:, :, 12:] = False  # the upper half is missed
    point, positive = corrective_click(target, pred)
    assert positive and target[tuple(point)] and not pred[tuple(point)]
    pred = target | ball(SHAPE, (3, 3, 20), 3)  # a false-positive blob
    point, positive = corrective_click(target, pred)
    assert not positive and pred[tuple(point)] and not target[tuple(point)]
    assert corrective_click(target, target) is None


def test_encode_prompts_channels():
    prev = np.zeros(SHAPE)
    prev[0, 0, 0] = 1
    ch = encode_prompts(SHAPE, [((5, 5, 5), True), ((15, 15, 15), False)], box=((2, 2, 2), (4, 5, 6)), prev=prev)
    assert ch.shape == (4, *SHAPE)
    assert ch[0, 5, 5, 5] == 1 and ch[0, 15, 15, 15] == 0 and ch[1, 15, 15, 15] == 1
    assert ch[2].sum() == 3 * 4 * 5 and ch[3].sum() == 1


def _organ_dataset(root):
    write_toy_dataset(root, n_cases=3)
    for cid in fmt.load_splits(root)["train"]:
        d = fmt.case_dir(root, cid)
        organs = np.zeros(np.load(d / "label.npy").shape, np.uint8)
        organs[5:15, 5:15, 5:20] = ORGAN_LABELS["liver"]
        organs[30:40, 5:15, 5:20] = ORGAN_LABELS["spleen"]
        organs[5:15, 30:40, 30:40] = ORGAN_LABELS["kidney_left"]
        np.save(d / "organs.npy", organs)
    return root


def test_held_out_organs_never_sampled(tmp_path):
    root = _organ_dataset(tmp_path / "ds")
    cfg = _cfg()
    cfg["targets"]["kind_probs"] = {"lesion": 0.0, "organ": 1.0, "all_lesions": 0.0}
    task = PromptTask(cfg, root)
    ds = PromptPatchDataset(task.config)
    seen = set()
    for i in range(60):
        case_id, kind, target = ds.pick(ds.rng(i))
        organs = np.load(fmt.case_dir(root, case_id) / "organs.npy")
        seen |= set(np.unique(organs[target]).tolist())
    assert seen == {ORGAN_LABELS["liver"]}
    item = ds[0]
    assert item["image"].shape == (1, 16, 16, 16) and item["prompts"].shape == (4, 16, 16, 16)
    # the first click lies inside the target
    assert float((item["prompts"][0] * item["target"][0]).sum()) > 0


def test_pretrained_encoder_is_inflated(tiny_mae_run, tmp_path):
    root = write_toy_dataset(tmp_path / "ds", n_cases=2)
    mae = tiny_mae_run(tmp_path / "mae", root)
    from petctfm.methods.segmentation.task import pretrained_config

    pcfg, state, _ = pretrained_config(mae)
    cfg = _cfg()
    cfg["model"]["backbone"] = pcfg["model"]["backbone"]
    model = build_model(cfg)
    inflated = load_pretrained_encoder(model, state, pcfg["data"]["mode"], "pet")
    assert inflated
    k = inflated[0]
    w = model.backbone.state_dict()[k]
    src = state["backbone." + k] if "backbone." + k in state else state[k]
    assert (w[:, 0] == src[:, 0]).all() and (w[:, 1:] == 0).all()  # PET copied, prompt channels zero


@pytest.fixture
def untrained_run(tmp_path):
    cfg = _cfg()
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    return tmp_path / "run"


def _lps_pet():
    """A PET on an LPS grid with permuted, flipped axes (index x runs Superior->Inferior)."""
    arr = np.random.default_rng(0).random((20, 22, 18)).astype(np.float32)
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)))
    img.SetDirection((0, 1, 0, 0, 0, -1, -1, 0, 0))
    img.SetSpacing((3.0, 2.0, 2.5))
    img.SetOrigin((10.0, -20.0, 100.0))
    return img, arr


def test_orientation_round_trip_and_points():
    img, arr = _lps_pet()
    o = Orientation.of(grid_of(img))
    ras = o.to_ras(arr)
    assert np.array_equal(o.from_ras(ras), arr)
    idx = np.array([3, 17, 5])
    assert ras[tuple(o.index_to_ras(idx).astype(int))] == arr[tuple(idx)]


def test_session_mask_on_lps_input_grid_and_undo(untrained_run, tmp_path):
    img, arr = _lps_pet()
    s = PromptSession.from_run(untrained_run, img)
    lps = img.TransformIndexToPhysicalPoint((3, 17, 5))
    ras = (-lps[0], -lps[1], lps[2])
    assert np.allclose(s.orient.index_to_ras(np.array([3, 17, 5])), s.to_index(ras, "ras"))
    m = s.add_point(lps, True, object=1, space="lps")
    assert m.shape == arr.shape and s.mask().shape == arr.shape
    before = s.mask().copy()
    s.add_point((5, 5, 5), False, object=1)
    s.add_box((0, 0, 0), (4, 4, 4), object=2)
    s.undo()
    s.undo()
    assert np.array_equal(s.mask(), before) and set(s.objects) == {1}
    s.reset(1)
    assert not s.mask().any()
    s.undo()
    assert np.array_equal(s.mask(), before)
    with pytest.raises(InputError, match="outside the image"):
        s.add_point((100, 0, 0))
    # an earlier object keeps its voxels
    full = np.ones(arr.shape, bool)
    s.set_mask(full, object=1)
    s.set_mask(full, object=2)
    assert (s.mask() == 1).all()
    # segment() writes the mask on the input PET grid
    sitk.WriteImage(img, str(tmp_path / "pet.nii.gz"))
    (tmp_path / "p.json").write_text(json.dumps({"space": "voxel", "objects": {"1": "a"},
                                                 "prompts": [{"object": 1, "point": [3, 17, 5]}]}))
    summary = segment(untrained_run, tmp_path / "pet.nii.gz", tmp_path / "p.json", tmp_path / "out")
    out = sitk.ReadImage(str(tmp_path / "out" / "mask.nii.gz"))
    assert out.GetSize() == img.GetSize() and np.allclose(out.GetDirection(), img.GetDirection())
    assert np.allclose(out.GetOrigin(), img.GetOrigin()) and summary["n_objects"] == 1
    assert (tmp_path / "out" / "objects.csv").read_text().startswith("object,name,n_voxels,volume_ml")


def test_prompt_file_object_kinds(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"objects": {"1": "Kidney left", "2": "lesion A", "3": {"name": "thymus", "kind": "organ"},
                                         "4": {"name": "liver", "kind": "lesion"}},
                             "prompts": [{"object": 1, "point": [1, 2, 3]}]}))
    spec = read_prompt_file(p)
    assert spec["kinds"] == {1: "organ", 2: "lesion", 3: "organ", 4: "lesion"}
    assert spec["objects"] == {1: "Kidney left", 2: "lesion A", 3: "thymus", 4: "liver"}


@pytest.mark.parametrize("doc, message", [
    ("not json", "not valid JSON"),
    ({"prompts": []}, "non-empty list"),
    ({"space": "ijk", "prompts": [{"object": 1, "point": [1, 2, 3]}]}, "space 'ijk'"),
    ({"objects": {"1": "a"}, "prompts": [{"object": 2, "point": [1, 2, 3]}]}, r"prompts\[0\]: unknown object id 2"),
    ({"objects": {"1": "a"}, "prompts": [{"object": 1, "point": [1, 2, 3]}, {"object": 1, "point": [1, 2]}]},
     r"prompts\[1\].point: expected 3 numbers"),
    ({"objects": {"1": "a"}, "prompts": [{"object": 1, "point": [1, 2, 3], "box": [[0, 0, 0], [1, 1, 1]]}]},
     "exactly one of"),
    ({"objects": {"1": "a"}, "prompts": [{"object": 1, "point": [1, 2, 3], "positive": "yes"}]}, "true or false"),
    ({"objects": {"x": "a"}, "prompts": [{"object": 1, "point": [1, 2, 3]}]}, "id must be an integer"),
    ({"objects": {"1": {"name": "a", "kind": "tumour"}}, "prompts": [{"object": 1, "point": [1, 2, 3]}]},
     "objects\\['1'\\]: expected"),
])
def test_malformed_prompt_files(tmp_path, doc, message):
    p = tmp_path / "p.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(InputError, match=message) as exc:
        read_prompt_file(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_point_outside_the_image_names_the_entry(untrained_run, tmp_path):
    img, _ = _lps_pet()
    sitk.WriteImage(img, str(tmp_path / "pet.nii.gz"))
    (tmp_path / "p.json").write_text(json.dumps({"objects": {"1": "a"}, "prompts": [
        {"object": 1, "point": [1, 1, 1]}, {"object": 1, "point": [500, 1, 1], "positive": False}]}))
    with pytest.raises(InputError, match=r"p.json: prompts\[1\]: .*outside the image"):
        segment(untrained_run, tmp_path / "pet.nii.gz", tmp_path / "p.json", tmp_path / "out")


def test_cached_embedding_click_path_equals_recomputing(tmp_path):
    """The session's cached crop embedding gives the same masks as re-embedding on every click, and a click
    inside the object's crop runs the mask decoder only."""
    import torch

    cfg = _cfg()
    assert cfg["model"]["design"] == "cached"
    torch.manual_seed(0)
    model = build_model(cfg)
    save_weights(model, tmp_path / "run" / "model.safetensors", cfg, step=0)
    img, arr = _lps_pet()
    clicks = [((10, 11, 9), True), ((12, 11, 9), False), ((9, 12, 8), True), ((11, 10, 10), False)]
    cached = PromptSession.from_run(tmp_path / "run", img, max_zoom=1.0)
    fresh = PromptSession.from_run(tmp_path / "run", img, max_zoom=1.0, cache_size=0)
    for p, positive in clicks:
        assert np.array_equal(cached.add_point(p, positive), fresh.add_point(p, positive))
    assert cached.encodes == 1 and fresh.encodes == len(clicks) and cached.forwards == len(clicks)
    # the same as the model's own forward on the crop (one model definition for training and the session)
    x = torch.randn(1, 1, 16, 16, 16)
    pr = torch.zeros(1, 4, 16, 16, 16)
    pr[0, 0, 8, 8, 8] = 1
    with torch.no_grad():
        assert torch.allclose(model(x, pr), model.decode(model.embed(x), pr))
    # undo restores the crop too: the next click after undo reuses the cache
    cached.undo()
    cached.add_point(*clicks[-1])
    assert cached.encodes == 1


def test_channels_design_still_builds_and_old_configs_default_to_it():
    cfg = _cfg()
    cfg["model"]["design"] = "channels"
    m = build_model(cfg)
    assert m.design == "channels" and m.head is None
    del cfg["model"]["design"]
    assert build_model(cfg).design == "channels"
    cfg["model"]["design"] = "tokens"
    with pytest.raises(InputError, match="model.design"):
        build_model(cfg)


def test_segment_dicom_in_writes_one_seg_with_a_segment_per_object(untrained_run, tmp_path):
    import highdicom as hd

    from petctfm.cli.main import main
    from petctfm.io.dicom_read import read_volume
    from petctfm.synth.writers import synthesize

    synthesize(tmp_path / "synth", n_cases=1, seed=0, size="tiny", formats=["dicom"], progress=False)
    study = next((tmp_path / "synth" / "dicom").iterdir())
    (tmp_path / "p.json").write_text(json.dumps({"objects": {"1": "hot spot", "2": "liver"}, "prompts": [
        {"object": 1, "point": [10, 10, 10]}, {"object": 2, "box": [[2, 2, 2], [6, 6, 6]]}]}))
    out = tmp_path / "out"
    assert main(["segment", "--model", str(untrained_run), "--pet", str(study / "PT"), "--ct", str(study / "CT"),
                 "--prompts", str(tmp_path / "p.json"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dicom_seg"] == ["mask.seg.dcm"]
    lab = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "mask.nii.gz"))), (2, 1, 0))  # (X, Y, Z)
    present = [k for k in (1, 2) if (lab == k).any()]
    assert present
    pt_files = sorted(str(p.relative_to(study)) for p in (study / "PT").iterdir())
    _, pts = read_volume(study, pt_files)
    seg = hd.seg.segread(out / "mask.seg.dcm")
    descs = list(seg.SegmentSequence)
    assert len(descs) == len(present)
    assert {d.SegmentAlgorithmType for d in descs} == {"SEMIAUTOMATIC"}
    expected = {1: ("hot spot", "108369006"), 2: ("liver", "10200004")}  # SCT neoplasm / liver
    assert [(d.SegmentLabel, d.SegmentedPropertyTypeCodeSequence[0].CodeValue) for d in descs] == [
        expected[k] for k in present]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in pts],
                                               segment_numbers=list(range(1, len(present) + 1)))
    for i, k in enumerate(present):  # [slice, rows, cols] per segment == the object's voxels
        np.testing.assert_array_equal(pixels[..., i], np.transpose(lab == k, (2, 1, 0)))
    # a DICOM PET folder without --ct: a one-line usage error (exit 2)
    assert main(["segment", "--model", str(untrained_run), "--pet", str(study / "PT"), "--prompts",
                 str(tmp_path / "p.json"), "--out", str(tmp_path / "o2")]) == 2


@pytest.mark.parametrize("design", ["cached", "channels", "sam"])
def test_prompt_train_cli_design(tmp_path, design):
    import yaml

    from petctfm.cli.main import main
    from petctfm.train.checkpoint import load_model

    root = write_toy_dataset(tmp_path / "ds", n_cases=3, shape=(32, 32, 40))
    assert main(["prompt-train", "--data", str(root), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--design", design, "--patch", "16", "--max-steps", "2", "--figure-every", "0",
                 *(["--class-prompts"] if design == "sam" else []),
                 "--checkpoint-every", "2", "--num-workers", "0", "--device", "cpu"]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["task"]["model"]["design"] == design
    model, _ = load_model(tmp_path / "run")
    assert model.design == design
    if design == "sam":  # the class table travels with the run (training targets only)
        assert "liver" in cfg["task"]["model"]["classes"] and "spleen" not in cfg["task"]["model"]["classes"]
        assert model.n_classes == len(cfg["task"]["model"]["classes"])


class _ThresholdModel:
    """A stand-in network: the 'embedding' is the crop itself and the decoder marks every voxel of normalized
    PET above 3 (hot structures), whatever the prompts: it spills into every hot structure in view."""

    def to(self, device):
        return self

    def eval(self):
        return self

    def embed(self, x):
        return x

    def decode(self, emb, prompts):
        return (emb[:, :1] > 3).float() * 20 - 10


@pytest.mark.parametrize("components", ["all", "prompted"])
def test_prompted_components_drop_spill_away_from_the_click(components):
    suv = np.full(SHAPE, 0.5, np.float32)
    suv[9:12, 9:12, 9:12] = 10.0  # the clicked lesion
    suv[15:17, 4:6, 10:12] = 10.0  # hot physiology in the same crop, not connected to it
    img = sitk.GetImageFromArray(np.transpose(suv, (2, 1, 0)))
    img.SetSpacing((2.0, 2.0, 2.0))
    s = PromptSession(_ThresholdModel(), _cfg(), img, max_zoom=1.0, components=components)
    m = s.add_point((10, 10, 10), True, object=1) > 0
    assert m[9:12, 9:12, 9:12].all()
    assert m[15:17, 4:6, 10:12].all() == (components == "all") and m.sum() == (27 + 8 if components == "all" else 27)
    # a second positive click on the other structure keeps both
    if components == "prompted":
        assert (s.add_point((15, 4, 10), True, object=1) > 0).sum() == 35
        s2 = PromptSession(_ThresholdModel(), _cfg(), img, max_zoom=1.0, components=components)
        assert (s2.add_box((8, 8, 8), (12, 12, 12), object=1) > 0).sum() == 27  # the box reaches the lesion only
    with pytest.raises(InputError, match="components"):
        PromptSession(_ThresholdModel(), _cfg(), img, components="largest")
