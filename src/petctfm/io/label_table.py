"""Label tables read from JSON.

* Organ name tables: ``{organ name: label value}`` of a label map (``--labels`` of ``petctfm finetune --task
  organs`` and ``petctfm evaluate --organs``; docs/organs.md): :func:`read_label_table`.
* Label roles: ``{label or segment name: role}`` (``petctfm harmonize --label-roles``; docs/harmonize.md), what a
  foreign label is in a harmonized dataset: ``"lesion"`` (``label.npy``), one of petctfm's organs
  (``organs.npy``, :data:`petctfm.core.labels.ORGAN_LABELS`) or ``"ignore"``: :func:`read_label_roles`, and
  :func:`label_role`, the one rule that names a label's role (explicit table, else the name).
"""

from __future__ import annotations

from pathlib import Path

from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS, is_lesion_name, organ_key
from petctfm.io.bounded_json import load_bounded_file


def read_label_table(path: str | Path) -> dict[str, int]:
    """An organ name table ``{name: label value}`` from a JSON file (``--labels``): a flat object
    (``{"liver": 1, "spleen": 2}``) or an nnU-Net v2 ``dataset.json`` (its ``"labels"`` object, so a multi-label
    nnU-Net dataset's table works as is). Background (value 0, or the name ``background``) is dropped. One-line
    :class:`InputError` naming the file for anything else (nnU-Net region labels, a value outside 1..255, two
    names for one value, an empty table)."""
    doc = load_bounded_file(path)
    if isinstance(doc, dict) and isinstance(doc.get("labels"), dict):
        doc = doc["labels"]
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object {{organ name: label value}} (or an nnU-Net dataset.json)")
    out: dict[str, int] = {}
    for name, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{path}: label {name!r} has value {value!r}; expected one integer label value "
                             "(nnU-Net region labels are not supported)")
        if value == 0 or str(name).lower() == "background":
            continue
        if not 1 <= value <= 255:
            raise InputError(f"{path}: label {name!r} has value {value}; label values must be in 1..255")
        if value in out.values():
            raise InputError(f"{path}: label value {value} is named twice")
        out[str(name)] = value
    if not out:
        raise InputError(f"{path}: no organ label (only background)")
    return out


#: Roles a label can be given besides an organ name: the lesion label, or neither map.
ROLE_WORDS = ("lesion", "ignore")


def _norm(name: str) -> str:
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def label_role(name: str, roles: dict[str, str] | None = None, *, infer: bool = True) -> str | None:
    """The role of a label (an nnU-Net label name, a DICOM-SEG segment label): ``"lesion"``, an
    :data:`~petctfm.core.labels.ORGAN_LABELS` organ name, ``"ignore"``, or None (unknown).

    ``roles`` (:func:`read_label_roles`) first: the exact name, else the name compared without case, ``_``/``-``
    and extra spaces. Then, with ``infer``, the name itself: an organ name (:func:`~petctfm.core.labels.organ_key`:
    ``"Kidney left"``, ``"left kidney"``, ``"urinary_bladder"``) is that organ, a lesion name
    (:func:`~petctfm.core.labels.is_lesion_name`: lesion, tumor, GTV, cancer, metastasis, lymph node ...) the
    lesion; organs are tried first (so ``"liver tumor"`` is a lesion, ``"liver"`` the organ).
    """
    if roles:
        if name in roles:
            return roles[name]
        folded = {_norm(k): v for k, v in roles.items()}
        if _norm(name) in folded:
            return folded[_norm(name)]
    if not infer:
        return None
    organ = organ_key(name)
    if organ is not None:
        return organ
    return "lesion" if is_lesion_name(name) else None


def read_label_roles(path: str | Path) -> dict[str, str]:
    """A label-role table from a JSON object ``{label name: role}`` (``--label-roles``), role ``"lesion"``,
    ``"ignore"`` or an organ of :data:`~petctfm.core.labels.ORGAN_LABELS` (any spelling :func:`organ_key` reads:
    ``"Kidney left"`` -> ``"kidney_left"``). Returns the roles normalized (organ names as in ORGAN_LABELS).
    One-line :class:`InputError` naming the file for anything else (a missing file, not JSON, a role that is
    none of these, an empty table)."""
    doc = load_bounded_file(path)
    if not isinstance(doc, dict) or not doc:
        raise InputError(f"{path}: expected a JSON object {{label name: role}} with at least one label "
                         '(e.g. {"GTVp": "lesion", "Leber": "liver", "pancreas": "ignore"})')
    out: dict[str, str] = {}
    organs = [k for k in ORGAN_LABELS if k != "background"]
    for name, role in doc.items():
        text = str(role).strip().lower() if isinstance(role, str) else None
        key = text if text in ROLE_WORDS else (organ_key(role) if isinstance(role, str) else None)
        if key is None:
            raise InputError(f"{path}: label {name!r} has role {role!r}; a role is lesion, ignore or one of "
                             f"petctfm's organs ({', '.join(organs)})")
        out[str(name)] = key
    return out


__all__ = ["ROLE_WORDS", "label_role", "read_label_roles", "read_label_table"]
