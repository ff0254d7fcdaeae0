"""Server errors and timeouts: retried with backoff, then one line. The only test of the DICOMweb code that does not
use the real Orthanc: a tiny ``http.server`` on 127.0.0.1 that answers every request with HTTP 503 (or answers too
late), which Orthanc cannot be made to do; it counts the requests it gets."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time

import pytest

pytest.importorskip("dicomweb_client", reason="pip install '.[pacs]' (dicomweb-client)")

from petctfm.cli.main import main  # noqa: E402
from petctfm.io.dicomweb import DicomWebError, connect  # noqa: E402


@contextlib.contextmanager
def stub(status: int = 503, delay_s: float = 0.0):
    """A loopback HTTP server answering every GET / POST with ``status`` after ``delay_s``; yields (url, counter)."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(self.path)
            if delay_s:
                time.sleep(delay_s)
            try:
                self.send_response(status)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the client gave up (timeout)
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", hits
    finally:
        server.shutdown()
        server.server_close()


def test_5xx_retried_with_backoff_then_one_line():
    with stub(503) as (url, hits):
        web = connect(url, retries=2, backoff_s=0.01, env={})
        t0 = time.perf_counter()
        with pytest.raises(DicomWebError) as err:
            web.studies()
    assert len(hits) == 3  # the first try + 2 retries
    assert str(err.value) == f"{url}: QIDO studies failed after 3 attempts: HTTP 503"
    assert time.perf_counter() - t0 < 20


def test_timeout_retried_then_one_line():
    with stub(200, delay_s=1.5) as (url, hits):
        web = connect(url, timeout=(2.0, 0.3), retries=1, backoff_s=0.01, env={})
        with pytest.raises(DicomWebError, match=r"QIDO studies timed out after 2 attempts") as err:
            web.studies()
    assert len(hits) == 2
    assert "\n" not in str(err.value)


def test_cli_server_error_is_one_line_exit_3(tiny_model, tmp_path, capsys):
    study = "1.2.826.0.1.3680043.8.498.1234567890123456789"
    with stub(500) as (url, hits):
        rc = main(["predict", "--model", str(tiny_model), "--dicomweb", url, "--study", study,
                   "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr()
    # the study fails (one line in failed.csv), the batch of one failed: exit 3
    assert rc == 3 and len(hits) == 5  # 1 + the default 4 retries
    reason = (tmp_path / "out" / "failed.csv").read_text().splitlines()[1]
    assert reason.endswith("failed after 5 attempts: HTTP 500") and "QIDO series of study uid#" in reason
    assert study not in out.out + out.err and "Traceback" not in out.err
