"""The node's HTTP endpoint (loopback by default): health, metrics and the dashboard.

``/healthz/live`` answers 200 while the process runs; ``/healthz/ready`` (and ``/healthz``)
answers 200 only when the database answers, the data folder has more free space than
``node.min_free_disk_mb`` and the receiver listens, else 503 with the failing check named;
``/metrics`` is the Prometheus text format (:mod:`dicom_node.metrics`); every other path is
the dashboard (:mod:`dicom_node.dashboard`), which requires a login.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dicom_node.dashboard import SECURITY_HEADERS, Dashboard, parse_form
from dicom_node.metrics import IndexCollector, NodeMetrics
from storage.database import Database
from storage.files import FileStore
from storage.monitoring import database_reachable

log = logging.getLogger("dicom_node.web")
MAX_FORM_BYTES = 16 * 1024
# A connection that sends nothing (or never finishes its TLS handshake) is closed after this.
REQUEST_TIMEOUT_S = 30.0


class _HttpServer(ThreadingHTTPServer):
    """One thread per connection; with a TLS context the handshake runs in that thread, so a
    slow or silent client cannot hold up the listener."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls_context: ssl.SSLContext | None) -> None:
        self.tls_context = tls_context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, tuple]:
        connection, address = super().get_request()
        if self.tls_context is not None:
            connection = self.tls_context.wrap_socket(connection, server_side=True,
                                                      do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: object, client_address: tuple) -> None:
        # One line, no traceback: a port scan or a plain-HTTP client on the HTTPS port is
        # routine, and nothing it sent is written to the log.
        log.info("HTTP connection from %s closed: %s", client_address[0],
                 type(sys.exc_info()[1]).__name__)


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
    dashboard
        The dashboard's pages, or None for health and metrics only.
    tls_context
        Serve HTTPS with this context (:func:`dicom_node.tls.https_context`), or plain HTTP.
    """

    def __init__(self, address: str, port: int, db: Database, files: FileStore,
                 metrics: NodeMetrics, min_free_bytes: int,
                 receiver_listening: Callable[[], bool] | None = None,
                 dashboard: Dashboard | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.dashboard = dashboard
        self.tls_context = tls_context
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
            timeout = REQUEST_TIMEOUT_S

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(self.timeout)
                    self.request.do_handshake()
                super().setup()

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
                elif server.dashboard is not None:
                    self._reply(server.dashboard.get(path, self.headers.get("Cookie")))
                else:
                    self._send(404, "text/plain", b"not found\n")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if server.dashboard is None or not 0 <= length <= MAX_FORM_BYTES:
                    self._send(404 if server.dashboard is None else 413, "text/plain",
                               b"refused\n")
                    return
                form = parse_form(self.rfile.read(length))
                self._reply(server.dashboard.post(self.path.split("?", 1)[0],
                                                  self.headers.get("Cookie"), form,
                                                  self.client_address[0]))

            def _reply(self, response) -> None:  # noqa: ANN001
                headers = {**SECURITY_HEADERS, **response.headers}
                if server.tls_context is not None:  # browsers keep to HTTPS from now on
                    headers["Strict-Transport-Security"] = "max-age=31536000"
                self._send(response.status, response.content_type, response.body, headers)

            def _send(self, code: int, content_type: str, body: bytes,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {"Cache-Control": "no-store"}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # scrapes every few seconds would flood the node's log

        return Handler

    def start(self) -> None:
        """Listen; a port already taken is logged, and the DICOM service runs on without it."""
        try:
            self._server = _HttpServer(self.address, self._handler_class(), self.tls_context)
        except OSError as exc:
            log.error("health and metrics endpoint not started on %s:%d: %s", *self.address,
                      exc.strerror)
            return
        threading.Thread(target=self._server.serve_forever, name="http-status",
                         daemon=True).start()
        log.info("health and metrics on %s://%s:%d/ (healthz, metrics)",
                 "https" if self.tls_context else "http", self.address[0], self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


