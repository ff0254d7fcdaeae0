"""``petctfm serve --dicomweb``: the viewer lists the studies of a real Orthanc, opens one (fetched by WADO-RS),
and Save stores the SEG back by STOW-RS with the reader as the SEG's content creator; Save twice stores one
instance. The prompt network and the "automatic model" are the viewer tests' stand-ins (tests/serve)."""

from __future__ import annotations


import numpy as np
import pydicom
import SimpleITK as sitk

from orthanc_server import require_orthanc
from serve_helpers import serve_fixtures

require_orthanc()

from petctfm.io.dicomweb import connect  # noqa: E402
from petctfm.predict.pacs import study_folder  # noqa: E402
from petctfm.serve.app import Server  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402


def test_serve_lists_orthanc_studies_opens_one_and_saves_the_seg_back(orthanc, synth_dicom, tmp_path):
    from petctfm.io.dicom_read import read_seg_on, read_volume

    fx = serve_fixtures()
    study_dir = synth_dicom / "PETCT_0000"
    web = connect(orthanc.url, env=orthanc.env)
    pt = [pydicom.dcmread(p) for p in sorted((study_dir / "PT").iterdir())]
    ct_only = [pydicom.dcmread(p) for p in sorted((synth_dicom / "PETCT_0001" / "CT").iterdir())]
    web.store(pt + [pydicom.dcmread(p) for p in sorted((study_dir / "CT").iterdir())], "upload")
    web.store(ct_only, "upload")  # a study without PT: not listed
    study = str(pt[0].StudyInstanceUID)
    case = study_folder(study)

    cases = CaseList(dicomweb=web)
    server = Server(cases, tmp_path / "out", fx.stub_session, fx.threshold_auto())
    c = fx.page_client(server)
    assert [x["id"] for x in c.get("/api/cases").json()["cases"]] == [case]
    opened = c.post(f"/api/cases/{case}/open", json={}).json()
    st = c.post(f"/api/cases/{case}/auto", json={"version": opened["version"]}).json()
    assert st["totals"]["count"] >= 1
    assert list(cases.cache.root.iterdir()) == []  # the fetched files are read and dropped
    saved = c.post(f"/api/cases/{case}/save", json={"user": "Reader^Test"}).json()
    assert saved["pushed"] == f"mask.seg.dcm stored in {orthanc.url}"

    segs = [s for s in web.series(study) if s.modality == "SEG"]
    assert len(segs) == 1 and len(segs[0].sop_uids) == 1 and str(pt[0].SeriesInstanceUID) in segs[0].referenced_series
    (back,) = web.client.retrieve_series(study, segs[0].uid)
    assert str(back.ContentCreatorName) == "Reader^Test"
    assert back.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    back.save_as(tmp_path / "back.seg.dcm", enforce_file_format=True)
    files = sorted(str(p.relative_to(study_dir)) for p in (study_dir / "PT").iterdir())
    suv, pt_sorted = read_volume(study_dir, files)
    decoded = sitk.GetArrayFromImage(read_seg_on(tmp_path, "back.seg.dcm", pt_sorted, suv).lesion)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / case / "mask.nii.gz")))
    np.testing.assert_array_equal(decoded, (mask > 0).astype(np.uint8))

    # the same mask saved again by the same reader: the same instance, nothing new in the study
    again = c.post(f"/api/cases/{case}/save", json={"user": "Reader^Test"}).json()
    assert again["pushed"]
    segs = [s for s in web.series(study) if s.modality == "SEG"]
    assert len(segs) == 1 and len(segs[0].sop_uids) == 1
    audit = (tmp_path / "out" / case / "audit.jsonl").read_text()
    assert audit.count('"action": "push"') == 2 and study not in audit
    cases.close()
    assert not cases.cache.root.exists()
