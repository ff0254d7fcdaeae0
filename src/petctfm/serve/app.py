"""The FastAPI application of ``petctfm serve`` and :func:`serve` (uvicorn). Routes are thin over
:class:`~petctfm.serve.cases.CaseList` and :class:`~petctfm.serve.state.CaseState`.

Security (docs/viewer.md; :mod:`petctfm.serve.security` owns it): every request needs the server's token (query
``?token=``, header ``X-Petctfm-Token`` or the HttpOnly SameSite=Strict cookie ``petctfm_token_<port>`` the page
gets when opened with the token URL): missing -> 401, wrong -> 403; a state-changing request also needs JSON,
this server's Origin and the CSRF token header (``X-CSRF-Token``, from the page's ``csrf-token`` meta tag). Only
listed case ids open (anything else, ``../`` and absolute paths included, -> 404, logged). Request bodies are
capped while they stream (``max_body`` bytes -> 413) and typed strictly (:mod:`petctfm.serve.bodies`; 422).
No CORS headers; the Host header must be one of the server's names (DNS rebinding). Volumes go out as gzip
NIfTI bytes, masks as bit-packed bytes; requests are small JSON; nothing is unpickled.

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
from petctfm.serve import history
from petctfm.serve.cases import CaseList, UnknownCase
from petctfm.serve.security import LOOPBACK, Guard, cookie_name, inject_csrf, inside
from petctfm.serve.state import CaseState, Conflict, nifti_bytes
from petctfm.serve.tools import organs_on_grid

log = logging.getLogger("petctfm.serve")
STATIC = Path(__file__).resolve().parent / "static"
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
    hosts: tuple[str, ...] = LOOPBACK  # names the Host header may carry (serve adds --host / --allow-host)
    model_name: str = "petctfm promptable"
    held_out: tuple[str, ...] = ()  # the model's zero-shot organs (its config's targets.held_out)
    open_cases: "OrderedDict[str, CaseState]" = field(default_factory=OrderedDict)
    _open_lock: threading.Lock = field(default_factory=threading.Lock)
    opened: dict[str, history.Kept] = field(default_factory=dict)  # opening state, then kept history (evicted)
    _auto: Callable[..., Any] | None = None

    def state(self, case_id: str) -> CaseState:
        self.cases.get(case_id)  # 404 for ids outside the list, before anything else
        st = self.open_cases.get(case_id)
        if st is None:
            if case_id not in self.opened:
                raise InputError(f"case {case_id} is not open")
            return self.open(case_id)  # evicted while its tab is open: re-opened with its history
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
            out = inside(self.out / case_id, self.out, "the case's output folder")
            st = CaseState(case_id, session, pet, ct, out, img.pt_datasets, auto, self.model_name)
            st.organ_map = organs_on_grid(img.organs, pet)  # flags lesions mostly inside an organ
            if self.cases.web is not None:  # serve --dicomweb: Save names the reader and stores the SEG back
                st.seg_identity, st.push = self.cases.seg_identity(case_id), self.cases.pusher(case_id)
            if case_id in self.opened and self.opened[case_id].version:
                history.restore(st, self.opened[case_id])  # evicted before: its undo history re-applied
            else:
                _resume(st)
                self.opened[case_id] = history.opening(st)
            st.timings["open_s"] = time.perf_counter() - t0
            self.open_cases[case_id] = st
            while len(self.open_cases) > self.max_open:  # evicted with its undo history kept (serve/history.py)
                old_id, old = self.open_cases.popitem(last=False)
                with old.lock:
                    self.opened[old_id] = history.keep(old, self.opened[old_id])
                    old.version = -1  # a request still holding it gets 409 ("reload") instead of a lost change
                log.info("case %s evicted (more than %d open); its history is kept", old_id, self.max_open)
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
                dicomweb: Any = None, **kw: Any) -> Server:
    """A :class:`Server` for a ``prompt-train`` run ``model`` (PromptSession.from_run per opened case) and an
    optional fine-tuned segmentation run ``auto_model`` (:class:`~petctfm.predict.predictor.Predictor`).
    ``dicomweb``: a :class:`petctfm.io.dicomweb.DicomWeb` whose studies are served (docs/pacs.md)."""
    from petctfm.core.device import resolve_device
    from petctfm.methods.promptable.session import PromptSession

    from petctfm.io.atomic import ensure_output_dir
    from petctfm.serve.security import persistent_token

    device = str(resolve_device(device))
    out_dir = ensure_output_dir(out)  # before anything is loaded: a file or read-only --out is exit 4
    weights, cfg = check_prompt_model(model)
    cases = CaseList(data, pet, ct, dicomweb=dicomweb)
    kw.setdefault("held_out", tuple((cfg.get("targets") or {}).get("held_out") or ()))
    kw.setdefault("token", persistent_token(out_dir))

    def session_factory(pet_img: Any, ct_img: Any) -> Any:
        return PromptSession.from_run(weights, pet_img, ct=ct_img, device=device)

    auto_factory = None
    if auto_model is not None:
        from petctfm.predict.predictor import Predictor

        if not Path(auto_model).exists():
            raise InputError(f"{auto_model}: automatic model not found (a fine-tuning run folder or .safetensors)")

        def auto_factory() -> Callable[..., Any]:
            predictor = Predictor.from_run(auto_model, device=device)
            return lambda p, c, o: predictor.predict(p, c, organs=o)[0]

    return Server(cases, out_dir, session_factory, auto_factory, **kw)


def check_prompt_model(model: str) -> tuple[Path, dict[str, Any]]:
    """(weights file, config) of a ``prompt-train`` run: its ``best/`` checkpoint (by validation Dice) when it
    has one, else the latest (:func:`petctfm.inference.model.run_weights`). One InputError line
    for a missing model or one of another kind (a fine-tuning run belongs to ``--auto-model``); metadata only."""
    from petctfm.inference.model import run_weights
    from petctfm.methods.promptable.model import METHOD
    from petctfm.train.checkpoint import read_checkpoint_config

    if not Path(model).exists():
        raise InputError(f"{model}: model not found (a prompt-train run folder or model.safetensors)")
    cfg, path = read_checkpoint_config(run_weights(model))
    if cfg.get("method") != METHOD:
        from petctfm.core.registry import kinds_with_role

        segmenter = cfg.get("method") in kinds_with_role("segmenter")
        hint = " (a fine-tuned segmentation run: give it as --auto-model)" if segmenter else ""
        raise InputError(f"{path}: not a prompt-train model (method {cfg.get('method')!r}){hint}")
    return path, cfg


def create_app(server: Server) -> Any:
    """The FastAPI app over ``server``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    from petctfm.serve.bodies import read_body

    app = FastAPI(title="petctfm serve", docs_url=None, redoc_url=None, openapi_url=None)
    statics = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}

    def err(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    app.add_middleware(Guard, server=server)  # host, token, origin + CSRF, streamed body cap, headers

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
        html = inject_csrf((STATIC / "index.html").read_text(encoding="utf-8"), server.token)
        resp = HTMLResponse(html)
        resp.set_cookie(cookie_name((request.scope.get("server") or (None, None))[1]), server.token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return resp

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in statics:
            raise UnknownCase(name)
        media = "text/javascript" if name.endswith(".js") else None
        return FileResponse(statics[name], media_type=media)

    @app.get("/api/cases")
    def list_cases() -> dict[str, Any]:
        return {"cases": [{"id": c, "open": c in server.open_cases} for c in sorted(server.cases.ids())],
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
        body = read_body(await request.body(), "save", server.max_body)
        return await run_in_threadpool(st.save, body.get("user", ""))  # DICOM-SEG can take seconds

    @app.post("/api/cases/{case_id:path}/{action}")
    async def act(case_id: str, action: str, request: Request) -> Any:
        from starlette.concurrency import run_in_threadpool

        if action not in ACTIONS:
            raise UnknownCase(action)
        st = server.state(case_id)
        body = read_body(await request.body(), action, server.max_body)
        return await run_in_threadpool(st.change, body["version"], body.get("user", ""), action, body)

    return app


def check_port(port: int) -> int:
    """``port`` as an int in [1, 65535] (a UsageError naming ``port`` otherwise): checked before anything is
    loaded; 0 (any free port) is refused too, as the URL printed must name the port."""
    from petctfm.core.checks import check_int

    return check_int("port", port, lo=1, hi=65535)


def serve(server: Server, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning",
          allow_host: tuple[str, ...] = (), certfile: str | None = None, keyfile: str | None = None,
          free_port: bool = True) -> None:
    """Run the app with uvicorn until Ctrl-C (:mod:`petctfm.serve.launch`): the port is bound first (a busy
    default port -> the next free one, said; a busy port with ``free_port=False`` -> UsageError), then the URL
    with the token is printed. ``allow_host``: more names the Host header may carry (the machine's names for
    ``host="0.0.0.0"``); ``certfile``/``keyfile``: TLS."""
    from petctfm.serve.launch import run

    check_port(port)
    try:
        run(server, create_app, host, port, log_level, allow_host, certfile, keyfile, free_port)
    finally:
        server.cases.close()  # serve --dicomweb: the instance cache


__all__ = ["Server", "make_server", "create_app", "check_port", "serve", "DEFAULT_MAX_BODY"]
