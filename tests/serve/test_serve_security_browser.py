"""The cross-port attack of issue 23, in a real browser: a page on another port of localhost (same *site* as the
viewer, so the viewer's SameSite=Strict cookie goes along) tries to delete a lesion. Before, a ``text/plain``
POST did it and the deletion was autosaved. Headless Chromium (Debian's chromium + chromedriver, as
``test_serve_browser.py``) first opens the viewer with its token URL (the cookie is set, the page opens the case
through ``viewer.js``, CSRF header included), then the attack page on a second local port fires: a no-cors
``text/plain`` fetch with credentials, a ``text/plain`` form POST, a CORS JSON fetch with a guessed CSRF header
(preflight) and a frame of the viewer. The lesion must survive; the viewer's own origin, with the page's CSRF
token, must still be able to change it.

Skipped (with the reason) when chromium / chromedriver / selenium are not installed; ``.ci/run`` installs them.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time

import pytest

from serve_live import chrome, require_browser  # noqa: E402

require_browser()


from serve_fixtures import lesion_voxel, stub_session, threshold_auto  # noqa: E402
from serve_live import free_port, live  # noqa: E402
from petctfm.serve.app import Server, create_app  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402

CASE = "PETCT_0000"

ATTACK = """<!doctype html><html><body>
<iframe name="sink" id="sink"></iframe>
<iframe id="framed" src="{victim}/"></iframe>
<form id="form" method="POST" action="{victim}/api/cases/{case}/delete" enctype="text/plain" target="sink">
<input name='{{"version": 1, "object": 1, "x": "' value='"}}'></form>
<script>
window.results = {{}};
const url = "{victim}/api/cases/{case}/delete";
const body = JSON.stringify({{version: 1, object: 1}});
(async () => {{
  try {{  // the attack of the issue: a simple (no-preflight) request, cookie included, response opaque
    const r = await fetch(url, {{method: "POST", mode: "no-cors", credentials: "include",
                                 headers: {{"Content-Type": "text/plain"}}, body}});
    window.results.nocors = r.type;
  }} catch (e) {{ window.results.nocors = "error " + e; }}
  try {{  // JSON with a guessed CSRF header: needs a CORS preflight, which the server never grants
    const r = await fetch(url, {{method: "POST", mode: "cors", credentials: "include",
                                 headers: {{"Content-Type": "application/json", "X-CSRF-Token": "guess"}}, body}});
    window.results.cors = r.status;
  }} catch (e) {{ window.results.cors = "blocked"; }}
  document.getElementById("form").submit();  // a classic form CSRF (text/plain body)
  setTimeout(() => {{ window.results.done = true; }}, 1500);
}})();
</script></body></html>"""


@pytest.fixture
def victim(phantom, tmp_path):
    server = Server(CaseList(phantom / "autopet"), tmp_path / "out", stub_session, threshold_auto())
    st = server.open(CASE)  # a case with one lesion (object 1) at version 1, autosaved
    centre, _ = lesion_voxel(phantom)
    lps = (st.session.grid.index_to_lps @ [*centre.tolist(), 1.0])[:3]
    st.change(0, "reader", "click", {"ras": [-lps[0], -lps[1], lps[2]]})
    assert st.version == 1 and 1 in st.session.objects
    with live(create_app(server)) as port:
        yield server, port


@pytest.fixture
def attacker(tmp_path, victim):
    _, port = victim
    site = tmp_path / "attacker"
    site.mkdir()
    (site / "attack.html").write_text(ATTACK.format(victim=f"http://127.0.0.1:{port}", case=CASE))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/attack.html"
    httpd.shutdown()
    th.join(10)


def _wait(cond, what, timeout=30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen in {timeout} s")


def test_a_page_on_another_local_port_cannot_change_a_case(victim, attacker, tmp_path, caplog):
    server, port = victim
    st = server.open_cases[CASE]
    d = chrome(tmp_path / "profile", "1280,760")
    try:
        d.get(f"http://127.0.0.1:{port}/?token={server.token}")  # the reader's tab: the cookie is set
        _wait(lambda: d.execute_script("return !!(window.petctfmViewer && window.petctfmViewer.ready)"),
              "the viewer opening its case (a POST with the CSRF header)")
        cookies = {c["name"]: c for c in d.get_cookies()}
        assert f"petctfm_token_{port}" in cookies and cookies[f"petctfm_token_{port}"]["httpOnly"]

        d.get(attacker)  # same site (127.0.0.1), other port: the cookie goes along with its requests
        _wait(lambda: d.execute_script("return !!(window.results && window.results.done)"), "the attack page")
        results = d.execute_script("return window.results")
        assert results["nocors"] == "opaque", results  # sent (and answered 415), unreadable to the attacker
        assert results["cors"] == "blocked", results  # the preflight got no CORS grant: never sent
        framed = d.execute_script(
            "try { return document.getElementById('framed').contentDocument ? 'readable' : 'blocked'; }"
            " catch (e) { return 'blocked'; }")
        assert framed == "blocked"
        # nothing changed: the lesion, the version, the autosave, the audit log
        assert st.version == 1 and 1 in st.session.objects
        log = [json.loads(x) for x in (server.out / CASE / "audit.jsonl").read_text().splitlines()]
        assert [e["action"] for e in log] == ["click"]

        # the viewer's own origin, with the page's CSRF token, still can (the control)
        d.get(f"http://127.0.0.1:{port}/")
        _wait(lambda: d.execute_script("return !!(window.petctfmViewer && window.petctfmViewer.ready)"), "reopen")
        status = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const csrf = document.querySelector('meta[name=\"csrf-token\"]').content;"
            "fetch('/api/cases/" + CASE + "/delete', {method: 'POST', headers: {'Content-Type': 'application/json',"
            " 'X-CSRF-Token': csrf}, body: JSON.stringify({version: 1, object: 1})}).then(r => done(r.status));")
        assert status == 200 and st.version == 2 and 1 not in st.session.objects
    finally:
        d.quit()
