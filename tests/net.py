"""Loopback ports and peer binaries for integration tests."""

from __future__ import annotations

import shutil
import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str) -> str:
    """Path of a peer binary; the test fails (not skips) when CI forgot to install it."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed; run the README test command (scripts/test.sh)")
    return path
