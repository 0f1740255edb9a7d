"""systemd integration of a real node process: READY=1 once it listens, watchdog pings while
healthy, STOPPING=1 on SIGTERM; logging that does not duplicate the journal."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from dicom_node import systemd
from dicom_node.config import parse_config
from dicom_node.node import configure_logging
from tests.nodeproc import NodeProcess


def test_notify_outside_systemd_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_watchdog_interval_is_half_the_timeout(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert systemd.watchdog_interval_s() is None


@pytest.mark.slow
def test_real_node_notifies_systemd(tmp_path, monkeypatch):
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        node = NodeProcess(tmp_path / "node").start()
        try:
            states = [sock.recv(1024).decode() for _ in range(3)]
        finally:
            node.stop()
        deadline = time.time() + 30
        while "STOPPING=1" not in states and time.time() < deadline:
            states.append(sock.recv(1024).decode())
    assert states[0] == "READY=1"
    assert "WATCHDOG=1" in states[1:3]
    assert "STOPPING=1" in states


@pytest.fixture(autouse=True)
def _restore_root_logger():
    yield
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_dicom_node", False):
            logging.getLogger().removeHandler(handler)
            handler.close()


def _config(tmp_path, **logging_settings):
    return parse_config({"node": {"data_dir": str(tmp_path)}, "logging": logging_settings})


def test_no_log_file_under_the_journal(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    configure_logging(_config(tmp_path))
    logging.getLogger("dicom_node.test").warning("under systemd")
    assert not (tmp_path / "logs").exists()


def test_json_log_lines_and_rotation(tmp_path, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging(_config(tmp_path, format="json", file_max_mb=1, file_count=2))
    log = logging.getLogger("dicom_node.test")
    for i in range(6000):
        log.warning("line %d %s", i, "x" * 300)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]  # rotated, capped at 2 backups
    entry = json.loads((tmp_path / "logs" / "node.log").read_text().splitlines()[-1])
    assert entry["level"] == "WARNING" and entry["logger"] == "dicom_node.test"
    assert entry["message"].startswith("line 5999")
