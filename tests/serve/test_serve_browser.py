"""The viewer in a real browser: headless Chromium (Debian's chromium + chromedriver, driven by selenium; WebGL2
through SwiftShader) does a reader's session on a tiny phantom, checking the page's pixels (screenshots) and state
at each step: run automatic and see distinct coloured contours, answer the question about an implausible object,
click a missed lesion, remove a false positive with a negative click, paint with the brush, erase, grow an
isocontour, navigate from a table row and from the MIP (laterality: a lesion on the patient's left), adjust the
SUV window, the PET | CT | fused layout, save. The time from the server's answer to the mask on screen is
measured for every change and printed (not asserted: software WebGL). With ``PETCTFM_SCREENSHOTS=<folder>`` the
screenshots are copied there (docs/viewer*.png are made that way).

Skipped (with the reason) when chromium / chromedriver / selenium are not installed; ``.ci/run`` installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from serve_live import chrome, live, require_browser  # noqa: E402

require_browser()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from serve_fixtures import lesion_voxel, stub_session, threshold_auto  # noqa: E402
from petctfm.serve.app import Server, create_app  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402

CASE = "PETCT_0000"


@pytest.fixture
def browser_phantom(phantom, tmp_path_factory):
    """The session's tiny phantom, or with ``PETCTFM_BROWSER_SIZE=small`` a ``small`` one (170 x 170 x 303 PET
    voxels: the size the latency and the screenshots in docs/viewer.md were measured on)."""
    size = os.environ.get("PETCTFM_BROWSER_SIZE", "tiny")
    if size == "tiny":
        return phantom
    from petctfm.synth.writers import synthesize

    out = tmp_path_factory.mktemp(f"serve_synth_{size}")
    synthesize(out, n_cases=1, seed=0, size=size, progress=False, formats=["autopet"])
    return out


@pytest.fixture
def running(browser_phantom, tmp_path):
    """The viewer on a live port: (server, the page URL with the token, a missed lesion's centre, its mask)."""
    phantom = browser_phantom
    centre, seg = lesion_voxel(phantom)
    server = Server(CaseList(phantom / "autopet"), tmp_path / "out", stub_session, threshold_auto(miss=centre))
    with live(create_app(server)) as port:
        yield server, f"http://127.0.0.1:{port}/?token={server.token}", centre, seg


def _text(d, el):
    return d.find_element("id", el).text


def _wait(d, cond, what, timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"page: {what} did not happen in {timeout} s; status {_text(d, 'status')!r}, "
                         f"message {_text(d, 'msg')!r}")


def _click_voxel(d, server, voxel, shift=False, click=True):
    """Put niivue's crosshair on ``voxel`` (PET index) and click the canvas there, as a user would (``click``
    False: only move the mouse there). Returns the offset from the canvas centre (CSS pixels)."""
    st = server.open_cases[CASE]
    lps = (st.session.grid.index_to_lps @ np.append(np.asarray(voxel, float), 1.0))[:3]
    ras = (lps * [-1, -1, 1]).tolist()
    pos = d.execute_script(
        "const nv = window.petctfmViewer.nv, f = nv.mm2frac(arguments[0]);"
        "nv.scene.crosshairPos = f; nv.drawScene(); const p = nv.frac2canvasPos(f);"
        "return p && [p[0] / window.devicePixelRatio, p[1] / window.devicePixelRatio];", ras)
    assert pos is not None, "voxel not on screen"
    canvas = d.find_element("id", "gl")
    w, h = canvas.size["width"], canvas.size["height"]
    offset = (int(pos[0] - w / 2), int(pos[1] - h / 2))
    chain = ActionChains(d).move_to_element_with_offset(canvas, *offset)
    if not click:
        pass
    elif shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain = chain.click()
    chain.perform()
    return offset


def _state(d):
    return d.execute_script("return window.petctfmViewer.state")


def _version(d):
    return d.execute_script("const s = window.petctfmViewer.state; return s ? s.version : -1")


def _change(d, act, what, timeout=30.0):
    """Do ``act()`` (a user action on the page) and wait for the page to show the next version."""
    v = _version(d)
    act()
    _wait(d, lambda: _version(d) > v and not d.execute_script("return window.petctfmViewer.busy"), what, timeout)
    return _state(d)


def _shot(d, path, numbers=True):
    """A screenshot (RGB uint8 array); ``numbers`` False: without the objects' numbers (contours only)."""
    from matplotlib.image import imread

    if not numbers:
        d.find_element("id", "numbers").click()
    d.save_screenshot(str(path))
    if not numbers:
        d.find_element("id", "numbers").click()
    return (imread(path)[..., :3] * 255).round().astype(np.uint8)


def _colour_pixels(img, rgb, box=None, tol=6):
    """How many pixels of ``img`` (in ``box`` = (x0, y0, x1, y1) CSS pixels) have the colour ``rgb`` (± tol)."""
    if box is not None:
        img = img[box[1]:box[3], box[0]:box[2]]
    return int((np.abs(img.astype(int) - np.asarray(rgb)).max(axis=2) <= tol).sum())


def _rect(d, el):
    r = d.execute_script("const r = document.getElementById(arguments[0]).getBoundingClientRect();"
                         "return [r.left, r.top, r.right, r.bottom]", el)
    return [int(round(v)) for v in r]


def _cross_voxel(d):
    """The PET voxel [x, y, z] under the page's crosshair (as the page computes it from niivue's position)."""
    return np.array(d.execute_script("return window.petctfmViewer.crossVoxel()"))


def test_reader_session(running, browser_phantom, tmp_path):
    import nibabel as nib

    from selenium.webdriver.support.select import Select

    from petctfm.serve import tools

    server, url, centre, seg = running
    phantom = browser_phantom
    d = chrome(tmp_path / "profile", "1400,800")
    latency, shots = [], {}

    def timed(label):
        t = d.execute_script("return window.petctfmViewer.timing")
        assert t and t["round_trip_ms"] >= t["answer_to_visible_ms"] > 0, t  # the status line counts the repaint
        import re

        shown = re.search(r"(\d+) ms round trip", _text(d, "status"))
        assert shown and abs(int(shown.group(1)) - t["round_trip_ms"]) <= 1, _text(d, "status")
        latency.append({"step": label, **{k: round(v, 1) if isinstance(v, float) else v for k, v in t.items()}})

    def labels():
        return server.open_cases[CASE].labels()

    try:
        d.get(url)
        _wait(d, lambda: d.execute_script("return !!(window.petctfmViewer && window.petctfmViewer.ready)"),
              "the case opening (one case: opened at once)", 60)
        assert "token" not in d.current_url  # dropped from the address bar; the HttpOnly cookie carries it
        assert d.execute_script("return window.petctfmViewer.nv.volumes.length") == 2  # CT, PET; objects = drawing
        assert d.execute_script("return window.petctfmViewer.nv.opts.isRadiologicalConvention") is True
        st_obj = server.open_cases[CASE]
        d.find_element("id", "user").send_keys("reader1")

        # 1. run automatic: each object its colour, contours in the slices, numbers; the brain is asked about
        st = _change(d, lambda: d.find_element("id", "auto").click(), "Run automatic", 60)
        timed("auto")
        n_auto = st["totals"]["count"]
        assert n_auto >= 3 and int(_text(d, "lesion-count")) == n_auto and labels()[tuple(centre)] == 0
        colors = {int(k): v for k, v in d.execute_script("return window.petctfmViewer.colors").items()}
        ids = [r["object"] for r in st["lesions"]]
        assert len({tuple(colors[k]) for k in ids[:min(len(ids), 12)]}) == min(len(ids), 12)  # distinct colours
        big = max(st["lesions"], key=lambda r: r["volume_ml"])
        assert d.find_element("id", "ask").is_displayed() and f"Object {big['object']}" in _text(d, "ask")
        assert "over 200 ml" in _text(d, "ask") and "brain" in _text(d, "ask")
        st = _change(d, lambda: d.find_element("id", "ask-keep").click(), "keeping the brain object")
        assert next(r for r in st["lesions"] if r["object"] == big["object"])["confirmed"]

        # niivue's drawing (the fill) holds each object's id where the server has it: the page's native -> drawing
        # index mapping checked against niivue's own mm -> voxel of its background volume
        got = d.execute_script(
            "const nv = window.petctfmViewer.nv, b = nv.back, r = b.dimsRAS;"
            "return arguments[0].map((mm) => { const v = b.mm2vox(mm); return nv.drawBitmap[v[0] + r[1] * (v[1] + r[2] * v[2])]; })",
            [r["peak_ras"] for r in st["lesions"]])
        assert got == [r["object"] for r in st["lesions"]]

        # 2. navigate from a table row: the cursor lands in that object; its contour is drawn in its colour
        views = _rect(d, "views")
        seen = {}
        for r in sorted(st["lesions"], key=lambda r: -r["volume_ml"])[1:3]:  # two objects apart from the brain
            d.find_element("css selector", f"#lesions tr[data-id='{r['object']}']").click()
            _wait(d, lambda: labels()[tuple(_cross_voxel(d))] == r["object"], f"the cursor on object {r['object']}")
            assert f"lesion {r['object']}: SUVmax {r['suv_max']:.2f}" in _text(d, "selected")
            img = _shot(d, tmp_path / f"row{r['object']}.png", numbers=False)
            seen[r["object"]] = _colour_pixels(img, colors[r["object"]], views)
            assert seen[r["object"]] >= 8, (r["object"], colors[r["object"]], seen)  # the contour, in its colour
            with_numbers = _colour_pixels(_shot(d, tmp_path / "n.png"), colors[r["object"]], views)
            assert with_numbers > seen[r["object"]] + 5, "the object's number is written in the image, in its colour"
        shots["contours"] = _shot(d, tmp_path / "viewer_contours.png")
        d.find_element("tag name", "body").send_keys(Keys.ESCAPE)

        # 3. a positive click on the lesion the model missed: a new object, its own colour
        st = _change(d, lambda: _click_voxel(d, server, centre), "a positive click adding a lesion")
        timed("click")
        new = int(labels()[tuple(centre)])
        assert st["totals"]["count"] == n_auto + 1 and new not in ids
        assert int(_text(d, "lesion-count")) == n_auto + 1
        colors = {int(k): v for k, v in d.execute_script("return window.petctfmViewer.colors").items()}
        img = _shot(d, tmp_path / "click.png", numbers=False)
        assert _colour_pixels(img, colors[new], views) >= 4

        # 4. a negative click on a false positive of the automatic model: it goes (it never grows)
        fp = min((r for r in st["lesions"] if r["object"] in ids and not r["flags"] and r["n_voxels"] >= 2),
                 key=lambda r: r["n_voxels"])
        st = _change(d, lambda: _click_voxel(d, server, fp["peak_voxel"], shift=True), "a negative click on a false positive")
        timed("negative click")
        assert fp["object"] not in [r["object"] for r in st["lesions"]] and st["totals"]["count"] == n_auto
        assert not (labels() == fp["object"]).any()

        # 5. the brush (3D sphere, 10 mm) on free space: a new object of exactly the sphere's voxels
        free = np.array(np.unravel_index(int(np.argmin(np.where(labels() == 0, st_obj.session.suv, np.inf))),
                                         labels().shape))
        free = np.clip(free, 3, np.array(labels().shape) - 4)
        sphere = tools.brush_mask(labels().shape, st_obj.session.grid.spacing, [free], 10.0) & (labels() == 0)
        d.find_element("id", "tool-brush").click()
        d.find_element("id", "radius").clear()
        d.find_element("id", "radius").send_keys("10")
        st = _change(d, lambda: _click_voxel(d, server, free), "a brush stroke")
        timed("brush")
        painted = int(labels()[tuple(free)])
        row = next(r for r in st["lesions"] if r["object"] == painted)
        assert row["n_voxels"] == int(sphere.sum()) > 1
        # a 2D stroke: the brush dragged 40 px across the axial view paints discs in that one axial slice
        lab = labels()
        far = np.argwhere((lab == 0) & (np.abs(np.indices(lab.shape) - free[:, None, None, None]).max(0) > 8))
        start = far[np.argmin(st_obj.session.suv[tuple(far.T)])]
        Select(d.find_element("id", "dim")).select_by_value("2d")
        d.find_element("id", "radius").clear()
        d.find_element("id", "radius").send_keys("20")
        off = _click_voxel(d, server, start, click=False)

        def drag():
            ActionChains(d).move_to_element_with_offset(d.find_element("id", "gl"), *off).click_and_hold() \
                .move_by_offset(10, 0).move_by_offset(10, 0).move_by_offset(10, 0).move_by_offset(10, 0).release().perform()

        st = _change(d, drag, "a 2D brush stroke")
        timed("brush stroke")
        stroke = int(labels()[tuple(start)])
        vox = np.argwhere(labels() == stroke)
        one = tools.brush_mask(lab.shape, st_obj.session.grid.spacing, [start], 20.0, axis=2) & (lab == 0)
        assert stroke not in (0, painted) and len(set(vox[:, 2])) == 1 and len(vox) > one.sum()
        d.find_element("id", "undo").click()
        _wait(d, lambda: labels()[tuple(start)] == 0, "undo of the stroke")
        Select(d.find_element("id", "dim")).select_by_value("3d")

        # 6. the eraser (3D, 5 mm) in the painted sphere: it loses exactly the eraser's voxels
        rub = tools.brush_mask(labels().shape, st_obj.session.grid.spacing, [free], 5.0) & (labels() == painted)
        d.find_element("id", "tool-erase").click()
        d.find_element("id", "radius").clear()
        d.find_element("id", "radius").send_keys("5")
        st = _change(d, lambda: _click_voxel(d, server, free), "an eraser click")
        timed("erase")
        assert next(r for r in st["lesions"] if r["object"] == painted)["n_voxels"] == row["n_voxels"] - int(rub.sum())
        assert labels()[tuple(free)] == 0

        # 7. grow an isocontour (41 % of the SUVmax near the click) on the phantom's smallest lesion
        from petctfm.evaluate.lesions import label_lesions

        les, n_les = label_lesions(seg > 0)
        assert n_les >= 2
        third = np.argwhere(les == n_les)[0]
        expect, info = tools.isocontour(st_obj.session.suv, st_obj.session.grid.spacing, third)
        d.find_element("id", "tool-grow").click()
        st = _change(d, lambda: _click_voxel(d, server, third), "an isocontour")
        timed("grow")
        grown = int(labels()[tuple(third)])
        assert grown and next(r for r in st["lesions"] if r["object"] == grown)["n_voxels"] == int(
            (expect & ((labels() == grown) | (labels() == 0))).sum())
        assert "threshold SUV" in _text(d, "status") and f"{info['threshold']:.2f}" in _text(d, "status")

        # 8. delete a selected object with the Del key (undoable)
        d.find_element("id", "tool-click").click()
        d.find_element("css selector", f"#lesions tr[data-id='{grown}']").click()
        st = _change(d, lambda: d.find_element("tag name", "body").send_keys(Keys.DELETE), "Del on the selected object")
        assert grown not in [r["object"] for r in st["lesions"]]
        st = _change(d, lambda: d.find_element("id", "undo").click(), "undo")
        assert grown in [r["object"] for r in st["lesions"]]
        d.find_element("tag name", "body").send_keys(Keys.ESCAPE)

        # 9. laterality: the clicked lesion lies on the patient's LEFT (RAS x < 0). In the radiological MIP it is
        # on the viewer's right; clicking it there puts the cursor on that lesion in the slices, where it is on
        # the right of the axial and coronal views too (R is written on their left edge).
        affine = nib.load(phantom / "autopet" / CASE / "SUV.nii.gz").affine
        assert (affine @ np.append(centre, 1.0))[0] < 0, "the test lesion is on the patient's left"
        assert _text(d, "mip-left") == "R" and _text(d, "mip-right") == "L"
        shape = labels().shape
        u = centre[0] if affine[0, 0] < 0 else shape[0] - 1 - centre[0]  # columns from the patient's right
        v = shape[2] - 1 - centre[2] if affine[2, 2] > 0 else centre[2]  # rows from the head
        mip = d.find_element("id", "mip")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", mip)  # the side panel scrolls
        w, h = mip.size["width"], mip.size["height"]
        assert (u + 0.5) / shape[0] > 0.5  # the viewer's right half of the MIP
        ActionChains(d).move_to_element_with_offset(mip, int((u + 0.5) / shape[0] * w - w / 2),
                                                    int((v + 0.5) / shape[2] * h - h / 2)).click().perform()
        _wait(d, lambda: labels()[tuple(_cross_voxel(d))] == new, "the MIP click moving the cursor to the lesion")
        orient = d.execute_script("return window.petctfmViewer.orient.fused")
        assert orient["axial"] == {"left": "R", "right": "L"} and orient["coronal"] == {"left": "R", "right": "L"}
        side = d.execute_script(  # where each axial / coronal view draws the cursor, as a fraction of its width
            "const a = window.petctfmViewer, nv = a.nv, mm = Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3);"
            "return nv.screenSlices.filter((t) => t.axCorSag === 0 || t.axCorSag === 1).map((t) => {"
            "  const c = t.leftTopWidthHeight, x0 = Math.min(c[0], c[0] + c[2]);"
            "  return [t.axCorSag, (a.tilePos(t, mm)[0] - x0) / Math.abs(c[2])]; })")
        assert {t for t, _ in side} == {0, 1} and all(x > 0.5 for _, x in side), side  # on the right, as in the MIP
        assert f"lesion {new}" in _text(d, "selected")
        # the neurological convention: everything flips together, slices and MIP
        Select(d.find_element("id", "convention")).select_by_value("neurological")
        _wait(d, lambda: _text(d, "mip-left") == "L", "the MIP in the neurological convention")
        d.execute_script("window.petctfmViewer.nv.drawScene()")
        assert d.execute_script("return window.petctfmViewer.orient.fused.axial") == {"left": "L", "right": "R"}
        assert d.execute_script("return window.petctfmViewer.nv.opts.isRadiologicalConvention") is False
        Select(d.find_element("id", "convention")).select_by_value("radiological")
        _wait(d, lambda: _text(d, "mip-left") == "R", "back to the radiological convention")

        # hover: the SUV and the object's number under the mouse
        _click_voxel(d, server, centre, click=False)
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.hover") is not None, "the hover readout")
        hover = d.execute_script("return window.petctfmViewer.hover")
        assert hover["suv"] == pytest.approx(st_obj.session.suv[tuple(hover["voxel"])], abs=1e-3)
        assert np.abs(np.array(hover["voxel"]) - centre).max() <= 1 and f"lesion {new}" in _text(d, "hover")

        # 10. the SUV window: presets and typed values change the PET display and the colour bar
        cbar = _rect(d, "cbar")
        before = _shot(d, tmp_path / "w5.png")
        d.find_element("css selector", "button[data-wl='0,10']").click()
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.nv.volumes[1].cal_max") == 10, "SUV 0-10")
        after = _shot(d, tmp_path / "w10.png")
        gl_box = _rect(d, "gl")
        diff = np.abs(before.astype(int) - after.astype(int))[gl_box[1]:gl_box[3], gl_box[0]:gl_box[2]].mean()
        assert diff > 1.0, "the PET looks different at 0-10 than at 0-5"
        assert (before[cbar[1]:cbar[3], cbar[0]:cbar[2]] != after[cbar[1]:cbar[3], cbar[0]:cbar[2]]).any()
        hi = d.find_element("id", "pet-hi")
        hi.clear()
        hi.send_keys("7.5" + Keys.ENTER)
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.nv.volumes[1].cal_max") == 7.5, "a typed SUV")
        d.find_element("css selector", "button[data-wl='0,max']").click()
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.nv.volumes[1].cal_max") == pytest.approx(
            float(st_obj.session.suv.max()), abs=0.01), "SUV 0-SUVmax")
        d.find_element("css selector", "button[data-wl='0,5']").click()
        bar = d.find_element("id", "cbar")  # dragging the colour bar up raises the upper bound
        ActionChains(d).move_to_element(bar).click_and_hold().move_by_offset(0, -60).release().perform()
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.nv.volumes[1].cal_max") > 5.5, "a colour-bar drag")
        assert float(d.find_element("id", "pet-hi").get_attribute("value")) == pytest.approx(
            d.execute_script("return window.petctfmViewer.nv.volumes[1].cal_max"), abs=0.01)
        d.find_element("css selector", "button[data-wl='0,5']").click()

        # an organ: chosen by name, listed apart (its own colours), not counted as a lesion
        d.find_element("tag name", "body").send_keys(Keys.ESCAPE)  # no object selected
        Select(d.find_element("id", "kind")).select_by_value("liver")
        mtv = float(_text(d, "mtv"))
        far = np.where(centre < np.array(shape) // 2, np.array(shape) - 4, 3)
        st = _change(d, lambda: _click_voxel(d, server, far), "an organ click")
        assert len(st["organs"]) == 1 and float(_text(d, "mtv")) == pytest.approx(mtv)
        colors = {int(k): v for k, v in d.execute_script("return window.petctfmViewer.colors").items()}
        lesion_cols = {tuple(colors[r["object"]]) for r in st["lesions"]}
        assert tuple(colors[st["organs"][0]["object"]]) not in lesion_cols
        Select(d.find_element("id", "kind")).select_by_value("")

        # the PET | CT | fused layout: three views on one cursor
        d.find_element("css selector", f"#lesions tr[data-id='{new}']").click()
        Select(d.find_element("id", "layout")).select_by_value("triple")
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.views.every((v) => v.loaded)"), "three views", 180)
        img = _shot(d, tmp_path / "viewer_triple.png")
        shots["triple"] = img
        for el in ("gl-pet", "gl-ct", "gl"):
            b = _rect(d, el)
            assert img[b[1]:b[3], b[0]:b[2]].std() > 10, f"{el} is blank"
        assert _colour_pixels(img, colors[new], _rect(d, "gl-pet")) >= 2  # the contour over PET alone too
        Select(d.find_element("id", "layout")).select_by_value("mpr")

        # 11. save
        d.find_element("id", "save").click()
        _wait(d, lambda: "saved" in _text(d, "status"), "save")
        shots["viewer"] = _shot(d, tmp_path / "viewer.png")
    finally:
        d.quit()

    print("\nanswer -> mask visible (ms, headless Chromium, SwiftShader):",
          json.dumps([{k: t[k] for k in ("step", "answer_to_visible_ms", "round_trip_ms", "model_ms", "bytes")}
                      for t in latency]))
    (tmp_path / "latency.json").write_text(json.dumps(latency, indent=1))
    if os.environ.get("PETCTFM_SCREENSHOTS"):
        dest = Path(os.environ["PETCTFM_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("viewer_contours", "viewer_triple", "viewer"):
            shutil.copy(tmp_path / f"{name}.png", dest / f"{name}.png")
        (dest / "viewer_latency.json").write_text(json.dumps(latency, indent=1))

    mask = nib.load(server.out / CASE / "mask.nii.gz")
    pet = nib.load(phantom / "autopet" / CASE / "SUV.nii.gz")
    assert mask.shape == pet.shape and np.allclose(mask.affine, pet.affine, atol=1e-4)
    arr = np.asarray(mask.dataobj)
    assert arr[tuple(centre)] == new and seg[tuple(centre)] > 0  # the clicked lesion, its own id
    assert not (arr == fp["object"]).any() and (arr == painted).sum() == row["n_voxels"] - int(rub.sum())
    audit = [json.loads(line) for line in (server.out / CASE / "audit.jsonl").read_text().splitlines()]
    acts = [e["action"] for e in audit]
    for a in ("auto", "confirm", "click", "brush", "erase", "grow", "delete", "undo", "save"):
        assert a in acts, a
    assert all(e["user"] == "reader1" for e in audit)
