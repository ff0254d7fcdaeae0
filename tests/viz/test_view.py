"""Tests of petctfm.viz (display frame, rendering), the case reader it is fed by and ``petctfm view``, on tiny analytic phantoms.

The phantom is defined in physical LPS millimetres (x: right->left, y: anterior->posterior, z: inferior->
superior), sampled on a PET grid and a finer CT grid, and stored with different direction cosines / array
orders (LPS, RAS, z-flipped, axes permuted) to check that the picture depends only on the patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk

from petctfm.cli.main import main
from petctfm.core.errors import InputError
from petctfm.io.images import array_xyz, image_from_array, write_image
from petctfm.io.layouts.read import read_case_images
from petctfm.viz.display import select_focus, to_display
from petctfm.viz.render import FIG_SIZE_PX, render_case

LESION_CENTER = np.array([-50.0, -20.0, 120.0])  # patient's right, anterior, mid-body
LESION_RADIUS = 15.0
BLADDER_CENTER = np.array([0.0, -30.0, 25.0])  # hotter than the lesion: must NOT be chosen as focus
PET_GRID = dict(origin=(-170.0, -120.0, -10.0), spacing=(4.0, 4.0, 6.0), size=(86, 61, 44))
CT_GRID = dict(origin=(-172.0, -122.0, -12.0), spacing=(2.5, 2.5, 5.0), size=(138, 98, 53))


def _phantom(grid: dict) -> dict[str, np.ndarray]:
    """Analytic patient sampled at the voxel centres of an axis-aligned LPS grid; arrays [x, y, z]."""
    axes = [o + s * np.arange(n) for o, s, n in zip(grid["origin"], grid["spacing"], grid["size"])]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    body = ((x / 150.0) ** 2 + (y / 100.0) ** 2 <= 1.0) & (z >= 0.0) & (z <= 240.0)
    lung_r = ((x + 60) / 40) ** 2 + (y / 50) ** 2 + ((z - 185) / 35) ** 2 <= 1  # patient's right (x < 0)
    lung_l = ((x - 60) / 40) ** 2 + (y / 50) ** 2 + ((z - 185) / 35) ** 2 <= 1
    spine = (x**2 + (y - 60) ** 2 <= 15**2) & body
    lesion = np.linalg.norm(np.stack([x, y, z], -1) - LESION_CENTER, axis=-1) <= LESION_RADIUS
    bladder = np.linalg.norm(np.stack([x, y, z], -1) - BLADDER_CENTER, axis=-1) <= 25.0
    ct = np.full(x.shape, -1000.0, np.float32)
    ct[body] = 40.0
    ct[lung_r | lung_l] = -850.0
    ct[spine] = 700.0
    ct[bladder] = 10.0
    suv = np.zeros(x.shape, np.float32)
    suv[body] = 1.0
    suv[lung_r | lung_l] = 0.4
    suv[bladder] = 20.0
    suv[lesion] = 8.0 + 0.01 * (x[lesion] - LESION_CENTER[0])  # a single, well-defined SUVmax voxel
    organs = np.zeros(x.shape, np.uint8)
    organs[lung_l] = 6
    organs[lung_r] = 7
    organs[bladder] = 8
    return {"ct": ct, "suv": suv, "seg": lesion.astype(np.uint8), "organs": organs}


def _store(arr: np.ndarray, grid: dict, flips=(False, False, False), perm=(0, 1, 2)) -> sitk.Image:
    """The same physical image stored with flipped and/or permuted axes (other direction cosines)."""
    origin, spacing, size = (np.array(grid[k], float) for k in ("origin", "spacing", "size"))
    a = arr
    for ax, f in enumerate(flips):
        if f:
            a = np.flip(a, axis=ax)
    a = np.transpose(a, perm)  # stored axis i is canonical axis perm[i]
    first = origin + spacing * np.where(flips, size - 1, 0)
    direction = np.zeros((3, 3))
    for i, c in enumerate(perm):
        direction[c, i] = -1.0 if flips[c] else 1.0
    return image_from_array(np.ascontiguousarray(a), tuple(spacing[list(perm)]), tuple(first),
                            tuple(direction.ravel()))


@pytest.fixture(scope="module")
def phantom():
    return {"pet": _phantom(PET_GRID), "ct": _phantom(CT_GRID)}


def _case(phantom, **store) -> dict[str, sitk.Image]:
    p, c = phantom["pet"], phantom["ct"]
    return {
        "pet": _store(p["suv"], PET_GRID, **store),
        "ct": _store(c["ct"], CT_GRID, **store),
        "seg": _store(p["seg"], PET_GRID, **store),
        "organs": _store(p["organs"], PET_GRID, **store),
    }


def test_png_written_with_expected_pixel_size(phantom, tmp_path):
    case = _case(phantom)
    out = tmp_path / "sub" / "case.png"
    fig = render_case(case["pet"], case["ct"], seg=case["seg"], organs=case["organs"], pred=case["seg"],
                      title="PETCT_TEST | site: A | FDG", out_png=out)
    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (FIG_SIZE_PX[1], FIG_SIZE_PX[0]) == (700, 1600)
    assert not list(tmp_path.glob("sub/.*tmp*")), "atomic write left a temporary file"
    assert fig._suptitle.get_text() == "PETCT_TEST | site: A | FDG"
    # not a blank picture: the MIP panel (left quarter) has dark (hot) pixels on white
    mip_panel = img[50:650, 20:440, :3].mean(axis=-1)
    assert mip_panel.min() < 0.2 and mip_panel.max() > 0.95
    # different dpi -> proportional size
    render_case(case["pet"], case["ct"], out_png=tmp_path / "small.png", dpi=40)
    assert matplotlib.image.imread(tmp_path / "small.png").shape[:2] == (280, 640)


def test_same_patient_in_any_orientation_renders_identically(phantom, tmp_path):
    variants = {
        "lps": dict(),
        "ras": dict(flips=(True, True, False)),
        "zflip": dict(flips=(False, False, True)),
        "permuted": dict(flips=(False, True, False), perm=(2, 0, 1)),
    }
    pngs = {}
    for name, store in variants.items():
        case = _case(phantom, **store)
        if name != "lps":  # really a different file layout
            assert case["pet"].GetDirection() != (1, 0, 0, 0, 1, 0, 0, 0, 1)
        render_case(case["pet"], case["ct"], seg=case["seg"], organs=case["organs"], title="same patient",
                    out_png=tmp_path / f"{name}.png", dpi=40)
        pngs[name] = matplotlib.image.imread(tmp_path / f"{name}.png")
    for name in ("ras", "zflip", "permuted"):
        np.testing.assert_array_equal(pngs[name], pngs["lps"], err_msg=name)


def test_display_frame_is_radiological(phantom):
    """x runs patient right -> left, so the right-sided lesion is in the left half of the picture."""
    case = _case(phantom, flips=(True, True, False))  # stored RAS
    vol = to_display(case["pet"], case["ct"], seg=case["seg"])
    assert vol.pet.shape == tuple(PET_GRID["size"])
    np.testing.assert_allclose(vol.origin, PET_GRID["origin"])
    lesion_idx = np.argwhere(vol.seg > 0).mean(axis=0)
    assert lesion_idx[0] < vol.pet.shape[0] / 2  # patient's right -> low x -> image left
    assert lesion_idx[1] < vol.pet.shape[1] / 2  # anterior -> low y -> top of the axial panel
    fig = render_case(case["pet"], case["ct"], seg=case["seg"], dpi=20)
    ax_mip, ax_cor, ax_ax = fig.axes[:3]
    assert ax_mip.get_xlim()[0] < ax_mip.get_xlim()[1]  # x (R->L) increases to the right
    assert ax_cor.get_ylim()[0] < ax_cor.get_ylim()[1]  # z (I->S) increases upwards: head up
    assert ax_ax.get_ylim()[0] > ax_ax.get_ylim()[1]  # y (A->P) increases downwards: anterior up
    # the CT reached the PET grid: the CT slice under the fused coronal panel shows the lungs at -850
    assert np.isclose(vol.ct[vol.pet.shape[0] // 2 - 15, 30, 32], -850.0, atol=1.0)


def test_focus_is_the_hottest_lesion_not_the_hotter_bladder(phantom):
    case = _case(phantom, flips=(False, False, True))
    vol = to_display(case["pet"], case["ct"], seg=case["seg"])
    assert vol.pet.max() == pytest.approx(20.0)  # bladder is the hottest voxel overall
    (i, j, k), reason = select_focus(vol.pet, vol.seg, None, vol.ct)
    assert reason == "hottest lesion"
    assert vol.seg[i, j, k] == 1
    point = vol.origin + vol.spacing * np.array([i, j, k])
    assert np.linalg.norm(point - LESION_CENTER) <= LESION_RADIUS
    assert point[0] > LESION_CENTER[0]  # SUV rises towards +x inside the lesion by construction

    # prediction only -> hottest predicted lesion; nothing -> body centre (not the bladder)
    (i2, j2, k2), reason2 = select_focus(vol.pet, None, vol.seg, vol.ct)
    assert reason2 == "hottest predicted lesion" and (i2, j2, k2) == (i, j, k)
    (ic, jc, kc), reason3 = select_focus(vol.pet, np.zeros_like(vol.seg), None, vol.ct)
    centre = vol.origin + vol.spacing * np.array([ic, jc, kc])
    assert reason3 == "body centre"
    assert np.all(np.abs(centre - np.array([0.0, 0.0, 120.0])) <= np.array([10.0, 10.0, 15.0]))


def _write_autopet(folder: Path, phantom, with_suv: bool = True) -> Path:
    case = _case(phantom, flips=(True, True, False))
    folder.mkdir(parents=True)
    if with_suv:
        write_image(case["pet"], folder / "SUV.nii.gz")
    write_image(sitk.Cast(case["pet"] * 5000.0, sitk.sitkFloat32), folder / "PET.nii.gz")
    write_image(case["ct"], folder / "CT.nii.gz")
    write_image(case["seg"], folder / "SEG.nii.gz")
    write_image(case["organs"], folder / "ORGANS.nii.gz")
    return folder


def test_cli_on_autopet_folder_and_missing_folder(phantom, tmp_path, capsys):
    folder = _write_autopet(tmp_path / "autopet" / "PETCT_0001", phantom)
    (tmp_path / "metadata.csv").write_text("case_id,site,tracer\nPETCT_0001,site_B,fdg\n")
    out = tmp_path / "view.png"
    assert main(["view", str(folder), "--out", str(out), "--pred", str(folder / "SEG.nii.gz")]) == 0
    assert matplotlib.image.imread(out).shape[:2] == (700, 1600)
    images = read_case_images([folder])
    assert set(images) == {"pet", "ct", "seg", "organs"}
    from petctfm.io.layouts.read import describe_case

    assert describe_case([folder]) == "PETCT_0001  |  site: site_B  |  tracer: fdg"

    capsys.readouterr()
    missing = tmp_path / "nope"
    assert main(["view", str(missing), "--out", str(tmp_path / "x.png")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(missing) in err
    assert not (tmp_path / "x.png").exists()


def test_pet_without_suv_is_a_clear_error(phantom, tmp_path):
    folder = _write_autopet(tmp_path / "PETCT_0002", phantom, with_suv=False)
    with pytest.raises(InputError, match="SUV"):
        read_case_images([folder])
    # explicit Bq/ml file passed as PET is caught by its values
    with pytest.raises(InputError, match="Bq/ml"):
        read_case_images([folder / "PET.nii.gz", folder / "CT.nii.gz"])


def test_explicit_files_roles_by_name_and_order(phantom, tmp_path):
    case = _case(phantom)
    write_image(case["pet"], tmp_path / "patient_suv.mha")
    write_image(case["ct"], tmp_path / "patient_ct.nrrd")
    write_image(case["pet"], tmp_path / "a.nii.gz")
    write_image(case["ct"], tmp_path / "b.nii.gz")
    by_name = read_case_images([tmp_path / "patient_ct.nrrd", tmp_path / "patient_suv.mha"])
    np.testing.assert_array_equal(array_xyz(by_name["pet"]), phantom["pet"]["suv"])
    by_order = read_case_images([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"])
    np.testing.assert_array_equal(array_xyz(by_order["ct"]), phantom["ct"]["ct"])
    with pytest.raises(InputError, match="not found"):
        read_case_images([tmp_path / "a.nii.gz", tmp_path / "missing_ct.nii.gz"])


@pytest.mark.parametrize("pet_channel", [1, 0])
def test_nnunet_layout(phantom, tmp_path, pet_channel):
    ds = tmp_path / "nnunet" / "Dataset001_PETCT"
    case = _case(phantom, flips=(False, False, True))
    ct_pet_grid = sitk.Resample(case["ct"], case["pet"], sitk.Transform(), sitk.sitkLinear, -1000.0)
    chans = {pet_channel: ("PET", case["pet"]), 1 - pet_channel: ("CT", ct_pet_grid)}
    for ch, (_, img) in chans.items():
        write_image(img, ds / "imagesTr" / f"PETCT_0005_{ch:04d}.nii.gz")
    write_image(case["seg"], ds / "labelsTr" / "PETCT_0005.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({
        "channel_names": {str(k): v[0] for k, v in chans.items()},
        "labels": {"background": 0, "lesion": 1}, "numTraining": 1, "file_ending": ".nii.gz",
    }))
    for given in ([tmp_path / "nnunet"], [ds / "imagesTr" / "PETCT_0005_0000.nii.gz"]):
        images = read_case_images(given)
        assert set(images) == {"pet", "ct", "seg"}
        np.testing.assert_array_equal(array_xyz(images["pet"]), array_xyz(case["pet"]))
        assert float(array_xyz(images["ct"]).min()) <= -800  # the CT, not the PET
    out = tmp_path / "nn.png"
    assert main(["view", str(ds / "imagesTr" / "PETCT_0005_0001.nii.gz"), "--out", str(out), "--dpi", "20"]) == 0
    assert matplotlib.image.imread(out).shape[:2] == (140, 320)


def test_generated_synthetic_case_renders(tmp_path):
    """End to end on the project's own phantom: the fused slices cut through a SEG lesion."""
    generator = pytest.importorskip("petctfm.synth.generator")
    for index in range(4):
        case = generator.generate_case(index, seed=0, size="tiny")
        if array_xyz(case.seg).any():
            break
    else:
        pytest.fail("no tiny case with lesions among the first four")
    vol = to_display(case.suv, case.ctres, seg=case.seg)
    (i, j, k), reason = select_focus(vol.pet, vol.seg, None, vol.ct)
    assert reason == "hottest lesion" and vol.seg[i, j, k] > 0
    assert vol.pet[i, j, k] == vol.pet[vol.seg > 0].max()
    out = tmp_path / "synth.png"
    render_case(case.suv, case.ct, seg=case.seg, organs=case.organs, title=case.case_id, out_png=out, dpi=30)
    assert matplotlib.image.imread(out).shape[:2] == (210, 480)


def test_focus_largest_picks_the_biggest_lesion_not_the_hottest():
    pet = np.ones((30, 30, 30), np.float32)
    seg = np.zeros((30, 30, 30), np.uint8)
    seg[3:5, 3:5, 3:5] = 1  # small and hot
    pet[4, 4, 4] = 12.0
    seg[15:25, 15:25, 15:25] = 1  # large and cooler, its SUVmax off centre
    pet[15:25, 15:25, 15:25] = 3.0
    pet[20, 18, 22] = 5.0
    assert select_focus(pet, seg)[0] == (4, 4, 4)
    (ijk, reason) = select_focus(pet, None, seg, focus="largest")
    assert ijk == (20, 18, 22) and reason == "largest predicted lesion"
    with pytest.raises(ValueError, match="focus"):
        select_focus(pet, seg, focus="brightest")
