"""Jobs run at a lower CPU priority than the receiver (``jobs.nice``), torch's threads too."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from dicom_node.config import parse_config
from dicom_node.node import Node
from dicom_node.sample_data import PatientIdentity
from dicom_node.worker import JobRunner, lower_thread_priority
from tests.dicom_node.test_worker import HOTSPOT_ENTRY, axial_ct_with_spots, quiet, receive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="per-thread niceness is Linux's")


def niceness(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_the_thread_that_runs_an_engine_is_nicer_than_the_receiver(tmp_path, monkeypatch):
    from tests.platform.entry_points import installed

    seen: list[int] = []
    original = JobRunner.run

    def run(self, job):  # noqa: ANN001, ANN202
        seen.append(niceness(threading.get_native_id()))
        return original(self, job)

    monkeypatch.setattr(JobRunner, "run", run)
    base = niceness(threading.get_native_id())
    with installed(tmp_path / "site-packages", "hotspot-example", HOTSPOT_ENTRY):
        config = parse_config({
            "node": {"data_dir": str(tmp_path / "var")},
            "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
            "jobs": {"workers": 1, "nice": 7, "poll_seconds": 0.1},
            "completion": {"quiet_seconds": 0.05},
            "peers": [{"name": "pacs", "ae_title": "PACS", "port": 104, "kind": "clinical"}],
            "routes": [{"engine": "hotspot"}],
        })
        node = Node(config, workers=1, send=False)
        try:
            for worker in node.workers:
                worker.start()
            receive(node, axial_ct_with_spots(PatientIdentity()))  # in this (receiving) thread
            quiet(node)
            deadline = time.monotonic() + 60
            while not seen and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for worker in node.workers:
                worker.stop()
                worker.join(10)
            node.db.dispose()
    assert seen == [min(19, base + 7)]
    assert niceness(threading.get_native_id()) == base  # the receiving thread kept its own


def test_torch_inference_threads_started_by_a_job_thread_inherit_its_niceness():
    torch = pytest.importorskip("torch")
    base = niceness(threading.get_native_id())
    before = {int(t) for t in os.listdir("/proc/self/task")}
    result: dict[str, object] = {}

    def job() -> None:
        result["job"] = lower_thread_priority(5)
        torch.set_num_threads(2)
        a = torch.randn(256, 256, 64)
        for _ in range(20):  # big enough for torch to use its intra-op (OpenMP) threads
            a = torch.tanh(a @ a.transpose(1, 2) / 256) @ a
        result["threads"] = {int(t) for t in os.listdir("/proc/self/task")} - before

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(120)
    assert result["job"] == min(19, base + 5)
    started = result["threads"] - {thread.native_id}
    started = {t for t in started if Path(f"/proc/self/task/{t}").exists()}
    assert started, "torch started no inference thread (nothing to check)"
    assert {niceness(t) for t in started} == {min(19, base + 5)}
    assert niceness(threading.get_native_id()) == base
