"""A real Orthanc server with its DICOMweb plugin, for the DICOMweb sync tests (Debian's ``orthanc`` and
``orthanc-dicomweb`` packages, which .ci/run installs).

One server a session, on loopback with a free port, its storage in a temporary folder, HTTP basic
authentication on and qcloop's decision metadata declared; ``orthanc`` empties it before each test.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from app.services.sync.orthanc import METADATA

PLUGIN = "libOrthancDicomWeb.so"
# Where Debian's orthanc-dicomweb puts the plugin (the first folder is the one Debian's Orthanc loads).
PLUGIN_FOLDERS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
INSTALL = "install Debian's orthanc and orthanc-dicomweb (apt-get install orthanc orthanc-dicomweb), as .ci/run does"


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its REST root, credentials and a few REST calls the tests make."""

    root: str  # http://127.0.0.1:PORT
    username: str
    password: str

    @property
    def dicomweb(self) -> str:
        """The source URL qcloop syncs from (credentials given apart)."""
        return "dicomweb+" + self.root + "/dicom-web"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.root}/{path}", auth=(self.username, self.password),
                                    timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def store(self, folder: Path) -> None:
        """Store every DICOM file of a folder (``POST /instances``)."""
        for path in sorted(folder.iterdir()):
            self.request("POST", "instances", data=path.read_bytes())

    def series_id(self, series_uid: str) -> str:
        found = self.request("POST", "tools/lookup", data=series_uid).json()
        return next(entry["ID"] for entry in found if entry["Type"] == "Series")

    def decision(self, series_uid: str) -> dict[str, Any]:
        """The decision qcloop wrote on a series, read back through Orthanc's REST API."""
        return self.request("GET", f"series/{self.series_id(series_uid)}/metadata/{METADATA}").json()

    def empty(self) -> None:
        for patient in self.request("GET", "patients").json():
            self.request("DELETE", f"patients/{patient}")


def _plugin() -> Path:
    for folder in PLUGIN_FOLDERS:
        if (folder / PLUGIN).is_file():
            return folder / PLUGIN
    pytest.fail(f"Orthanc's DICOMweb plugin ({PLUGIN}) is not installed: {INSTALL}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_orthanc(folder: Path, *, declare_metadata: bool = True) -> Iterator[Orthanc]:
    """An Orthanc started with its storage in ``folder`` (``declare_metadata``: with qcloop's decision
    metadata in its configuration), stopped on leaving; fails (never skips) when it is not installed."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
    if binary is None:
        pytest.fail(f"Orthanc is not installed: {INSTALL}")
    server = Orthanc(f"http://127.0.0.1:{free_port()}", "qcloop-test", "orthanc-test-password")
    config = {
        "Name": "qcloop-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": int(server.root.rsplit(":", 1)[1]),
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {server.username: server.password},
        "Plugins": [str(_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "UserMetadata": {METADATA: 1024} if declare_metadata else {},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"Orthanc stopped at start (exit {process.returncode}):\n"
                            + (folder / "orthanc.log").read_text(errors="replace")[-3000:])
            try:
                server.request("GET", "system")
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail("Orthanc did not answer /system within 60 s:\n"
                                + (folder / "orthanc.log").read_text(errors="replace")[-3000:])
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory) -> Iterator[Orthanc]:
    """Orthanc for the session."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def orthanc(orthanc_server: Orthanc) -> Orthanc:
    """The session's Orthanc, emptied."""
    orthanc_server.empty()
    return orthanc_server
