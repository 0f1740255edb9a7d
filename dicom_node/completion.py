"""Deciding when a study is complete, and queueing its jobs.

A series (and its study) is complete when no instance has arrived for
``completion.quiet_seconds`` AND no association that delivered to the study is still open.
An association left open but idle for ten quiet periods no longer holds completion back, so a
peer that never releases cannot stall the node.

The state lives in the database; completing a study and creating its jobs happen in one
transaction, so a restart neither loses nor duplicates a completion.  Instances arriving after
a study was handed to the engines re-open it as a new revision; when it completes again every
route re-runs on the full series, and queued jobs of the old revision are cancelled as
superseded.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from dicom_node.background import RepeatingStep
from dicom_node.config import NodeConfig, Route
from storage.database import Database
from storage.jobs import enqueue
from storage.studies import CompletedStudy, complete_quiet_studies
from storage.tables import utcnow

log = logging.getLogger("dicom_node.completion")


def matching_routes(routes: list[Route], modalities: frozenset[str]) -> list[str]:
    """Engines whose route matches what the study holds (each engine at most once)."""
    engines: list[str] = []
    for route in routes:
        if not route.enabled or route.modality not in modalities:
            continue
        if all(req in modalities for req in route.requires) and route.engine not in engines:
            engines.append(route.engine)
    return engines


class CompletionTracker:
    """Periodically completes quiet studies and queues one job per matching route."""

    def __init__(self, config: NodeConfig, db: Database,
                 busy_study_uids: Callable[[], set[str]] = set,
                 on_jobs_queued: Callable[[], None] | None = None):
        self.config = config
        self.db = db
        self.busy_study_uids = busy_study_uids
        self.on_jobs_queued = on_jobs_queued
        self.loop = RepeatingStep("completion", self._pass, config.completion.poll_seconds, log)

    def run_once(self, now: dt.datetime | None = None) -> list[CompletedStudy]:
        now = now or utcnow()
        quiet = dt.timedelta(seconds=self.config.completion.quiet_seconds)
        with self.db.session() as session:
            done = complete_quiet_studies(session, now - quiet, self.busy_study_uids(),
                                          now - 10 * quiet, now)
            for study in done:
                engines = matching_routes(self.config.routes, study.modalities)
                ids = enqueue(session, study.study_id, study.revision, engines,
                              self.config.jobs.max_attempts, now)
                log.info("study %s revision %d complete (%s): jobs %s for %s", study.study_uid,
                         study.revision, ",".join(sorted(study.modalities)), ids,
                         engines or "no matching route")
        return done

    def _pass(self) -> bool:
        done = self.run_once()
        if done and self.on_jobs_queued:
            self.on_jobs_queued()
        return False  # completion is time-driven: always wait for the next poll

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        self.loop.join(timeout=10)
