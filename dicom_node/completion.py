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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

from ai_engines.acceptance import Acceptance
from ai_engines.registry import engine_specs
from ai_engines.spec import EngineSpec
from dicom_node.background import RepeatingStep
from dicom_node.config import NodeConfig, Route
from storage.clock import utcnow
from storage.database import Database
from storage.jobs import enqueue
from storage.studies import (
    CompletedStudy,
    StudyRefused,
    complete_quiet_studies,
    force_complete,
    reopen_for_rerun,
)

log = logging.getLogger("dicom_node.completion")

REGION_MODALITIES = frozenset({"RTSTRUCT", "SEG"})


def accepts_study(acceptance: Acceptance, modalities: frozenset[str]) -> bool:
    """Whether a study holding series of ``modalities`` can fill every required role, and at
    least one role at all (an engine whose roles are all optional, as the MR glioma engine's
    sequences are, still needs one of them), and brings an RTSTRUCT or SEG when the engine
    asks for regions."""
    for req in acceptance.series:
        if not req.optional and not modalities.intersection(req.modalities):
            return False
    if not any(modalities.intersection(req.modalities) for req in acceptance.series):
        return False
    return acceptance.regions is None or bool(modalities & REGION_MODALITIES)


def matching_routes(routes: list[Route], modalities: frozenset[str],
                    specs: Mapping[str, EngineSpec] | None = None,
                    consumers: Collection[str] = ()) -> list[str]:
    """Engines whose route is enabled and which accept what the study holds (each once).

    An installed engine (in ``specs``, default: the installed ones) is matched on its spec's
    acceptance; a route to an engine that is not installed matches on its ``modality`` and
    ``requires``, so the study still gets a job declined ``ENGINE_NOT_INSTALLED``.
    An engine in ``consumers`` whose spec ``consumes_results`` also matches, without a
    received RTSTRUCT/SEG, when another engine does (it measures that engine's regions).
    """
    specs = engine_specs() if specs is None else specs
    engines: list[str] = []
    for route in routes:
        if not route.enabled or route.engine in engines:
            continue
        spec = specs.get(route.engine)
        if spec is not None:
            matched = accepts_study(spec.acceptance, modalities)
        else:
            matched = (route.modality is not None and route.modality in modalities
                       and all(req in modalities for req in route.requires))
        if matched:
            engines.append(route.engine)
    # An engine that measures other engines' regions (radiomics of every GTV the CT lung
    # engine finds) also runs, without a received RTSTRUCT/SEG, when another engine does.
    producers = [e for e in engines if e not in consumers]
    for route in routes:
        spec = specs.get(route.engine)
        if (route.enabled and route.engine not in engines and producers and spec is not None
                and spec.consumes_results and route.engine in consumers
                and accepts_study(replace(spec.acceptance, regions=None), modalities)):
            engines.append(route.engine)
    return engines


def ignored_route_keys(routes: list[Route], specs: Mapping[str, EngineSpec]) -> list[str]:
    """One line per route whose ``modality``/``requires`` an installed engine's acceptance
    overrides (for ``check-config``)."""
    lines = []
    for i, route in enumerate(routes):
        spec = specs.get(route.engine)
        if spec is not None and (route.modality is not None or route.requires):
            lines.append(
                f"routes.{i} ({route.engine}): modality/requires are ignored; the installed "
                f"engine accepts {', '.join(spec.acceptance.modalities)}"
                + (" with an RTSTRUCT or SEG" if spec.acceptance.regions else ""))
        elif spec is None and route.modality is None:
            lines.append(f"routes.{i} ({route.engine}): engine not installed and no modality "
                         f"given: the route never matches")
    return lines


@dataclass(frozen=True)
class Dispatch:
    """What an operator's ``study complete --force`` or ``study rerun`` queued."""

    study_uid: str
    revision: int
    engines: tuple[str, ...]
    job_ids: tuple[int, ...]


def queue_jobs(session, config: NodeConfig,  # noqa: ANN001 (a storage session)
               study: CompletedStudy, now: dt.datetime,
               specs: Mapping[str, EngineSpec] | None = None,
               engines: list[str] | None = None) -> Dispatch:
    """Queue the jobs of a study revision just completed: one per matching route, or the
    given ``engines`` only (a rerun, which then leaves other engines' queued jobs alone)."""
    chosen = engines if engines is not None else matching_routes(
        config.routes, study.modalities, specs, config.result_consumers())
    ids = enqueue(session, study.study_id, study.revision, chosen, config.jobs.max_attempts,
                  now, supersede=engines is None)
    log.info("study %s revision %d complete (%s): jobs %s for %s", study.study_uid,
             study.revision, ",".join(sorted(study.modalities)), ids,
             chosen or "no matching route")
    return Dispatch(study.study_uid, study.revision, tuple(chosen), tuple(ids))


def complete_now(config: NodeConfig, db: Database, study_uid: str) -> Dispatch:
    """``study complete --force``: complete a receiving study and queue its jobs now.

    Instances arriving afterwards make a new revision, as any late arrival does.

    Raises
    ------
    StudyRefused
        Unknown study, or one already complete.
    """
    now = utcnow()
    with db.session() as session:
        return queue_jobs(session, config, force_complete(session, study_uid, now), now)


def rerun(config: NodeConfig, db: Database, study_uid: str, engine: str | None = None) -> Dispatch:
    """``study rerun``: new jobs on a complete study's instances, as a new revision.

    Earlier jobs and their results stay as they are; the new results are new objects that go
    to the routes' destinations again.  Without ``engine`` every matching route runs.

    Raises
    ------
    StudyRefused
        Unknown study, still receiving, no enabled route for ``engine`` (or none matching),
        or a job of the engine(s) still queued or running.
    """
    routed = [r.engine for r in config.routes if r.enabled]
    if engine is not None and engine not in routed:
        raise StudyRefused(f"no enabled route names engine {engine!r} (routes: "
                           f"{', '.join(routed) or 'none'})")
    now = utcnow()
    with db.session() as session:
        study = reopen_for_rerun(session, study_uid, {engine} if engine else None, now)
        engines = [engine] if engine else matching_routes(config.routes, study.modalities,
                                                             None, config.result_consumers())
        if not engines:  # raising rolls the new revision back
            raise StudyRefused(f"study {study_uid}: no enabled route matches its modalities "
                               f"({', '.join(sorted(study.modalities))})")
        return queue_jobs(session, config, study, now, engines=engines)


class CompletionTracker:
    """Periodically completes quiet studies and queues one job per matching route."""

    def __init__(self, config: NodeConfig, db: Database,
                 busy_study_uids: Callable[[], set[str]] = set,
                 on_jobs_queued: Callable[[], None] | None = None):
        self.config = config
        self.db = db
        self.busy_study_uids = busy_study_uids
        self.on_jobs_queued = on_jobs_queued
        self.specs = engine_specs()  # installed engines do not change while the node runs
        self.loop = RepeatingStep("completion", self._pass, config.completion.poll_seconds, log)

    def run_once(self, now: dt.datetime | None = None) -> list[CompletedStudy]:
        now = now or utcnow()
        quiet = dt.timedelta(seconds=self.config.completion.quiet_seconds)
        with self.db.session() as session:
            done = complete_quiet_studies(session, now - quiet, self.busy_study_uids(),
                                          now - 10 * quiet, now)
            for study in done:
                queue_jobs(session, self.config, study, now, self.specs)
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
