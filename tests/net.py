"""Loopback ports and peer binaries for integration tests."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str) -> str:
    """Path of a peer binary; the test fails (not skips) when CI forgot to install it.

    Virtual environments' bin folders are skipped (this one's, and any other on PATH, such as
    a developer's activated venv): pynetdicom installs Python apps named
    ``storescp``/``storescu``/``echoscu`` there, and the peers must be dcmtk's.
    """
    venv_bin = Path(sys.prefix, "bin").resolve()
    search = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                             if p and Path(p).resolve() != venv_bin
                             and not (Path(p).parent / "pyvenv.cfg").exists())
    path = shutil.which(binary, path=search)
    if path is None:
        pytest.fail(f"{binary} is not installed; run the README test command (scripts/test.sh)")
    return path
