"""The viewer's manual tools (``petctfm.serve.tools`` and their API actions): brush, eraser, isocontour, box
threshold, negative clicks on false positives, plausibility flags, confirm, and the sparse mask update. Values
are checked against counts made here independently (balls of integer offsets on a constructed case)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("fastapi")

from serve_fixtures import page_client, prompt_config, stub_session, threshold_auto  # noqa: E402
from petctfm.core.errors import InputError  # noqa: E402
from petctfm.methods.promptable.prompts import PREV  # noqa: E402
from petctfm.methods.promptable.session import PromptSession  # noqa: E402
from petctfm.serve import tools  # noqa: E402
from petctfm.serve.app import Server  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402

SHAPE, SP = (48, 48, 48), 4.0  # 4 mm voxels: 0.064 ml
A, B = (12, 24, 24), (36, 24, 24)  # a lesion (core SUV 10 r <= 2, shell SUV 5 r <= 4) and a hot blob (SUV 7, r <= 3)


def ball_count(r: float) -> int:
    """Integer offsets d with |d| <= r (voxels): the voxel count of a ball, counted here, not by the code."""
    n = int(np.floor(r))
    g = np.mgrid[-n:n + 1, -n:n + 1, -n:n + 1]
    return int(((g ** 2).sum(0) <= r * r + 1e-9).sum())


def disc_count(r: float) -> int:
    n = int(np.floor(r))
    g = np.mgrid[-n:n + 1, -n:n + 1]
    return int(((g ** 2).sum(0) <= r * r + 1e-9).sum())


def constructed_suv() -> np.ndarray:
    g = np.indices(SHAPE)
    d = lambda c: np.sqrt(sum((g[i] - c[i]) ** 2 for i in range(3)))  # noqa: E731
    suv = np.ones(SHAPE, np.float32)
    suv[d(A) <= 4] = 5.0
    suv[d(A) <= 2] = 10.0
    suv[d(B) <= 3] = 7.0
    return suv


@pytest.fixture
def case(tmp_path):
    """A constructed PET/CT pair (identity direction, 4 mm voxels) written as NIfTI; its case id."""
    import SimpleITK as sitk

    for name, arr in (("case_pet", constructed_suv()), ("case_ct", np.zeros(SHAPE, np.float32))):
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
        img.SetSpacing((SP, SP, SP))
        sitk.WriteImage(img, str(tmp_path / f"{name}.nii.gz"))
    return tmp_path / "case_pet.nii.gz", tmp_path / "case_ct.nii.gz"


class GrowNet(torch.nn.Module):
    """A network that ignores negative clicks and grows the previous mask by one voxel (the reported bug: a
    negative click on a false positive grew it from 2.25 to 2.98 ml)."""

    def embed(self, img):
        return img

    def decode(self, emb, prompts):
        return 10.0 * F.max_pool3d(prompts[:, PREV:PREV + 1], 3, 1, 1) - 5.0


def _server(case, tmp_path, net=None, auto=None):
    pet, ct = case
    factory = stub_session if net is None else (lambda p, c: PromptSession(net, prompt_config(), p, ct=c))
    server = Server(CaseList(pet=pet, ct=ct), tmp_path / "out", factory, auto)
    c = page_client(server)
    cid = c.get("/api/cases").json()["cases"][0]["id"]
    assert c.post(f"/api/cases/{cid}/open").status_code == 200
    return server, c, cid


def _ras(v):
    """Voxel -> RAS mm for the constructed case (origin 0, identity direction, LPS -> RAS flips x and y)."""
    return [-SP * v[0], -SP * v[1], SP * v[2]]


def _post(c, cid, action, **body):
    r = c.post(f"/api/cases/{cid}/{action}", json={"version": c.get(f"/api/cases/{cid}/state").json()["version"],
                                                   **body})
    assert r.status_code == 200, r.text
    return r.json()


# -- the functions ------------------------------------------------------------------------------------------

def test_brush_mask_counts_and_clipping():
    sp = (SP, SP, SP)
    assert tools.brush_mask(SHAPE, sp, [[24, 24, 24]], 8.0).sum() == ball_count(2) == 33
    disc = tools.brush_mask(SHAPE, sp, [[24, 24, 24]], 8.0, axis=2)
    assert disc.sum() == disc_count(2) == 13 and np.flatnonzero(disc.any((0, 1))).tolist() == [24]
    g = np.mgrid[0:3, 0:3, 0:3]
    assert tools.brush_mask(SHAPE, sp, [[0, 0, 0]], 8.0).sum() == ((g ** 2).sum(0) <= 4).sum() == 11  # the corner
    two = tools.brush_mask(SHAPE, sp, [[10, 10, 10], [11, 10, 10]], 4.0)
    assert two.sum() == 2 * ball_count(1) - 2  # two overlapping 7-voxel balls share 2 voxels
    with pytest.raises(InputError, match="radius"):
        tools.brush_mask(SHAPE, sp, [[1, 1, 1]], 0.0)


def test_isocontour_fraction_fixed_and_box():
    suv = constructed_suv()
    region, info = tools.isocontour(suv, (SP,) * 3, (A[0] + 3, A[1], A[2]))  # clicked in the shell, peak 10 nearby
    assert info["peak"] == 10.0 and info["threshold"] == pytest.approx(4.1) and not info["touches_box"]
    assert region.sum() == ball_count(4) and region[A]
    region, info = tools.isocontour(suv, (SP,) * 3, A, threshold=6.0)  # fixed SUV: only the core
    assert region.sum() == ball_count(2) and info["peak"] is None
    region, info = tools.isocontour(suv, (SP,) * 3, A, fraction=0.41, box_mm=8.0)  # a box smaller than the lesion
    assert info["touches_box"] and region.sum() < ball_count(4)
    with pytest.raises(InputError, match="below the threshold"):
        tools.isocontour(suv, (SP,) * 3, (2, 2, 2), threshold=6.0)


def test_box_threshold_and_negative_click_and_flags():
    suv = constructed_suv()
    inside = tools.box_threshold(suv, (8, 20, 20), (16, 28, 28), 4.5)
    assert inside.sum() == ball_count(4)
    half = tools.box_threshold(suv, (8, 20, 20), (12, 28, 28), 4.5)  # the box cuts the lesion at x = 12
    assert half.sum() == ball_count(4) // 2 + disc_count(4) // 2 + 1 and not half[13:].any()
    blob = np.zeros(SHAPE, bool)
    blob[30:40, 20:28, 20:28] = True
    grown = np.zeros(SHAPE, bool)
    grown[29:41, 19:29, 19:29] = True
    unprompted = tools.negative_click(blob, grown, (35, 24, 24), prompted=False)
    assert not unprompted.any()  # the false positive's component is gone, the growth never kept
    prompted = tools.negative_click(blob, grown, (35, 24, 24), prompted=True)
    assert prompted.sum() == blob.sum() - 27 and not prompted[35, 24, 24] and not (prompted & ~blob).any()
    assert tools.implausible(10, 557.0, None) == ["557 ml, over 200 ml"]
    assert tools.implausible(10, 1.0, {"liver": 8, "spleen": 1}) == ["80 % inside the liver"]
    assert tools.implausible(10, 1.0, {"liver": 5}) == []
    before = np.zeros(SHAPE, np.uint8)
    after = before.copy()
    after[3:5, 6, 7:10] = 2
    assert tools.changed_box(before, after) == {"lo": [3, 6, 7], "hi": [5, 7, 10]}
    assert tools.changed_box(before, before) is None


# -- the actions through the API ----------------------------------------------------------------------------

def test_brush_erase_undo_audit_and_sparse_mask(case, tmp_path):
    server, c, cid = _server(case, tmp_path)
    st = server.open_cases[cid]
    free = (24, 10, 24)
    out = _post(c, cid, "brush", points=[_ras(free)], radius_mm=8.0, user="r1")
    assert [(r["object"], r["n_voxels"]) for r in out["lesions"]] == [(1, 33)]
    assert out["lesions"][0]["volume_ml"] == pytest.approx(33 * 0.064)
    assert out["changed"] == {"lo": [22, 8, 22], "hi": [27, 13, 27]}
    # the sparse update: only the changed box, uint8 labels, x fastest
    r = c.get(f"/api/cases/{cid}/mask", params={"box": "22,8,22,27,13,27"})
    assert r.headers["x-version"] == str(out["version"]) and len(r.content) == 125
    got = np.frombuffer(r.content, np.uint8).reshape((5, 5, 5), order="F")
    np.testing.assert_array_equal(got, st.labels()[22:27, 8:13, 22:27])
    full = np.frombuffer(c.get(f"/api/cases/{cid}/mask").content, np.uint8).reshape(SHAPE, order="F")
    assert (full == 1).sum() == 33
    assert c.get(f"/api/cases/{cid}/mask", params={"box": "0,0,0,99,1,1"}).status_code == 422
    # a 2D stroke of two points in the axial plane grows the same object (the stroke starts on it)
    g = np.indices(SHAPE)
    dist2 = lambda c: sum((g[i] - c[i]) ** 2 for i in range(3))  # noqa: E731
    ref = (dist2(free) <= 4) | (((dist2((24, 10, 26)) <= 1) | (dist2((25, 10, 26)) <= 1)) & (g[2] == 26))
    out = _post(c, cid, "brush", points=[_ras((24, 10, 26)), _ras((25, 10, 26))], radius_mm=4.0, plane="axial")
    assert out["lesions"][0]["n_voxels"] == ref.sum() == 33 + 2 * disc_count(1) - 2 - 1 and len(out["lesions"]) == 1
    # the eraser: a 3D ball of radius 1 voxel inside the first sphere
    out = _post(c, cid, "erase", points=[_ras(free)], radius_mm=4.0)
    assert out["lesions"][0]["n_voxels"] == ref.sum() - ball_count(1)
    out = _post(c, cid, "undo")
    assert out["lesions"][0]["n_voxels"] == ref.sum()
    out = _post(c, cid, "redo")
    assert out["lesions"][0]["n_voxels"] == ref.sum() - 7
    # erasing everything of an object removes it; erasing nothing is refused
    out = _post(c, cid, "erase", points=[_ras(free), _ras((24, 10, 26))], radius_mm=12.0)
    assert out["lesions"] == []
    r = c.post(f"/api/cases/{cid}/erase", json={"version": out["version"], "points": [_ras(free)], "radius_mm": 4.0})
    assert r.status_code == 422 and "touched no object" in r.json()["error"]
    for bad, err in (({"radius_mm": 0}, "radius"), ({"radius_mm": "5"}, "radius_mm"),
                     ({"plane": "oblique"}, "plane must be"), ({"points": []}, "points")):
        r = c.post(f"/api/cases/{cid}/brush", json={"version": out["version"], "points": [_ras(free)], **bad})
        assert r.status_code == 422 and err in r.json()["error"], r.text
    log = [json.loads(line) for line in (server.out / cid / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["brush", "brush", "erase", "undo", "redo", "erase"]
    assert log[0]["voxels"] == [list(free)] and log[0]["radius_mm"] == 8.0 and log[0]["user"] == "r1"


def test_brush_keeps_other_objects_and_selected_object(case, tmp_path):
    server, c, cid = _server(case, tmp_path)
    _post(c, cid, "brush", points=[_ras((24, 10, 24))], radius_mm=8.0)  # object 1
    out = _post(c, cid, "brush", points=[_ras((24, 14, 24))], radius_mm=8.0, object=2)  # overlaps object 1
    rows = {r["object"]: r["n_voxels"] for r in out["lesions"]}
    ref = tools.brush_mask(SHAPE, (SP,) * 3, [[24, 14, 24]], 8.0) & ~tools.brush_mask(SHAPE, (SP,) * 3, [[24, 10, 24]], 8.0)
    assert rows == {1: 33, 2: int(ref.sum())} and rows[2] < 33  # object 1 kept its voxels


def test_grow_isocontour_and_threshold_in_box(case, tmp_path):
    server, c, cid = _server(case, tmp_path)
    out = _post(c, cid, "grow", ras=_ras((A[0] + 3, A[1], A[2])))
    assert [(r["object"], r["n_voxels"]) for r in out["lesions"]] == [(1, ball_count(4))]
    assert out["info"]["threshold"] == pytest.approx(4.1) and out["info"]["peak"] == 10.0
    assert out["lesions"][0]["suv_max"] == 10.0 and out["lesions"][0]["peak_voxel"][0] in range(A[0] - 2, A[0] + 3)
    out = _post(c, cid, "grow", ras=_ras(A), suv=6.0)  # on the object: a fixed SUV replaces its mask
    assert [(r["object"], r["n_voxels"]) for r in out["lesions"]] == [(1, ball_count(2))]
    out = _post(c, cid, "threshold", lo=_ras((32, 20, 20)), hi=_ras((40, 28, 28)), suv=6.5)
    assert {r["object"]: r["n_voxels"] for r in out["lesions"]} == {1: ball_count(2), 2: ball_count(3)}
    out = _post(c, cid, "threshold", lo=_ras((8, 20, 20)), hi=_ras((12, 28, 28)), fraction=0.5, object=1)
    # the box's SUVmax is 10, so SUV >= 5 inside it: the half lesion (x <= 12), object 1's core outside it kept
    half = ball_count(4) // 2 + disc_count(4) // 2 + 1
    assert {r["object"]: r["n_voxels"] for r in out["lesions"]}[1] == half + (ball_count(2) - disc_count(2)) // 2
    r = c.post(f"/api/cases/{cid}/threshold", json={"version": out["version"], "lo": _ras((0, 0, 0)),
                                                   "hi": _ras((3, 3, 3)), "suv": 4.0})
    assert r.status_code == 422 and "no voxel of the box" in r.json()["error"]
    r = c.post(f"/api/cases/{cid}/grow", json={"version": out["version"], "ras": _ras((2, 2, 2)), "suv": 6.0})
    assert r.status_code == 422 and "below the threshold" in r.json()["error"]
    for _ in range(4):
        out = _post(c, cid, "undo")
    assert out["lesions"] == []


def test_negative_click_removes_a_false_positive_with_a_growing_network(case, tmp_path):
    """The reported bug on a constructed case: a network that grows the mask whatever the click. The automatic
    mask (SUV > 6) makes two objects: the lesion core and the hot blob B (a false positive)."""
    server, c, cid = _server(case, tmp_path, net=GrowNet(), auto=threshold_auto())
    out = _post(c, cid, "auto")
    sizes = {r["object"]: r["n_voxels"] for r in out["lesions"]}
    assert sorted(sizes.values()) == sorted([ball_count(2), ball_count(3)])
    fp = next(k for k, n in sizes.items() if n == ball_count(3))
    out = _post(c, cid, "click", ras=_ras(B), positive=False)
    assert fp not in [r["object"] for r in out["lesions"]] and out["totals"]["count"] == 1
    assert not server.open_cases[cid].labels()[30:42, 18:30, 18:30].any()
    out = _post(c, cid, "undo")
    assert {r["object"]: r["n_voxels"] for r in out["lesions"]} == sizes
    # a clicked object: the growing network cannot make it larger; the voxels around the click go
    keep = next(k for k in sizes if k != fp)
    out = _post(c, cid, "click", ras=_ras(A), positive=True, object=keep)
    grown = {r["object"]: r["n_voxels"] for r in out["lesions"]}[keep]
    assert grown > sizes[keep]  # the network grew it on the positive click (that is what it does)
    out = _post(c, cid, "click", ras=_ras((A[0] + 1, A[1], A[2])), positive=False, object=keep)
    after = {r["object"]: r["n_voxels"] for r in out["lesions"]}[keep]
    assert after == grown - 27  # never larger; the 3x3x3 around the click removed


def test_flags_confirm_and_organ_map(phantom, tmp_path):
    """The phantom's automatic mask (SUV > 6) holds the brain (over 200 ml, inside the brain of the case's organ
    map): flagged; "confirm" keeps it without asking again, and undo takes the confirmation back."""
    server = Server(CaseList(phantom / "autopet"), tmp_path / "out", stub_session, threshold_auto())
    c = page_client(server)
    cid = "PETCT_0000"
    c.post(f"/api/cases/{cid}/open")
    assert server.open_cases[cid].organ_map is not None
    out = _post(c, cid, "auto")
    assert out["organ_map"] and out["max_ml"] == 200.0
    big = max(out["lesions"], key=lambda r: r["volume_ml"])
    assert big["volume_ml"] > 200 and any("over 200 ml" in f for f in big["flags"])
    assert any("inside the brain" in f for f in big["flags"]) and not big["confirmed"]
    small = [r for r in out["lesions"] if r["volume_ml"] < 5 and r["flags"] == []]
    assert small, "small lesions outside organs are not flagged"
    out = _post(c, cid, "confirm", object=big["object"])
    assert next(r for r in out["lesions"] if r["object"] == big["object"])["confirmed"]
    assert out["changed"] is None  # no voxel changed: nothing to repaint
    again = Server(CaseList(phantom / "autopet"), server.out, stub_session)  # a restart keeps the answer
    c2 = page_client(again)
    resumed = c2.post(f"/api/cases/{cid}/open").json()
    assert next(r for r in resumed["lesions"] if r["object"] == big["object"])["confirmed"]
    out = _post(c, cid, "undo")
    assert not next(r for r in out["lesions"] if r["object"] == big["object"])["confirmed"]
    r = c.post(f"/api/cases/{cid}/confirm", json={"version": out["version"], "object": "x"})
    assert r.status_code == 422 and "object" in r.json()["error"]
