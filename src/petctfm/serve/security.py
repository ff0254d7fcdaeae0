"""What stands between the viewer's API and everything else on the machine or the network (docs/viewer.md,
Security): one ASGI middleware, :class:`Guard`, in front of every route, and the helpers it and ``serve`` use.

Per request, in this order (the first failure answers; nothing behind it runs):

1. **Host** must be one of the server's names with the port it listens on (``127.0.0.1:8765``; no test names):
   400 otherwise (DNS rebinding).
2. **Token** (query ``?token=``, header ``X-Petctfm-Token`` or the HttpOnly cookie ``petctfm_token_<port>``,
   one cookie per port so two servers do not overwrite each other's): missing 401, wrong 403.
3. A **state-changing** request (any method but GET, HEAD, OPTIONS) also needs ``Content-Type:
   application/json`` (415), an ``Origin`` (or, without one, a ``Referer``) equal to the server's own origin,
   scheme + host + port (403), and the CSRF token in header ``X-CSRF-Token`` (403). The page reads that token
   from ``<meta name="csrf-token">``, which :func:`inject_csrf` puts into ``index.html`` when it is served. A
   page on another port of localhost is "same site" for cookies, so the cookie alone proves nothing; it
   cannot read our page (same-origin policy), so it cannot learn the CSRF token, and it cannot send a custom
   header or a JSON content type cross-origin without a CORS preflight, which this server never grants.
4. The **body** is counted while it streams in: ``Content-Length`` over the cap is refused before reading,
   and a chunked body is refused (413) as soon as the bytes read pass the cap; at most ``max_body`` bytes are
   ever held.

Every response gets ``Content-Security-Policy`` (with ``frame-ancestors 'none'``), ``X-Frame-Options: DENY``,
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` and ``Cache-Control: no-store``.

The token survives a restart: :func:`persistent_token` keeps it in ``<out>/.petctfm-serve-token`` (mode 0600),
so open tabs keep working. Paths: :func:`inside` resolves symlinks and refuses a path that leaves its root.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from petctfm.core.errors import InputError, OutputError

log = logging.getLogger("petctfm.serve")

TOKEN_FILE = ".petctfm-serve-token"
TOKEN_HEADER = "x-petctfm-token"
CSRF_HEADER = "x-csrf-token"
CSRF_META = "csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The page's policy (also a <meta> in index.html); the header adds what a <meta> cannot say.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
       "script-src 'self' 'wasm-unsafe-eval'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = ((b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
           (b"cache-control", b"no-store"))
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cookie_name(port: int | None) -> str:
    """The token cookie of the server on ``port``: cookies ignore ports, so the name carries it."""
    return f"petctfm_token_{int(port or 0)}"


def csrf_token(token: str) -> str:
    """The CSRF token of a server: derived from its token (HMAC-SHA256), so it survives a restart with it and
    is never the token itself (the page's JavaScript can read it; the token stays in the HttpOnly cookie)."""
    return hmac.new(token.encode(), b"petctfm-serve csrf", hashlib.sha256).hexdigest()


def inject_csrf(html: str, token: str) -> str:
    """``html`` with ``<meta name="csrf-token" content="...">`` as the first element of its ``<head>``."""
    meta = f'<meta name="{CSRF_META}" content="{csrf_token(token)}">'
    head = html.find("<head>")
    if head < 0:
        return meta + html
    return html[: head + 6] + "\n" + meta + html[head + 6:]


def persistent_token(out: str | os.PathLike) -> str:
    """The server token kept in ``<out>/.petctfm-serve-token`` (created 0600 when missing or unusable), so a
    restart on the same ``--out`` keeps open tabs working. A token file others can read is replaced."""
    from petctfm.io.atomic import atomic_path

    path = Path(out) / TOKEN_FILE
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"{path}: cannot read the token file ({exc.strerror or exc})") from None
    if st is not None and stat.S_ISREG(st.st_mode) and not st.st_mode & 0o077:
        token = path.read_text(encoding="ascii", errors="replace").strip()
        if 32 <= len(token) <= 128 and token.replace("-", "").replace("_", "").isalnum():
            return token
    if st is not None:
        log.warning("%s: replaced (%s)", path, "readable by others" if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077
                    else "not a usable token file")
    token = secrets.token_urlsafe(24)
    try:
        with atomic_path(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, token.encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the token file ({exc.strerror or exc})") from None
    return token


def inside(path: str | os.PathLike, root: str | os.PathLike, what: str) -> Path:
    """``path`` with symlinks resolved, if it stays under ``root`` (resolved too); else an InputError naming
    both (a case folder or file linked out of ``--data``, an output folder linked out of ``--out``)."""
    real, base = Path(path).resolve(), Path(root).resolve()
    if real != base and base not in real.parents:
        raise InputError(f"{path}: {what} leads outside {root} (to {real}); refused")
    return real


def host_names(host: str, allow: Iterable[str] = ()) -> tuple[str, ...]:
    """The names the Host header may carry for a server bound to ``host``: loopback names, ``host`` itself
    when it is a real address (not 0.0.0.0 / ::), and every ``--allow-host``."""
    names = list(LOOPBACK)
    if host not in ("0.0.0.0", "::", ""):
        names.append(host)
    names.extend(h.strip().lower() for h in allow if h.strip())
    return tuple(dict.fromkeys(n.lower() for n in names))


def _authority(name: str, port: int | None, scheme: str) -> set[str]:
    name = f"[{name}]" if ":" in name and not name.startswith("[") else name
    out = {f"{name}:{port}"} if port else {name}
    if port == {"http": 80, "https": 443}.get(scheme):
        out.add(name)
    return out


class Guard:
    """The ASGI middleware of the module docstring. ``server``: the :class:`~petctfm.serve.app.Server` (its
    ``token``, ``hosts`` and ``max_body`` are read per request, so ``serve`` may set them after building)."""

    def __init__(self, app: Callable[..., Awaitable[None]], server: Any):
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *((k, v) for k, v in HEADERS if k not in names)]
            await send(message)

        refusal = self.check(scope)
        if refusal is not None:
            await _answer(send_headers, *refusal)
            return
        method = scope["method"].upper()
        headers = _headers(scope)
        cap = int(self.server.max_body)
        size = headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > cap):
            await _answer(send_headers, 413, f"request body over {cap} bytes")
            return
        if method in SAFE_METHODS and size is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send_headers)
            return
        chunks, total = [], 0
        while True:  # the body, counted while it streams in
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > cap:
                log.warning("refused a request body over %d bytes for %s", cap, scope.get("path", "")[:200])
                await _answer(send_headers, 413, f"request body over {cap} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def receive_again() -> dict:
            return replay.pop() if replay else await receive()

        await self.app(scope, receive_again, send_headers)

    def check(self, scope: dict) -> tuple[int, str] | None:
        """(status, message) of the first check of the module docstring that ``scope`` fails, else None."""
        server, headers = self.server, _headers(scope)
        scheme = scope.get("scheme", "http")
        port = (scope.get("server") or (None, None))[1]
        own = set().union(*(_authority(h, port, scheme) for h in server.hosts))
        host = headers.get("host", "").lower()
        peer = (scope.get("client") or ("?",))[0]
        if host not in own:
            log.warning("refused Host %r from %s (allowed: %s)", host[:200], peer, ", ".join(sorted(own)))
            return 400, "invalid host header"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = ((query.get("token") or [None])[0] or headers.get(TOKEN_HEADER)
                 or _cookies(headers.get("cookie", "")).get(cookie_name(port)))
        if not given:
            return 401, "token required: open the URL petctfm serve printed"
        if not secrets.compare_digest(given.encode(), server.token.encode()):
            log.warning("wrong token from %s for %s", peer, scope.get("path", "")[:200])
            return 403, "wrong token"
        if scope["method"].upper() in SAFE_METHODS:
            return None
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 415, "state-changing requests must be Content-Type: application/json"
        origin = headers.get("origin")
        if origin is None and headers.get("referer"):
            parts = urlsplit(headers["referer"])
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin is None or origin.lower() not in {f"{scheme}://{a}" for a in own}:
            log.warning("refused %s %s from %s: Origin/Referer %r is not this server", scope["method"],
                        scope.get("path", "")[:200], peer, (origin or "")[:200])
            return 403, "cross-origin request refused (Origin / Referer is not this server)"
        csrf = headers.get(CSRF_HEADER, "")
        if not secrets.compare_digest(csrf.encode(), csrf_token(server.token).encode()):
            log.warning("refused %s %s from %s: %s CSRF token", scope["method"], scope.get("path", "")[:200], peer,
                        "wrong" if csrf else "no")
            return 403, "CSRF token missing or wrong (header X-CSRF-Token, from the page's csrf-token meta tag)"
        return None


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            out.setdefault(name, value)
    return out


async def _answer(send: Callable, status: int, msg: str) -> None:
    body = json.dumps({"error": msg}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["CSP", "CSRF_HEADER", "Guard", "TOKEN_FILE", "cookie_name", "csrf_token", "host_names", "inject_csrf",
           "inside", "persistent_token"]
