"""``petctfm serve`` from the command line: usage errors, and a real server process answering with its token."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("uvicorn")

from serve_fixtures import prompt_config  # noqa: E402
from petctfm.cli.main import main  # noqa: E402


def test_usage_errors(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path), "--pet", "x.nii.gz"]) == 2
    assert "give --data FOLDER, or --pet and --ct" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "none"), "--data", str(tmp_path)]) == 3
    assert "model not found" in capsys.readouterr().err


def test_serve_process_prints_a_token_url_and_binds_localhost(phantom, tmp_path):
    from petctfm.methods.promptable.model import build_model
    from petctfm.train.checkpoint import save_weights

    cfg = prompt_config()
    save_weights(build_model(cfg), tmp_path / "run" / "model.safetensors", cfg, step=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "petctfm.cli.main", "serve", "--model", str(tmp_path / "run"),
                             "--data", str(phantom / "autopet"), "--out", str(tmp_path / "out"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/?token=" in line, line
        url = line.split("open ", 1)[1].strip()
        token = url.split("token=", 1)[1]
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{base}/api/cases?token={token}", timeout=5) as r:
                    assert json.loads(r.read())["cases"] == [{"id": "PETCT_0000", "open": False}]
                break
            except urllib.error.URLError as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    raise
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/api/cases", timeout=5)
        assert err.value.code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_static_files_ship_in_the_package():
    """pip install needs no node: every file of serve/static is package data (pyproject), niivue with its license."""
    import fnmatch
    from pathlib import Path

    import petctfm.serve

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = Path(petctfm.serve.__file__).parent
    patterns = tomllib.loads((root.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["petctfm.serve"]
    files = [p.relative_to(root).as_posix() for p in (root / "static").iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)
    niivue = [f for f in files if f.startswith("static/niivue-") and f.endswith(".js")]
    assert len(niivue) == 1 and "BSD 2-Clause" in (root / "static" / "NIIVUE-LICENSE.txt").read_text()
    assert niivue[0] in (root / "static" / "index.html").read_text().replace("/static/", "static/")
