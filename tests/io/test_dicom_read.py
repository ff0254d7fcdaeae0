"""DICOM tree walking, slice sorting, geometry, SUV per slice and DICOM-SEG reading."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from harmonize_phantoms import synth_case

from petctfm.core.errors import InputError
from petctfm.harmonize.suv import suv_factor
from petctfm.io.dicom_read import pick_series, read_seg_on, read_volume, scan_tree
from petctfm.synth.dicom import write_dicom_case


FLIPPED = (1, 0, 0, 0, -1, 0, 0, 0, -1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A DICOM case whose files are renamed (no .dcm), scattered over nested folders, with a stray text file."""
    root = tmp_path_factory.mktemp("dicomtree")
    case = synth_case("D0", pet_direction=FLIPPED)
    src, _ = write_dicom_case(case, root / "raw", seed=7)
    rng = random.Random(0)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for i, p in enumerate(files):
        target = root / "tree" / f"a{rng.randint(0, 2)}" / f"b{rng.randint(0, 1)}" / f"IMG{rng.getrandbits(32):08x}"
        target.parent.mkdir(parents=True, exist_ok=True)
        p.rename(target)
    (root / "tree" / "README.txt").write_text("not dicom")
    return root / "tree", case, len(files)


def _onto(img: sitk.Image, ref: sitk.Image, nearest=False) -> np.ndarray:
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), interp, 0.0, sitk.sitkFloat32))


def test_scan_groups_studies_and_series(tree):
    root, case, n_files = tree
    studies, bad = scan_tree(root)
    assert bad == [] and len(studies) == 1
    study = next(iter(studies.values()))
    picked = pick_series(study)
    assert len(picked["CT"].files) == case.ct.GetSize()[2]
    assert len(picked["PT"].files) == case.pet.GetSize()[2]
    assert len(picked["SEG"].files) == 1 and picked["PT"].uid in picked["SEG"].referenced_series
    assert sum(len(s.files) for s in study.series.values()) == n_files


def test_volumes_geometry_suv_and_seg(tree):
    root, case, _ = tree
    picked = pick_series(next(iter(scan_tree(root)[0].values())))
    files = list(picked["PT"].files)
    random.Random(1).shuffle(files)  # order on disk / in the list must not matter
    suv, pts = read_volume(root, files, slice_factor=lambda ds, where: suv_factor(ds, where))
    d = np.asarray(suv.GetDirection()).reshape(3, 3)
    assert np.linalg.det(d) > 0  # stacked along the slice normal
    np.testing.assert_allclose(_onto(suv, case.suv), sitk.GetArrayFromImage(case.suv), atol=0.01 * 8.2)
    ct, _ = read_volume(root, picked["CT"].files)
    assert ct.GetSize() == case.ct.GetSize()
    np.testing.assert_allclose(_onto(ct, case.ct, nearest=True), sitk.GetArrayFromImage(case.ct), atol=0.5)
    seg = read_seg_on(root, picked["SEG"].files[0], pts, suv)
    # synth's SEG: segment 1 the lesions (neoplasm), then the phantom's organs (SNOMED CT), none ignored
    assert seg.organs is not None and seg.ignored == []
    np.testing.assert_array_equal(_onto(seg.organs, case.organs, nearest=True), sitk.GetArrayFromImage(case.organs))
    np.testing.assert_array_equal(_onto(seg.lesion, case.seg, nearest=True), sitk.GetArrayFromImage(case.seg))


def test_missing_and_duplicate_slices_rejected(tree):
    root, _, _ = tree
    picked = pick_series(next(iter(scan_tree(root)[0].values())))
    files = sorted(picked["CT"].files)
    _, dss = read_volume(root, files)
    order = {str(ds.SOPInstanceUID): i for i, ds in enumerate(dss)}
    by_pos = sorted(files, key=lambda f: order[str(__import__("pydicom").dcmread(root / f, stop_before_pixels=True).SOPInstanceUID)])
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_volume(root, by_pos[:10] + by_pos[11:])
    with pytest.raises(InputError, match="duplicate slice position"):
        read_volume(root, by_pos + by_pos[3:4])


def _rtstruct(pt_file: Path, case, path: Path) -> None:
    """A minimal RTSTRUCT with the lesion sphere as circles on the PT slices, plus an organ ROI to ignore."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from harmonize_phantoms import LESION_CENTER, LESION_R, LIVER_CENTER, LIVER_R

    pt = pydicom.dcmread(pt_file, stop_before_pixels=True)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID, ds.PatientID = pt.StudyInstanceUID, pt.PatientID
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    z0, dz, nz = case.pet.GetOrigin()[2], case.pet.GetSpacing()[2], case.pet.GetSize()[2]
    for number, (name, kind, centre, radius) in enumerate(
            [("Liver", "ORGAN", LIVER_CENTER, LIVER_R), ("GTV_1", "GTV", LESION_CENTER, LESION_R)], start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        ds.StructureSetROISequence.append(roi)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = number, number, kind
        ds.RTROIObservationsSequence.append(obs)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ContourSequence = number, []
        for k in range(nz):
            z = z0 + k * dz
            r2 = radius**2 - (z - centre[2]) ** 2
            if r2 <= 0:
                continue
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            pts = np.stack([centre[0] + np.sqrt(r2) * np.cos(t), centre[1] + np.sqrt(r2) * np.sin(t),
                            np.full_like(t, z)], axis=1)
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.3f}" for v in pts.ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_rtstruct_lesion_rois_rasterized_when_no_seg(tmp_path):
    from petctfm.harmonize.discover import discover
    from petctfm.harmonize.load import load_case_images

    case = synth_case("RT0")
    src, _ = write_dicom_case(case, tmp_path / "rt", seed=4)
    for p in (src / "SEG").iterdir():
        p.unlink()
    _rtstruct(sorted((src / "PT").iterdir())[0], case, src / "RTSTRUCT" / "rt.dcm")
    found = discover([str(tmp_path / "rt")])
    assert len(found) == 1 and found[0].files["SEG"] is None and found[0].files["RTSTRUCT"]
    images, _ = load_case_images(found[0])
    got = _onto(images["seg"], case.seg, nearest=True)
    ref = sitk.GetArrayFromImage(case.seg)
    dice = 2 * (got * ref).sum() / (got.sum() + ref.sum())
    assert dice > 0.9 and abs(got.sum() - ref.sum()) <= 0.1 * ref.sum()
