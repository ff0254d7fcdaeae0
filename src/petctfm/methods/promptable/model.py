"""The promptable network: an image encoder whose embedding is cached, and a light prompt-conditioned decoder.

1. **Architecture** (``model.design``, docs/promptable.md):

   - ``"cached"`` (default): the backbone named by ``model.backbone`` (residual UNet / SwinUNETR-v2,
     :mod:`petctfm.models.backbones`) reads the **image only** and returns an embedding of
     ``model.embed_channels`` feature maps at patch resolution (:meth:`PromptSegmenter.embed`: once per crop,
     cached by the session). The mask decoder (:meth:`PromptSegmenter.decode`: every click) is a small residual
     UNet (MONAI ``DynUNet``, filters ``model.head_filters``, every stride 2) on the embedding concatenated with
     the four prompt channels: its first block reads them at full resolution with stride 2, its own encoder
     carries prompts and image features together to 1/4 and 1/8, and it predicts the logit at 1/2 resolution,
     upsampled (trilinear) to the patch, as SAM predicts a low-resolution mask. Working at 1/2 makes a click
     ~5-15x cheaper than a full-resolution decoder (measured, docs/promptable.md).
   - ``"channels"`` (nnInteractive-style, the first design; checkpoints without ``model.design``): the backbone
     reads image + prompt channels; :meth:`embed` is the identity, so every click runs the whole network.
   - ``"sam"`` (SAM-Med3D / SegAnyPET style, :mod:`.sam`): the same cached embedding as ``cached``; the head is a
     :class:`~.sam.SamDecoder`: sparse point / box-corner tokens (random-Fourier positions), the previous mask
     as a dense embedding, a two-way transformer, 3 candidate masks + a single mask and an IoU head. It reads
     the sparse prompts (``sparse``: :class:`~.sam.SparsePrompts`) and, of the dense channels, the previous
     mask only (the click balls and box channel are recovered as sparse prompts when no ``sparse`` is given).

   The designs have the same interface (``embed`` / ``decode`` / ``forward``), used by training
   (``task.py``) and the session alike; ``decode`` takes the sparse prompts and the target class as optional
   keywords (``cached`` / ``channels`` ignore ``sparse``).
3. **Class prompts** (``model.class_prompts``, ``model.classes``; :mod:`.prompts` for the table): ``cls`` (B,)
   int64, 0 = no class. ``cached``: FiLM of the embedding (:class:`ClassFiLM`: a per-class scale and shift per
   embedding channel, zero-initialized so every class starts as the identity). Not an additive bias: the
   decoder's first block is conv + instance norm, which removes a constant per-channel shift of its input
   almost entirely; a per-channel scale changes how the channels mix and survives the normalization. ``sam``:
   one class token among the prompt tokens. ``channels``: none (ConfigError). Without class prompts a model has
   no class module at all (its state dict is unchanged). The backbone is ``.backbone`` so the encoder helpers
   (:mod:`petctfm.models.encoders`) reach it.
4. **Initialization from a pretrained run** (:func:`load_pretrained_encoder`): only the encoder is transferred
   (:func:`petctfm.models.encoders.load_encoder`). Tensors whose input-channel dimension differs (the first
   convolutions) are *inflated*: each image channel of this model takes the pretrained weights of the same
   modality (PET from a joint [PET, CT] MAE), prompt channels (design ``channels``) start at zero, so at step 0
   the encoder computes exactly the pretrained encoder's features of the image.

Shapes: image (B, C_img, X, Y, Z) float32; prompts (B, 4, X, Y, Z); embedding (B, E, X, Y, Z) (``cached`` /
``sam``: E = ``embed_channels``; ``channels``: the image itself); logits (B, 1, X, Y, Z); ``sam``'s
:meth:`PromptSegmenter.decode_all`: logits (B, 4, X, Y, Z) and predicted IoU (B, 4); class (B,) int64.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from petctfm.core.errors import InputError
from petctfm.data.loader import MODES
from petctfm.methods.promptable import sam as S
from petctfm.methods.promptable.prompts import N_PROMPT_CHANNELS, PREV, default_classes
from petctfm.models.backbones import build_backbone
from petctfm.models.encoders import get_encoder, load_encoder

METHOD = "promptable"
DESIGNS = ("cached", "channels", "sam")
HEAD_STRIDES = (2, 2, 2, 2)  # every decoder stage halves; 3 stages need patch sides divisible by 8


def image_channels(cfg: dict[str, Any]) -> tuple[int, ...]:
    """Indices into [PET, CT] of the image channels of a config's ``data.mode`` (``pet``: (0,))."""
    return MODES[cfg["data"]["mode"]]


def design_of(cfg: dict[str, Any]) -> str:
    """``model.design`` of a config; a config without one (saved before the cached design) is ``channels``."""
    d = cfg["model"].get("design", "channels")
    if d not in DESIGNS:
        raise InputError(f"model.design must be one of {', '.join(DESIGNS)}, got {d!r}")
    return d


def class_table(cfg: dict[str, Any]) -> list[str]:
    """The class names a config's model has embeddings for, in index order (index = position + 1; 0 = no
    class): ``model.classes``, else the default table of its held-out organs; [] without ``model.class_prompts``
    (configs saved before class prompts have none)."""
    m = cfg["model"]
    if not m.get("class_prompts", False):
        return []
    return list(m.get("classes") or default_classes((cfg.get("targets") or {}).get("held_out", [])))


class ClassFiLM(nn.Module):
    """``embedding * (1 + gamma[cls]) + beta[cls]`` per channel (the ``cached`` design's class prompt); row 0 is
    "no class"; zero-initialized (identity for every class at step 0)."""

    def __init__(self, n_classes: int, channels: int):
        super().__init__()
        self.table = nn.Embedding(n_classes + 1, 2 * channels)
        nn.init.zeros_(self.table.weight)

    def forward(self, embedding: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        if cls is None:
            cls = torch.zeros(embedding.shape[0], dtype=torch.long, device=embedding.device)
        gamma, beta = self.table(cls.long().to(embedding.device)).to(embedding.dtype).chunk(2, dim=1)
        shape = (*gamma.shape, *([1] * (embedding.dim() - 2)))
        return embedding * (1 + gamma.view(shape)) + beta.view(shape)


class PromptSegmenter(nn.Module):
    """``forward(image, prompts) = decode(embed(image), prompts)``; ``head`` None = the ``channels`` design, a
    :class:`~.sam.SamDecoder` = ``sam``, else ``cached``. ``film``: the ``cached`` design's class prompt
    (:class:`ClassFiLM`), None without class prompts."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, film: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        if film is not None:  # only then: a class-free model's state dict keeps its keys
            self.film = film

    @property
    def design(self) -> str:
        if self.head is None:
            return "channels"
        return "sam" if isinstance(self.head, S.SamDecoder) else "cached"

    @property
    def n_classes(self) -> int:
        """Classes the model has an embedding of (0: no class prompts)."""
        if isinstance(self.head, S.SamDecoder):
            return self.head.n_classes
        film = getattr(self, "film", None)
        return 0 if film is None else film.table.num_embeddings - 1

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C_img, X, Y, Z) -> the embedding a session caches per crop (the image itself for ``channels``)."""
        return image if self.head is None else self.backbone(image)

    def decode(self, embedding: torch.Tensor, prompts: torch.Tensor, sparse: S.SparsePrompts | None = None,
               cls: torch.Tensor | None = None) -> torch.Tensor:
        """(embedding, prompts (B, 4, X, Y, Z)) -> logits (B, 1, X, Y, Z). ``sparse``: the points and box corners
        (``sam``; recovered from ``prompts`` when None); ``cls`` (B,) int64 class indices (None: no class).
        ``sam``: the best candidate by predicted IoU for a one-click prompt, else the single mask."""
        if isinstance(self.head, S.SamDecoder):
            sparse = S.sparse_from_dense(prompts) if sparse is None else sparse
            logits, iou = self.decode_all(embedding, prompts, sparse, cls)
            return S.select_mask(logits, iou, S.ambiguous(sparse, prompts[:, PREV:PREV + 1]))
        film = getattr(self, "film", None)
        if film is not None:
            embedding = film(embedding, cls)
        elif cls is not None and bool((cls != 0).any()):
            raise InputError("this model was trained without class prompts (model.class_prompts)")
        x = torch.cat([embedding, prompts.to(embedding.dtype)], dim=1)
        if self.head is None:
            return self.backbone(x)
        return self.head(x)

    def decode_all(self, embedding: torch.Tensor, prompts: torch.Tensor, sparse: S.SparsePrompts | None = None,
                   cls: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``sam`` only: every mask (B, 4, X, Y, Z: the single mask, then the 3 candidates) and its predicted IoU
        (B, 4)."""
        if not isinstance(self.head, S.SamDecoder):
            raise InputError(f"decode_all: only the sam design has candidate masks (this model: {self.design})")
        sparse = S.sparse_from_dense(prompts) if sparse is None else sparse
        return self.head(embedding, prompts[:, PREV:PREV + 1].to(embedding.dtype), sparse.to(embedding.device),
                         cls)

    def forward(self, image: torch.Tensor, prompts: torch.Tensor, sparse: S.SparsePrompts | None = None,
                cls: torch.Tensor | None = None, all_masks: bool = False):
        """``decode(embed(image), ...)``; ``all_masks`` (``sam``): ``decode_all``'s (logits, IoU) instead (what
        training uses, through the possibly DDP-wrapped module)."""
        if all_masks:
            return self.decode_all(self.embed(image), prompts, sparse, cls)
        if sparse is None and cls is None:
            return self.decode(self.embed(image), prompts)
        return self.decode(self.embed(image), prompts, sparse, cls)


class PromptDecoder(nn.Module):
    """The ``cached`` design's mask decoder on ``x`` = [embedding, prompts] (B, E + 4, X, Y, Z): ``coarse`` (a
    small residual UNet at 1/2 resolution) upsampled (trilinear) to the patch; with ``refine`` (a 3x3x3 conv on
    [upsampled coarse features, x] at full resolution, ~25 M multiply-adds at 32^3) the logit sees the
    embedding's and the clicks' full-resolution detail, else the coarse output is the logit."""

    def __init__(self, coarse: nn.Module, refine: nn.Module | None = None):
        super().__init__()
        self.coarse, self.refine = coarse, refine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(self.coarse(x), size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
        return y if self.refine is None else self.refine(torch.cat([y, x], dim=1))


REFINE_CHANNELS = 8


def build_head(in_channels: int, filters: list[int], refine: bool = True) -> nn.Module:
    """The ``cached`` design's :class:`PromptDecoder`: MONAI DynUNet (every stage stride 2, 3 or 4 stages) with
    ``REFINE_CHANNELS`` outputs + a full-resolution 3x3x3 refinement (``refine``), else one output channel."""
    from monai.networks.nets import DynUNet

    n = len(filters)
    strides = list(HEAD_STRIDES[:n])
    coarse = DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=REFINE_CHANNELS if refine else 1,
                     kernel_size=[3] * n, strides=strides, upsample_kernel_size=strides[1:], filters=list(filters),
                     res_block=True)
    return PromptDecoder(coarse, nn.Conv3d(REFINE_CHANNELS + in_channels, 1, 3, padding=1) if refine else None)


SAM_DEFAULTS = {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "stride": 4}


def build_model(cfg: dict[str, Any]) -> PromptSegmenter:
    """The (untrained) promptable model a config describes; what ``load_model`` calls for a checkpoint."""
    m, n_img = cfg["model"], len(image_channels(cfg))
    over = m.get("overrides") or {}
    design, n_cls = design_of(cfg), len(class_table(cfg))
    if design == "channels":
        if n_cls:
            raise InputError("model.class_prompts needs model.design cached or sam (not channels)")
        return PromptSegmenter(build_backbone(m["backbone"], n_img + N_PROMPT_CHANNELS, 1, **over))
    e = int(m.get("embed_channels", 16))
    if design == "sam":
        if e < 1:
            raise InputError(f"model.embed_channels must be >= 1, got {e}")
        sam = {**SAM_DEFAULTS, **(m.get("sam") or {})}
        head = S.SamDecoder(e, int(sam["dim"]), int(sam["depth"]), int(sam["heads"]), int(sam["mlp_dim"]),
                            int(sam["stride"]), n_classes=n_cls)
        return PromptSegmenter(build_backbone(m["backbone"], n_img, e, **over), head)
    filters = [int(f) for f in m.get("head_filters", [16, 32, 32])]
    if e < 1 or not 3 <= len(filters) <= len(HEAD_STRIDES) or min(filters) < 1:
        raise InputError(f"model.embed_channels must be >= 1 and model.head_filters 3..{len(HEAD_STRIDES)} "
                         f"positive widths, got {e} / {filters}")
    # configs saved before the refinement existed have no model.head_refine: their decoder had none
    head = build_head(e + N_PROMPT_CHANNELS, filters, refine=bool(m.get("head_refine", False)))
    return PromptSegmenter(build_backbone(m["backbone"], n_img, e, **over), head,
                           ClassFiLM(n_cls, e) if n_cls else None)



def load_pretrained_encoder(model: PromptSegmenter, state: dict[str, torch.Tensor], pretrained_mode: str,
                            mode: str) -> list[str]:
    """Load a pretrained encoder (``state``: a backbone / MAE state dict of a run trained in ``pretrained_mode``)
    into ``model`` (built for ``mode``), inflating input convolutions; returns the inflated keys.

    A pretrained run without one of this model's modalities (a CT-only MAE for a PET model) is an InputError.
    """
    src, dst = MODES[pretrained_mode], MODES[mode]
    missing = [c for c in dst if c not in src]
    if missing:
        raise InputError(f"pretrained run (mode {pretrained_mode!r}) has no weights for the input channels of mode "
                         f"{mode!r}")
    enc = get_encoder(model)
    own = enc.net.state_dict()
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    inflated = []
    for k, v in list(state.items()):
        if k in own and v.dim() >= 2 and v.shape[1] == len(src) and own[k].shape[1] != v.shape[1] \
                and own[k].shape[0] == v.shape[0] and own[k].shape[2:] == v.shape[2:]:
            w = torch.zeros_like(own[k])
            for j, c in enumerate(dst):
                w[:, j] = v[:, src.index(c)]
            state[k] = w
            inflated.append(k)
    load_encoder(model, state)
    return inflated


__all__ = ["METHOD", "DESIGNS", "HEAD_STRIDES", "image_channels", "design_of", "class_table", "ClassFiLM",
           "PromptSegmenter", "PromptDecoder", "REFINE_CHANNELS", "build_head", "SAM_DEFAULTS",
           "build_model", "load_pretrained_encoder"]
