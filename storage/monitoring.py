"""What the node's health and metrics endpoint reads from the index (counts by state, the
newest receive, recent engine stage times).  Pseudonymous values only; nothing per patient."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from sqlalchemy import func, select, text

from storage.database import Database
from storage.tables import Instance, Job, OutboxItem, Quarantined, Series, Study


@dataclass(frozen=True)
class IndexFigures:
    studies_by_state: dict[str, int]
    instances_stored: int
    jobs_by_engine_state: dict[tuple[str, str], int]
    outbox_by_destination_state: dict[tuple[str, str], int]
    quarantined: int
    last_received_at: dt.datetime | None
    # Mean seconds per (engine, stage) over each engine's most recent finished jobs.
    stage_seconds_mean: dict[tuple[str, str], float] = field(default_factory=dict)


def database_reachable(db: Database) -> bool:
    """True when a trivial query succeeds (the readiness check)."""
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any driver error means "not ready"
        return False


def index_figures(db: Database, recent_jobs: int = 100) -> IndexFigures:
    """Counts for the metrics endpoint; a few grouped queries, cheap enough per scrape."""
    with db.session() as session:
        studies: dict[str, int] = {state: n for state, n in session.execute(
            select(Study.state, func.count()).group_by(Study.state))}
        instances = session.scalar(select(func.count()).select_from(Instance)) or 0
        jobs = {(engine, state): n for engine, state, n in session.execute(
            select(Job.engine, Job.state, func.count()).group_by(Job.engine, Job.state))}
        deliveries = {(dest, state): n for dest, state, n in session.execute(
            select(OutboxItem.destination, OutboxItem.state, func.count())
            .group_by(OutboxItem.destination, OutboxItem.state))}
        quarantined = session.scalar(select(func.count()).select_from(Quarantined)) or 0
        last = session.scalar(select(func.max(Study.last_received_at)))
        totals: dict[tuple[str, str], list[float]] = {}
        for engine in {engine for engine, _ in jobs}:
            summaries = session.scalars(
                select(Job.summary).where(Job.engine == engine, Job.summary.is_not(None))
                .order_by(Job.id.desc()).limit(recent_jobs)).all()
            for summary in summaries:
                timings = json.loads(summary or "{}").get("timings_s", {})
                for stage, seconds in timings.items():
                    totals.setdefault((engine, str(stage)), []).append(float(seconds))
    return IndexFigures(studies, instances, jobs, deliveries, quarantined, last,
                        {key: sum(v) / len(v) for key, v in totals.items()})


@dataclass(frozen=True)
class SeriesView:
    series_uid: str
    modality: str
    state: str
    instances: int


@dataclass(frozen=True)
class StudyView:
    """A study as ``status`` and the dashboard list it (pseudonymous)."""

    study_uid: str
    calling_ae: str
    state: str
    revision: int
    last_received_at: dt.datetime
    series: tuple[SeriesView, ...]
    jobs: tuple[tuple[int, str, str, str | None], ...]  # (id, engine, state, reason code)

    def as_dict(self) -> dict:
        """The shape ``dicom-node status --json`` prints."""
        return {"study": self.study_uid, "state": self.state, "revision": self.revision,
                "series": [{"series": x.series_uid, "modality": x.modality, "state": x.state,
                            "instances": x.instances} for x in self.series],
                "last_received_at": self.last_received_at.isoformat() + "Z"}


def recent_studies(db: Database, limit: int = 50) -> list[StudyView]:
    """The most recently received studies, newest first, with their series and jobs."""
    with db.session() as session:
        studies = session.scalars(
            select(Study).order_by(Study.last_received_at.desc(), Study.id.desc())
            .limit(limit)).all()
        views = []
        for study in studies:
            series = tuple(SeriesView(*row) for row in session.execute(
                select(Series.series_uid, Series.modality, Series.state, Series.instance_count)
                .where(Series.study_id == study.id).order_by(Series.id)).tuples().all())
            jobs = tuple(session.execute(
                select(Job.id, Job.engine, Job.state, Job.reason_code)
                .where(Job.study_id == study.id).order_by(Job.id)).tuples().all())
            views.append(StudyView(study.study_uid, study.calling_ae, study.state,
                                   study.revision,
                                   study.last_received_at, series, jobs))
        return views


@dataclass(frozen=True)
class QuarantineView:
    id: int
    received_at: dt.datetime
    calling_ae: str
    sop_class_uid: str
    reason_code: str
    reason: str


def quarantine_rows(db: Database, limit: int = 100) -> list[QuarantineView]:
    """Quarantined instances, newest first: why, from whom, never their content."""
    with db.session() as session:
        return [QuarantineView(q.id, q.received_at, q.calling_ae, q.sop_class_uid,
                               q.reason_code, q.reason)
                for q in session.scalars(select(Quarantined).order_by(Quarantined.id.desc())
                                         .limit(limit))]


def study_result_folders(db: Database, study_uid: str) -> list[str]:
    """Result folders (relative to the data folder) of a study's finished jobs, newest first."""
    with db.session() as session:
        ids = session.scalars(select(Job.id).join(Study, Study.id == Job.study_id)
                              .where(Study.study_uid == study_uid,
                                     Job.state.in_(("succeeded", "declined")))
                              .order_by(Job.id.desc())).all()
    return [f"results/{job_id}" for job_id in ids]


@dataclass(frozen=True)
class DeliveryOutcome:
    """Where one delivery stands after a send attempt, with its (pseudonymous) study."""

    id: int
    study_uid: str
    patient_pseudonym: str
    sop_class_uid: str
    state: str


def delivery_outcomes(db: Database, item_ids: list[int]) -> list[DeliveryOutcome]:
    """The state of these deliveries now, for the audit trail of a send attempt."""
    with db.session() as session:
        rows = session.execute(
            select(OutboxItem.id, Study.study_uid, Study.patient_pseudonym,
                   OutboxItem.sop_class_uid, OutboxItem.state)
            .join(Job, Job.id == OutboxItem.job_id).join(Study, Study.id == Job.study_id)
            .where(OutboxItem.id.in_(item_ids)).order_by(OutboxItem.id)).all()
    return [DeliveryOutcome(*row) for row in rows]
