"""``petctfm serve --dicomweb`` in headless Chromium (the viewer tests' browser path, tests/serve/serve_live.py): a
tiny synthetic study held by a real Orthanc is listed, opened, segmented ("Run automatic" stand-in) and saved; the
SEG stored in Orthanc is read back and equals the mask on screen. With ``PETCTFM_SCREENSHOTS=<folder>`` the page is
saved there as ``pacs.png`` (docs/pacs.png is made that way, then shrunk below 300 KB)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from orthanc_server import require_orthanc
from serve_helpers import serve_fixtures

require_orthanc()
sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_live import chrome, live, require_browser  # noqa: E402

require_browser()

from petctfm.io.dicomweb import connect  # noqa: E402
from petctfm.predict.pacs import study_folder  # noqa: E402
from petctfm.serve.app import Server, create_app  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402


def _wait(cond, what, timeout=120.0):
    from selenium.common.exceptions import TimeoutException

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if cond():
                return
        except TimeoutException:  # the page's script is busy on a loaded machine (software WebGL): ask again
            pass
        time.sleep(0.2)
    raise AssertionError(f"page: {what} did not happen in {timeout} s")


@pytest.mark.slow
def test_serve_dicomweb_in_a_browser(orthanc, synth_dicom, tmp_path):
    from petctfm.io.dicom_read import read_seg_on, read_volume

    fx = serve_fixtures()
    study_dir = synth_dicom / "PETCT_0000"
    web = connect(orthanc.url, env=orthanc.env)
    web.store([pydicom.dcmread(p) for m in ("PT", "CT") for p in sorted((study_dir / m).iterdir())], "upload")
    study = str(pydicom.dcmread(next((study_dir / "PT").iterdir())).StudyInstanceUID)
    case = study_folder(study)
    server = Server(CaseList(dicomweb=web), tmp_path / "out", fx.stub_session, fx.threshold_auto())
    d = chrome(tmp_path / "profile", "1400,800")
    try:
        with live(create_app(server)) as port:
            d.get(f"http://127.0.0.1:{port}/?token={server.token}")
            _wait(lambda: d.execute_script("return !!(window.petctfmViewer && window.petctfmViewer.ready)"),
                  "the study opening")
            assert case in d.find_element("id", "case-select").text
            d.find_element("id", "user").send_keys("Reader^Test")
            v = d.execute_script("return window.petctfmViewer.state.version")
            d.find_element("id", "auto").click()
            _wait(lambda: d.execute_script("return window.petctfmViewer.state.version") > v
                  and not d.execute_script("return window.petctfmViewer.busy"), "Run automatic")
            d.find_element("id", "save").click()
            _wait(lambda: "saved" in d.find_element("id", "status").text, "save")
            d.save_screenshot(str(tmp_path / "pacs.png"))
    finally:
        d.quit()
        server.cases.close()
    segs = [s for s in web.series(study) if s.modality == "SEG"]
    assert len(segs) == 1
    (back,) = web.client.retrieve_series(study, segs[0].uid)
    assert str(back.ContentCreatorName) == "Reader^Test"
    back.save_as(tmp_path / "back.seg.dcm", enforce_file_format=True)
    files = sorted(str(p.relative_to(study_dir)) for p in (study_dir / "PT").iterdir())
    suv, pt = read_volume(study_dir, files)
    decoded = sitk.GetArrayFromImage(read_seg_on(tmp_path, "back.seg.dcm", pt, suv).lesion)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / case / "mask.nii.gz")))
    assert decoded.any()
    np.testing.assert_array_equal(decoded, (mask > 0).astype(np.uint8))
    if os.environ.get("PETCTFM_SCREENSHOTS"):
        dest = Path(os.environ["PETCTFM_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "pacs.png", dest / "pacs.png")
