"""Health and Prometheus metrics over HTTP, on a loopback address by default.

``/healthz/live`` answers 200 while the process runs; ``/healthz/ready`` (and ``/healthz``)
answers 200 only when the database answers, the data folder has more free space than
``node.min_free_disk_mb`` and the receiver listens, else 503 with the failing check named;
``/metrics`` is the Prometheus text format.  Counters that only the running process knows
(associations by result, instances received) live in :class:`NodeMetrics`, which the stages
increment; everything else is read from the index at scrape time, so several worker machines
report the same queue.  No value here identifies a patient: only states, counts, engine and
peer names.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from storage.database import Database
from storage.files import FileStore
from storage.monitoring import database_reachable, index_figures

log = logging.getLogger("dicom_node.metrics")


class NodeMetrics:
    """Process counters, incremented by the receiver (and read by ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.associations = Counter(
            "dicom_node_associations", "Associations by result (accepted, rejected, "
            "released, aborted)", ["result"], registry=self.registry)
        self.instances_received = Counter(
            "dicom_node_instances_received", "Instances stored with status Success since "
            "the process started", registry=self.registry)
        self.store_failures = Counter(
            "dicom_node_store_failures", "C-STORE answered with a failure status, by status",
            ["status"], registry=self.registry)


class IndexCollector(Collector):
    """Gauges read from the index and the data folder at each scrape."""

    def __init__(self, db: Database, files: FileStore) -> None:
        self.db = db
        self.files = files

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = index_figures(self.db)
        studies = GaugeMetricFamily("dicom_node_studies", "Studies in the index by state",
                                    labels=["state"])
        for state, n in sorted(figures.studies_by_state.items()):
            studies.add_metric([state], n)
        yield studies
        yield GaugeMetricFamily("dicom_node_instances_stored", "Instances in the index",
                                value=figures.instances_stored)
        jobs = GaugeMetricFamily("dicom_node_jobs", "Jobs by engine and state",
                                 labels=["engine", "state"])
        for (engine, state), n in sorted(figures.jobs_by_engine_state.items()):
            jobs.add_metric([engine, state], n)
        yield jobs
        outbox = GaugeMetricFamily("dicom_node_outbox", "Deliveries by destination and state "
                                   "(pending + sending is the backlog)",
                                   labels=["destination", "state"])
        for (destination, state), n in sorted(figures.outbox_by_destination_state.items()):
            outbox.add_metric([destination, state], n)
        yield outbox
        yield GaugeMetricFamily("dicom_node_quarantined", "Instances held in quarantine",
                                value=figures.quarantined)
        stages = GaugeMetricFamily("dicom_node_engine_stage_seconds",
                                   "Mean seconds per job stage over each engine's last 100 jobs",
                                   labels=["engine", "stage"])
        for (engine, stage), seconds in sorted(figures.stage_seconds_mean.items()):
            stages.add_metric([engine, stage], seconds)
        yield stages
        if figures.last_received_at is not None:
            stamp = figures.last_received_at.replace(tzinfo=dt.UTC).timestamp()  # naive UTC
            yield GaugeMetricFamily("dicom_node_last_receive_timestamp_seconds",
                                    "When the newest instance arrived (Unix time)", value=stamp)
        yield GaugeMetricFamily("dicom_node_disk_free_bytes",
                                "Free space on the data folder's file system",
                                value=self.files.free_bytes())


class StatusServer:
    """``/healthz`` and ``/metrics`` on a small threaded HTTP server.

    Parameters
    ----------
    address, port
        Where to listen; port 0 picks a free port (see :attr:`port` after :meth:`start`).
    db, files
        The index and the data folder.
    metrics
        The process counters.
    min_free_bytes
        Below this much free disk the node is not ready.
    receiver_listening
        Returns whether the DICOM receiver accepts associations (None: not in this process).
    """

    def __init__(self, address: str, port: int, db: Database, files: FileStore,
                 metrics: NodeMetrics, min_free_bytes: int,
                 receiver_listening: Callable[[], bool] | None = None) -> None:
        self.db = db
        self.files = files
        self.min_free_bytes = min_free_bytes
        self.receiver_listening = receiver_listening
        self.registry = CollectorRegistry()
        self.registry.register(IndexCollector(db, files))
        self.metrics = metrics
        self.address = (address, port)
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one picked for port 0)."""
        return int(self._server.server_address[1]) if self._server else self.address[1]

    def readiness(self) -> dict:
        checks = {"database": database_reachable(self.db)}
        free = self.files.free_bytes()
        checks["disk"] = free > self.min_free_bytes
        if self.receiver_listening is not None:
            checks["receiver"] = self.receiver_listening()
        return {"ready": all(checks.values()), "checks": checks, "disk_free_bytes": free,
                "time": time.time()}

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry) + generate_latest(self.registry)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/healthz/live":
                    self._send(200, "application/json", b'{"live": true}')
                elif path in ("/healthz", "/healthz/ready"):
                    report = server.readiness()
                    self._send(200 if report["ready"] else 503, "application/json",
                               json.dumps(report).encode())
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, server.metrics_text())
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # scrapes every few seconds would flood the node's log

        return Handler

    def start(self) -> None:
        """Listen; a port already taken is logged, and the DICOM service runs on without it."""
        try:
            self._server = ThreadingHTTPServer(self.address, self._handler_class())
        except OSError as exc:
            log.error("health and metrics endpoint not started on %s:%d: %s", *self.address,
                      exc.strerror)
            return
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="http-status",
                         daemon=True).start()
        log.info("health and metrics on http://%s:%d/ (healthz, metrics)", self.address[0],
                 self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


