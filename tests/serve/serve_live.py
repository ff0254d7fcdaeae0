"""A real uvicorn server in a thread for the security tests (what a browser or a raw socket talks to)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live(app: Any, port: int | None = None) -> Iterator[int]:
    """Serve the ASGI ``app`` on 127.0.0.1 (a free port unless given) until the block ends; yields the port."""
    import uvicorn

    port = port or free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=uv.run, daemon=True)
    th.start()
    for _ in range(200):
        if uv.started:
            break
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    try:
        yield port
    finally:
        uv.should_exit = True
        th.join(10)
