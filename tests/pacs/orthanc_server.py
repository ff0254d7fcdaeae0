"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) for the DICOMweb tests: started on a free loopback
port with a temporary storage folder and a generated configuration, stopped afterwards.

The configuration: DicomWeb plugin on (``/dicom-web/``), the DICOM (DIMSE) server off, remote access refused
(Orthanc 1.10 has no bind-address option: it listens on every interface but answers only 127.0.0.1),
HTTP basic authentication with a random password, no Lua, no jobs saved. Without the binary or the plugin the
calling test module is skipped with the reason (``.ci/run`` installs the packages), as the browser test does.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",)


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                            if Path(p).is_file()), None)


def dicomweb_plugin() -> str | None:
    """The DicomWeb plugin's shared library: from ``dpkg -L orthanc-dicomweb``, else the Debian path."""
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=20).stdout
        found = [line for line in listed.splitlines() if line.endswith(".so") and "plugins" in line]
    except (OSError, subprocess.SubprocessError):
        found = []
    for p in [*found, *PLUGIN_CANDIDATES]:
        if Path(p).is_file():
            return p
    return None


def require_orthanc() -> tuple[str, str]:
    """(binary, plugin), or skip the calling module with the reason."""
    import pytest

    binary, plugin = orthanc_binary(), dicomweb_plugin()
    if binary is None or plugin is None:
        pytest.skip("DICOMweb tests need a real Orthanc: apt-get install orthanc orthanc-dicomweb "
                    f"(Orthanc binary {'found' if binary else 'missing'}, DicomWeb plugin "
                    f"{'found' if plugin else 'missing'})", allow_module_level=True)
    pytest.importorskip("dicomweb_client", reason="pip install '.[pacs]' (dicomweb-client)")
    return binary, plugin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    url: str  # the DICOMweb root, http://127.0.0.1:<port>/dicom-web
    rest: str  # Orthanc's own REST API root
    user: str
    password: str
    storage: Path
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment variables petctfm reads the credentials from."""
        return {"PETCTFM_DICOMWEB_USER": self.user, "PETCTFM_DICOMWEB_PASSWORD": self.password}

    def get(self, path: str):
        import requests

        r = requests.get(self.rest + path, auth=(self.user, self.password), timeout=30)
        r.raise_for_status()
        return r.json()


@contextlib.contextmanager
def running_orthanc(folder: Path, binary: str, plugin: str) -> Iterator[Orthanc]:
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    storage = folder / "storage"
    storage.mkdir()
    password = secrets.token_urlsafe(16)
    for _ in range(5):  # a port taken between free_port() and Orthanc's bind: try another
        port = free_port()
        config = {
            "Name": "petctfm-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {"petctfm": password},
            "Plugins": [plugin], "ExecuteLuaEnabled": False, "SaveJobs": False, "StorageCompression": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": f"127.0.0.1:{port}",
                         "Ssl": False},
        }
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        log = folder / "orthanc.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([binary, str(folder / "config.json")], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=folder)
        rest = f"http://127.0.0.1:{port}"
        up = False
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                up = requests.get(rest + "/system", auth=("petctfm", password), timeout=2).ok
            except requests.RequestException:
                up = False
            if up:
                break
            time.sleep(0.05)
        if up:
            break
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
    else:
        raise RuntimeError(f"Orthanc did not start; its log: {log.read_text()[-2000:]}")
    try:
        yield Orthanc(rest + "/dicom-web", rest, "petctfm", password, storage, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
