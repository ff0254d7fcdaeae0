"""Helpers for the ``petctfm serve`` tests: a tiny synthetic phantom (autoPET + DICOM layouts), a deterministic stand-in
prompt network and a threshold "automatic model", so that the tests assert on what the server and page do with
a mask, not on what a 5-step network happens to predict."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from petctfm.methods.promptable.prompts import NEG, POS, PREV
from petctfm.methods.promptable.session import PromptSession
from toy_data import tiny_prompt_config


def prompt_config():
    return tiny_prompt_config(spacing=8.0)


class ClickNet(torch.nn.Module):
    """Stand-in prompt network: foreground = the previous mask, plus a small ball (~1 patch voxel) around each
    positive click, minus a larger one around each negative click. Deterministic, weightless. It has the
    session's interface (``embed`` once per crop, ``decode`` per click) of :class:`PromptSegmenter`."""

    def embed(self, img):
        return img

    def decode(self, emb, prompts):
        pos = F.max_pool3d(prompts[:, POS:POS + 1], 3, 1, 1)
        neg = F.max_pool3d(prompts[:, NEG:NEG + 1], 5, 1, 2)
        return 10.0 * torch.clamp(pos + prompts[:, PREV:PREV + 1], max=1) - 20.0 * neg - 5.0

    def forward(self, img, prompts):
        return self.decode(self.embed(img), prompts)


def stub_session(pet, ct):
    return PromptSession(ClickNet(), prompt_config(), pet, ct=ct)


def threshold_auto(miss=None, radius: int = 4):
    """"Automatic model" factory: SUV > 6 (the hottest lesions of the phantom and some physiology); ``miss``: a
    voxel around which it finds nothing (a lesion it misses, for the user to add with a click)."""
    from petctfm.io.images import array_xyz

    def auto(pet, ct, organs):
        m = (array_xyz(pet) > 6.0).astype(np.uint8)
        if miss is not None:
            m[tuple(slice(max(int(c) - radius, 0), int(c) + radius + 1) for c in miss)] = 0
        return m

    return lambda: auto


def lesion_voxel(phantom):
    """The centre voxel [x, y, z] of the phantom's largest lesion (from its SEG) and the SEG array."""
    from petctfm.evaluate.lesions import label_lesions
    from petctfm.io.images import array_xyz, read_image

    seg = array_xyz(read_image(phantom / "autopet" / "PETCT_0000" / "SEG.nii.gz"))
    labels, _ = label_lesions(seg > 0)
    idx = np.argwhere(labels == 1)
    centre = idx[np.argmin(((idx - idx.mean(0)) ** 2).sum(1))]
    return centre, seg


BASE = "http://127.0.0.1:8765"  # a real allowed host and port (no test host names are allowed)


def page_client(server, base: str = BASE):
    """A client as the page is one: on the server's own origin, with the token, JSON and the CSRF header."""
    from fastapi.testclient import TestClient

    from petctfm.serve.app import create_app
    from petctfm.serve.security import csrf_token

    c = TestClient(create_app(server), base_url=base)
    c.headers.update({"X-Petctfm-Token": server.token, "Origin": base, "Content-Type": "application/json",
                      "X-CSRF-Token": csrf_token(server.token)})
    return c
