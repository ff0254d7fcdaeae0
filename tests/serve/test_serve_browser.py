"""The viewer in a real browser: headless Chromium (Debian's chromium + chromedriver, driven by selenium; WebGL2
through SwiftShader) opens the page for a tiny phantom, runs the automatic model, clicks inside the lesion it
missed, sees the lesion count and MTV change, shift-clicks, undoes, saves; the saved mask is read from disk and
must hold the clicked lesion. A screenshot is written to the test's folder and checked to be non-blank.

Skipped (with the reason) when chromium / chromedriver / selenium are not installed; ``.ci/run`` installs them.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip("headless browser test: chromium and chromedriver are not installed "
                "(apt-get install chromium chromium-driver)", allow_module_level=True)
pytest.importorskip("selenium", reason="headless browser test: selenium is not installed (pip install '.[test]')")
pytest.importorskip("uvicorn")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from serve_fixtures import lesion_voxel, stub_session, threshold_auto  # noqa: E402
from petctfm.serve.app import Server, create_app  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402

CASE = "PETCT_0000"
FLAGS = ("--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
         "--disable-component-update --disable-sync --disable-dev-shm-usage --use-angle=swiftshader "
         "--enable-unsafe-swiftshader --window-size=1280,760")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running(phantom, tmp_path):
    import uvicorn

    centre, seg = lesion_voxel(phantom)
    server = Server(CaseList(phantom / "autopet"), tmp_path / "out", stub_session, threshold_auto(miss=centre))
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=uv.run, daemon=True)
    th.start()
    for _ in range(100):
        if uv.started:
            break
        time.sleep(0.05)
    yield server, f"http://127.0.0.1:{port}/?token={server.token}", centre, seg
    uv.should_exit = True
    th.join(10)


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
    False: only move the mouse there)."""
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
    chain = ActionChains(d).move_to_element_with_offset(canvas, int(pos[0] - w / 2), int(pos[1] - h / 2))
    if not click:
        pass
    elif shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain = chain.click()
    chain.perform()


def test_page_automatic_click_save(running, phantom, tmp_path):
    import nibabel as nib
    from matplotlib.image import imread

    server, url, centre, seg = running
    opts = webdriver.ChromeOptions()
    for flag in FLAGS.split():
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    opts.binary_location = CHROMIUM
    d = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=opts)
    try:
        d.get(url)
        _wait(d, lambda: d.execute_script("return !!(window.petctfmViewer && window.petctfmViewer.ready)"),
              "the case opening (one case: opened at once)")
        assert "token" not in d.current_url  # dropped from the address bar; the HttpOnly cookie carries it
        assert d.execute_script("return window.petctfmViewer.nv.volumes.length") == 3
        d.find_element("id", "user").send_keys("reader1")
        d.find_element("id", "auto").click()
        _wait(d, lambda: int(_text(d, "lesion-count")) > 0, "Run automatic")
        n_auto, mtv_auto = int(_text(d, "lesion-count")), float(_text(d, "mtv"))
        assert server.open_cases[CASE].session.mask()[tuple(centre)] == 0  # the automatic model missed it

        _click_voxel(d, server, centre)
        _wait(d, lambda: int(_text(d, "lesion-count")) == n_auto + 1, "a positive click adding a lesion")
        mtv_click = float(_text(d, "mtv"))
        assert mtv_click > mtv_auto
        rows = d.find_elements("css selector", "#lesions tbody tr")
        assert len(rows) == n_auto + 1

        _click_voxel(d, server, centre, shift=True)  # negative click on the new lesion removes it
        _wait(d, lambda: int(_text(d, "lesion-count")) == n_auto, "a shift-click removing the lesion")
        d.find_element("id", "undo").click()
        _wait(d, lambda: int(_text(d, "lesion-count")) == n_auto + 1, "undo")
        assert float(_text(d, "mtv")) == pytest.approx(mtv_click)

        # the SUV under the mouse (no click): the PET value at the voxel of the position it names
        _click_voxel(d, server, centre, click=False)
        _wait(d, lambda: d.execute_script("return window.petctfmViewer.hover") is not None, "the hover readout")
        hover = d.execute_script("return window.petctfmViewer.hover")
        st = server.open_cases[CASE]
        lps = np.asarray(hover["mm"]) * [-1, -1, 1]
        vox = np.rint(np.linalg.inv(st.session.grid.index_to_lps) @ np.append(lps, 1.0))[:3].astype(int)
        assert np.abs(vox - centre).max() <= 1 and hover["suv"] == pytest.approx(st.session.suv[tuple(vox)], abs=1e-3)
        assert "SUV" in _text(d, "hover")

        # an organ: chosen by name, listed apart, not counted as a lesion
        from selenium.webdriver.support.select import Select

        Select(d.find_element("id", "kind")).select_by_value("liver")
        shape = np.array(st.session.grid.shape)
        _click_voxel(d, server, np.where(centre < shape // 2, shape - 4, 3))
        _wait(d, lambda: len(d.find_elements("css selector", "#organs tbody tr")) == 1, "an organ click")
        assert int(_text(d, "lesion-count")) == n_auto + 1 and float(_text(d, "mtv")) == pytest.approx(mtv_click)
        Select(d.find_element("id", "kind")).select_by_value("")
        _click_voxel(d, server, centre, click=False)  # crosshair back on the lesion for the screenshot

        d.find_element("id", "save").click()
        _wait(d, lambda: "saved" in _text(d, "status"), "save")
        shot = tmp_path / "viewer.png"
        d.save_screenshot(str(shot))
    finally:
        d.quit()

    mask = nib.load(server.out / CASE / "mask.nii.gz")
    pet = nib.load(phantom / "autopet" / CASE / "SUV.nii.gz")
    assert mask.shape == pet.shape and np.allclose(mask.affine, pet.affine, atol=1e-4)
    arr = np.asarray(mask.dataobj)
    assert arr[tuple(centre)] == n_auto + 1 and seg[tuple(centre)] > 0  # the clicked lesion, its own id
    audit = (server.out / CASE / "audit.jsonl").read_text()
    assert '"user": "reader1"' in audit and '"action": "save"' in audit
    img = imread(shot)[..., :3]
    canvas = img[40:600, :900]
    assert img.std() > 0.05 and (canvas.max(axis=2) > 0.2).mean() > 0.05, "blank screenshot"
