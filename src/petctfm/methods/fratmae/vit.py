"""ViT building blocks of FratMAE: patchify, 3D sin-cos position codes, SDPA attention, the ViT encoder.

Shapes: a volume ``(B, C, X, Y, Z)`` is cut into ``p``^3 patches on the token grid ``g = (X/p, Y/p, Z/p)``;
tokens are numbered row-major over ``(gx, gy, gz)`` (what ``Conv3d(stride=p).flatten(2)`` gives), so
``N = gx * gy * gz``. Attention is ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-
efficient kernels on GPU), never a hand-written softmax(QK^T)V.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def token_grid(shape: Sequence[int], patch: int) -> tuple[int, int, int]:
    """(gx, gy, gz) of a volume ``shape`` (X, Y, Z); each side must be a multiple of ``patch``."""
    if any(int(s) % patch for s in shape):
        raise ValueError(f"volume {tuple(shape)} is not a multiple of the patch size {patch}")
    return tuple(int(s) // patch for s in shape)  # type: ignore[return-value]


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, N, p^3 * C), token order as the patch embedding, voxels (px, py, pz, c)."""
    b, c, X, Y, Z = x.shape
    gx, gy, gz = X // patch, Y // patch, Z // patch
    x = x.reshape(b, c, gx, patch, gy, patch, gz, patch).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, gx * gy * gz, patch**3 * c)


def unpatchify(t: torch.Tensor, patch: int, grid: Sequence[int], channels: int) -> torch.Tensor:
    """(B, N, p^3 * C) -> (B, C, X, Y, Z), the inverse of :func:`patchify`."""
    b = t.shape[0]
    gx, gy, gz = grid
    x = t.reshape(b, gx, gy, gz, patch, patch, patch, channels).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, channels, gx * patch, gy * patch, gz * patch)


def sincos_3d(grid: Sequence[int], dim: int) -> torch.Tensor:
    """(N, dim) fixed 3D sin-cos position code (MAE's 2D code with a third axis): each axis gets
    ``2 * (dim // 6)`` channels (sin and cos of ``dim // 6`` frequencies); leftover channels are 0."""
    f = dim // 6
    if f < 1:
        raise ValueError(f"embedding width {dim} < 6: too small for a 3D position code")
    omega = 1.0 / 10000 ** (np.arange(f, dtype=np.float64) / f)
    coords = np.stack(np.meshgrid(*[np.arange(g, dtype=np.float64) for g in grid], indexing="ij"), -1).reshape(-1, 3)
    parts = []
    for a in range(3):
        out = coords[:, a:a + 1] * omega[None]
        parts += [np.sin(out), np.cos(out)]
    emb = np.concatenate(parts, 1)
    emb = np.pad(emb, ((0, 0), (0, dim - emb.shape[1])))
    return torch.from_numpy(emb.astype(np.float32))


class Attention(nn.Module):
    """Multi-head attention through SDPA. ``forward(x (B, Nq, D), kv (B, Nk, D) or None) -> (B, Nq, D)``;
    ``kv=None`` is self-attention, otherwise cross-attention (queries from ``x``, keys/values from ``kv``)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of the number of heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: None, or a bool mask broadcastable to (B, heads, Nq, Nk), True = attended."""
        b, n, d = x.shape
        src = x if kv is None else kv
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(src).reshape(b, src.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention (``cross=True``), MLP (4x, GELU).
    ``forward(x (B, N, D), kv (B, M, D) or None, mask: self-attention's bool key mask or None) -> (B, N, D)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, cross: bool = False):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.cross = cross
        if cross:
            self.norm_q, self.norm_kv, self.xattn = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        if self.cross:
            if kv is None:
                raise ValueError("a cross-attention block needs keys/values")
            x = x + self.xattn(self.norm_q(x), self.norm_kv(kv))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """MAE's initialization: xavier-uniform linear layers, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ViTEncoder(nn.Module):
    """A 3D ViT: ``Conv3d(C, D, p, stride=p)`` patch embedding + fixed sin-cos positions, optional CLS token,
    ``depth`` SDPA blocks, final LayerNorm.

    ``forward(x (B, C, X, Y, Z), keep (B, n) long or None) -> (B, [1 +] n, D)``; any input whose sides are
    multiples of ``p`` works (the sin-cos code is computed for its grid), so downstream patches may differ from
    the pretraining stacks.: with ``keep`` only those
    tokens (MAE: the visible ones, in ``keep`` order) enter the blocks; the CLS token (when ``cls``) is first.
    :meth:`hidden_states` returns the outputs of chosen blocks for downstream decoders (UNETR).
    """

    def __init__(self, in_chans: int, grid: Sequence[int], patch: int, dim: int, depth: int, heads: int,
                 cls: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.patch, self.grid, self.dim = int(patch), tuple(int(g) for g in grid), int(dim)
        self.patch_embed = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)
        self.register_buffer("pos", sincos_3d(self.grid, dim)[None], persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls else None
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        init_weights(self)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Embedded tokens before the blocks: (B, [1 +] n, D)."""
        t = self.patch_embed(x)
        grid = tuple(t.shape[2:])
        pos = self.pos if grid == self.grid else sincos_3d(grid, self.dim)[None].to(x.device)  # any grid: fixed code
        t = t.flatten(2).transpose(1, 2) + pos.to(t.dtype)
        if keep is not None:
            t = torch.gather(t, 1, keep[..., None].expand(-1, -1, t.shape[-1]))
        if self.cls_token is not None:
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], 1)
        return t

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        t = self.tokens(x, keep)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def hidden_states(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Patch tokens (B, N, D) (no CLS) after each block in ``layers`` (1-based), all tokens visible."""
        t = self.tokens(x)
        off = 0 if self.cls_token is None else 1
        out = []
        for i, blk in enumerate(self.blocks, 1):
            t = blk(t)
            if i in layers:
                out.append(t[:, off:])
        return out


class TwinViT(nn.Module):
    """FratMAE's encoders, the part reused downstream: ``arch="fratmae"``: ``encoders.pet`` (with CLS) and
    ``encoders.ct``, weights not shared; ``arch="mae"``: ``encoders.joint`` over both channels (with CLS).

    :meth:`features` ``(x (B, 2, X, Y, Z) [PET, CT]) -> [ (B, C, X/p, Y/p, Z/p) ] * len(layers)``: the patch
    tokens after blocks ``layers`` (default: every quarter of the depth, UNETR's 3/6/9/12 for 12 blocks), PET
    and CT concatenated along channels (C = 2D) for the twins, C = D for the joint ViT.
    """

    def __init__(self, arch: str, grid: Sequence[int], patch: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.arch, self.patch, self.dim, self.depth = arch, int(patch), int(dim), int(depth)
        enc = dict(grid=grid, patch=patch, dim=dim, depth=depth, heads=heads)
        if arch == "fratmae":
            self.encoders = nn.ModuleDict({"pet": ViTEncoder(1, cls=True, **enc), "ct": ViTEncoder(1, **enc)})
        else:
            self.encoders = nn.ModuleDict({"joint": ViTEncoder(2, cls=True, **enc)})

    def layers(self) -> list[int]:
        return sorted({max(1, round(self.depth * q / 4)) for q in (1, 2, 3, 4)})

    def features(self, x: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        layers = list(layers or self.layers())
        grid = [s // self.patch for s in x.shape[2:]]
        if self.arch == "fratmae":
            pet = self.encoders["pet"].hidden_states(x[:, 0:1], layers)
            ct = self.encoders["ct"].hidden_states(x[:, 1:2], layers)
            hs = [torch.cat([a, b], -1) for a, b in zip(pet, ct)]
        else:
            hs = self.encoders["joint"].hidden_states(x, layers)
        return [h.transpose(1, 2).reshape(h.shape[0], h.shape[2], *grid) for h in hs]

    def feature_channels(self) -> list[int]:
        return [self.dim * (2 if self.arch == "fratmae" else 1)] * len(self.layers())


__all__ = ["TwinViT", "token_grid", "patchify", "unpatchify", "sincos_3d", "Attention", "Block", "init_weights", "ViTEncoder"]
