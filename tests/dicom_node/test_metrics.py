"""Health and Prometheus metrics of a real node after a known send from dcmtk storescu."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dicom_node.metrics import NodeMetrics
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from dicom_node.web import StatusServer
from storage import migrate
from storage.database import Database
from storage.files import FileStore
from tests.net import free_port, need
from tests.nodeproc import NodeProcess


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


@pytest.mark.slow
def test_metrics_and_health_after_a_known_send(tmp_path):
    http_port = free_port()
    files = write_series(ct_series_datasets(phantom_chest_hu((4, 32, 32))), tmp_path / "ct")
    with NodeProcess(tmp_path / "node", quiet_seconds=60,
                     extra={"http": {"port": http_port}}) as node:
        base = f"http://127.0.0.1:{http_port}"
        out = subprocess.run([need("storescu"), "-aet", "PACS", "-aec", node.ae_title,
                              "127.0.0.1", str(node.port), *map(str, files)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        subprocess.run([need("echoscu"), "-aet", "STRANGER", "-aec", node.ae_title,
                        "127.0.0.1", str(node.port)], capture_output=True, timeout=30)
        status, body = _get(f"{base}/metrics")
        assert status == 200
        samples = _samples(body)
        assert samples[("dicom_node_instances_stored", ())] == 4
        assert samples[("dicom_node_studies", (("state", "receiving"),))] == 1
        # The readiness probe of NodeProcess.start (C-ECHO as PACS) is an association too.
        assert samples[("dicom_node_associations_total", (("result", "accepted"),))] >= 2
        assert samples[("dicom_node_associations_total", (("result", "rejected"),))] == 1
        assert samples[("dicom_node_disk_free_bytes", ())] > 0
        assert ("dicom_node_last_receive_timestamp_seconds", ()) in samples
        assert b"Patient" not in body and b"PACS^" not in body
        status, body = _get(f"{base}/healthz/ready")
        report = json.loads(body)
        assert status == 200 and report["ready"] is True
        assert report["checks"] == {"database": True, "disk": True, "receiver": True}
        assert _get(f"{base}/healthz/live")[0] == 200
        # Everything else is the dashboard, which has no users here: nobody gets in.
        status, body = _get(f"{base}/")
        assert status == 503 and b"no users" in body


def test_not_ready_when_the_disk_is_short(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    server = StatusServer("127.0.0.1", 0, db, FileStore(tmp_path), NodeMetrics(),
                          min_free_bytes=1 << 62, receiver_listening=lambda: False)
    server.start()
    try:
        status, body = _get(f"http://127.0.0.1:{server.port}/healthz")
        report = json.loads(body)
        assert status == 503 and report["ready"] is False
        assert report["checks"] == {"database": True, "disk": False, "receiver": False}
        status, body = _get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and b"dicom_node_jobs" in body
    finally:
        server.stop()
        db.dispose()


def test_a_taken_port_does_not_stop_the_node(tmp_path, caplog):
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    first = StatusServer("127.0.0.1", 0, db, FileStore(tmp_path), NodeMetrics(), 0)
    first.start()
    second = StatusServer("127.0.0.1", first.port, db, FileStore(tmp_path), NodeMetrics(), 0)
    try:
        second.start()  # logs, does not raise
        assert "not started" in caplog.text
    finally:
        first.stop()
        second.stop()
        db.dispose()
