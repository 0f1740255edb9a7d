"""Assembling the node's stages from the configuration and running them in one process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
from logging.handlers import RotatingFileHandler
from pathlib import Path

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.events import Event

from dicom_node import systemd
from dicom_node.audit import AuditTrail, SyslogTarget
from dicom_node.background import RepeatingStep
from dicom_node.completion import CompletionTracker
from dicom_node.config import NodeConfig
from dicom_node.dashboard import Dashboard
from dicom_node.deid import Pseudonymizer
from dicom_node.logredaction import install_redaction
from dicom_node.metrics import NodeMetrics
from dicom_node.receivers import DRAIN_S, ParentLink, ReceiverProcesses, union, wait_for_stop
from dicom_node.scp import Receiver
from dicom_node.sender import Sender
from dicom_node.tls import https_context
from dicom_node.web import StatusServer
from dicom_node.worker import Worker, device_observer_uid
from storage import migrate
from storage.clock import utcnow
from storage.database import Database
from storage.files import FileStore
from storage.keys import QUARANTINE, UID_SECRET, VAULT, KeyFolder, prepare_keys
from storage.monitoring import database_reachable
from storage.outbox import Outbox
from storage.retention import RetentionPolicy, purge
from storage.vault import Vault

log = logging.getLogger("dicom_node")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line (time, level, logger, message), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{record.msecs:03.0f}",
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(config: NodeConfig) -> None:
    """Log to stderr and to a rotating file (``[logging]``).  Log lines carry pseudonyms only.

    Under systemd (``JOURNAL_STREAM`` set) the journal already keeps stderr, so no file is
    written: the same line is not stored twice.
    """
    settings = config.logging
    root = logging.getLogger()
    root.setLevel(config.node.log_level)
    for handler in list(root.handlers):
        if getattr(handler, "_dicom_node", False):
            root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.file and not os.environ.get("JOURNAL_STREAM"):
        path = config.resolve(Path(settings.file))
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(path, maxBytes=settings.file_max_mb * 1024 * 1024,
                                            backupCount=settings.file_count, encoding="utf-8"))
    formatter = JsonLogFormatter() if settings.format == "json" else \
        logging.Formatter(LOG_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._dicom_node = True  # type: ignore[attr-defined]
        root.addHandler(install_redaction(handler))
    # pynetdicom logs every PDU at DEBUG/INFO; keep its warnings only.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def open_audit_trail(config: NodeConfig) -> AuditTrail | None:
    settings = config.audit
    if not settings.enabled:
        return None
    syslog = SyslogTarget(settings.syslog_host, settings.syslog_port, settings.syslog_protocol,
                          settings.syslog_ca_file) if settings.syslog_host else None
    return AuditTrail(config.resolve(settings.file), config.node.ae_title,
                      site_id=settings.enterprise_site_id, syslog=syslog)


def note_configuration(config: NodeConfig, audit: AuditTrail) -> None:
    """Audit a configuration that differs from the one of the previous start."""
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    marker = audit.file_path.parent / "config.sha256"
    previous = marker.read_text(encoding="ascii").strip() if marker.is_file() else None
    if previous is not None and previous != digest:
        audit.configuration_changed(previous, digest)
    marker.write_text(digest + "\n", encoding="ascii")


def _requestor(event) -> tuple[str, str | None]:  # noqa: ANN001
    """Calling AE title and address of an association event's peer, checked before they
    reach the audit trail (an AE title is 16 printable characters)."""
    requestor = event.assoc.requestor
    title = str(requestor.ae_title).strip()
    if not title.isprintable() or len(title) > 16:
        title = "(invalid AE title)"
    return title, str(requestor.address) or None


def retention_policy(config: NodeConfig) -> RetentionPolicy:
    settings = config.retention
    return RetentionPolicy(settings.study_days, settings.quarantine_days, settings.vault_days)


def open_database(config: NodeConfig) -> Database:
    db = Database(config.database.url)
    migrate.upgrade(db)
    return db


class Node:
    """The node's stages: receiver, completion tracker, workers and sender.

    ``serve`` runs them all in one process (the appliance), plus ``node.receiver_processes
    - 1`` receiver processes (:mod:`dicom_node.receivers`), each a Node with ``parent`` set;
    ``dicom-node worker`` runs only workers against a shared database and data folder.
    """

    def __init__(self, config: NodeConfig, *, receive: bool = True, complete: bool = True,
                 workers: int | None = None, send: bool = True,
                 parent: ParentLink | None = None):
        self.config = config
        self.parent = parent
        data_dir = Path(config.node.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(config)
        self.files = FileStore(data_dir)
        if parent is None:  # a receiver process starts while the others write
            self.files.sweep_temporary()
        count = config.jobs.workers if workers is None else workers
        # Each process loads only the keys its stages use: the receiver keys pseudonyms,
        # seals vault rows and quarantines; the sender opens the vault to re-identify;
        # workers only derive the Device Observer UID from the UID secret.
        purposes = (({UID_SECRET, VAULT, QUARANTINE} if receive else set())
                    | ({VAULT} if send else set()) | ({UID_SECRET} if count else set()))
        keys = KeyFolder(config.keys_dir)
        created = prepare_keys(keys, sorted(purposes), db=self.db, data_dir=data_dir,
                               may_create=receive and parent is None)
        if created:
            log.warning("fresh installation: created keys %s; back them up apart from the "
                        "data folder (docs/operations-backup.md)",
                        ", ".join(p.name for p in created))
        uid_secret = keys.uid_secret() if UID_SECRET in purposes else None
        self.vault = Vault(self.db, keys.ring(VAULT)) if VAULT in purposes else None
        self.receiver = None
        self.completion = None
        self.sender = None
        if receive:
            # receive loads the UID secret and the vault key (purposes above)
            assert uid_secret is not None and self.vault is not None
            self.receiver = Receiver(config, self.db, self.files,
                                     Pseudonymizer(config.deid, uid_secret), self.vault,
                                     keys.ring(QUARANTINE), on_commitment_report=Outbox(self.db)
                                     .record_commitment)
            if parent is not None:
                self.receiver.incoming_folder = f"incoming-{parent.index}"
                self.receiver.inherited_listeners = parent.listeners
        if send:
            assert self.vault is not None  # send loads the vault key (purposes above)
            self.sender = Sender(config, self.db, self.files, self.vault)
        # Each stage wakes the next when it hands it work; polling stays as the fallback
        # (and is all that separate `dicom-node worker` processes have).
        observer = device_observer_uid(uid_secret) if uid_secret else ""
        wake_sender = self.sender.loop.wake if self.sender else None
        self.workers = [Worker(config, self.db, self.files, observer, i,
                               on_job_finished=wake_sender) for i in range(count)]
        self.metrics = NodeMetrics()
        self.receiver_processes = ReceiverProcesses(
            config, self.metrics, on_exit=self._sweep_after) \
            if receive and parent is None and config.node.receiver_processes > 1 else None
        if complete:
            busy = self.receiver.busy_study_uids if self.receiver else set
            if self.receiver_processes is not None:
                busy = union(busy, self.receiver_processes.busy_study_uids)
            self.completion = CompletionTracker(config, self.db, busy,
                                                on_jobs_queued=self._wake_workers)
        # The appliance process purges; separate worker machines never delete anything.
        self.retention = RepeatingStep("retention", self._purge,
                                       config.retention.interval_minutes * 60, log) \
            if receive and parent is None else None
        self.audit = open_audit_trail(config) if (receive or send) else None
        for stage in (self.receiver, self.sender):  # received instances, results sent
            if stage is not None:
                stage.audit = self.audit
        self.status_server: StatusServer | None = None
        if receive and parent is None and config.http.enabled:
            self.status_server = StatusServer(
                config.http.address, config.http.port, self.db, self.files, self.metrics,
                config.node.min_free_disk_mb * 1024 * 1024,
                receiver_listening=self._listening if self.receiver else None,
                dashboard=Dashboard(config, self.db, self.files, self.audit)
                if config.dashboard.enabled else None,
                tls_context=https_context(config.tls, config.resolve) if config.http.tls
                else None)
        self._stopped = threading.Event()

    def _count_associations(self) -> None:
        assert self.receiver is not None
        # A receiver process forwards its counts to the main process's metrics.
        count = self.parent.count if self.parent is not None else self.metrics.count
        for event, result in ((evt.EVT_ACCEPTED, "accepted"), (evt.EVT_REJECTED, "rejected"),
                              (evt.EVT_RELEASED, "released"), (evt.EVT_ABORTED, "aborted")):
            self.receiver.bind(event, lambda _event, r=result: count("associations", r))
        self.receiver.rejection_listeners.append(lambda *_: count("associations", "rejected"))

        def store_response(event: Event) -> None:
            message = event.message
            if isinstance(message, C_STORE_RSP):
                status = int(message.command_set.Status)
                if status == 0 or status & 0xF000 == 0xB000:  # success or warning: stored
                    count("instances_received")
                else:
                    count("store_failures", f"0x{status:04X}")

        self.receiver.bind(evt.EVT_DIMSE_SENT, store_response)
        if self.audit is not None:
            audit = self.audit
            self.receiver.bind(evt.EVT_ACCEPTED, lambda event: audit.association(
                True, *_requestor(event)))
            self.receiver.bind(evt.EVT_REJECTED, lambda event: audit.association(
                False, *_requestor(event), reason="association rejected"))
            self.receiver.rejection_listeners.append(
                lambda calling, ip, reason: audit.association(False, calling, ip, reason))

    def _purge(self) -> bool:
        report = purge(self.db, self.files, retention_policy(self.config), utcnow())
        if report.studies or report.quarantined or report.vault_rows:
            log.info("retention: purged %d studies (%d instances, %d result files), "
                     "%d quarantined, %d vault rows; %.1f MB freed", len(report.studies),
                     report.instances, report.result_files, report.quarantined,
                     report.vault_rows, report.bytes_freed / 1e6)
        if report.held:
            log.warning("retention: %d studies past retention kept for undelivered results "
                        "or running jobs (dicom-node purge --dry-run lists them)",
                        len(report.held))
        return False

    def _wake_workers(self) -> None:
        for worker in self.workers:
            worker.loop.wake()

    def start(self) -> None:
        if self.audit is not None and self.parent is None:
            self.audit.application(started=True)
            note_configuration(self.config, self.audit)
        if self.receiver:
            self.receiver.start()
            self._count_associations()
            if self.parent is not None:
                self.parent.follow(self.receiver)
        if self.receiver_processes:  # after the main receiver cleared the incoming folders
            assert self.receiver is not None  # receiver processes come with the main's receiver
            self.receiver_processes.start(self.receiver.listeners())
        if self.status_server:
            self.status_server.start()
        if self.completion:
            self.completion.start()
        for worker in self.workers:
            worker.start()
        if self.sender:
            self.sender.start()
        if self.retention:
            self.retention.start()
        if self.receiver_processes and not self.receiver_processes.wait_listening(60):
            log.error("not every receiver process accepts associations yet")
        if self.parent is None:
            log.info("node started: receiver=%s (%d processes) completion=%s workers=%d "
                     "sender=%s", bool(self.receiver), self.config.node.receiver_processes
                     if self.receiver else 0, bool(self.completion), len(self.workers),
                     bool(self.sender))

    def stop(self) -> None:
        """Stop accepting, let running jobs finish their current step, then close."""
        if self.receiver:
            # a receiver process lets its open associations finish before it exits
            self.receiver.stop(drain_s=DRAIN_S if self.parent is not None else 0.0)
        if self.receiver_processes:
            self.receiver_processes.stop()
        if self.status_server:
            self.status_server.stop()
        if self.completion:
            self.completion.stop()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(timeout=60)
        if self.sender:
            self.sender.stop()
        if self.retention:
            self.retention.stop()
            self.retention.join(timeout=60)
        self.db.dispose()
        if self.audit is not None:
            if self.parent is None:
                self.audit.application(started=False)
            self.audit.close()
        self._stopped.set()
        if self.parent is None:
            log.info("node stopped")

    def serve(self) -> None:
        """Run in the foreground until SIGTERM or SIGINT."""
        received: list[int] = []  # the handler takes no lock: see wait_for_stop

        def _signal(signum, _frame) -> None:  # noqa: ANN001
            if self.receiver_processes:  # systemd signals them too: they stop, not crash
                self.receiver_processes.stopping()
            received.append(signum)

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        systemd.notify("READY=1")
        interval = systemd.watchdog_interval_s()
        watchdog = systemd.Watchdog(self.healthy, interval) if interval else None
        if watchdog:
            watchdog.start()
        wait_for_stop(self._stopped, received)
        self._stopped.clear()
        if received:
            log.info("received %s; stopping", signal.Signals(received[0]).name)
        systemd.notify("STOPPING=1")
        if watchdog:
            watchdog.stop()
        self.stop()

    def _sweep_after(self, pid: int) -> None:
        """A receiver process died: remove its half-written files, in the background (the
        whole store is walked; the other processes go on writing theirs)."""
        def sweep() -> None:
            removed = self.files.sweep_temporary(pid)
            if removed:
                log.info("removed %d half-written files of the dead receiver (pid %d)",
                         removed, pid)

        threading.Thread(target=sweep, name="sweep-temporary", daemon=True).start()

    def _listening(self) -> bool:
        """The receiver listens, and so does every configured receiver process."""
        if self.receiver is None or not self.receiver.listening:
            return False
        return self.receiver_processes is None or self.receiver_processes.running

    def healthy(self) -> bool:
        """The database answers and, in the receiving process, the receiver listens (in
        every configured receiver process)."""
        listening = self._listening() if self.receiver else True
        return listening and database_reachable(self.db)
