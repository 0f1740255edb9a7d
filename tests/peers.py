"""Peers for integration tests: a private Orthanc playing the hospital PACS.

Each Orthanc runs from its own JSON configuration under ``tmp_path`` on free loopback ports,
so it never collides with another Orthanc on the machine; only the process started here is
stopped.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORTHANC_BINARY = "/usr/sbin/Orthanc"
ORTHANC_AET = "PACS"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_available() -> bool:
    """Whether the Debian ``orthanc`` binary is installed."""
    return Path(ORTHANC_BINARY).exists() or shutil.which("Orthanc") is not None


@dataclass
class OrthancPeer:
    """A running private Orthanc: DICOM on ``dicom_port``, REST on ``http_port``."""

    dicom_port: int
    http_port: int
    aet: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rest_get(self, path: str) -> Any:
        """GET ``path`` from the REST API and decode the JSON answer."""
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))

    def rest_get_bytes(self, path: str) -> bytes:
        """GET ``path`` from the REST API as raw bytes (e.g. ``/instances/{id}/file``)."""
        with urllib.request.urlopen(self.base_url + path, timeout=30) as response:
            return response.read()

    def stop(self) -> None:
        """Stop this Orthanc process (and only it)."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _wait_ready(peer: OrthancPeer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with code {peer.process.returncode}; see {peer.log_path}"
            )
        try:
            peer.rest_get("/system")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"Orthanc did not answer on port {peer.http_port} in {timeout_s} s")


@contextlib.contextmanager
def orthanc_server(
    tmp_path: Path,
    modalities: dict[str, list[Any]] | None = None,
    *,
    aet: str = ORTHANC_AET,
    check_called_aet: bool = False,
    extra_config: dict[str, Any] | None = None,
    start_timeout_s: float = 30.0,
) -> Iterator[OrthancPeer]:
    """Run a private Orthanc as a PACS peer for the duration of the ``with`` block.

    Parameters
    ----------
    tmp_path
        Directory for the configuration, storage, index and log.
    modalities
        Orthanc ``DicomModalities``: ``{"name": [AET, host, port]}``, e.g. the node, so the
        PACS can C-STORE / C-MOVE to it.  ``None`` means no modalities.
    aet
        Orthanc's own AE title.
    check_called_aet
        Orthanc's ``DicomCheckCalledAet``.
    extra_config
        Further configuration keys (override the defaults).
    start_timeout_s
        How long to wait for the REST API to answer.

    Yields
    ------
    OrthancPeer
        Ports, AE title, ``rest_get(path)`` and ``stop()``.
    """
    binary = ORTHANC_BINARY if Path(ORTHANC_BINARY).exists() else shutil.which("Orthanc")
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed (Debian package 'orthanc')")
    root = Path(tmp_path) / "orthanc"
    (root / "storage").mkdir(parents=True, exist_ok=True)
    (root / "index").mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    config: dict[str, Any] = {
        "Name": "test-pacs",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": check_called_aet,
        "DicomModalities": modalities or {},
        "Plugins": [],
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "StableAge": 1,
    }
    config.update(extra_config or {})
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = root / "orthanc.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, str(config_path)], stdout=log,
                                   stderr=subprocess.STDOUT, cwd=root)
    peer = OrthancPeer(dicom_port=dicom_port, http_port=http_port, aet=aet,
                       process=process, log_path=log_path)
    try:
        _wait_ready(peer, start_timeout_s)
        yield peer
    finally:
        peer.stop()
