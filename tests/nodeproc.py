"""Run the real node (``dicom-node serve``) as a child process for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.net import free_port


def toml_value(v) -> str:  # noqa: ANN001
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(path: Path, sections: dict, peers: list[dict]) -> None:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    for peer in peers:
        lines.append("[[peers]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in peer.items()]
    path.write_text("\n".join(lines) + "\n")


class NodeProcess:
    """A node with its own port, data folder and SQLite (or given) database."""

    def __init__(self, root: Path, *, peers: list[dict] | None = None, workers: int = 0,
                 quiet_seconds: float = 1.0, database_url: str | None = None,
                 extra: dict | None = None, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.ae_title = "AINODE"
        self.data_dir = root / "var"
        self.keys_dir = root / "keys"
        self.config_path = root / "node.toml"
        self.log_path = root / "node-stdout.log"
        sections = {
            "node": {"ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port,
                     "data_dir": str(self.data_dir), "min_free_disk_mb": 1},
            "http": {"port": 0},  # tests run several nodes at once
            "database": {"url": database_url or f"sqlite:///{self.data_dir / 'node.db'}"},
            "completion": {"quiet_seconds": quiet_seconds, "poll_seconds": 0.2},
            "jobs": {"workers": workers, "poll_seconds": 0.2, "backoff_seconds": 0.5},
            "sender": {"poll_seconds": 0.2, "backoff_seconds": 0.5},
            "keys": {"dir": str(root / "keys")},  # beside, never inside, the data folder
        }
        for section, values in (extra or {}).items():
            sections.setdefault(section, {}).update(values)
        root.mkdir(parents=True, exist_ok=True)
        self.peers = peers if peers is not None else [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1, "kind": "clinical"}]
        write_config(self.config_path, sections, self.peers)
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dicom_node.cli", *args,
                               "--config", str(self.config_path)],
                              capture_output=True, text=True, timeout=120)

    def status(self) -> dict:
        out = self.cli("status", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def start(self, timeout: float = 60) -> NodeProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dicom_node.cli", "serve", "--config",
                 str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node exited at start:\n" + self.log_path.read_text())
            if self.echo():
                return self
            time.sleep(0.2)
        raise RuntimeError("node did not answer C-ECHO:\n" + self.log_path.read_text())

    def echo(self, calling_ae: str = "PACS") -> bool:
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(Verification)
        ae.acse_timeout = 5
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status) and status.Status == 0

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait_for(self, predicate, timeout: float = 60, interval: float = 0.5):  # noqa: ANN001
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.status()
            if predicate(last):
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out; last status: {json.dumps(last)[:2000]}")

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.stop()
