"""A private PostgreSQL cluster on a loopback port in a temporary folder."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.net import free_port


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed; run scripts/test.sh")
    return found


class PrivatePostgres:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=120)

    def start(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o755)
            for parent in self.root.parents:  # postgres must be able to reach its folder
                if str(parent) in ("/", "/tmp"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
        out = self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "node",
                        "--no-sync")
        assert out.returncode == 0, out.stderr
        out = self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
                        "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off", "-w", "start")
        assert out.returncode == 0, out.stderr + out.stdout
        for _ in range(50):
            ready = self._run(_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port))
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        created = self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                            "node", "node")
        assert created.returncode == 0, created.stderr
        return self

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://node@127.0.0.1:{self.port}/node"

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
