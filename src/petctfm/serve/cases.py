"""The cases a server offers, and the images of one case.

Sources (one per server): a folder in any layout ``petctfm predict --in`` reads (autoPET, nnU-Net raw, DICOM
tree, paired files; :func:`petctfm.predict.sources.sources_from_folder`), a harmonized dataset (``dataset.json``
+ ``cases/<id>/image.npy``, PET SUV and CT HU on one RAS grid), one ``--pet``/``--ct`` pair, or a DICOMweb
service (``--dicomweb URL``: its studies with a PT series, named ``study-<digest>``; a study is fetched into the
instance cache when opened and read as ``predict --dicomweb`` reads it, :func:`petctfm.predict.pacs.fetch_study`). Case ids are the
names those readers give (letters, digits, ``-_.``); a request for any other id (``../``, an absolute path, an
unknown name) is refused by :meth:`CaseList.get` with :class:`UnknownCase` and logged: the server never builds a
path from what the page sends. Cases are listed sorted by id. A case whose folder or files are symlinks leading
outside the data folder is not served (logged at start-up, and checked again, symlinks resolved, when it is
read: :func:`petctfm.serve.security.inside`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from petctfm.core.errors import InputError, PetctfmError

log = logging.getLogger("petctfm.serve")


class UnknownCase(LookupError):
    """A case id that is not in the served list (the app answers 404)."""


@dataclass
class CaseImages:
    """One case read: ``pet`` (SUV) and ``ct`` (HU) as SimpleITK images on their own grids, optional organ labels,
    DICOM PT headers in slice order (DICOM input: the DICOM-SEG references them) or None."""

    pet: Any
    ct: Any
    organs: Any = None
    pt_datasets: list | None = None


class CaseList:
    """``case_id -> source`` for one served folder or file pair; see the module docstring."""

    def __init__(self, data: str | os.PathLike | None = None, pet: str | os.PathLike | None = None,
                 ct: str | os.PathLike | None = None, dicomweb: Any = None):
        from petctfm.predict.sources import source_from_files, sources_from_folder

        self.harmonized: Path | None = None
        self.sources: dict[str, Any] = {}
        self.web = dicomweb  # a petctfm.io.dicomweb.DicomWeb, or None
        self.cache: Any = None
        self.pt_series: dict[str, str] = {}  # serve --dicomweb: case id -> the PT series read (the SEG's source)
        if dicomweb is not None:
            if data is not None or pet is not None:
                raise InputError("give a data folder, a PET (and CT) file or a DICOMweb service, not two")
            from petctfm.io.dicomweb import InstanceCache
            from petctfm.predict.pacs import study_folder

            self.sources = {study_folder(s["study"]): s["study"] for s in dicomweb.studies(modality="PT")}
            self.cache = InstanceCache()
            if not self.sources:
                raise InputError(f"{dicomweb.url}: no study with a PT series")
            return
        if (data is None) == (pet is None):
            raise InputError("give either a data folder or a PET (and CT) file")
        if pet is not None:
            if ct is None:
                raise InputError("--pet needs --ct")
            case = source_from_files(pet, ct)
            self.sources[case.case_id] = case
            return
        root = Path(data)
        if not root.is_dir():
            raise InputError(f"{root}: data folder not found")
        if (root / "dataset.json").is_file() and (root / "cases").is_dir():
            self.harmonized = root
            self.sources = {p.name: p for p in sorted((root / "cases").iterdir()) if (p / "image.npy").is_file()}
        else:
            self.sources = {c.case_id: c for c in sources_from_folder(root)}
        self.root = root
        for case_id in list(self.sources):
            try:
                self._check_inside(case_id)
            except InputError as exc:
                log.warning("case %s not served: %s", case_id, exc)
                del self.sources[case_id]
        if not self.sources:
            raise InputError(f"{root}: no PET/CT cases found (see docs/data-layouts.md)")

    root: Path | None = None  # the data folder (None for a --pet/--ct pair, which names its files itself)

    def ids(self) -> list[str]:
        return sorted(self.sources)

    def _check_inside(self, case_id: str) -> None:
        """Every file of the case, symlinks resolved, lies under the data folder (else InputError)."""
        from petctfm.serve.security import inside

        if self.root is None:
            return
        src = self.sources[case_id]
        if isinstance(src, Path):
            paths = [src, *(p for p in src.iterdir() if p.is_file() or p.is_symlink())]
        else:
            paths = [Path(src.root) / src.rel.split("#")[0]]
            for f in src.files.values():
                paths += [Path(src.root) / x for x in (f if isinstance(f, (list, tuple)) else [f])
                          if isinstance(x, (str, os.PathLike))]
        for p in paths:
            inside(p, self.root, f"case {case_id}")

    def get(self, case_id: str) -> Any:
        """The source of ``case_id``; :class:`UnknownCase` (logged; a traversal attempt is named) otherwise."""
        if case_id in self.sources:
            return self.sources[case_id]
        odd = ".." in case_id or case_id.startswith(("/", "\\")) or "/" in case_id or "\\" in case_id
        log.warning("refused case id %r: %s", case_id[:200], "path traversal attempt" if odd else "not served")
        raise UnknownCase(case_id)

    def read(self, case_id: str) -> CaseImages:
        """Read one case (InputError naming the input when it is missing or corrupt)."""
        src = self.get(case_id)
        if self.web is not None:
            return self._read_dicomweb(case_id, src)
        self._check_inside(case_id)  # again: a link may have been made since start-up
        if self.harmonized is not None:
            return _read_harmonized(src)
        from petctfm.predict.predictor import read
        from petctfm.predict.sources import named_error

        try:
            images, pt = read(src)
        except Exception as exc:  # noqa: BLE001 - any failure of a case is one line naming it
            raise named_error(exc, src) from None
        return CaseImages(images["suv"], images["ct"], images.get("organs"), pt)

    def _read_dicomweb(self, case_id: str, study_uid: str) -> CaseImages:
        """Fetch the study's PT and CT into the cache, read them as a DICOM folder, drop the cached files."""
        from petctfm.predict.pacs import fetch_study
        from petctfm.predict.predictor import read
        from petctfm.predict.sources import named_error

        try:
            case, pt = fetch_study(self.web, study_uid, self.cache)
            try:
                images, pt_datasets = read(case)
            except Exception as exc:  # noqa: BLE001 - any failure of a case is one line naming it
                raise named_error(exc, case) from None
        except PetctfmError as exc:
            raise InputError(f"{case_id}: {exc}") from None
        finally:
            self.cache.drop(case_id)
        self.pt_series[case_id] = pt.uid
        return CaseImages(images["suv"], images["ct"], images.get("organs"), pt_datasets)

    def seg_identity(self, case_id: str) -> Any:
        """``(labels, reader) -> build_seg keywords`` of a DICOMweb case's saved SEG: the reader as content
        creator; UIDs derived from the PT series, the reader and the mask, so Save twice stores one instance."""
        import hashlib

        from petctfm.io.dicomweb import derived_uid

        def identity(labels: np.ndarray, reader: str) -> dict[str, Any]:
            series = self.pt_series[case_id]
            digest = hashlib.blake2b(np.ascontiguousarray(labels).tobytes(), digest_size=16).hexdigest()
            return {"content_creator_name": reader.replace("\\", " ").replace("=", " "),
                    "series_instance_uid": derived_uid("petctfm serve", series, reader),
                    "sop_instance_uid": derived_uid("petctfm serve", series, reader, digest)}
        return identity

    def pusher(self, case_id: str) -> Any:
        """``(SEG file) -> line``: STOW-RS of a saved SEG into its study (DICOMweb cases)."""
        def push(path: Path) -> str:
            import pydicom

            self.web.store([pydicom.dcmread(path)], f"SEG of {case_id}")
            return f"{path.name} stored in {self.web.url}"
        return push

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _read_harmonized(folder: Path) -> CaseImages:
    from petctfm.predict.predictor import as_image

    try:
        meta = json.loads((folder / "meta.json").read_text())
        image = np.load(folder / "image.npy", mmap_mode="r")
        affine = np.asarray(meta["affine"], float)
        if image.ndim != 4 or image.shape[0] != 2 or affine.shape != (4, 4):
            raise ValueError(f"image shape {image.shape}, affine shape {affine.shape}")
        organs = np.load(folder / "organs.npy") if (folder / "organs.npy").is_file() else None
        return CaseImages(as_image((np.asarray(image[0]), affine), float32=True),
                          as_image((np.asarray(image[1]), affine), float32=True),
                          None if organs is None else as_image((organs, affine)))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder}: unreadable harmonized case ({type(exc).__name__}: {exc})") from None


__all__ = ["CaseImages", "CaseList", "UnknownCase"]
