"""Starting ``petctfm serve``: bind the port first, then print a URL that works, then run uvicorn on that socket.

* The socket is bound **before** the URL is printed: a busy port never prints a token URL that then fails. The
  default port, when busy, is replaced by the next free one (said in one line); a port given explicitly and
  busy is a one-line usage error (exit 2).
* The Host allow-list (:func:`petctfm.serve.security.host_names`) is the loopback names, the bound address and
  every ``--allow-host``; binding ``0.0.0.0`` / ``::`` keeps the check. The URL printed names a host that
  reaches the server: the first ``--allow-host`` (or loopback when none is given, with a line saying how to
  reach it from another machine).
* Outside loopback without TLS a warning says the token and the images travel in clear text; ``certfile`` and
  ``keyfile`` turn on uvicorn's TLS (the URL is then ``https://``).
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from petctfm.core.errors import InputError, UsageError
from petctfm.serve.security import LOOPBACK, host_names

#: Ports tried after a busy default port before asking the system for any free one.
NEXT_PORTS = 20


def _bind_one(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart rebinds at once (not while in use)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind(host: str, port: int, free_port: bool) -> tuple[socket.socket, str | None]:
    """A listening socket on ``host:port`` and a note when another port was taken (``free_port``: the port is
    the default, so a busy one may be replaced; else a busy port is a UsageError naming ``port``)."""
    try:
        return _bind_one(host, port), None
    except PermissionError:
        raise UsageError(f"port={port}: permission denied (ports below 1024 need root); choose another",
                         arg="port") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno != errno.EADDRINUSE:  # not a busy port: an address this machine does not have, ...
            raise UsageError(f"host={host}: cannot listen on {host}:{port} ({reason})", arg="host") from None
        if not free_port:
            raise UsageError(f"port={port}: in use on {host} ({reason}; another petctfm serve?); choose another "
                             "port", arg="port") from None
    for p in [*range(port + 1, min(port + 1 + NEXT_PORTS, 65536)), 0]:
        try:
            sock = _bind_one(host, p)
        except OSError:
            continue
        got = sock.getsockname()[1]
        return sock, f"port {port} is busy ({reason}); serving on port {got} instead"
    raise UsageError(f"port={port}: busy, and no free port found near it", arg="port")


def url_host(host: str, allow: tuple[str, ...]) -> str:
    """The host of the URL printed for a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        name = allow[0] if allow else "127.0.0.1"
    else:
        name = host
    return f"[{name}]" if ":" in name else name


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both or neither, and both readable files (InputError naming the file)."""
    if (certfile is None) != (keyfile is None):
        raise UsageError("certfile and keyfile go together (TLS needs both)", arg="certfile")
    for f in (certfile, keyfile):
        if f is not None and not Path(f).is_file():
            raise InputError(f"{f}: TLS file not found")


def run(server: Any, make_app: Callable[[Any], Any], host: str, port: int, log_level: str = "warning",
        allow_host: Iterable[str] = (), certfile: str | None = None, keyfile: str | None = None,
        free_port: bool = True, out: Any = None) -> None:
    """Bind, set the allow-list, print the URL (to ``out``, default stdout) and warnings, serve until Ctrl-C."""
    import uvicorn

    out = out or sys.stdout
    check_tls(certfile, keyfile)
    allow = tuple(h.strip().lower() for h in allow_host if h and h.strip())
    server.hosts = host_names(host, allow)
    sock, note = bind(host, port, free_port)
    try:
        port = sock.getsockname()[1]
        tls = certfile is not None
        url = f"{'https' if tls else 'http'}://{url_host(host, allow)}:{port}/?token={server.token}"
        if note:
            print(f"petctfm serve: {note}", file=out, flush=True)
        if host not in LOOPBACK:
            if not tls:
                print(f"warning: serving on {host} over plain HTTP: the token in this URL and every image travel "
                      "in clear text on the network; give --certfile/--keyfile (TLS), or bind 127.0.0.1 and use "
                      "an SSH tunnel", file=sys.stderr, flush=True)
            if host in ("0.0.0.0", "::") and not allow:
                print("note: other machines must use a name given with --allow-host NAME (the Host header is "
                      "checked); without one only this machine's loopback names are accepted",
                      file=sys.stderr, flush=True)
        print(f"petctfm serve: {len(server.cases.ids())} case(s); open {url}", file=out, flush=True)
        config = uvicorn.Config(make_app(server), host=host, port=port, log_level=log_level, server_header=False,
                                ssl_certfile=certfile, ssl_keyfile=keyfile)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


__all__ = ["NEXT_PORTS", "bind", "check_tls", "run", "url_host"]
