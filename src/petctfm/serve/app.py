"""The FastAPI application of ``petctfm serve`` and :func:`serve` (uvicorn). Routes are thin over
:class:`~petctfm.serve.cases.CaseList` and :class:`~petctfm.serve.state.CaseState`.

Security (docs/viewer.md): every request needs the server's random token (query ``?token=``, header
``X-Petctfm-Token`` or the HttpOnly SameSite=Strict cookie the page gets when opened with the token URL):
missing -> 401, wrong -> 403. Only listed case ids open (anything else, ``../`` and absolute paths included,
-> 404, logged). Request bodies are capped (``max_body`` bytes -> 413). No CORS headers (same origin only);
the Host header must be the bound address (DNS rebinding). Volumes go out as gzip NIfTI bytes, masks as
bit-packed bytes; requests are small JSON; nothing is unpickled.

Routes (all under the token): ``GET /`` page, ``GET /static/<file>``, ``GET /api/cases``,
``POST /api/cases/<id>/open``, ``GET /api/cases/<id>/volume/{pet,ct}.nii.gz``, ``GET /api/cases/<id>/mask``,
``GET /api/cases/<id>/state``, ``POST /api/cases/<id>/{click,box,auto,delete,undo,redo}`` and the manual tools
``{brush,erase,grow,threshold,confirm}`` (:mod:`petctfm.serve.tools`; JSON body with
``version`` and ``user``; a click or box may name ``kind`` "lesion" | "organ" and, for an organ, ``name``: an
ORGAN_LABELS name, listed by ``/api/cases`` with the model's held-out organs flagged), ``POST /api/cases/<id>/save``.
"""


import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from petctfm.core.errors import InputError, PetctfmError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.serve.cases import CaseList, UnknownCase
from petctfm.serve.state import CaseState, Conflict, nifti_bytes
from petctfm.serve.tools import organs_on_grid

log = logging.getLogger("petctfm.serve")
STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "petctfm_token"
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: requests are small JSON (clicks, boxes)
ACTIONS = ("click", "box", "auto", "delete", "undo", "redo", "brush", "erase", "grow", "threshold", "confirm")


@dataclass
class Server:
    """What one ``petctfm serve`` process serves. ``session_factory(pet, ct) -> PromptSession`` and
    ``auto_factory() -> (pet, ct, organs) -> mask`` (None: no "Run automatic") are the Python-API hooks; see
    :func:`make_server` for the defaults."""

    cases: CaseList
    out: Path
    session_factory: Callable[[Any, Any], Any]
    auto_factory: Callable[[], Callable[..., Any]] | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    max_open: int = 4
    max_body: int = DEFAULT_MAX_BODY
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "testserver")
    model_name: str = "petctfm promptable"
    held_out: tuple[str, ...] = ()  # the model's zero-shot organs (its config's targets.held_out)
    open_cases: "OrderedDict[str, CaseState]" = field(default_factory=OrderedDict)
    _open_lock: threading.Lock = field(default_factory=threading.Lock)
    _auto: Callable[..., Any] | None = None

    def state(self, case_id: str) -> CaseState:
        self.cases.get(case_id)  # 404 for ids outside the list, before anything else
        st = self.open_cases.get(case_id)
        if st is None:
            raise InputError(f"case {case_id} is not open")
        return st

    def open(self, case_id: str) -> CaseState:
        """Read the case, build its session (CT resampled onto the PET grid for display), resume its autosave."""
        import SimpleITK as sitk

        self.cases.get(case_id)
        with self._open_lock:
            if case_id in self.open_cases:
                self.open_cases.move_to_end(case_id)
                return self.open_cases[case_id]
            t0 = time.perf_counter()
            img = self.cases.read(case_id)
            pet = img.pet
            ct = sitk.Resample(img.ct, pet, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
            session = self.session_factory(pet, img.ct)
            auto = None
            if self.auto_factory is not None:
                def auto(img=img):
                    if self._auto is None:
                        self._auto = self.auto_factory()
                    return self._auto(img.pet, img.ct, img.organs)
            st = CaseState(case_id, session, pet, ct, self.out / case_id, img.pt_datasets, auto, self.model_name)
            st.organ_map = organs_on_grid(img.organs, pet)  # flags lesions mostly inside an organ
            _resume(st)
            st.timings["open_s"] = time.perf_counter() - t0
            self.open_cases[case_id] = st
            while len(self.open_cases) > self.max_open:
                self.open_cases.popitem(last=False)
            return st


def _resume(st: CaseState) -> None:
    """Start from the case's autosaved mask (each label its object; kinds, names and the reader's confirmations of
    flagged objects from objects.json), so a closed tab or server loses nothing."""
    import json

    from petctfm.serve.state import OBJECTS_FILE, parse_kind

    path = st.out / "mask.nii.gz"
    if not path.is_file():
        return
    from petctfm.io.images import array_xyz, read_image

    try:
        lab = array_xyz(read_image(path))
        for k in [int(v) for v in sorted(set(lab[lab > 0].tolist()))]:
            st.session.set_mask(lab == k, object=k)
    except PetctfmError as exc:
        log.warning("%s: autosave not resumed (%s)", path, exc)
        return
    try:
        meta = json.loads((st.out / OBJECTS_FILE).read_text()) if (st.out / OBJECTS_FILE).is_file() else {}
        st.meta = {int(k): {**(parse_kind(v) or {"kind": "lesion"}), **({"confirmed": True} if v.get("confirmed") is True else {})}
                   for k, v in meta.items() if int(k) in st.session.objects}
    except (ValueError, TypeError, AttributeError, PetctfmError) as exc:
        log.warning("%s: object kinds not resumed (%s); all objects are lesions", st.out / OBJECTS_FILE, exc)


def make_server(model: str, data: str | None = None, pet: str | None = None, ct: str | None = None,
                out: str = "petctfm-serve", auto_model: str | None = None, device: str = "cpu",
                **kw: Any) -> Server:
    """A :class:`Server` for a ``prompt-train`` run ``model`` (PromptSession.from_run per opened case) and an
    optional fine-tuned segmentation run ``auto_model`` (:class:`~petctfm.predict.predictor.Predictor`)."""
    from petctfm.core.device import resolve_device
    from petctfm.methods.promptable.session import PromptSession

    from petctfm.train.checkpoint import read_weights, resolve_weights

    device = str(resolve_device(device))
    if not Path(model).exists():
        raise InputError(f"{model}: model not found (a prompt-train run folder or model.safetensors)")
    cases = CaseList(data, pet, ct)
    held_out = (read_weights(resolve_weights(model))[1].get("targets") or {}).get("held_out") or ()
    kw.setdefault("held_out", tuple(held_out))

    def session_factory(pet_img: Any, ct_img: Any) -> Any:
        return PromptSession.from_run(model, pet_img, ct=ct_img, device=device)

    auto_factory = None
    if auto_model is not None:
        from petctfm.predict.predictor import Predictor

        if not Path(auto_model).exists():
            raise InputError(f"{auto_model}: automatic model not found (a fine-tuning run folder or .safetensors)")

        def auto_factory() -> Callable[..., Any]:
            predictor = Predictor.from_run(auto_model, device=device)
            return lambda p, c, o: predictor.predict(p, c, organs=o)[0]

    return Server(cases, Path(out), session_factory, auto_factory, **kw)


def create_app(server: Server) -> Any:
    """The FastAPI app over ``server``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app = FastAPI(title="petctfm serve", docs_url=None, redoc_url=None, openapi_url=None)
    statics = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}

    def err(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        given = (request.query_params.get("token") or request.headers.get("x-petctfm-token")
                 or request.cookies.get(COOKIE))
        if not given:
            return err(401, "token required: open the URL petctfm serve printed")
        if not secrets.compare_digest(given.encode(), server.token.encode()):
            log.warning("wrong token from %s for %s", request.client.host if request.client else "?",
                        request.url.path)
            return err(403, "wrong token")
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > server.max_body):
            return err(413, f"request body over {server.max_body} bytes")
        if request.method == "POST":
            body = await request.body()  # read once (chunked bodies too) and counted
            if len(body) > server.max_body:
                return err(413, f"request body over {server.max_body} bytes")
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(server.hosts))

    @app.exception_handler(UnknownCase)
    async def unknown(_request: Request, exc: UnknownCase):
        return err(404, "no such case")

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict):
        return err(409, str(exc))

    @app.exception_handler(PetctfmError)
    async def bad_input(_request: Request, exc: PetctfmError):
        return err(422, str(exc))

    @app.exception_handler(404)
    async def not_found(request: Request, _exc: Exception):
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        if ".." in raw or "%2e" in raw.lower() or "%2f" in raw.lower() or "//" in raw:
            log.warning("refused path %r: path traversal attempt", raw[:200])
        return err(404, "not found")

    @app.get("/")
    def index(request: Request) -> Response:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        resp = HTMLResponse(html)
        resp.set_cookie(COOKIE, server.token, httponly=True, samesite="strict")
        return resp

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in statics:
            raise UnknownCase(name)
        media = "text/javascript" if name.endswith(".js") else None
        return FileResponse(statics[name], media_type=media)

    @app.get("/api/cases")
    def list_cases() -> dict[str, Any]:
        return {"cases": [{"id": c, "open": c in server.open_cases} for c in server.cases.ids()],
                "has_auto": server.auto_factory is not None,
                "organs": [{"name": n, "held_out": n in server.held_out} for n in ORGAN_LABELS if n != "background"]}

    @app.post("/api/cases/{case_id:path}/open")
    def open_case(case_id: str) -> Any:
        try:
            return server.open(case_id).state()
        except (PetctfmError, UnknownCase):
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt case is an error message; the server keeps serving
            log.exception("case %s failed to open", case_id)
            return err(422, f"{case_id}: cannot open ({type(exc).__name__}: {exc})")

    @app.get("/api/cases/{case_id:path}/volume/{which}")
    def volume(case_id: str, which: str) -> Response:
        st = server.state(case_id)
        if which == "mask.nii.gz":  # the label map, uint8, on the PET grid (the page's overlay)
            import numpy as np
            import SimpleITK as sitk

            with st.lock:
                lab = st.labels().astype(np.uint8)
            img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(lab, (2, 1, 0))))
            img.CopyInformation(st.pet)
            return Response(nifti_bytes(img, np.uint8), media_type="application/gzip")
        images = {"pet.nii.gz": st.pet, "ct.nii.gz": st.ct_on_pet}
        if which not in images:
            raise UnknownCase(which)
        return Response(nifti_bytes(images[which]), media_type="application/gzip")

    @app.get("/api/cases/{case_id:path}/mask")
    def mask(case_id: str, box: str | None = None) -> Response:
        """The label map (uint8, x fastest) in ``box=x0,y0,z0,x1,y1,z1`` (hi exclusive; default: all), gzip."""
        import gzip

        st = server.state(case_id)
        try:
            lo, hi = (None, None) if box is None else (lambda v: (v[:3], v[3:]))([int(t) for t in box.split(",", 5)])
        except ValueError:
            raise InputError("box must be six integers x0,y0,z0,x1,y1,z1") from None
        with st.lock:
            data, version = st.label_bytes(lo, hi), st.version
            shape = ",".join(str(s) for s in st.session.grid.shape)
        box_txt = box if box is not None else "0,0,0," + shape
        return Response(gzip.compress(data, compresslevel=1), media_type="application/octet-stream",
                        headers={"Content-Encoding": "gzip", "X-Shape": shape, "X-Box": box_txt,
                                 "X-Version": str(version), "X-Encoding": "uint8-F"})

    @app.get("/api/cases/{case_id:path}/state")
    def state(case_id: str) -> Any:
        st = server.state(case_id)
        with st.lock:
            return st.state()

    @app.post("/api/cases/{case_id:path}/save")
    async def save(case_id: str, request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        st = server.state(case_id)
        body = await _json(request)
        return await run_in_threadpool(st.save, str(body.get("user", "")))  # DICOM-SEG can take seconds

    @app.post("/api/cases/{case_id:path}/{action}")
    async def act(case_id: str, action: str, request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        if action not in ACTIONS:
            raise UnknownCase(action)
        st = server.state(case_id)
        body = await _json(request)
        if "version" not in body:
            raise InputError("request needs the case version the page shows")
        return await run_in_threadpool(st.change, int(body["version"]), str(body.get("user", "")), action, body)

    async def _json(request: Request) -> dict[str, Any]:
        import json

        try:
            body = json.loads((await request.body()) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise InputError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise InputError("request body must be a JSON object")
        return body

    return app


def check_port(port: int) -> int:
    """``port`` as an int in [1, 65535] (a UsageError naming ``port`` otherwise): checked before anything is
    loaded; 0 (any free port) is refused too, as the URL printed must name the port."""
    from petctfm.core.checks import check_int

    return check_int("port", port, lo=1, hi=65535)


def serve(server: Server, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Run the app with uvicorn until Ctrl-C; prints the URL (with the token) first."""
    import uvicorn

    check_port(port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address and has the token can read these cases; "
                    "prefer 127.0.0.1 and an SSH tunnel", host)
        server.hosts = ("*",) if host in ("0.0.0.0", "::") else (*server.hosts, host)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/?token={server.token}"
    print(f"petctfm serve: {len(server.cases.ids())} case(s); open {url}", flush=True)
    uvicorn.run(create_app(server), host=host, port=port, log_level=log_level, server_header=False)


__all__ = ["Server", "make_server", "create_app", "check_port", "serve", "DEFAULT_MAX_BODY"]
