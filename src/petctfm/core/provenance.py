"""Where a dataset's cases came from: written by ``petctfm synth`` (synthetic phantoms) or not (real data).

``petctfm synth`` marks what it writes with :data:`SYNTH_MARK`: DICOM ``SoftwareVersions``, the NIfTI header
``descrip`` / MetaImage ``ITK_FileNotes`` of every image (:func:`petctfm.io.images.write_image` ``notes=``).
``harmonize`` records per case whether its source carried the mark (``meta.json["synthetic"]``) and, for the
dataset, :func:`summarize` in ``dataset.json["provenance"]``. Reports word their headings with :func:`data_words`
from that record instead of assuming synthetic data.
"""

from __future__ import annotations

from typing import Any, Iterable

#: The mark of data written by ``petctfm synth`` (DICOM SoftwareVersions, image header notes).
SYNTH_MARK = "petctfm synth"


def is_synth_mark(text: Any) -> bool:
    """Whether a header value (a string, or a DICOM multi-value) says ``petctfm synth`` wrote the file."""
    values = text if isinstance(text, (list, tuple)) else [text]
    return any(str(v).strip().startswith(SYNTH_MARK) for v in values if v is not None)


def summarize(flags: Iterable[bool | None]) -> dict[str, Any]:
    """``{"data": "synthetic" | "real" | "mixed" | "unknown", "synthetic_cases", "cases"}`` from the per-case
    flags (None: not recorded, e.g. a case harmonized by an older petctfm)."""
    flags = list(flags)
    known = [f for f in flags if f is not None]
    k = sum(1 for f in known if f)
    if len(known) < len(flags) or not flags:
        data = "unknown"
    else:
        data = "synthetic" if k == len(flags) else "real" if k == 0 else "mixed"
    return {"data": data, "synthetic_cases": k, "cases": len(flags)}


def data_words(provenance: dict[str, Any] | None) -> tuple[str, str]:
    """``(short label, one-sentence warning)`` for a report about a dataset of this ``provenance``
    (``dataset.json["provenance"]``; None: unknown)."""
    p = provenance or {}
    kind = p.get("data", "unknown")
    if kind == "synthetic":
        return ("synthetic data", "**Synthetic data.** Every case comes from petctfm's phantom generator (`petctfm "
                "synth`); these numbers test the code and the experimental design, they are not clinical results "
                "and say nothing about real patients.")
    if kind == "real":
        return ("real data", "**Data not written by `petctfm synth`** (real or externally made studies, as "
                "harmonize recorded them); research results, not a clinical validation.")
    if kind == "mixed":
        return ("mixed synthetic and real data", f"**Mixed data.** {p.get('synthetic_cases')} of {p.get('cases')} "
                "cases come from `petctfm synth` phantoms, the others are not synthetic; read every number with "
                "that mix in mind.")
    return ("data of unknown provenance", "**Provenance unknown.** The dataset does not record whether its cases "
            "came from `petctfm synth` (harmonized by an older petctfm); these numbers are not clinical results.")


__all__ = ["SYNTH_MARK", "is_synth_mark", "summarize", "data_words"]
