"""nnU-Net v2 raw datasets: which channel is PET and which CT, and the files of one case.

::

    ROOT/dataset.json                  channel_names (e.g. {"0": "CT", "1": "PET"}), file_ending, labels
    ROOT/imagesTr/<id>_<ch:04d><ending>   one file per channel
    ROOT/labelsTr/<id><ending>            lesion mask
    ROOT/imagesTs/, ROOT/labelsTs/        the same for the test cases

The channel *named* PET/SUV/PT and the one named CT/CTres are used, whatever their order (nnU-Net v1's
``modality`` key is read the same way); exactly one of each must be named.

The ``labels`` table says what the label values are (:func:`nnunet_label_roles`): a lesion-only table (one
foreground label of any name, or only lesion names) leaves ``labelsTr`` a lesion mask, as it always was; a
table that names organs gives each value its role (lesion, one of petctfm's organs, or ignore), and a label
that is neither is refused unless ``--label-roles`` says what it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from petctfm.core.errors import InputError
from petctfm.io.label_table import label_role

NNUNET_CHANNELS: dict[str, str] = {"0": "CT", "1": "PET"}
"""The autoPET challenge convention (channel 0 = CT on the PET grid, 1 = SUV): what petctfm synth writes and
what is assumed for a dataset folder without ``dataset.json``."""
DEFAULT_ENDING = ".nii.gz"
PET_NAMES = ("PET", "SUV", "PT")
CT_NAMES = ("CT", "CTRES")
NNUNET_FILE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")  # image stem <case>_<channel>


class NnunetChannels(NamedTuple):
    """PET and CT channel indices of an nnU-Net dataset and its file ending."""

    pet: int
    ct: int
    ending: str


def find_nnunet_dataset(folder: Path) -> Path | None:
    """``folder`` if it holds ``imagesTr/``, else its first sub-folder (sorted) that does; None if none."""
    if (folder / "imagesTr").is_dir():
        return folder
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "imagesTr").is_dir())
    return subs[0] if subs else None


def nnunet_channels(root: Path, *, required: bool = True) -> NnunetChannels:
    """PET/CT channels and file ending from ``root/dataset.json`` (see the module doc).

    ``required=False``: a missing ``dataset.json`` means :data:`NNUNET_CHANNELS` and ``.nii.gz``.

    Raises:
        InputError: ``dataset.json`` unreadable or without channel names, or not exactly one PET and one CT.
    """
    path = root / "dataset.json"
    if not required and not path.exists():
        names = {int(k): v for k, v in NNUNET_CHANNELS.items()}
        return NnunetChannels(_index(names, PET_NAMES), _index(names, CT_NAMES), DEFAULT_ENDING)
    try:
        info = json.loads(path.read_text())
        raw = info.get("channel_names") or info.get("modality")  # nnU-Net v2, v1
        names = {int(k): str(v).upper() for k, v in raw.items()}
        ending = str(info.get("file_ending", DEFAULT_ENDING))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise InputError(f"{path}: no readable channel_names ({type(exc).__name__})") from None
    pet = [k for k, v in names.items() if v in PET_NAMES]
    ct = [k for k, v in names.items() if v in CT_NAMES]
    if len(pet) != 1 or len(ct) != 1:
        raise InputError(f"{path}: channel_names {names} must name exactly one PET/SUV and one CT channel")
    return NnunetChannels(pet[0], ct[0], ending)


def _index(names: dict[int, str], wanted: tuple[str, ...]) -> int:
    return next(k for k, v in names.items() if v in wanted)


def nnunet_case_ids(root: Path, images: str, ending: str) -> list[str]:
    """Sorted ids of the cases in ``root/images`` (``imagesTr`` or ``imagesTs``): those with a channel-0 file."""
    from petctfm.io.walk import is_regular_file

    return sorted({p.name[: -len(ending) - 5] for p in (root / images).glob(f"*_0000{ending}") if is_regular_file(p)})


def nnunet_case_files(root: Path, images: str, case_id: str, channels: NnunetChannels) -> dict[str, str]:
    """``{"suv", "ct"[, "seg"]}`` -> path relative to ``root`` of one case; ``seg`` only when the label exists."""
    files = {"suv": f"{images}/{case_id}_{channels.pet:04d}{channels.ending}",
             "ct": f"{images}/{case_id}_{channels.ct:04d}{channels.ending}"}
    labels = images.replace("images", "labels")
    if (root / labels / f"{case_id}{channels.ending}").is_file():
        files["seg"] = f"{labels}/{case_id}{channels.ending}"
    return files


def _label_entries(path: Path, table: dict) -> list[tuple[str, list[int]]]:
    """``(name, values)`` of the foreground labels of a ``labels`` table (v2 ``{name: value | [values]}``, v1
    ``{"1": name}``); background (the name or value 0) left out."""
    if all(isinstance(v, str) for v in table.values()) and all(str(k).strip().isdigit() for k in table):
        table = {v: int(k) for k, v in table.items()}  # nnU-Net v1 / MSD: {"0": "background", "1": "liver"}
    entries = []
    for name, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in values):
            raise InputError(f"{path}: label {name!r} has value {value!r}; expected an integer 0..255 or a list "
                             "of them (an nnU-Net region)")
        values = [v for v in values if v != 0]
        if values and str(name).strip().lower() != "background":
            entries.append((str(name), values))
    return entries


def nnunet_label_roles(root: Path, roles: dict[str, str] | None = None) -> dict[int, list[str]] | None:
    """What each label value of ``root``'s ``labelsTr`` is, from ``dataset.json``'s ``labels``: ``{value: roles}``,
    roles a list of ``"lesion"`` and/or one organ name of :data:`petctfm.core.labels.ORGAN_LABELS` (empty: the
    value is ignored), or None when the labels are read as a lesion mask (every nonzero value), as before:
    no ``dataset.json`` or no ``labels``, one foreground label (whatever its name), or only lesion names.

    Each name's role comes from :func:`petctfm.io.label_table.label_role` (``roles``, the ``--label-roles``
    table, first; then organ names, then lesion names). An nnU-Net region (a list of values) gives its role to
    each of its values, so one value can be an organ and the lesion (``"liver": [1, 2], "tumor": [2]``).

    Raises:
        InputError: one line naming ``dataset.json`` and the label: a label that is neither an organ nor a
            lesion name nor in ``roles``; a malformed value; a value named as two organs.
    """
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        table = json.loads(path.read_text()).get("labels")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{path}: unreadable dataset.json ({type(exc).__name__})") from None
    if not isinstance(table, dict):
        return None
    entries = _label_entries(path, table)
    if not entries:
        return None
    named = {name: label_role(name, roles) for name, _ in entries}
    if len(entries) == 1 and named[entries[0][0]] is None:
        return None  # one foreground label of an unknown name ("foreground", "1", "GTV_all"): the lesion, as always
    unknown = [(name, values) for name, values in entries if named[name] is None]
    if unknown:
        name, values = unknown[0]
        more = f" (and {len(unknown) - 1} more: {', '.join(n for n, _ in unknown[1:4])})" if len(unknown) > 1 else ""
        raise InputError(f"{path}: label {name!r} (value {values[0] if len(values) == 1 else values}) is neither one "
                         f"of petctfm's organs nor a lesion name{more}; say what it is with --label-roles FILE, "
                         f'e.g. {{"{name}": "ignore"}} (roles: lesion, ignore, or an organ such as liver, kidney_left)')
    if all(named[name] == "lesion" for name, _ in entries):
        return None  # lesion-only: the label map is the lesion mask, as always
    out: dict[int, list[str]] = {}
    for name, values in entries:
        for v in values:
            got = out.setdefault(v, [])
            if named[name] != "ignore" and named[name] not in got:
                got.append(named[name])
            organs = [r for r in got if r != "lesion"]
            if len(organs) > 1:
                raise InputError(f"{path}: label value {v} is named as two organs ({organs[0]}, {organs[1]})")
    return out
