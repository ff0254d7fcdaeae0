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
import re
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
TEXT_LEN = 1 + 2 * len(FIELDS)  # the "field" tokenizer: CLS + (marker, value) per field
_SEX_WORDS = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}

#: Tokenizers: ``field`` (runs written before the paper's prompt: one word per field, 9 tokens) and
#: ``prompt`` (the paper's prompt ``<tracer> 18F FDG <diagnosis> melanoma <age> 61 <sex> M``: an isotope and
#: a compound word, a diagnosis phrase; 16 tokens with padding). A run's config names its tokenizer
#: (``context_align.tokenizer``); a config that stores a vocabulary but no tokenizer is an old run: ``field``.
TOKENIZERS = ("field", "prompt")
PROMPT_LEN = 16

# -------------------------------------------------------------------- the prompt tokenizer's normalizers

#: (mass number, element) -> the isotope word; what real headers write: 18F, F-18, F^18^, [18F], ^18^Fluorine,
#: Fluorine-18, Ga68, Gallium-68 ...
ISOTOPES = {("18", "f"): "18f", ("68", "ga"): "68ga", ("11", "c"): "11c", ("64", "cu"): "64cu",
            ("89", "zr"): "89zr", ("124", "i"): "124i", ("13", "n"): "13n", ("15", "o"): "15o",
            ("82", "rb"): "82rb", ("44", "sc"): "44sc", ("61", "cu"): "61cu"}
_ELEMENTS = {"fluorine": "f", "gallium": "ga", "carbon": "c", "copper": "cu", "zirconium": "zr", "iodine": "i",
             "nitrogen": "n", "oxygen": "o", "rubidium": "rb", "scandium": "sc"}
_EL = "|".join(sorted([*_ELEMENTS, *{e for _, e in ISOTOPES}], key=len, reverse=True))
_ISO_RE = (re.compile(rf"(\d{{1,3}})({_EL})"), re.compile(rf"({_EL})(\d{{1,3}})"))

#: compound word, the spellings that name it (searched in the text with everything but letters and digits
#: removed, in this order: specific ligands before their family), its isotope when only one is in use.
COMPOUNDS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("psma-1007", ("psma1007",), "18f"),
    ("dcfpyl", ("dcfpyl", "piflufolastat", "pylarify"), "18f"),
    ("rhpsma", ("rhpsma", "flotufolastat", "posluma"), "18f"),
    ("psma-11", ("psma11", "psmahbed", "hbedcc", "gozetotide", "illuccix", "locametz"), "68ga"),
    ("psma", ("psma",), None),
    ("fdg", ("fdg", "fludeoxyglucose", "fluorodeoxyglucose", "fluordesoxyglucose", "deoxyglucose"), "18f"),
    ("flt", ("flt", "fluorothymidine", "alovudine"), "18f"),
    ("fluciclovine", ("fluciclovine", "facbc", "axumin"), "18f"),
    ("dotatate", ("dotatate", "netspot", "detectnet"), None),
    ("dotatoc", ("dotatoc", "edotreotide"), None),
    ("dotanoc", ("dotanoc",), "68ga"),
    ("choline", ("choline", "fch"), None),
    ("fes", ("fluoroestradiol", "fes", "cerianna"), "18f"),
    ("fdopa", ("fdopa", "fluorodopa", "dopa"), "18f"),
    ("naf", ("naf", "sodiumfluoride", "fluoride"), "18f"),
    ("fapi", ("fapi",), None),
    ("fet", ("fluoroethyltyrosine", "fet"), "18f"),
    ("fmiso", ("fmiso", "fluoromisonidazole"), "18f"),
)

#: diagnosis phrase, long spellings (searched in the squashed text), short ones (whole words only); first hit
#: wins, so the specific lymphomas and lung cancers come before their families and "negative" comes last.
DIAGNOSIS_PHRASES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("non-hodgkin", "lymphoma"), ("nonhodgkin",), ("nhl",)),
    (("hodgkin", "lymphoma"), ("hodgkin",), ("hl", "chl")),
    (("dlbcl", "lymphoma"), ("dlbcl", "diffuselargebcell", "diffuselargeb"), ()),
    (("follicular", "lymphoma"), ("follicularlymphoma",), ("fl",)),
    (("lymphoma",), ("lymphoma", "lymphom"), ()),
    (("melanoma",), ("melanoma", "melanom"), ()),
    (("nsclc", "lung", "cancer"), ("nsclc", "nonsmallcell"), ()),
    (("sclc", "lung", "cancer"), ("sclc", "smallcell"), ()),
    (("lung", "cancer"), ("lung", "bronchial", "pulmonary"), ()),
    (("prostate", "cancer"), ("prostat",), ("pca", "crpc", "mcrpc", "bcr")),
    (("breast", "cancer"), ("breast",), ()),
    (("head", "neck", "cancer"), ("headandneck", "headneck", "hnscc", "oropharyn"), ("hnc",)),
    (("colorectal", "cancer"), ("colorectal", "colon", "rectal"), ("crc",)),
    (("neuroendocrine", "tumor"), ("neuroendocrine",), ("net", "nen", "gepnet")),
    (("myeloma",), ("myeloma",), ("mm",)),
    (("sarcoma",), ("sarcoma",), ()),
    (("negative",), ("negative", "nofinding", "noevidence", "nodisease", "control", "healthy", "nolesion",
                     "nopathologic"), ("ned", "none", "neg", "normal")),
)
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(y|yr|yrs|year|years|m|mo|month|months|w|wk|wks|week|weeks|d|day|"
                     r"days)?\s*(old)?\s*$", re.IGNORECASE)
_AGE_PER_YEAR = {"y": 1.0, "m": 12.0, "w": 52.18, "d": 365.25}
MAX_AGE = 130


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def isotope_word(text: str) -> str | None:
    """``18f``, ``68ga``... named anywhere in ``text`` (``18F-FDG``, ``Fludeoxyglucose F^18^``, ``[68Ga]``,
    ``^18^Fluorine``, ``Gallium-68``), else None."""
    s = _squash(text)
    for i, rx in enumerate(_ISO_RE):
        for m in rx.finditer(s):
            mass, el = m.groups() if i == 0 else m.groups()[::-1]
            word = ISOTOPES.get((mass, _ELEMENTS.get(el, el)))
            if word:
                return word
    return None


def tracer_words(text: str) -> list[str]:
    """``[isotope, compound]`` of a radiopharmaceutical however written (``18F-FDG``, ``Fludeoxyglucose
    F^18^``, ``68Ga-PSMA-11``, ``Piflufolastat F 18``...): the isotope the text names, else the only one the
    compound is made with; ``["<unk>"]`` when neither is recognized."""
    s = _squash(text)
    iso = isotope_word(text)
    for word, spellings, default_iso in COMPOUNDS:
        if any(sp in s for sp in spellings):
            iso = iso or default_iso
            return [iso, word] if iso else [word]
    return [iso, "<unk>"] if iso else ["<unk>"]


def diagnosis_words(text: str) -> list[str]:
    """A diagnosis phrase of :data:`DIAGNOSIS_PHRASES` (``DLBCL`` -> ``dlbcl lymphoma``, ``Hodgkin's disease``
    -> ``hodgkin lymphoma``, ``lung_cancer`` -> ``lung cancer``, ``no findings`` -> ``negative``), else
    ``["<unk>"]``."""
    low = text.lower().replace("'", "")
    words = set(re.findall(r"[a-z0-9]+", low))
    s = _squash(low)
    for phrase, long, short in DIAGNOSIS_PHRASES:
        if any(sp in s for sp in long) or words & set(short):
            return list(phrase)
    return ["<unk>"]


def age_years(value: Any, source: str) -> float:
    """Age in years from a number or a string (``61``, ``61.4``, DICOM AgeString ``061Y`` / ``006M`` /
    ``012W`` / ``030D``, ``61 years``); a malformed value or one outside 0..130 is an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{source}: malformed age {value!r} (expected a number of years)")
    if isinstance(value, str):
        m = _AGE_RE.match(value)
        if not m:
            raise InputError(f"{source}: malformed age {value!r} (expected years, or a DICOM age such as 061Y)")
        age = float(m.group(1)) / _AGE_PER_YEAR[(m.group(2) or "y")[0].lower()]
    else:
        age = float(value)
    if not math.isfinite(age) or not 0 <= age <= MAX_AGE:
        raise InputError(f"{source}: malformed age {value!r} (expected 0..{MAX_AGE} years)")
    return age


def prompt_field_words(field: str, value: Any, source: str = "meta.json") -> list[str]:
    """The words of one field's value in the paper's prompt (``<unk>`` for missing / unrecognized values;
    malformed ones are one-line InputErrors naming ``source``). Age: completed years (``006M`` -> ``0``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ["<unk>"]
    if field == "age":
        return [str(int(age_years(value, source)))]
    if not isinstance(value, str):
        raise InputError(f"{source}: malformed {field} {value!r} (expected a word)")
    if field == "tracer":
        return tracer_words(value)
    if field == "diagnosis":
        return diagnosis_words(value)
    return [_SEX_WORDS.get(value.strip().lower(), "<unk>")]


def prompt_words(meta: dict[str, Any], source: str = "meta.json") -> list[str]:
    """The paper's prompt as words from a case's metadata: ``["<tracer>", "18f", "fdg", "<diagnosis>",
    "melanoma", "<age>", "61", "<sex>", "M"]``. The tracer is read from ``radiopharmaceutical`` (what the
    DICOM header names, isotope included; harmonize keeps it) together with ``tracer`` (the family)."""
    words: list[str] = []
    for field in FIELDS:
        value = meta.get(field)
        if field == "tracer":
            parts = [meta.get(k) for k in ("radiopharmaceutical", "tracer")]
            for k, v in zip(("radiopharmaceutical", "tracer"), parts):
                if v is not None and not isinstance(v, str):
                    raise InputError(f"{source}: malformed {k} {v!r} (expected a word)")
            value = " ".join(v for v in parts if v and v.strip()) or None
        words += [f"<{field}>", *prompt_field_words(field, value, source)]
    return words


def parse_prompt(text: str) -> list[str]:
    """A prompt string written as the paper's (``"<tracer> 18F FDG <diagnosis> melanoma <age> 61 <sex> M"``)
    -> its words, each field's value normalized as :func:`prompt_field_words`; fields may be missing."""
    parts = re.split(r"(<(?:tracer|diagnosis|age|sex)>)", text)
    values: dict[str, str] = {}
    field = None
    for part in parts:
        if m := re.fullmatch(r"<(tracer|diagnosis|age|sex)>", part):
            field = m.group(1)
        elif field is not None:
            values[field] = part.strip()
        elif part.strip():
            raise InputError(f"prompt {text!r}: text before the first field marker")
    words: list[str] = []
    for f in FIELDS:
        if f in values:
            words += [f"<{f}>", *prompt_field_words(f, values[f], "prompt")]
    return words


def prompt_vocabulary() -> list[str]:
    """The ``prompt`` tokenizer's vocabulary: specials, markers, isotopes, compounds, every diagnosis word,
    ages 0..130, sexes."""
    diagnosis = []
    for phrase, _, _ in DIAGNOSIS_PHRASES:
        diagnosis += [w for w in phrase if w not in diagnosis]
    return [*SPECIALS, *MARKERS, *ISOTOPES.values(), *(c for c, _, _ in COMPOUNDS), *diagnosis,
            *(str(a) for a in range(MAX_AGE + 1)), *SEXES]


def default_vocabulary(tokenizer: str = "prompt") -> list[str]:
    """The fixed metadata vocabulary of ``tokenizer`` (saved in the run's config as ``context_align.vocab``);
    ``field``: the vocabulary of runs written before the prompt tokenizer."""
    if tokenizer == "field":
        return [*SPECIALS, *MARKERS, *TRACERS, *DIAGNOSES, *(str(a) for a in range(121)), *SEXES]
    if tokenizer == "prompt":
        return prompt_vocabulary()
    raise InputError(f"unknown text tokenizer {tokenizer!r} (known: {', '.join(TOKENIZERS)})")


def text_length(tokenizer: str) -> int:
    """Token ids per text (CLS included) of ``tokenizer``."""
    return TEXT_LEN if tokenizer == "field" else PROMPT_LEN


# -------------------------------------------------------------------- the field tokenizer (older runs)


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
    """The ``field`` tokenizer: ``["<tracer>", "fdg", "<diagnosis>", ..., "<sex>", "M"]``, one word per field
    (``source`` names the file in errors). Only :data:`FIELDS` are read."""
    words: list[str] = []
    for field in FIELDS:
        words += [f"<{field}>", _word(meta.get(field), field, source)]
    return words


def words_of(meta: dict[str, Any], tokenizer: str, source: str = "meta.json") -> list[str]:
    """A case's metadata as words under ``tokenizer`` (:data:`TOKENIZERS`)."""
    return metadata_words(meta, source) if tokenizer == "field" else prompt_words(meta, source)


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

    def encode(self, words: Sequence[str], length: int | None = None) -> list[int]:
        """``[CLS] + ids`` (unknown words -> ``<unk>``), padded with ``<pad>`` to ``length`` when given."""
        ids = [CLS] + [self.index.get(w, UNK) for w in words]
        if length is not None:
            if len(ids) > length:
                raise InputError(f"metadata text of {len(ids)} tokens is longer than {length}: {' '.join(words)}")
            ids += [PAD] * (length - len(ids))
        return ids

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.words[int(i)] for i in ids if int(i) not in (PAD, CLS)]


def metadata_tokens(meta: dict[str, Any], vocab: Vocabulary, source: str = "meta.json",
                    tokenizer: str = "field") -> torch.Tensor:
    """(text_length(tokenizer),) int64 token ids of a case's metadata text (``<pad>`` at the end)."""
    ids = vocab.encode(words_of(meta, tokenizer, source), text_length(tokenizer))
    return torch.tensor(ids, dtype=torch.int64)


class TextEncoder(nn.Module):
    """``forward(ids (B, L) int64) -> (B, D)``: the CLS output of a small transformer over metadata tokens
    (``ids[:, 0]`` is ``<cls>``; ``<pad>`` positions are not attended: a key-padding mask when a batch has any;
    the ``field`` tokenizer never pads)."""

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
        keep = ids != PAD
        mask = None if bool(keep.all()) else keep[:, None, None, :]  # (B, 1, 1, L): True = attended
        for blk in self.blocks:
            t = blk(t, mask=mask)
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


__all__ = ["world", "gather_batch", "global_info_nce", "FIELDS", "TEXT_LEN", "PROMPT_LEN", "TOKENIZERS", "ISOTOPES",
           "COMPOUNDS", "DIAGNOSIS_PHRASES", "isotope_word", "tracer_words", "diagnosis_words", "age_years",
           "prompt_field_words", "prompt_words", "parse_prompt", "prompt_vocabulary", "text_length", "words_of",
           "default_vocabulary", "metadata_words", "Vocabulary", "metadata_tokens",
           "TextEncoder", "positives", "info_nce"]
