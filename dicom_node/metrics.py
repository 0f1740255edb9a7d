"""Prometheus metrics of the node (served by :mod:`dicom_node.web` at ``/metrics``).

Counters that only the running process knows
(associations by result, instances received) live in :class:`NodeMetrics`, which the stages
increment; everything else is read from the index at scrape time, so several worker machines
report the same queue.  No value here identifies a patient: only states, counts, engine and
peer names.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from storage.database import Database
from storage.files import FileStore
from storage.monitoring import index_figures

log = logging.getLogger("dicom_node.metrics")

ASSOCIATION_RESULTS = ("accepted", "rejected", "released", "aborted")
STATUS = re.compile(r"0x[0-9A-F]{4}")  # a DIMSE status, as store_failures labels it


class NodeMetrics:
    """Counters of the node's receiver processes, incremented by the receiver (and read by
    ``/metrics``); receiver processes forward theirs to the main process's instance."""

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

    def count(self, counter: str, label: str | None = None) -> None:
        """Add one to ``counter`` (with its ``label``): the one way the receiver counts,
        whether it runs in this process or in a receiver process that forwards the count."""
        if counter == "associations" and label in ASSOCIATION_RESULTS:
            self.associations.labels(label).inc()
        elif counter == "instances_received" and label is None:
            self.instances_received.inc()
        elif counter == "store_failures" and label is not None and STATUS.fullmatch(label):
            self.store_failures.labels(label).inc()
        else:
            raise ValueError(f"no counter {counter!r} with label {label!r}")


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
