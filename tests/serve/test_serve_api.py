"""``petctfm serve`` API: token, path traversal, corrupt cases, version check, clicks, undo/redo, save, audit."""

from __future__ import annotations

import json
import logging
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from serve_fixtures import BASE, lesion_voxel, page_client, prompt_config, stub_session, threshold_auto  # noqa: E402,E501
from petctfm.core.errors import InputError  # noqa: E402
from petctfm.serve.app import Server, create_app, make_server  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402

CASE = "PETCT_0000"
_client = page_client


@pytest.fixture
def server(phantom, tmp_path):
    return Server(CaseList(phantom / "autopet"), tmp_path / "out", stub_session, threshold_auto())


def _ras(server, case, voxel):
    st = server.open_cases[case]
    lps = (st.session.grid.index_to_lps @ np.append(np.asarray(voxel, float), 1.0))[:3]
    return (lps * [-1, -1, 1]).tolist()


def test_token_required_on_every_route(server):
    c = TestClient(create_app(server), base_url=BASE)
    for path in ("/", "/api/cases", "/static/index.html", f"/api/cases/{CASE}/state"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"X-Petctfm-Token": "nope"}).status_code == 403, path
    assert c.post(f"/api/cases/{CASE}/open", params={"token": "x" * 32}).status_code == 403
    page = c.get("/", params={"token": server.token})
    assert page.status_code == 200 and "niivue" in page.text
    cookie = page.headers["set-cookie"].lower()
    assert cookie.startswith("petctfm_token_8765=") and "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/cases").status_code == 200  # the cookie the page got
    assert "access-control-allow-origin" not in page.headers


def test_traversal_and_unknown_ids_are_404_and_logged(server, caplog):
    c = _client(server)
    with caplog.at_level(logging.WARNING, logger="petctfm.serve"):
        for path in ("/api/cases/..%2F..%2Fetc%2Fpasswd/open", "/api/cases/%2Fetc%2Fpasswd/open",
                     "/api/cases/../../etc/passwd/state", "/static/..%2Fapp.py", "/static/%2Fetc%2Fpasswd",
                     "/api/cases/PETCT_9999/open"):
            r = c.post(path) if path.endswith("open") else c.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text)
    assert "path traversal" in caplog.text and "PETCT_9999" in caplog.text
    assert c.get("/api/cases").json()["cases"] == [{"id": CASE, "open": False}]


def test_corrupt_case_is_an_error_and_the_server_keeps_serving(phantom, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom / "autopet" / CASE, data / "good")
    shutil.copytree(phantom / "autopet" / CASE, data / "broken")
    (data / "broken" / "SUV.nii.gz").write_bytes(b"\x1f\x8b not a nifti")
    server = Server(CaseList(data), tmp_path / "out", stub_session)
    c = _client(server)
    r = c.post("/api/cases/broken/open")
    assert r.status_code == 422 and "broken" in r.json()["error"] and "SUV.nii.gz" in r.json()["error"]
    r = c.post("/api/cases/good/open")
    assert r.status_code == 200 and r.json()["version"] == 0
    assert c.get("/api/cases/good/volume/pet.nii.gz").status_code == 200


def test_click_undo_redo_save_on_input_grid_with_audit(server, phantom):
    import nibabel as nib

    c = _client(server)
    st = c.post(f"/api/cases/{CASE}/open").json()
    assert st["lesions"] == [] and not st["can_undo"]
    centre, seg = lesion_voxel(phantom)
    r = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "user": "dr.who", "ras": _ras(server, CASE, centre)})
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["version"] == 1 and st["totals"]["count"] == 1 and st["totals"]["mtv_ml"] > 0
    row = st["lesions"][0]
    assert row["object"] == 1 and row["suv_max"] >= row["suv_mean"] > 0 and row["tlg"] == pytest.approx(
        row["suv_mean"] * row["volume_ml"])
    # the page's mask: uint8 labels, x fastest (gzip on the wire), the whole image or the box of the last change
    m = c.get(f"/api/cases/{CASE}/mask")
    shape = tuple(int(s) for s in m.headers["x-shape"].split(","))
    assert m.headers["content-encoding"] == "gzip" and len(m.content) == np.prod(shape)
    assert np.frombuffer(m.content, np.uint8).reshape(shape, order="F")[tuple(centre)] == 1
    box = st["changed"]
    assert all(lo <= v < hi for lo, v, hi in zip(box["lo"], centre, box["hi"]))
    part = c.get(f"/api/cases/{CASE}/mask", params={"box": ",".join(map(str, box["lo"] + box["hi"]))}).content
    size = np.subtract(box["hi"], box["lo"])
    assert len(part) == np.prod(size) < np.prod(shape) / 100 and np.frombuffer(part, np.uint8).sum() == row["n_voxels"]
    # a second click in the same lesion goes to the same object; undo, redo
    st = c.post(f"/api/cases/{CASE}/click", json={"version": 1, "ras": _ras(server, CASE, centre + [1, 0, 0])}).json()
    assert st["totals"]["count"] == 1 and st["lesions"][0]["n_points"] == 2
    st = c.post(f"/api/cases/{CASE}/undo", json={"version": 2}).json()
    assert st["lesions"][0]["n_points"] == 1 and st["can_redo"]
    st = c.post(f"/api/cases/{CASE}/redo", json={"version": 3}).json()
    assert st["lesions"][0]["n_points"] == 2 and not st["can_redo"]
    # autosave after each change, then save: NIfTI on the input PET grid with the clicked lesion
    out = server.out / CASE
    assert (out / "mask.nii.gz").is_file()
    saved = c.post(f"/api/cases/{CASE}/save", json={"user": "dr.who"}).json()
    assert any(f.endswith("lesions.csv") for f in saved["files"])
    pet = nib.load(phantom / "autopet" / CASE / "SUV.nii.gz")
    mask = nib.load(out / "mask.nii.gz")
    assert mask.shape == pet.shape and np.allclose(mask.affine, pet.affine, atol=1e-4)
    arr = np.asarray(mask.dataobj)
    assert arr[tuple(centre)] == 1 and seg[tuple(centre)] > 0
    log = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["click", "click", "undo", "redo", "save"]
    assert log[0]["user"] == "dr.who" and log[0]["voxel"] == centre.tolist() and "time" in log[0]
    assert log[2]["user"] == "anonymous"


def test_automatic_negative_click_and_delete(server):
    c = _client(server)
    c.post(f"/api/cases/{CASE}/open")
    st = c.post(f"/api/cases/{CASE}/auto", json={"version": 0}).json()
    n = st["totals"]["count"]
    assert n >= 1 and [r["object"] for r in st["lesions"]] == list(range(1, n + 1))
    st_obj = server.open_cases[CASE]
    k = st["lesions"][-1]["object"]
    vox = np.argwhere(st_obj.session.mask() == k)[0]
    st = c.post(f"/api/cases/{CASE}/click", json={"version": 1, "positive": False, "ras": _ras(server, CASE, vox)}).json()
    assert st_obj.session.mask()[tuple(vox)] == 0  # shift-click removed voxels of that lesion
    # the server's one-pass table = PromptSession.table (the owner of the per-object quantities)
    ref = {r["object"]: r for r in st_obj.session.table() if r["n_voxels"]}
    assert {r["object"] for r in st["lesions"] if r["n_voxels"]} == set(ref)
    for r in st["lesions"]:
        if r["n_voxels"]:
            for key in ("n_voxels", "volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg"):
                assert r[key] == pytest.approx(ref[r["object"]][key], rel=1e-5), (r["object"], key)
    st = c.post(f"/api/cases/{CASE}/delete", json={"version": 2, "object": 1}).json()
    assert 1 not in [r["object"] for r in st["lesions"]]
    st = c.post(f"/api/cases/{CASE}/undo", json={"version": 3}).json()
    assert 1 in [r["object"] for r in st["lesions"]]
    for v in (4, 5):
        st = c.post(f"/api/cases/{CASE}/undo", json={"version": v}).json()
    assert st["lesions"] == [] and st["totals"]["count"] == 0  # one undo takes back the whole automatic run
    r = c.post(f"/api/cases/{CASE}/undo", json={"version": 6})
    assert r.status_code == 422 and "nothing to undo" in r.json()["error"]


def test_two_tabs_cannot_interleave(server, phantom):
    c = _client(server)
    c.post(f"/api/cases/{CASE}/open")
    centre, _ = lesion_voxel(phantom)
    ras = _ras(server, CASE, centre)
    codes, barrier = [], threading.Barrier(4)

    def click():
        barrier.wait()
        codes.append(c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": ras}).status_code)

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 409, 409, 409]  # exactly one tab's click applied
    st = c.get(f"/api/cases/{CASE}/state").json()
    assert st["version"] == 1 and st["lesions"][0]["n_points"] == 1
    r = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": ras})
    assert r.status_code == 409 and "another tab" in r.json()["error"]


def test_bad_requests(server):
    c = _client(server)
    c.post(f"/api/cases/{CASE}/open")
    assert c.post(f"/api/cases/{CASE}/click", content=b"x" * (2 << 20)).status_code == 413
    assert c.post(f"/api/cases/{CASE}/click", json={"ras": [0, 0, 0]}).status_code == 422  # no version
    r = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": [1e6, 0, 0]})
    assert r.status_code == 422 and "outside the image" in r.json()["error"]
    r = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "positive": False, "ras": _ras(server, CASE, [0, 0, 0])})
    assert r.status_code == 422 and "negative click" in r.json()["error"]
    assert c.post(f"/api/cases/{CASE}/frobnicate", json={"version": 0}).status_code == 404
    assert c.get(f"/api/cases/{CASE}/volume/seg.nii.gz").status_code == 404
    assert c.get("/api/cases", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


def test_autosave_resumes_after_restart(server, phantom, tmp_path):
    c = _client(server)
    c.post(f"/api/cases/{CASE}/open")
    centre, _ = lesion_voxel(phantom)
    c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": _ras(server, CASE, centre)})
    again = Server(CaseList(phantom / "autopet"), server.out, stub_session)
    st = _client(again).post(f"/api/cases/{CASE}/open").json()
    assert st["totals"]["count"] == 1 and again.open_cases[CASE].session.mask()[tuple(centre)] == 1


def test_organ_objects_are_listed_apart_validated_and_resumed(server, phantom):
    c = _client(server)
    c.post(f"/api/cases/{CASE}/open")
    centre, _ = lesion_voxel(phantom)
    shape = np.array(server.open_cases[CASE].session.grid.shape)
    far = np.where(centre < shape // 2, shape - 4, 3)  # a voxel away from the lesion
    st = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": _ras(server, CASE, centre)}).json()
    lesion_totals = st["totals"]
    for bad, err in (({"kind": "tumour"}, "kind must be"), ({"kind": "organ", "name": "pancreas"}, "unknown organ"),
                     ({"kind": "organ", "name": "liver", "positive": False}, "no liver yet")):
        r = c.post(f"/api/cases/{CASE}/click", json={"version": 1, "ras": _ras(server, CASE, far), **bad})
        assert r.status_code == 422 and err in r.json()["error"], r.text
    st = c.post(f"/api/cases/{CASE}/click", json={"version": 1, "ras": _ras(server, CASE, far), "kind": "organ",
                                                 "name": "Kidney left"}).json()
    assert [(r["object"], r["kind"], r["name"]) for r in st["organs"]] == [(2, "organ", "kidney_left")]
    assert [r["kind"] for r in st["lesions"]] == ["lesion"] and st["organs"][0]["volume_ml"] > 0
    assert st["totals"] == lesion_totals  # organs are not counted in MTV / TLG
    # a second organ click (anywhere) refines the same organ; a plain click makes a lesion
    st = c.post(f"/api/cases/{CASE}/click", json={"version": 2, "ras": _ras(server, CASE, far - 1), "kind": "organ",
                                                 "name": "kidney_left"}).json()
    assert len(st["organs"]) == 1 and st["organs"][0]["n_points"] == 2
    names = {o["name"]: o["held_out"] for o in c.get("/api/cases").json()["organs"]}
    assert "liver" in names and "background" not in names and not any(names.values())  # stub: no config
    saved = c.post(f"/api/cases/{CASE}/save", json={}).json()["files"]
    assert any(f.endswith("organs.csv") for f in saved)
    # a new server resumes the kinds from objects.json
    again = Server(CaseList(phantom / "autopet"), server.out, stub_session)
    st = _client(again).post(f"/api/cases/{CASE}/open").json()
    assert [r["name"] for r in st["organs"]] == ["kidney_left"] and len(st["lesions"]) == 1


def test_dicom_case_saves_dicom_seg(phantom, tmp_path):
    import highdicom as hd

    server = Server(CaseList(phantom / "dicom"), tmp_path / "out", stub_session)
    c = _client(server)
    case = c.get("/api/cases").json()["cases"][0]["id"]
    st = c.post(f"/api/cases/{case}/open").json()
    assert st["dicom"] is True
    shape = np.array(server.open_cases[case].session.grid.shape)
    c.post(f"/api/cases/{case}/click", json={"version": 0, "ras": _ras(server, case, shape // 2)})
    c.post(f"/api/cases/{case}/click", json={"version": 1, "ras": _ras(server, case, shape // 4), "kind": "organ",
                                             "name": "liver"})
    files = c.post(f"/api/cases/{case}/save", json={}).json()["files"]
    seg = hd.seg.segread([f for f in files if f.endswith(".seg.dcm")][0])
    descs = list(seg.SegmentSequence)
    assert [(d.SegmentLabel, d.SegmentAlgorithmType, d.SegmentedPropertyTypeCodeSequence[0].CodeValue)
            for d in descs] == [("lesion 1", "SEMIAUTOMATIC", "108369006"), ("liver", "SEMIAUTOMATIC", "10200004")]
    st = server.open_cases[case]
    lab = st.labels()
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in st.pt_datasets],
                                               segment_numbers=[1, 2])
    for i, k in enumerate((1, 2)):  # each segment's frames reproduce its object's voxels
        assert (lab == k).any()
        np.testing.assert_array_equal(pixels[..., i], np.transpose(lab == k, (2, 1, 0)))


def test_make_server_with_a_real_prompt_run(phantom, tmp_path):
    from petctfm.methods.promptable.model import build_model
    from petctfm.train.checkpoint import save_weights

    cfg = prompt_config()
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    with pytest.raises(InputError, match="model not found"):
        make_server(str(tmp_path / "nope"), data=str(phantom / "autopet"))
    server = make_server(str(tmp_path / "run"), data=str(phantom / "autopet"), out=str(tmp_path / "out"))
    c = _client(server)
    held = {o["name"] for o in c.get("/api/cases").json()["organs"] if o["held_out"]}
    assert held == set(cfg["targets"]["held_out"]) and held  # the model's zero-shot organs, from its config
    c.post(f"/api/cases/{CASE}/open")
    r = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": _ras(server, CASE, [38, 38, 50])})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert r.json()["timings_s"]["last_change_s"] > 0
    assert c.post(f"/api/cases/{CASE}/auto", json={"version": 1}).status_code == 422  # no --auto-model
