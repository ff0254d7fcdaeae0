"""ContextAlign: the case's metadata as text, a small trainable text encoder, and symmetric InfoNCE.

1. **Text**: ``<tracer> fdg <diagnosis> melanoma <age> 61 <sex> M`` from the case's ``meta.json`` (the
   fields harmonize keeps: :data:`FIELDS`). A missing or null field becomes ``<unk>``; so does a well-formed
   value that is not in the vocabulary. A malformed value (a list where a word belongs, an age that is not a
   number or outside 0..130, a boolean) is a one-line :class:`InputError` naming the file. Never a label:
   ``stage`` (the downstream staging target) and lesion fields are not read.
2. **Vocabulary**: fixed (:func:`default_vocabulary`: special tokens, the four field markers, tracers,
   diagnoses, ages 0..120, sexes M/F/O), stored in the run's config (``text.vocab``) so a checkpoint reloads
   with the exact token ids it was trained with.
3. **Text encoder**: token embedding + learned positions + a CLS token + ``depth`` SDPA blocks + LayerNorm;
   the CLS output is the text representation. (No hub is reachable for CLIP's text encoder; the vocabulary is
   ~150 words, so a small encoder trained from scratch is enough: ``docs/fratmae.md``.)
4. **InfoNCE** (:func:`info_nce`): cosine logits ``s * <img_i, txt_j>`` with a learnable scale
   ``s = exp(logit_scale) = 1 / tau`` (CLIP), clamped to <= 100; identical metadata strings in a batch are
   positives of each other: per row ``-log(sum_{j in P(i)} exp(l_ij) / sum_j exp(l_ij))``, averaged over rows,
   and the loss is the mean of the image->text and text->image directions.
5. **Across GPUs** (:func:`global_info_nce`): under DDP the embeddings and texts of every rank are gathered, so
   the contrastive batch is the global batch (the paper's 24 = 8 GPUs x 3), not one rank's.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from petctfm.core.errors import InputError
from petctfm.methods.fratmae.vit import Block, init_weights

FIELDS = ("tracer", "diagnosis", "age", "sex")
SPECIALS = ("<pad>", "<cls>", "<unk>")
PAD, CLS, UNK = 0, 1, 2
MARKERS = tuple(f"<{f}>" for f in FIELDS)
TRACERS = ("fdg", "psma", "18f-fdg", "18f-psma", "68ga-psma", "fluciclovine", "dotatate")
DIAGNOSES = ("negative", "lymphoma", "hodgkin_lymphoma", "melanoma", "lung_cancer", "prostate_cancer")
SEXES = ("M", "F", "O")
TEXT_LEN = 1 + 2 * len(FIELDS)  # CLS + (marker, value) per field
_SEX_WORDS = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}


def default_vocabulary() -> list[str]:
    """The fixed metadata vocabulary (saved in the run's config as ``text.vocab``)."""
    return [*SPECIALS, *MARKERS, *TRACERS, *DIAGNOSES, *(str(a) for a in range(121)), *SEXES]


def _word(value: Any, field: str, source: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "<unk>"
    if field == "age":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InputError(f"{source}: malformed age {value!r} (expected a number of years)")
        try:
            age = float(value)
        except ValueError:
            raise InputError(f"{source}: malformed age {value!r} (expected a number of years)") from None
        if not math.isfinite(age) or not 0 <= age <= 130:
            raise InputError(f"{source}: malformed age {value!r} (expected 0..130 years)")
        return str(int(round(age)))
    if not isinstance(value, str):
        raise InputError(f"{source}: malformed {field} {value!r} (expected a word)")
    word = value.strip()
    if field == "sex":
        return _SEX_WORDS.get(word.lower(), word.upper())
    return word.lower().replace(" ", "_")


def metadata_words(meta: dict[str, Any], source: str = "meta.json") -> list[str]:
    """``["<tracer>", "fdg", "<diagnosis>", ..., "<sex>", "M"]`` from one case's metadata (``source`` names the
    file in errors). Only :data:`FIELDS` are read."""
    words: list[str] = []
    for field in FIELDS:
        words += [f"<{field}>", _word(meta.get(field), field, source)]
    return words


class Vocabulary:
    """Word <-> id over a fixed word list (``words[0..2]`` must be ``<pad>``, ``<cls>``, ``<unk>``)."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[:3]) != SPECIALS or len(set(words)) != len(words):
            raise InputError("text vocabulary must start with <pad>, <cls>, <unk> and have no duplicates")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Sequence[str]) -> list[int]:
        """``[CLS] + ids`` (unknown words -> ``<unk>``)."""
        return [CLS] + [self.index.get(w, UNK) for w in words]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.words[int(i)] for i in ids if int(i) not in (PAD, CLS)]


def metadata_tokens(meta: dict[str, Any], vocab: Vocabulary, source: str = "meta.json") -> torch.Tensor:
    """(TEXT_LEN,) int64 token ids of a case's metadata text."""
    return torch.tensor(vocab.encode(metadata_words(meta, source)), dtype=torch.int64)


class TextEncoder(nn.Module):
    """``forward(ids (B, L) int64) -> (B, D)``: the CLS output of a small transformer over metadata tokens
    (``ids[:, 0]`` is ``<cls>``; ``<pad>`` positions are not attended: every text here has the same length)."""

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, length: int = TEXT_LEN):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, length, dim))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        init_weights(self)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.embed(ids) + self.pos[:, : ids.shape[1]]
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]


def positives(ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: ``True`` where two samples have identical metadata token ids (the diagonal always)."""
    return (ids[:, None, :] == ids[None, :, :]).all(-1)


def info_nce(img: torch.Tensor, txt: torch.Tensor, pos: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Symmetric multi-positive InfoNCE (module docstring) in fp32. img, txt: (B, D) (normalized here);
    pos: (B, B) bool; logit_scale: () = log(1 / tau). Returns (loss, logs as 0-d tensors: ``retrieval_acc`` = fraction of rows,
    both directions, whose top-1 match is a positive; ``tau``)."""
    img = F.normalize(img.float(), dim=-1)
    txt = F.normalize(txt.float(), dim=-1)
    scale = logit_scale.float().clamp(max=math.log(100.0)).exp()
    logits = scale * img @ txt.t()
    neg_inf = torch.finfo(logits.dtype).min

    def one_way(lg: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(lg, 1) - torch.logsumexp(lg.masked_fill(~p, neg_inf), 1)).mean()

    loss = 0.5 * (one_way(logits, pos) + one_way(logits.t(), pos.t()))
    with torch.no_grad():
        hit_i = pos.gather(1, logits.argmax(1, keepdim=True)).float().mean()
        hit_t = pos.t().gather(1, logits.t().argmax(1, keepdim=True)).float().mean()
    return loss, {"retrieval_acc": 0.5 * (hit_i + hit_t), "tau": (1.0 / scale).detach()}


def world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on every rank -> (world * B, ...) in rank order. The other ranks' rows are constants
    (``all_gather`` has no backward); this rank's rows keep their gradient, multiplied by the world size (value
    unchanged: ``x + (n - 1) * (x - x.detach())``), because every rank computes the same global loss and DDP
    averages the ranks' gradients: the mean of ``n * dL/dx_r`` over ranks r is exactly dL/dtheta. World size
    1: ``x`` itself. Every rank must pass the same B (the loader drops the last incomplete batch)."""
    import torch.distributed as dist

    rank, n = world()
    if n == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x + (n - 1) * (x - x.detach()) if x.is_floating_point() else x
    return torch.cat(parts, 0)


def global_info_nce(img: torch.Tensor, txt: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`info_nce` over the global batch: embeddings (B, D) and token ids (B, L) of every rank gathered
    (:func:`gather_batch`), positives from the gathered texts; every rank computes the same value (the
    temperature's gradient is then the same on every rank, as it should be)."""
    return info_nce(gather_batch(img), gather_batch(txt), positives(gather_batch(text)), logit_scale)


__all__ = ["world", "gather_batch", "global_info_nce", "FIELDS", "TEXT_LEN", "default_vocabulary", "metadata_words", "Vocabulary", "metadata_tokens",
           "TextEncoder", "positives", "info_nce"]
