"""Stages wake each other: a study's results go out long before any poll interval ends."""

from __future__ import annotations

import copy
import logging
import threading
import time

from sqlalchemy import select

from dicom_node.background import RepeatingStep
from dicom_node.config import parse_config
from dicom_node.node import Node
from dicom_node.sample_data import ct_series_datasets
from storage.tables import Job, OutboxItem
from tests.dicom_node.test_sender import start_storescp
from tests.net import free_port

LONG_POLL = 300.0


def test_wake_runs_the_step_before_the_poll_interval_ends():
    ran = threading.Event()
    calls = []

    def step() -> bool:
        calls.append(time.monotonic())
        if len(calls) > 1:
            ran.set()
        return False

    loop = RepeatingStep("test", step, LONG_POLL, logging.getLogger("test"))
    loop.start()
    try:
        time.sleep(0.2)  # the first pass ran and the loop now waits for LONG_POLL
        loop.wake()
        assert ran.wait(5)
    finally:
        loop.stop()
        loop.join(5)
    assert len(calls) == 2


def test_completion_wakes_workers_and_workers_wake_the_sender(tmp_path):
    from ai_engines.ct_lung.synthetic import synthetic_chest_ct

    port = free_port()
    config = parse_config({
        "node": {"data_dir": str(tmp_path / "var"), "port": free_port(), "min_free_disk_mb": 1},
        "database": {"url": f"sqlite:///{tmp_path / 'var' / 'node.db'}"},
        # Quiet time well above the gaps between in-process ingests on a loaded machine (the
        # study must complete once), and far below LONG_POLL (the wake-ups are under test).
        "completion": {"quiet_seconds": 3.0, "poll_seconds": 0.1},
        "jobs": {"workers": 1, "poll_seconds": LONG_POLL},
        "sender": {"poll_seconds": LONG_POLL},
        "peers": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port, "kind": "clinical"}],
    })
    case = synthetic_chest_ct(11, n_slices=32, n_tumours=1, diameter_mm=30.0,
                              focus_tumour=True, slice_thickness=2.5)
    datasets = ct_series_datasets(case.hu, pixel_spacing=(case.pixel_spacing,) * 2,
                                  slice_spacing=2.5, origin=case.origin)
    pacs = start_storescp(port, tmp_path / "rx")
    node = Node(config)
    node.start()
    try:
        time.sleep(0.5)  # every loop has made its first pass and waits for LONG_POLL
        for ds in datasets:
            assert node.receiver.ingest(copy.deepcopy(ds), "PACS") == 0
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            with node.db.session() as s:
                states = {i.state for i in s.scalars(select(OutboxItem))}
            if states == {"sent"}:
                break
            time.sleep(0.2)
        with node.db.session() as s:
            (job,) = s.scalars(select(Job)).all()
            items = s.scalars(select(OutboxItem)).all()
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait()
        node.db.dispose()
    assert job.state == "succeeded", (job.reason_code, job.reason)
    assert items and {i.state for i in items} == {"sent"}
    assert len(list((tmp_path / "rx").iterdir())) == len(items)
