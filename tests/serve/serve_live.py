"""A real uvicorn server in a thread (what a browser or a raw socket talks to), and the headless Chromium the
browser tests drive (Debian's chromium + chromedriver; ``.ci/run`` installs them)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
         "--disable-component-update --disable-sync --disable-dev-shm-usage --use-angle=swiftshader "
         "--enable-unsafe-swiftshader")


def require_browser() -> None:
    """Skip the calling test module (with the reason) without chromium, chromedriver, selenium or uvicorn."""
    import pytest

    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("headless browser test: chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)", allow_module_level=True)
    pytest.importorskip("selenium", reason="headless browser test: selenium is not installed (pip install '.[test]')")
    pytest.importorskip("uvicorn")


def chrome(profile: Path, window: str = "1400,800"):
    """A headless Chromium (software WebGL) with its own profile folder."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for flag in FLAGS.split() + [f"--window-size={window}", f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.binary_location = CHROMIUM
    return webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=opts)


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
