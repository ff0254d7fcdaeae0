"""nnU-Net v2 raw datasets: which channel is PET and which CT, and the files of one case.

::

    ROOT/dataset.json                  channel_names (e.g. {"0": "CT", "1": "PET"}), file_ending, labels
    ROOT/imagesTr/<id>_<ch:04d><ending>   one file per channel
    ROOT/labelsTr/<id><ending>            lesion mask
    ROOT/imagesTs/, ROOT/labelsTs/        the same for the test cases

The channel *named* PET/SUV/PT and the one named CT/CTres are used, whatever their order (nnU-Net v1's
``modality`` key is read the same way); exactly one of each must be named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from petctfm.core.errors import InputError

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
