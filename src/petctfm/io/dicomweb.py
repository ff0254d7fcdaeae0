"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) through ``dicomweb-client``: find PET/CT studies on a PACS, fetch their
PT and CT series into a local cache that is then read exactly as a DICOM folder, and store results back.

* :func:`connect` -> :class:`DicomWeb`: the server URL, credentials (:func:`credentials`: a bearer token or a user
  and password from environment variables or a file, never from the command line), TLS verification on (an
  own CA bundle may be named, verification cannot be switched off), a connect / read timeout on every request,
  and retries with exponential backoff on timeouts, refused connections and HTTP 408 / 429 / 5xx
  (urllib3's ``Retry`` under ``requests``; ``dicomweb-client``'s own retry is switched off so the two do not
  multiply). After the last attempt: one :class:`DicomWebError` line naming the operation and the cause.
* :meth:`DicomWeb.studies` (QIDO filters: modality, study date or range, patient ID), :meth:`DicomWeb.series`
  (one :class:`SeriesMeta` per series of a study, read from the WADO-RS series metadata: modality, frame of
  reference, date / time, SOP instance UIDs, NumberOfSlices), :func:`pick_pet_ct` (the PT series and its CT:
  same FrameOfReferenceUID, else acquired within a time window), :meth:`DicomWeb.fetch_series` (WADO-RS into
  an :class:`InstanceCache` keyed by SOP Instance UID; missing instances are an error), :meth:`DicomWeb.store`
  (STOW-RS; a partly refused store is an error), :meth:`DicomWeb.derived_series` (the SEG / SR / SC series
  of a study with their algorithm identification and the series they reference: what makes a push idempotent).

Identifiers never reach the logs or messages: :func:`short_uid` prints a UID as an (unsalted) BLAKE2b digest
prefix (``uid#3f2a9c1d``), enough to tell two series apart in one report and useless to look a patient up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlparse

from petctfm.core.errors import InputError, UsageError

log = logging.getLogger("petctfm.dicomweb")

#: Environment variables the credentials are read from (docs/pacs.md).
ENV_TOKEN = "PETCTFM_DICOMWEB_TOKEN"
ENV_USER = "PETCTFM_DICOMWEB_USER"
ENV_PASSWORD = "PETCTFM_DICOMWEB_PASSWORD"
ENV_AUTH_FILE = "PETCTFM_DICOMWEB_AUTH_FILE"
ENV_CA_BUNDLE = "PETCTFM_DICOMWEB_CA_BUNDLE"

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
RETRIES = 4  # attempts after the first
BACKOFF_S = 0.5  # 0.5, 1, 2, 4 s between attempts (urllib3's backoff_factor)
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
CT_WINDOW_S = 30 * 60.0  # a CT acquired within 30 min of the PT (no shared frame of reference) is its CT
MAX_AUTH_FILE = 64 * 1024


class DicomWebError(InputError):
    """The DICOMweb server did not answer as asked (after the retries): one line, exit 3."""


def short_uid(uid: str | None) -> str:
    """A UID as logs may show it: ``uid#`` + 8 hex digits of its BLAKE2b digest (``uid#-`` for none)."""
    if not uid:
        return "uid#-"
    return "uid#" + hashlib.blake2b(str(uid).encode(), digest_size=4).hexdigest()


#: A DICOM UID in running text (three or more dotted numbers, 16 characters or more, so that version numbers
#: stay): what :class:`RedactUIDs` replaces.
_UID_TEXT = re.compile(r"(?<![\w.])\d+(?:\.\d+){2,}(?![\w.])")


class RedactUIDs(logging.Filter):
    """A logging filter that prints every UID in a record as :func:`short_uid` does: attached to the loggers of
    ``dicomweb_client`` and ``urllib3`` (their INFO lines and retry warnings carry study URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _UID_TEXT.search(text):
            record.msg = _UID_TEXT.sub(lambda m: short_uid(m.group(0)) if len(m.group(0)) >= 16 else m.group(0), text)
            record.args = ()
        return True


def redact_library_logs() -> None:
    """Attach :class:`RedactUIDs` to the loggers of the HTTP libraries (once) and keep ``dicomweb_client``'s
    per-request INFO lines out of petctfm's output."""
    for name in ("dicomweb_client", "dicomweb_client.web", "urllib3", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUIDs) for f in logger.filters):
            logger.addFilter(RedactUIDs())
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)


def derived_uid(*parts: str) -> str:
    """A DICOM UID ``2.25.<int>`` of a name-based UUID (RFC 4122 version 5) of ``parts``: the same result of the
    same input and model gets the same UID, so storing it twice stores one instance. (pydicom's ``generate_uid``
    ignores its entropy sources when it makes a ``2.25`` UID, so it cannot be used for this.)"""
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, chr(31).join(str(p) for p in parts)).int}"


# ------------------------------------------------------------------------------------------------ credentials


@dataclass(frozen=True)
class Credentials:
    """``kind`` "bearer" (``token``), "basic" (``user``, ``password``) or "none"; ``source`` says where from
    (an environment variable or a file name) without the secret. ``repr`` never shows the secret."""

    kind: str = "none"
    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    source: str = ""


def credentials(auth_file: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Credentials:
    """The credentials to send: ``auth_file`` (or the file named by ``$PETCTFM_DICOMWEB_AUTH_FILE``), else
    ``$PETCTFM_DICOMWEB_TOKEN`` (bearer), else ``$PETCTFM_DICOMWEB_USER`` + ``$PETCTFM_DICOMWEB_PASSWORD``
    (basic), else none. The file is JSON: ``{"token": "..."}`` or ``{"user": "...", "password": "..."}``
    (read by :func:`petctfm.io.bounded_json.load_bounded_file`); a file others can read is used with a warning."""
    env = os.environ if env is None else env
    path = auth_file or env.get(ENV_AUTH_FILE)
    if path:
        return _credentials_file(Path(path))
    if env.get(ENV_TOKEN):
        return Credentials("bearer", token=env[ENV_TOKEN].strip(), source=f"${ENV_TOKEN}")
    if env.get(ENV_USER) or env.get(ENV_PASSWORD):
        if not (env.get(ENV_USER) and env.get(ENV_PASSWORD)):
            raise UsageError(f"${ENV_USER} and ${ENV_PASSWORD} go together: set both (or neither)")
        return Credentials("basic", user=env[ENV_USER], password=env[ENV_PASSWORD], source=f"${ENV_USER}")
    return Credentials()


def _credentials_file(path: Path) -> Credentials:
    from petctfm.io.bounded_json import load_bounded_file

    if not path.is_file():
        raise InputError(f"{path}: DICOMweb credentials file not found")
    if path.stat().st_mode & 0o077:
        log.warning("%s: credentials file readable by other users (chmod 600 it)", path)
    doc = load_bounded_file(path, max_bytes=MAX_AUTH_FILE)
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object with \"token\", or \"user\" and \"password\"")
    token, user, password = doc.get("token"), doc.get("user"), doc.get("password")
    if token is not None and (user is not None or password is not None):
        raise InputError(f"{path}: give \"token\" or \"user\" and \"password\", not both")
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise InputError(f"{path}: \"token\" must be a non-empty string")
        return Credentials("bearer", token=token.strip(), source=str(path))
    if not (isinstance(user, str) and user and isinstance(password, str) and password):
        raise InputError(f"{path}: expected a JSON object with \"token\", or \"user\" and \"password\" (strings)")
    return Credentials("basic", user=user, password=password, source=str(path))


# ------------------------------------------------------------------------------------------------ the client


def _session(creds: Credentials, ca_bundle: str | None, timeout: tuple[float, float], retries: int,
             backoff_s: float) -> Any:
    """A ``requests`` session: credentials, TLS verification (``ca_bundle`` or the system's), a timeout on every
    request, urllib3 retries with backoff on connection errors, timeouts and :data:`RETRY_STATUS`."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class TimeoutSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

    session = TimeoutSession()
    session.verify = ca_bundle if ca_bundle else True
    session.trust_env = False  # no proxies or .netrc credentials picked up behind the user's back
    if creds.kind == "bearer":
        session.headers["Authorization"] = f"Bearer {creds.token}"
    elif creds.kind == "basic":
        session.auth = (creds.user, creds.password)
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff_s,
                  status_forcelist=RETRY_STATUS, allowed_methods=frozenset({"GET", "POST"}),
                  raise_on_status=False, respect_retry_after_header=True)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def check_url(url: str) -> str:
    """``url`` as given if it is an ``http(s)://host[:port]/path`` URL (UsageError otherwise)."""
    parts = urlparse(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"dicomweb={url!r}: expected an http:// or https:// URL of a DICOMweb service",
                         arg="dicomweb")
    if parts.username or parts.password:  # credentials never on the command line (shell history, ps)
        raise UsageError("dicomweb=URL: the URL carries a user or password; give credentials by "
                         f"${ENV_USER}/${ENV_PASSWORD}, ${ENV_TOKEN} or a credentials file (docs/pacs.md)",
                         arg="dicomweb")
    return str(url).rstrip("/")


def connect(url: str, auth_file: str | os.PathLike | None = None, ca_bundle: str | os.PathLike | None = None,
            timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), retries: int = RETRIES,
            backoff_s: float = BACKOFF_S, env: dict[str, str] | None = None) -> "DicomWeb":
    """A :class:`DicomWeb` on the DICOMweb service at ``url`` (module doc). ``ca_bundle`` (or
    ``$PETCTFM_DICOMWEB_CA_BUNDLE``): a PEM file of the CAs to trust for https."""
    from dicomweb_client.api import DICOMwebClient

    url = check_url(url)
    redact_library_logs()
    env = os.environ if env is None else env
    creds = credentials(auth_file, env)
    ca = str(ca_bundle or env.get(ENV_CA_BUNDLE) or "") or None
    if ca is not None and not Path(ca).is_file():
        raise InputError(f"{ca}: CA bundle not found")
    host = urlparse(url).hostname or ""
    if creds.kind != "none" and url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("credentials sent without TLS to %s (use https)", host)
    client = DICOMwebClient(url, session=_session(creds, ca, timeout, retries, backoff_s), chunk_size=1 << 30)
    client.set_http_retry_params(retry=False)  # one retry layer: the session's
    return DicomWeb(url, client, retries + 1)


@dataclass
class SeriesMeta:
    """One series of a study, from its WADO-RS metadata (no pixel data): shapes none, UIDs full (never logged)."""

    study_uid: str
    uid: str
    modality: str
    frame_of_reference: str = ""
    when: dt.datetime | None = None  # SeriesDate/Time, else AcquisitionDate/Time, else StudyDate/Time
    sop_uids: list[str] = field(default_factory=list)
    number_of_slices: int | None = None  # PT: NumberOfSlices (0054,0081), what a complete series holds
    attenuation_corrected: bool = True
    algorithms: list[tuple[str, str, str]] = field(default_factory=list)  # SEG: (name, version, parameters)
    referenced_series: list[str] = field(default_factory=list)  # SEG / SR: series its instances reference
    description: str = ""


class DicomWeb:
    """The operations petctfm needs on one DICOMweb service; every failure is one :class:`DicomWebError` line."""

    def __init__(self, url: str, client: Any, attempts: int):
        self.url = url
        self.client = client
        self.attempts = attempts

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        import requests

        try:
            return fn()
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            tries = f" after {self.attempts} attempts" if status in RETRY_STATUS else ""
            hint = {401: " (credentials missing or wrong)", 403: " (not allowed for these credentials)",
                    404: " (not found)"}.get(status, "")
            raise DicomWebError(f"{self.url}: {what} failed{tries}: HTTP {status}{hint}") from None
        except requests.exceptions.SSLError as exc:
            raise DicomWebError(f"{self.url}: {what}: TLS certificate not verified ({_reason(exc)}); name the "
                                f"CA with ${ENV_CA_BUNDLE}") from None
        except requests.exceptions.RetryError:
            raise DicomWebError(f"{self.url}: {what} failed after {self.attempts} attempts (server errors)") from None
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            kind = "timed out" if _is_timeout(exc) else "could not connect"
            raise DicomWebError(f"{self.url}: {what} {kind} after {self.attempts} attempts ({_reason(exc)})") from None
        except (ValueError, KeyError, TypeError) as exc:  # a malformed answer
            raise DicomWebError(f"{self.url}: {what}: unexpected answer ({type(exc).__name__}: "
                                f"{str(exc)[:100]})") from None

    # -- QIDO -------------------------------------------------------------------------------------------

    def studies(self, modality: str | None = "PT", date: str | None = None, patient_id: str | None = None,
                limit: int = 1000) -> list[dict[str, str]]:
        """QIDO-RS studies: ``[{"study": uid, "date": StudyDate, "modalities": "CT\\PT"}]``, sorted by date then
        UID. ``modality``: ModalitiesInStudy (default PT); ``date``: ``YYYYMMDD`` or a range ``A-B``;
        ``patient_id``: PatientID (exact)."""
        search: dict[str, Any] = {}
        if modality:
            search["ModalitiesInStudy"] = modality
        if date:
            search["StudyDate"] = date
        if patient_id:
            search["PatientID"] = patient_id
        found = self._call("QIDO studies", lambda: self.client.search_for_studies(
            search_filters=search, fields=["ModalitiesInStudy", "StudyDate"], limit=limit))
        out = []
        for item in found or []:
            uid = _value(item, "0020000D")
            if uid:
                mods = item.get("00080061", {}).get("Value") or []
                out.append({"study": uid, "date": _value(item, "00080020"), "modalities": "\\".join(mods)})
        return sorted(out, key=lambda s: (s["date"], s["study"]))

    def series(self, study_uid: str, modalities: Iterable[str] | None = None) -> list[SeriesMeta]:
        """Every series of the study (of ``modalities`` only, when given: the metadata of the others is not
        fetched), with what :func:`pick_pet_ct` and the push checks need (module doc)."""
        found = self._call(f"QIDO series of study {short_uid(study_uid)}",
                           lambda: self.client.search_for_series(study_instance_uid=study_uid))
        wanted = None if modalities is None else {m.upper() for m in modalities}
        out = []
        for item in found or []:
            uid, modality = _value(item, "0020000E"), _value(item, "00080060").upper()
            if not uid or (wanted is not None and modality not in wanted):
                continue
            meta = self._call(f"WADO metadata of series {short_uid(uid)}",
                              lambda: self.client.retrieve_series_metadata(study_uid, uid))
            out.append(_series_meta(study_uid, uid, modality, meta or []))
        return out

    # -- WADO -------------------------------------------------------------------------------------------

    def fetch_series(self, series: SeriesMeta, cache: "InstanceCache", folder: str) -> Path:
        """Every instance of ``series`` into ``cache.path(folder)``, one file per SOP Instance UID (already cached
        ones are not fetched again). Fewer instances than the series lists, or than a PT's NumberOfSlices:
        :class:`DicomWebError` naming the series and the counts."""
        expected = set(series.sop_uids)
        label = f"{series.modality} series {short_uid(series.uid)}"
        if series.number_of_slices and len(expected) < series.number_of_slices:
            raise DicomWebError(f"{self.url}: {label}: {len(expected)} of {series.number_of_slices} instances "
                                "(NumberOfSlices) on the server: missing instances")
        target = cache.path(folder)
        missing = [u for u in sorted(expected) if not cache.has(folder, u)]
        if len(missing) == len(expected):
            def fetch_all() -> None:
                for ds in self.client.iter_series(series.study_uid, series.uid):
                    cache.put(folder, ds)
            self._call(f"WADO {label}", fetch_all)
        else:
            for uid in missing:
                ds = self._call(f"WADO instance of {label}",
                                lambda uid=uid: self.client.retrieve_instance(series.study_uid, series.uid, uid))
                cache.put(folder, ds)
        got = {u for u in expected if cache.has(folder, u)}
        if got != expected:
            raise DicomWebError(f"{self.url}: {label}: {len(got)} of {len(expected)} instances retrieved: "
                                "missing instances")
        return target

    # -- STOW -------------------------------------------------------------------------------------------

    def store(self, datasets: Sequence[Any], what: str) -> None:
        """STOW-RS ``datasets`` into their study; any instance the server refuses is a :class:`DicomWebError`."""
        if not datasets:
            return
        study = str(datasets[0].StudyInstanceUID)
        answer = self._call(f"STOW {what}", lambda: self.client.store_instances(list(datasets), study))
        failed = list(getattr(answer, "FailedSOPSequence", None) or [])
        if failed:
            reasons = sorted({str(getattr(f, "FailureReason", "?")) for f in failed})
            raise DicomWebError(f"{self.url}: STOW {what}: {len(failed)} instance(s) refused (reason "
                                f"{', '.join(reasons)})")

    def derived_series(self, study_uid: str, modalities: Iterable[str] = ("SEG", "SR", "OT")) -> list[SeriesMeta]:
        """The series of the study whose modality is one of ``modalities`` (results: SEG, SR, secondary capture)."""
        return self.series(study_uid, modalities)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Caused by ", "Read timed out", "Connection refused", "certificate verify failed"):
        if marker in text:
            text = text[text.index(marker):]
            break
    return " ".join(text.split())[:120].rstrip("')")


def _is_timeout(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower()


def _value(item: dict[str, Any], tag: str) -> str:
    """The first value of DICOM JSON attribute ``tag`` as a string ("" when absent)."""
    v = (item.get(tag) or {}).get("Value") or [""]
    return str(v[0]) if not isinstance(v[0], dict) else str(v[0].get("Alphabetic", ""))


def _when(item: dict[str, Any]) -> dt.datetime | None:
    for d, t in (("00080021", "00080031"), ("00080022", "00080032"), ("00080020", "00080030")):
        date, time = _value(item, d), _value(item, t)
        if date:
            try:
                clock = (time.split(".")[0] + "000000")[:6] if time else "000000"
                return dt.datetime.strptime(date[:8] + clock, "%Y%m%d%H%M%S")
            except ValueError:
                continue
    return None


def _series_meta(study_uid: str, uid: str, modality: str, instances: list[dict[str, Any]]) -> SeriesMeta:
    first = instances[0] if instances else {}
    s = SeriesMeta(study_uid, uid, modality or _value(first, "00080060").upper(),
                   frame_of_reference=_value(first, "00200052"), when=_when(first),
                   description=_value(first, "0008103E"))
    s.sop_uids = sorted({_value(i, "00080018") for i in instances if _value(i, "00080018")})
    slices = _value(first, "00540081")
    s.number_of_slices = int(slices) if slices.isdigit() else None
    corrected = [str(v).upper() for v in (first.get("00280051") or {}).get("Value") or []]
    s.attenuation_corrected = "ATTN" in corrected or not corrected
    for inst in instances:
        for ref in (inst.get("00081115") or {}).get("Value") or []:  # ReferencedSeriesSequence
            r = _value(ref, "0020000E")
            if r and r not in s.referenced_series:
                s.referenced_series.append(r)
        for ev in (inst.get("0040A375") or {}).get("Value") or []:  # SR: CurrentRequestedProcedureEvidence
            for ref in (ev.get("00081115") or {}).get("Value") or []:
                r = _value(ref, "0020000E")
                if r and r not in s.referenced_series:
                    s.referenced_series.append(r)
        for seg in (inst.get("00620002") or {}).get("Value") or []:  # SegmentSequence
            algs = (seg.get("00620007") or {}).get("Value") or []  # SegmentationAlgorithmIdentificationSequence
            entries = [(_value(a, "00660036"), _value(a, "00660031"), _value(a, "00660032")) for a in algs]
            if not entries and _value(seg, "00620009"):  # SegmentAlgorithmName alone
                entries = [(_value(seg, "00620009"), "", "")]
            for entry in entries:
                if entry not in s.algorithms:
                    s.algorithms.append(entry)
    return s


def pick_pet_ct(series: Sequence[SeriesMeta], window_s: float = CT_WINDOW_S) -> tuple[SeriesMeta, SeriesMeta]:
    """The PT series (attenuation-corrected first, then most instances) and its CT: the largest CT series with
    the same FrameOfReferenceUID, else the CT acquired closest in time within ``window_s``. One InputError line
    when the study has no PT series, or no CT matches."""
    pts = [s for s in series if s.modality == "PT"]
    cts = [s for s in series if s.modality == "CT"]
    if not pts:
        mods = sorted({s.modality for s in series}) or ["none"]
        raise InputError(f"no PT series in the study (series modalities: {', '.join(mods)})")
    pt = max(pts, key=lambda s: (s.attenuation_corrected, len(s.sop_uids), s.uid))
    same = [c for c in cts if pt.frame_of_reference and c.frame_of_reference == pt.frame_of_reference]
    if same:
        return pt, max(same, key=lambda s: (len(s.sop_uids), s.uid))
    timed = [(abs((c.when - pt.when).total_seconds()), c) for c in cts if c.when is not None and pt.when is not None]
    timed = [(d, c) for d, c in timed if d <= window_s]
    if timed:
        return pt, min(timed, key=lambda dc: (dc[0], -len(dc[1].sop_uids), dc[1].uid))[1]
    why = "no CT series" if not cts else (f"{len(cts)} CT series, none with its frame of reference or acquired "
                                           f"within {window_s / 60:.0f} min")
    raise InputError(f"PT series {short_uid(pt.uid)} without a matching CT ({why})")


# ------------------------------------------------------------------------------------------------ the cache


class InstanceCache:
    """Fetched instances on disk, one Part-10 file per SOP Instance UID (the file named by its digest, never the
    UID) in named folders; :meth:`drop` removes a folder, :meth:`close` (or leaving the ``with`` block) the
    whole cache. ``root``: where to put it (default: the system's temporary folder)."""

    def __init__(self, root: str | os.PathLike | None = None):
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="petctfm-dicomweb-", dir=root))

    def __enter__(self) -> "InstanceCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def path(self, folder: str) -> Path:
        p = self.root / folder
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _file(self, folder: str, sop_uid: str) -> Path:
        return self.root / folder / (hashlib.blake2b(sop_uid.encode(), digest_size=16).hexdigest() + ".dcm")

    def has(self, folder: str, sop_uid: str) -> bool:
        return self._file(folder, sop_uid).is_file()

    def put(self, folder: str, ds: Any) -> Path:
        """Write dataset ``ds`` (Part 10, atomically) under its SOP Instance UID."""
        from petctfm.io.atomic import atomic_path

        self.path(folder)
        path = self._file(folder, str(ds.SOPInstanceUID))
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        return path

    def files(self, folder: str) -> list[Path]:
        return sorted((self.root / folder).glob("*.dcm"))

    def drop(self, folder: str) -> None:
        shutil.rmtree(self.root / folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["DicomWebError", "Credentials", "credentials", "connect", "check_url", "DicomWeb", "SeriesMeta",
           "pick_pet_ct", "InstanceCache", "short_uid", "derived_uid", "CT_WINDOW_S"]
