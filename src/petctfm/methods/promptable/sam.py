"""The ``sam`` design's prompt encoder and mask decoder (SAM / SAM-Med3D / SegAnyPET style; docs/promptable.md).

Over the cached image embedding (B, E, X, Y, Z) of any registered backbone (:mod:`petctfm.models.backbones`),
one :class:`SamDecoder` call per click:

1. **Image tokens**: a stride-``s`` convolution (``model.sam.stride``, default 4) projects the embedding to
   ``D = model.sam.dim`` channels on an (X/s, Y/s, Z/s) grid; the **dense prompt** (the previous mask, downsampled
   by strided 2x2x2 convolutions, SAM's ``mask_downscaling``) is added to it, or a learned "no mask" embedding
   when the previous mask is empty.
2. **Sparse prompt tokens** (:class:`SparsePrompts`, one layout: :func:`sparse_array`): each point and each
   box corner is MONAI's random-Fourier positional encoding of its position (``PositionEmbeddingRandom``,
   SAM's) plus a learned embedding of its label (negative, positive, box low corner, box high corner); padding
   slots are the learned "not a point" token (two of them stand for "no box", as SAM pads a box-less prompt).
   With class prompts, one more token: the learned embedding of the target class (row 0 = "no class").
3. **Two-way transformer** (MONAI ``vista3d.TwoWayTransformer``, ``model.sam.depth`` blocks): the output
   tokens (an IoU token and :data:`N_MASKS` mask tokens) + the prompt tokens attend to the image tokens and back.
4. **Masks**: the image tokens are upscaled back to the patch (transposed 2x2x2 convolutions, SAM's
   ``output_upscaling``) and the full-resolution embedding is added through a 1x1x1 convolution (a high-resolution
   skip as in SAM 2 / HQ-SAM: small PET lesions span a few voxels, less than one token at stride 4); each mask
   token's hypernetwork MLP (MONAI ``vista3d.MLP``) gives the weights of one mask: logits (B, 4, X, Y, Z).
   Token 0 is the single-mask output, tokens 1..3 the three ambiguity candidates (SAM's ``multimask_output``);
   an MLP on the IoU token predicts the IoU of each of the four masks (B, 4).

**Ambiguity** (:func:`ambiguous`, :func:`select_mask`): a prompt of exactly one click (one point, no box, an
empty previous mask) is ambiguous: the candidate (1..3) with the highest predicted IoU is the mask; any other
prompt gives the single mask (token 0), SAM's convention.

**Loss** (:func:`sam_loss`): per mask and sample MONAI's ``DiceFocalLoss`` (``model.sam.loss: dice_focal``, the
default: gamma 2, alpha 0.25, weights ``model.sam.dice_weight`` / ``voxel_weight`` 1 : 1, chosen by validation Dice
on phantoms) or ``DiceCELoss`` (``dice_ce``, as SAM-Med3D trains); SAM's own 20 : 1 focal : Dice is ``voxel_weight:
20``, which collapses the single mask on PET lesions (docs/promptable.md); for an ambiguous sample only the best
candidate (lowest loss) is trained, else the single mask; plus the mean squared error between each predicted IoU
and the actual IoU of its (thresholded) mask, all four masks.

Shapes: embedding (B, E, X, Y, Z); previous mask (B, 1, X, Y, Z) {0, 1}; sparse coords (B, N, 3) float patch
voxel indices, labels (B, N) int64 in {-1 pad, 0 negative, 1 positive, 2 box low corner, 3 box high corner};
class (B,) int64 (0 = no class); logits (B, 4, X, Y, Z); IoU (B, 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from petctfm.core.errors import InputError

PAD, NEG, POS, BOX_LO, BOX_HI = -1, 0, 1, 2, 3  # sparse prompt labels
N_MASKS = 4  # token 0: the single mask; 1..3: the ambiguity candidates
N_CANDIDATES = 3
STRIDES = (1, 2, 4, 8)  # model.sam.stride: image tokens per patch side = patch / stride
#: model.sam.loss: MONAI's DiceCELoss or DiceFocalLoss per mask (:func:`mask_loss`)
LOSSES = ("dice_ce", "dice_focal")
#: the default loss and its weights (Dice, CE / focal), chosen by validation Dice on phantoms (docs/promptable.md)
LOSS_DEFAULTS = {"loss": "dice_focal", "dice_weight": 1.0, "voxel_weight": 1.0}
IOU_WEIGHT = 1.0  # the IoU head's MSE, as SAM
FOCAL_GAMMA, FOCAL_ALPHA = 2.0, 0.25  # SAM's focal parameters (dice_focal)


@dataclass
class SparsePrompts:
    """Points and box corners of a batch: ``coords`` (B, N, 3) float patch voxel indices (continuous), ``labels``
    (B, N) int64 (:data:`PAD`, :data:`NEG`, :data:`POS`, :data:`BOX_LO`, :data:`BOX_HI`)."""

    coords: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> "SparsePrompts":
        return SparsePrompts(self.coords.to(device), self.labels.to(device))

    def append(self, coords: torch.Tensor, labels: torch.Tensor) -> "SparsePrompts":
        """One more slot per sample: ``coords`` (B, 3), ``labels`` (B,) (PAD where a sample gets no click)."""
        return SparsePrompts(torch.cat([self.coords, coords[:, None].to(self.coords)], 1),
                             torch.cat([self.labels, labels[:, None].to(self.labels)], 1))

    def without_box(self) -> "SparsePrompts":
        """The same with box corners turned into padding (the first click only)."""
        box = self.labels >= BOX_LO
        return SparsePrompts(self.coords.masked_fill(box[..., None], 0.0), self.labels.masked_fill(box, PAD))

    def clone(self) -> "SparsePrompts":
        return SparsePrompts(self.coords.clone(), self.labels.clone())


BOX_SLOTS = 2  # every prompt's first two sparse slots: the box's corners, or padding when there is no box


def sparse_array(points: Sequence[tuple[Sequence[float], bool]] = (),
                 box: tuple[Sequence[float], Sequence[float]] | None = None,
                 size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(coords (N, 3) float32, labels (N,) int64) of one object, the one layout of the trainer and the session:
    :data:`BOX_SLOTS` box slots first (the corners, labels 2, 3; :data:`PAD` when there is no box), then the
    points in click order (1 positive, 0 negative), padded with :data:`PAD` to ``size`` slots (None: no padding;
    fewer slots than that is a ValueError). The padding slots are decoder input ("not a point" tokens that the
    two-way transformer attends to), so a prompt must carry the same slots in training and in a session: a
    first click alone is [PAD, PAD, click] in both."""
    coords = [np.zeros(3), np.zeros(3)]
    labels = [PAD, PAD]
    if box is not None:
        coords = [np.asarray(box[0], float), np.asarray(box[1], float)]
        labels = [BOX_LO, BOX_HI]
    for p, positive in points:
        coords.append(np.asarray(p, float))
        labels.append(POS if positive else NEG)
    n = len(labels) if size is None else int(size)
    if n < len(labels):
        raise ValueError(f"{len(labels)} sparse prompt slots do not fit {n} slots")
    c = np.zeros((n, 3), np.float32)
    lab = np.full(n, PAD, np.int64)
    c[:len(labels)] = np.stack(coords)
    lab[:len(labels)] = labels
    return c, lab


def sparse_from_dense(prompts: torch.Tensor) -> SparsePrompts:
    """The sparse prompts recovered from the dense channels (B, 4, X, Y, Z) (:mod:`.prompts`: positive and negative
    click balls, box): one point per 26-connected component of a click channel (its centroid; balls that overlap
    merge into one point, and the click order is lost) and the box channel's bounding corners. The fallback for
    a caller that holds dense maps only; the trainer and the session pass the exact prompts."""
    import cc3d

    from petctfm.methods.promptable import prompts as P

    arr = prompts.detach().float().cpu().numpy() > 0.5
    rows = []
    for b in range(arr.shape[0]):
        pts = []
        for ch, positive in ((P.POS, True), (P.NEG, False)):
            lab, n = cc3d.connected_components(arr[b, ch].astype(np.uint8), connectivity=26, return_N=True)
            for k in range(1, n + 1):
                pts.append((np.argwhere(lab == k).mean(0), positive))
        bb = P.bounding_box(arr[b, P.BOX])
        rows.append((pts, None if bb is None else (bb[0].astype(float), bb[1].astype(float))))
    n = BOX_SLOTS + max(len(p) for p, _ in rows)
    out = [sparse_array(p, bx, n) for p, bx in rows]
    return SparsePrompts(torch.from_numpy(np.stack([c for c, _ in out])).to(prompts.device),
                         torch.from_numpy(np.stack([lab for _, lab in out])).to(prompts.device))


def has_mask(prev: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether each previous mask (B, 1, X, Y, Z) has a voxel."""
    return prev.flatten(1).amax(1) > 0.5


def ambiguous(sparse: SparsePrompts, prev: torch.Tensor) -> torch.Tensor:
    """(B,) bool: exactly one click (one point, no box corner) and an empty previous mask (B, 1, X, Y, Z)."""
    n_points = ((sparse.labels == POS) | (sparse.labels == NEG)).sum(1)
    n_box = (sparse.labels >= BOX_LO).sum(1)
    return (n_points == 1) & (n_box == 0) & ~has_mask(prev).to(n_points.device)


def select_mask(logits: torch.Tensor, iou: torch.Tensor, amb: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z): for an ambiguous sample the candidate (1..3) with the highest predicted IoU, else the
    single mask (0). ``logits`` (B, 4, X, Y, Z), ``iou`` (B, 4), ``amb`` (B,) bool."""
    best = 1 + iou[:, 1:1 + N_CANDIDATES].argmax(1)
    idx = torch.where(amb.to(best.device), best, torch.zeros_like(best))
    return logits.gather(1, idx.view(-1, 1, 1, 1, 1).expand(-1, 1, *logits.shape[2:]))


def _levels(stride: int) -> int:
    if stride not in STRIDES:
        raise InputError(f"model.sam.stride must be one of {', '.join(map(str, STRIDES))}, got {stride}")
    return int(round(np.log2(stride)))


class SamDecoder(nn.Module):
    """Prompt encoder + two-way-transformer mask decoder over a cached embedding; see the module docstring.

    ``forward(embedding, prev, sparse, cls) -> (logits (B, 4, X, Y, Z), iou (B, 4))``; X, Y, Z divisible by
    ``stride``. ``n_classes`` > 0 adds the class token (``n_classes`` + 1 rows, row 0 = no class)."""

    def __init__(self, embed_channels: int, dim: int = 32, depth: int = 2, heads: int = 4, mlp_dim: int = 64,
                 stride: int = 4, n_classes: int = 0):
        super().__init__()
        from monai.networks.nets.vista3d import MLP, PositionEmbeddingRandom, TwoWayTransformer

        levels = _levels(stride)
        if dim % 2 or dim % heads or (dim // 2) % heads:
            raise InputError(f"model.sam.dim ({dim}) must be even and divisible by 2 x model.sam.heads ({heads})")
        self.stride, self.dim, self.n_classes = int(stride), int(dim), int(n_classes)
        self.image_proj = nn.Sequential(nn.Conv3d(embed_channels, dim, stride, stride), nn.InstanceNorm3d(dim, affine=True))
        hidden = max(dim // 4, 4)
        down: list[nn.Module] = []
        c = 1
        for k in range(levels):
            down += [nn.Conv3d(c, hidden, 2, 2), nn.GELU()]
            c = hidden
        down.append(nn.Conv3d(c, dim, 1))
        self.mask_down = nn.Sequential(*down)
        self.no_mask = nn.Embedding(1, dim)
        self.pe = PositionEmbeddingRandom(dim // 2)
        self.point_embed = nn.Embedding(4, dim)  # NEG, POS, BOX_LO, BOX_HI
        self.not_a_point = nn.Embedding(1, dim)
        self.class_embed = nn.Embedding(n_classes + 1, dim) if n_classes else None
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(N_MASKS, dim)
        self.transformer = TwoWayTransformer(depth=depth, embedding_dim=dim, num_heads=heads, mlp_dim=mlp_dim)
        up: list[nn.Module] = []
        c = dim
        for k in range(levels):
            nxt = max(dim // 2 ** (k + 1), 4)
            up += [nn.ConvTranspose3d(c, nxt, 2, 2)] + ([nn.InstanceNorm3d(nxt, affine=True)] if k < levels - 1 else [])
            up.append(nn.GELU())
            c = nxt
        self.upscale = nn.Sequential(*up) if up else nn.Identity()
        self.up_dim = c
        self.skip = nn.Conv3d(embed_channels, c, 1)
        self.hyper = nn.ModuleList([MLP(dim, dim, c, 3) for _ in range(N_MASKS)])
        self.iou_head = MLP(dim, dim, N_MASKS, 3)

    def prompt_tokens(self, sparse: SparsePrompts, size: Sequence[int], cls: torch.Tensor | None) -> torch.Tensor:
        """(B, N (+1 class token), D) tokens of the sparse prompts in a patch of ``size`` (3,) voxels."""
        coords, labels = sparse.coords.float(), sparse.labels
        if labels.shape[1] == 0:  # no point, no box: one "not a point" token (SAM pads the same way)
            coords, labels = coords.new_zeros(coords.shape[0], 1, 3), labels.new_full((labels.shape[0], 1), PAD)
        pe = self.pe.forward_with_coords(coords + 0.5, tuple(int(s) for s in size))  # voxel centres, as the grid
        tok = pe + self.point_embed(labels.clamp(min=0))
        tok = torch.where((labels == PAD)[..., None], self.not_a_point.weight.expand_as(tok), tok)
        if self.class_embed is not None:
            c = torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device) if cls is None else cls.long()
            tok = torch.cat([tok, self.class_embed(c)[:, None]], 1)
        elif cls is not None and bool((cls != 0).any()):
            raise InputError("this model was trained without class prompts (model.class_prompts)")
        return tok

    def forward(self, embedding: torch.Tensor, prev: torch.Tensor, sparse: SparsePrompts,
                cls: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b = embedding.shape[0]
        size = embedding.shape[2:]
        if any(int(s) % self.stride for s in size):
            raise InputError(f"patch {list(size)} is not divisible by model.sam.stride {self.stride}")
        src = self.image_proj(embedding)
        grid = tuple(int(s) for s in src.shape[2:])
        prev = prev.to(src.dtype)
        dense = torch.where(has_mask(prev).view(-1, 1, 1, 1, 1), self.mask_down(prev),
                            self.no_mask.weight.view(1, -1, 1, 1, 1).to(src.dtype))
        src = src + dense
        pos = self.pe(grid).to(src.dtype).unsqueeze(0).expand(b, -1, -1, -1, -1)
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], 0).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, self.prompt_tokens(sparse, size, cls).to(out_tokens.dtype)], 1)
        hs, keys = self.transformer(src, pos, tokens)
        iou = self.iou_head(hs[:, 0])
        img = keys.transpose(1, 2).reshape(b, self.dim, *grid)
        up = self.upscale(img) + self.skip(embedding)
        w = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.hyper)], 1)  # (B, 4, C)
        logits = (w @ up.flatten(2)).view(b, N_MASKS, *up.shape[2:])
        return logits, iou


# ------------------------------------------------------------------------------------------------ loss


def mask_loss(section: Any = None) -> nn.Module:
    """MONAI's loss of one mask from logits, as the typed ``model.sam`` section sets it (``section``: a
    :class:`~petctfm.methods.promptable.config.SamSection`, which owns the checks; None: the defaults
    :data:`LOSS_DEFAULTS`): ``loss="dice_ce"``: ``DiceCELoss(sigmoid=True)`` = ``dice_weight`` x soft Dice +
    ``voxel_weight`` x mean binary cross-entropy; ``"dice_focal"``: ``DiceFocalLoss(sigmoid=True)`` with SAM's
    focal gamma 2, alpha 0.25 (``voxel_weight`` 20 = SAM's 20 : 1)."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    loss, dice, voxel = (LOSS_DEFAULTS["loss"], LOSS_DEFAULTS["dice_weight"], LOSS_DEFAULTS["voxel_weight"]) \
        if section is None else (section.loss, section.dice_weight, section.voxel_weight)
    if loss == "dice_ce":
        return DiceCELoss(sigmoid=True, lambda_dice=float(dice), lambda_ce=float(voxel))
    return DiceFocalLoss(sigmoid=True, gamma=FOCAL_GAMMA, alpha=FOCAL_ALPHA, lambda_dice=float(dice),
                         lambda_focal=float(voxel))


def candidate_losses(logits: torch.Tensor, target: torch.Tensor, loss_fn: nn.Module | None = None) -> torch.Tensor:
    """(B, K): the loss of each mask (logits (B, K, X, Y, Z)) against the target (B, 1, X, Y, Z) {0, 1}, each
    mask and sample on its own (``loss_fn``: :func:`mask_loss`, default the default loss; Dice with MONAI's
    default smoothing, 1e-5)."""
    loss_fn = mask_loss() if loss_fn is None else loss_fn
    t = target.to(logits.dtype)
    rows = [torch.stack([loss_fn(logits[b:b + 1, k:k + 1], t[b:b + 1]) for k in range(logits.shape[1])])
            for b in range(logits.shape[0])]
    return torch.stack(rows)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K) IoU of each thresholded mask (logits > 0) with the target (B, 1, ...); 1 when both are empty."""
    pred = logits > 0
    t = (target > 0.5).expand_as(pred)
    inter = (pred & t).flatten(2).sum(2).float()
    union = (pred | t).flatten(2).sum(2).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, amb: torch.Tensor,
             loss_fn: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """SAM's scheme: the mask loss (``loss_fn``, :func:`mask_loss`) of the best candidate (ambiguous samples) or
    of the single mask (others), mean over the batch, + ``IOU_WEIGHT`` x MSE(predicted IoU, actual IoU) over all
    four masks. logits (B, 4, X, Y, Z), iou_pred (B, 4), target (B, 1, X, Y, Z), amb (B,) bool. Returns (loss,
    logged parts: ``mask_loss``, ``iou_loss``, ``ambiguous`` fraction)."""
    cl = candidate_losses(logits, target, loss_fn)
    per = torch.where(amb.to(cl.device), cl[:, 1:1 + N_CANDIDATES].min(1).values, cl[:, 0])
    with torch.no_grad():
        actual = mask_iou(logits, target)
    iou_loss = F.mse_loss(iou_pred.float(), actual)
    mask_loss = per.mean()
    return mask_loss + IOU_WEIGHT * iou_loss, {"mask_loss": float(mask_loss.detach()),
                                               "iou_loss": float(iou_loss.detach()),
                                               "ambiguous": float(amb.float().mean())}


__all__ = ["PAD", "NEG", "POS", "BOX_LO", "BOX_HI", "N_MASKS", "N_CANDIDATES", "STRIDES", "BOX_SLOTS", "LOSSES",
           "LOSS_DEFAULTS", "IOU_WEIGHT", "SparsePrompts", "sparse_array", "sparse_from_dense", "has_mask", "ambiguous",
           "select_mask", "SamDecoder", "mask_loss", "candidate_losses", "mask_iou", "sam_loss"]
