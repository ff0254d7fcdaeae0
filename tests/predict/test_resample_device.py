"""``petctfm predict`` with the torch resampler (the CUDA path, forced on the CPU here) gives the default
path's mask: same preprocessing, same probability on the PET grid, same lesions."""

from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import torch

from petctfm.harmonize import resample_torch
from petctfm.predict import predictor as pipeline
from petctfm.predict.predictor import Predictor, predict_one
from petctfm.predict.sources import source_from_files


def test_torch_resampling_path_gives_the_same_mask(synth_tiny, tiny_model, tmp_path, monkeypatch):
    calls = []
    real = resample_torch.resample_xyz_torch
    monkeypatch.setattr(resample_torch, "resample_xyz_torch",
                        lambda *a, **k: calls.append(k["device"]) or real(*a, **k))
    numpy_path = Predictor.load(tiny_model, device="cpu", overlap=0.25)
    assert numpy_path.resample_device is None  # CPU default: NumPy/SimpleITK, as measured
    torch_path = replace(numpy_path, resample_device=torch.device("cpu"))  # what Predictor.load does on CUDA
    case = source_from_files(synth_tiny / "autopet" / "PETCT_0000" / "SUV.nii.gz",
                             synth_tiny / "autopet" / "PETCT_0000" / "CT.nii.gz")
    prep = {name: pipeline.prepare(case, p) for name, p in (("numpy", numpy_path), ("torch", torch_path))}
    assert calls == [torch.device("cpu")] * 2  # PET and CT went through the torch resampler, only on its path
    np.testing.assert_allclose(prep["torch"].x, prep["numpy"].x, rtol=0, atol=1e-5)
    prob = pipeline.infer(prep["numpy"].x, prep["numpy"].bg, numpy_path)
    ref, pet = prep["numpy"].harmonized["reference"], prep["numpy"].images["suv"]
    back = {name: pipeline.to_pet_grid(prob, ref, pet, p.resample_device)
            for name, p in (("numpy", numpy_path), ("torch", torch_path))}
    np.testing.assert_allclose(back["torch"], back["numpy"], rtol=0, atol=1e-5)
    assert len(calls) == 3
    # end to end (files in, files out) with the torch path: the default path's mask
    summary = predict_one(case, torch_path, tmp_path / "torch", report=False, prepared=prep["torch"])
    assert summary["preprocessing"]["resampling"] == "torch cpu" and len(calls) == 4
    mask = np.asarray(nib.load(tmp_path / "torch" / "lesions.nii.gz").dataobj)
    want = (back["numpy"] > numpy_path.threshold).astype(np.uint8)
    assert want.any() and mask.shape == want.shape
    np.testing.assert_array_equal(mask, want)
