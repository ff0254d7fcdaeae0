"""``petctfm serve`` security and robustness probes (issue 23, items 5 to 7): one test per probe.

Cross-origin writes (text/plain, another port's Origin, no CSRF header), frame and CSP headers, symlinks out of
``--data`` / ``--out``, the Host allow-list, a chunked body over the cap, ``--host 0.0.0.0``, the per-port
cookie, the token across a restart, eviction with the undo history kept, the sorted case list, wrongly typed
JSON (422, never 500) and the start-up refusals (``--out``, a fine-tuning run as ``--model``, no [serve]
extra, a busy port).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from serve_fixtures import BASE, lesion_voxel, page_client, prompt_config, stub_session, threshold_auto  # noqa: E402,E501
from serve_live import free_port, live  # noqa: E402
from petctfm.cli.main import main  # noqa: E402
from petctfm.serve.app import Server, create_app, make_server  # noqa: E402
from petctfm.serve.cases import CaseList  # noqa: E402
from petctfm.serve.security import TOKEN_FILE, cookie_name, csrf_token  # noqa: E402

CASE = "PETCT_0000"


@pytest.fixture
def server(phantom, tmp_path):
    return Server(CaseList(phantom / "autopet"), tmp_path / "out", stub_session, threshold_auto())


_page_client = page_client


def _ras(server, case, voxel):
    st = server.open_cases[case]
    lps = (st.session.grid.index_to_lps @ np.append(np.asarray(voxel, float), 1.0))[:3]
    return (lps * [-1, -1, 1]).tolist()


def _opened_with_lesion(server, phantom):
    c = _page_client(server)
    assert c.post(f"/api/cases/{CASE}/open").status_code == 200
    centre, _ = lesion_voxel(phantom)
    r = c.post(f"/api/cases/{CASE}/click", json={"version": 0, "ras": _ras(server, CASE, centre)})
    assert r.status_code == 200 and r.json()["totals"]["count"] == 1
    return c


# -- cross-origin writes ----------------------------------------------------------------------------------


def test_text_plain_post_is_refused_and_changes_nothing(server, phantom):
    c = _opened_with_lesion(server, phantom)
    body = json.dumps({"version": 1, "object": 1}).encode()
    r = c.post(f"/api/cases/{CASE}/delete", content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = c.post(f"/api/cases/{CASE}/delete", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    st = c.get(f"/api/cases/{CASE}/state").json()
    assert st["version"] == 1 and st["totals"]["count"] == 1  # the lesion is still there


@pytest.mark.parametrize("origin, referer", [
    ("http://127.0.0.1:9999", None),  # another port of localhost: same site, not same origin
    ("http://localhost:9999", None),
    ("http://evil.example", None),
    ("null", None),  # a sandboxed frame or data: URL
    ("https://127.0.0.1:8765", None),  # another scheme
    (None, "http://127.0.0.1:9999/attack.html"),
    (None, None),  # neither: refused too
])
def test_foreign_or_missing_origin_is_refused(server, phantom, origin, referer):
    c = _opened_with_lesion(server, phantom)
    headers = {"Origin": origin, "Referer": referer}
    for k, v in headers.items():
        if v is None:
            c.headers.pop(k, None)
        else:
            c.headers[k] = v
    r = c.post(f"/api/cases/{CASE}/delete", json={"version": 1, "object": 1})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    assert server.open_cases[CASE].version == 1 and 1 in server.open_cases[CASE].session.objects


def test_own_referer_without_origin_and_localhost_origin_are_accepted(server, phantom):
    c = _opened_with_lesion(server, phantom)
    c.headers.pop("Origin")
    r = c.post(f"/api/cases/{CASE}/undo", json={"version": 1}, headers={"Referer": f"{BASE}/"})
    assert r.status_code == 200 and r.json()["version"] == 2
    local = _page_client(server, "http://localhost:8765")  # the same server reached by its other name
    assert local.post(f"/api/cases/{CASE}/redo", json={"version": 2}).json()["version"] == 3


def test_csrf_header_is_required_even_with_the_cookie(server, phantom):
    c = _opened_with_lesion(server, phantom)
    page = c.get("/", params={"token": server.token})
    meta = f'<meta name="csrf-token" content="{csrf_token(server.token)}">'
    assert meta in page.text and csrf_token(server.token) != server.token
    # the page's cookie and the right Origin, but no header: what a forged request could carry at best
    bare = TestClient(create_app(server), base_url=BASE)
    bare.cookies.set(cookie_name(8765), server.token)
    bare.headers.update({"Origin": BASE, "Content-Type": "application/json"})
    assert bare.get("/api/cases").status_code == 200  # reading with the cookie works
    r = bare.post(f"/api/cases/{CASE}/delete", json={"version": 1, "object": 1})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = bare.post(f"/api/cases/{CASE}/delete", json={"version": 1, "object": 1}, headers={"X-CSRF-Token": "0" * 64})
    assert r.status_code == 403
    r = bare.post(f"/api/cases/{CASE}/delete", json={"version": 1, "object": 1},
                  headers={"X-CSRF-Token": csrf_token(server.token)})
    assert r.status_code == 200 and r.json()["totals"]["count"] == 0


def test_frame_and_csp_headers_on_every_response(server):
    c = _page_client(server)
    for r in (c.get("/", params={"token": server.token}), c.get("/api/cases"), c.get("/static/viewer.js"),
              c.get("/api/cases/nope/state"), TestClient(create_app(server), base_url=BASE).get("/")):
        assert r.headers["x-frame-options"] == "DENY", r.url
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "script-src 'self'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and "access-control-allow-origin" not in r.headers


# -- paths ------------------------------------------------------------------------------------------------


def test_case_folder_symlinked_outside_data_is_not_served(phantom, tmp_path, caplog):
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    shutil.copytree(phantom / "autopet" / CASE, data / "inside")
    shutil.copytree(phantom / "autopet" / CASE, outside / "secret")
    (data / "linked").symlink_to(outside / "secret", target_is_directory=True)
    server = Server(CaseList(data), tmp_path / "out", stub_session)
    c = _page_client(server)
    assert [x["id"] for x in c.get("/api/cases").json()["cases"]] == ["inside"]
    assert "leads outside" in caplog.text
    assert c.post("/api/cases/linked/open").status_code == 404
    # a file of a listed case replaced by a link out of --data after start-up: refused when read
    (data / "inside" / "SUV.nii.gz").unlink()
    (data / "inside" / "SUV.nii.gz").symlink_to(outside / "secret" / "SUV.nii.gz")
    r = c.post("/api/cases/inside/open")
    assert r.status_code == 422 and "leads outside" in r.json()["error"]


def test_case_output_folder_symlinked_outside_out_is_refused(server, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server.out.mkdir(parents=True)
    (server.out / CASE).symlink_to(elsewhere, target_is_directory=True)
    r = _page_client(server).post(f"/api/cases/{CASE}/open")
    assert r.status_code == 422 and "leads outside" in r.json()["error"]
    assert list(elsewhere.iterdir()) == []


# -- Host, cookie, body ------------------------------------------------------------------------------------


def test_host_allow_list_has_no_test_names(server):
    assert "testserver" not in server.hosts
    c = _page_client(server)
    assert c.get("/api/cases").status_code == 200
    for host in ("testserver", "testserver:8765", "127.0.0.1:9999", "evil.example:8765", "127.0.0.1.evil.example"):
        r = c.get("/api/cases", headers={"host": host})
        assert r.status_code == 400 and r.json()["error"] == "invalid host header", host
    assert TestClient(create_app(server)).get("/api/cases", params={"token": server.token}).status_code == 400


def test_cookie_is_per_port(server):
    c = TestClient(create_app(server), base_url=BASE)
    page = c.get("/", params={"token": server.token})
    assert page.headers["set-cookie"].startswith(f"{cookie_name(8765)}=")
    other = TestClient(create_app(server), base_url=BASE)
    other.cookies.set(cookie_name(8766), server.token)  # another server's cookie (name) on this host
    assert other.get("/api/cases").status_code == 401
    assert c.get("/api/cases").status_code == 200


def test_chunked_body_over_the_cap_is_refused_while_streaming(server):
    """A chunked upload announcing nothing: the server answers 413 after about max_body bytes and closes,
    long before 400 MB (it used to buffer the whole body first)."""
    with live(create_app(server)) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = (f"POST /api/cases/{CASE}/click HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"X-Petctfm-Token: {server.token}\r\nOrigin: http://127.0.0.1:{port}\r\n"
                f"X-CSRF-Token: {csrf_token(server.token)}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        sock.sendall(head.encode())
        chunk = b"%x\r\n" % (1 << 16) + b" " * (1 << 16) + b"\r\n"
        sent, answer, t0 = 0, b"", time.monotonic()
        sock.setblocking(False)
        while sent < 400 * (1 << 20) and time.monotonic() - t0 < 60:  # a buffering server fails, not hangs
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                try:
                    answer = sock.recv(4096)
                except (ConnectionResetError, BlockingIOError):
                    pass
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
            elif not readable:
                break
        if not answer:
            sock.setblocking(True)
            try:
                answer = sock.recv(4096)
            except OSError:
                pass
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 32 * (1 << 20), f"{sent / 2**20:.0f} MiB sent before the refusal"


# -- robustness: the token, open cases, the list, typed JSON -------------------------------------------------


def test_token_survives_a_restart_with_private_permissions(phantom, tmp_path):
    from petctfm.methods.promptable.model import build_model
    from petctfm.train.checkpoint import save_weights

    cfg = prompt_config()
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    out = tmp_path / "out"
    first = make_server(str(tmp_path / "run"), data=str(phantom / "autopet"), out=str(out))
    again = make_server(str(tmp_path / "run"), data=str(phantom / "autopet"), out=str(out))
    assert first.token == again.token and len(first.token) >= 32
    mode = stat.S_IMODE((out / TOKEN_FILE).stat().st_mode)
    assert mode == 0o600, oct(mode)
    os.chmod(out / TOKEN_FILE, 0o644)  # readable by others: replaced, private again
    third = make_server(str(tmp_path / "run"), data=str(phantom / "autopet"), out=str(out))
    assert third.token != first.token and stat.S_IMODE((out / TOKEN_FILE).stat().st_mode) == 0o600
    assert make_server(str(tmp_path / "run"), data=str(phantom / "autopet"), out=str(tmp_path / "o2")).token != third.token


def test_evicted_case_keeps_its_undo_history(phantom, tmp_path):
    from petctfm.serve.state import Conflict

    data = tmp_path / "data"
    for name in ("b_case", "a_case"):
        shutil.copytree(phantom / "autopet" / CASE, data / name)
    server = Server(CaseList(data), tmp_path / "out", stub_session, threshold_auto(), max_open=1)
    c = _page_client(server)
    assert [x["id"] for x in c.get("/api/cases").json()["cases"]] == ["a_case", "b_case"]  # sorted
    c.post("/api/cases/a_case/open")
    n_auto = c.post("/api/cases/a_case/auto", json={"version": 0}).json()["totals"]["count"]
    centre, _ = lesion_voxel(phantom)
    shape = np.array(server.open_cases["a_case"].session.grid.shape)
    far = np.where(centre < shape // 2, shape - 4, 3)
    for v, vox in enumerate((far, far - 1), start=1):
        assert c.post("/api/cases/a_case/click", json={"version": v, "ras": _ras(server, "a_case", vox)}).status_code == 200
    c.post("/api/cases/a_case/undo", json={"version": 3})
    old = server.open_cases["a_case"]
    before, rows = old.labels().copy(), old.state()["lesions"]
    c.post("/api/cases/b_case/open")  # evicts a_case (max_open=1)
    assert list(server.open_cases) == ["b_case"]
    with pytest.raises(Conflict):  # a request that still held the evicted state cannot change it unseen
        old.change(4, "", "undo", {})
    st = c.get("/api/cases/a_case/state").json()  # the tab of a_case goes on: re-opened with its history
    assert st["version"] == 4 and st["can_undo"] and st["can_redo"] and st["lesions"] == rows
    np.testing.assert_array_equal(server.open_cases["a_case"].labels(), before)
    st = c.post("/api/cases/a_case/redo", json={"version": 4}).json()
    assert st["totals"]["count"] == n_auto + 1 and st["lesions"][-1]["n_points"] == 2
    for v in (5, 6, 7):
        st = c.post("/api/cases/a_case/undo", json={"version": v}).json()
    assert st["lesions"] == [] and not st["can_undo"]  # back through the automatic run (re-applied from its mask)
    st = c.post("/api/cases/a_case/redo", json={"version": 8}).json()
    assert st["totals"]["count"] == n_auto


BAD_SHAPES = [
    ("click", '{"version": "abc", "ras": [0, 0, 0]}', "version"),
    ("click", '{"version": null, "ras": [0, 0, 0]}', "version"),
    ("click", '{"version": [0], "ras": [0, 0, 0]}', "version"),
    ("click", '{"version": 0, "ras": "abc"}', "ras"),
    ("click", '{"version": 0, "ras": [0, 0, 0], "object": "abc"}', "object"),
    ("delete", '{"version": 0, "object": "x"}', "object"),
    ("click", '{"version": ' + "1" * 4000 + ', "ras": [0, 0, 0]}', "number longer"),
    ("click", '{"version": 0, "ras": ' + "[" * 50000 + "]" * 50000 + "}", "nested deeper"),
    ("click", '{"version": 0, "ras": [0, 0, 0], "positive": "false"}', "positive"),
    ("click", '{"version": true, "ras": [0, 0, 0]}', "version"),
    ("box", '{"version": 0, "lo": [0, 0], "hi": [1, 1, 1]}', "lo"),
    ("save", '{"user": 7}', "user"),
    ("undo", "[0]", "JSON object"),
    ("click", '{"version": 0, "ras": [NaN, 0, 0]}', "not valid JSON"),
    # the manual tools' bodies are as strict
    ("brush", '{"version": 0, "ras": [0, 0, 0], "object": "abc"}', "object"),
    ("brush", '{"version": 0, "points": "abc"}', "points"),
    ("erase", '{"version": 0, "ras": [0, 0, 0], "radius_mm": "5"}', "radius_mm"),
    ("grow", '{"version": 0, "ras": [0, 0, 0], "fraction": "0.41"}', "fraction"),
    ("threshold", '{"version": 0, "lo": [0, 0, 0], "hi": [1, 1, 1], "object": 1.5}', "object"),
    ("confirm", '{"version": 0, "object": "x"}', "object"),
]


@pytest.mark.parametrize("action, body, named", BAD_SHAPES, ids=[f"{a}-{b[:30]}" for a, b, _ in BAD_SHAPES])
def test_wrongly_typed_json_is_422_and_changes_nothing(server, action, body, named):
    c = _page_client(server, )
    c.post(f"/api/cases/{CASE}/open")
    r = c.post(f"/api/cases/{CASE}/{action}", content=body.encode())
    assert r.status_code == 422, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert named in err and "\n" not in err and len(err) < 300, err
    assert server.open_cases[CASE].version == 0 and not server.open_cases[CASE].session.objects


# -- start-up --------------------------------------------------------------------------------------------


def _prompt_run(tmp_path):
    from petctfm.methods.promptable.model import build_model
    from petctfm.train.checkpoint import save_weights

    cfg = prompt_config()
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    return tmp_path / "run"


def test_out_that_is_a_file_or_unwritable_is_exit_4_before_serving(phantom, tmp_path, capsys):
    run = _prompt_run(tmp_path)
    (tmp_path / "file").write_text("x")
    targets = [tmp_path / "file", "/proc/petctfm-serve"]
    if os.geteuid() != 0:  # root writes into read-only folders: only the kinds root cannot write are probed
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        targets.append(ro / "out")
    for out in targets:
        code = main(["serve", "--model", str(run), "--data", str(phantom / "autopet"), "--out", str(out),
                     "--port", str(free_port())])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 4 and len(lines) == 1 and lines[0].startswith(f"error: {out}"), (out, captured.err)
        assert "token=" not in captured.out and "Traceback" not in captured.err


def test_a_finetuning_run_as_model_is_refused_in_one_line(phantom, tmp_path, capsys):
    import torch

    from petctfm.train.checkpoint import save_weights

    save_weights(torch.nn.Linear(2, 2), tmp_path / "ft" / "model.safetensors", {"method": "finetune_segmentation"})
    code = main(["serve", "--model", str(tmp_path / "ft"), "--data", str(phantom / "autopet"),
                 "--out", str(tmp_path / "out"), "--port", str(free_port())])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "not a prompt-train model" in err[0] and "--auto-model" in err[0], err


def test_without_the_serve_extra_one_line_with_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    code = main(["serve", "--model", str(tmp_path), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: petctfm serve needs uvicorn (not installed): pip install 'petctfm[serve]'"]


def test_busy_port_given_fails_before_printing_a_url_and_the_default_moves_on(phantom, tmp_path, capsys):
    from petctfm.serve.launch import bind

    run = _prompt_run(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(run), "--data", str(phantom / "autopet"), "--out", str(tmp_path / "o"),
                     "--port", str(port)])
        captured = capsys.readouterr()
        assert code == 2 and "token=" not in captured.out, captured
        assert captured.err.strip().splitlines() == [captured.err.strip()] and f"--port {port}" in captured.err
        sock, note = bind("127.0.0.1", port, free_port=True)  # the default port busy: the next free one, said
        with sock:
            got = sock.getsockname()[1]
            assert got != port and note == f"port {port} is busy (Address already in use); serving on port {got} instead"


def test_host_0000_keeps_the_host_check_prints_a_reachable_url_and_warns(phantom, tmp_path):
    run = _prompt_run(tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "petctfm.cli.main", "serve", "--model", str(run), "--data",
                             str(phantom / "autopet"), "--out", str(tmp_path / "out"), "--port", str(port),
                             "--host", "0.0.0.0", "--allow-host", "reader-ws.example.org"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"open http://reader-ws.example.org:{port}/?token=" in line, line
        token = line.rsplit("token=", 1)[1].strip()

        def get(host):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/cases?token={token}", headers={"Host": host})
            for _ in range(100):
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        return r.status
                except urllib.error.HTTPError as exc:
                    return exc.code
                except urllib.error.URLError:
                    time.sleep(0.1)
            raise AssertionError("server not reachable")

        assert get(f"reader-ws.example.org:{port}") == 200
        assert get(f"127.0.0.1:{port}") == 200
        assert get(f"evil.example:{port}") == 400  # the Host check stays on with 0.0.0.0
        assert get(f"rebind.attacker.example:{port}") == 400
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "clear text" in err and "--certfile" in err, err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed (for a self-signed test certificate)")
def test_tls_with_certfile_and_keyfile_serves_https(phantom, tmp_path):
    import ssl

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    run = _prompt_run(tmp_path)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "petctfm.cli.main", "serve", "--model", str(run), "--data",
                             str(phantom / "autopet"), "--out", str(tmp_path / "out"), "--port", str(port),
                             "--host", "0.0.0.0", "--allow-host", "localhost", "--certfile", str(tmp_path / "cert.pem"),
                             "--keyfile", str(tmp_path / "key.pem")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"open https://localhost:{port}/?token=" in line, line
        ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        for _ in range(100):
            try:
                with urllib.request.urlopen(line.split("open ", 1)[1].strip(), timeout=5, context=ctx) as r:
                    assert r.status == 200 and "secure" in r.headers["set-cookie"].lower()
                break
            except urllib.error.URLError as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    raise
                time.sleep(0.1)
        else:
            raise AssertionError("https server not reachable")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "clear text" not in err
