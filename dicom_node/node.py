"""Assembling the node's stages from the configuration and running them in one process."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from dicom_node.completion import CompletionTracker
from dicom_node.config import NodeConfig
from dicom_node.deid import Pseudonymizer
from dicom_node.logredaction import install_redaction
from dicom_node.scp import Receiver
from dicom_node.sender import Sender
from dicom_node.worker import Worker, device_observer_uid
from storage import migrate
from storage.database import Database
from storage.files import FileStore
from storage.keys import load_or_create_key
from storage.outbox import Outbox
from storage.vault import Vault

log = logging.getLogger("dicom_node")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(config: NodeConfig) -> None:
    """Log to stderr and to ``data_dir/logs/node.log``.  Log lines carry pseudonyms only."""
    logs = config.node.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(config.node.log_level)
    for handler in list(root.handlers):
        if getattr(handler, "_dicom_node", False):
            root.removeHandler(handler)
    for handler in (logging.StreamHandler(sys.stderr),
                    logging.FileHandler(logs / "node.log", encoding="utf-8")):
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._dicom_node = True  # type: ignore[attr-defined]
        root.addHandler(install_redaction(handler))
    # pynetdicom logs every PDU at DEBUG/INFO; keep its warnings only.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def open_database(config: NodeConfig) -> Database:
    db = Database(config.database.url)
    migrate.upgrade(db)
    return db


class Node:
    """The node's stages: receiver, completion tracker, workers and sender.

    ``serve`` runs them all in one process (the appliance); ``dicom-node worker`` runs only
    workers against a shared database and data folder.
    """

    def __init__(self, config: NodeConfig, *, receive: bool = True, complete: bool = True,
                 workers: int | None = None, send: bool = True):
        self.config = config
        data_dir = Path(config.node.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(config)
        self.files = FileStore(data_dir)
        self.files.sweep_temporary()
        uid_secret = load_or_create_key(config.resolve(config.deid.uid_secret_file))
        vault_key = load_or_create_key(config.resolve(config.deid.vault_key_file))
        self.vault = Vault(self.db, vault_key)
        self.receiver = None
        self.completion = None
        self.sender = None
        if receive:
            self.receiver = Receiver(config, self.db, self.files,
                                     Pseudonymizer(config.deid, uid_secret), self.vault,
                                     vault_key, on_commitment_report=Outbox(self.db)
                                     .record_commitment)
        if send:
            self.sender = Sender(config, self.db, self.files, self.vault)
        # Each stage wakes the next when it hands it work; polling stays as the fallback
        # (and is all that separate `dicom-node worker` processes have).
        count = config.jobs.workers if workers is None else workers
        observer = device_observer_uid(uid_secret)
        wake_sender = self.sender.loop.wake if self.sender else None
        self.workers = [Worker(config, self.db, self.files, observer, i,
                               on_job_finished=wake_sender) for i in range(count)]
        if complete:
            busy = self.receiver.busy_study_uids if self.receiver else set
            self.completion = CompletionTracker(config, self.db, busy,
                                                on_jobs_queued=self._wake_workers)
        self._stopped = threading.Event()

    def _wake_workers(self) -> None:
        for worker in self.workers:
            worker.loop.wake()

    def start(self) -> None:
        if self.receiver:
            self.receiver.start()
        if self.completion:
            self.completion.start()
        for worker in self.workers:
            worker.start()
        if self.sender:
            self.sender.start()
        log.info("node started: receiver=%s completion=%s workers=%d sender=%s",
                 bool(self.receiver), bool(self.completion), len(self.workers),
                 bool(self.sender))

    def stop(self) -> None:
        """Stop accepting, let running jobs finish their current step, then close."""
        if self.receiver:
            self.receiver.stop()
        if self.completion:
            self.completion.stop()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout=60)
        if self.sender:
            self.sender.stop()
        self.db.dispose()
        self._stopped.set()
        log.info("node stopped")

    def serve(self) -> None:
        """Run in the foreground until SIGTERM or SIGINT."""
        def _signal(signum, _frame) -> None:  # noqa: ANN001
            log.info("received %s; stopping", signal.Signals(signum).name)
            self._stopped.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        self._stopped.wait()
        self._stopped.clear()
        self.stop()
