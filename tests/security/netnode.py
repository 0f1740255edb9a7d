"""An in-process Storage SCP (the node's ``Receiver``) on a private port and data folder, for
the network security tests: quick to start, and its log lines can be captured."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from dicom_node.config import NodeConfig, parse_config
from dicom_node.deid import Pseudonymizer
from dicom_node.scp import Receiver
from storage import migrate
from storage.database import Database
from storage.files import FileStore
from storage.tables import Instance
from storage.vault import Vault
from tests.net import free_port

PACS = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104,
        "kind": "clinical"}


@dataclass
class RunningNode:
    config: NodeConfig
    receiver: Receiver
    db: Database
    data_dir: Path

    @property
    def port(self) -> int:
        return self.config.node.port

    @property
    def ae_title(self) -> str:
        return self.config.node.ae_title

    def stored(self) -> int:
        with self.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(Instance)))


@contextlib.contextmanager
def running_node(root: Path, *, peers: list[dict] | None = None, node: dict | None = None,
                 **sections: dict) -> Iterator[RunningNode]:
    """Start a Receiver with ``peers`` (default: PACS at 127.0.0.1) and extra settings."""
    data_dir = root / "var"
    config = parse_config({
        "node": {"host": "127.0.0.1", "port": free_port(), "data_dir": str(data_dir),
                 "min_free_disk_mb": 1, "network_timeout_s": 10, **(node or {})},
        "peers": [PACS] if peers is None else peers,
        **sections,
    })
    db = Database(f"sqlite:///{root / 'node.db'}")
    migrate.upgrade(db)
    files = FileStore(data_dir)
    key = os.urandom(32)
    receiver = Receiver(config, db, files, Pseudonymizer(config.deid, os.urandom(32)),
                        Vault(db, key), key)
    receiver.start()
    try:
        yield RunningNode(config, receiver, db, data_dir)
    finally:
        receiver.stop()
        db.dispose()
