"""The job queue: one job per (study revision, engine route), claimed with leases."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from storage.database import Database
from storage.leases import backoff, claim_rows
from storage.tables import Job, Study, utcnow

TERMINAL = ("succeeded", "declined", "failed", "cancelled")


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    study_id: int
    study_uid: str
    revision: int
    engine: str
    attempts: int
    max_attempts: int


@dataclass(frozen=True)
class JobView:
    id: int
    study_uid: str
    revision: int
    engine: str
    state: str
    attempts: int
    max_attempts: int
    reason_code: str | None
    reason: str | None
    worker_id: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    summary: dict | None

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        for key in ("created_at", "started_at", "finished_at"):
            d[key] = d[key].isoformat() + "Z" if d[key] else None
        return d


def enqueue(session: Session, study_id: int, revision: int, engines: list[str],
            max_attempts: int, now: dt.datetime, supersede: bool = True) -> list[int]:
    """Create the jobs of one completed study revision; supersede older queued jobs.

    Idempotent: a (study, revision, engine) that already has a job is skipped, so a completion
    replayed after a crash never duplicates work.  ``supersede=False`` (an operator's rerun of
    some engines) leaves the other engines' queued jobs alone.
    """
    if supersede:
        session.execute(
            update(Job)
            .where(Job.study_id == study_id, Job.revision < revision, Job.state == "queued")
            .values(state="cancelled", reason_code="SUPERSEDED", finished_at=now,
                    reason=f"instances arrived after dispatch; superseded by revision "
                    f"{revision}")
        )
    existing = set(session.scalars(
        select(Job.engine).where(Job.study_id == study_id, Job.revision == revision)
    ))
    ids = []
    for engine in engines:
        if engine in existing:
            continue
        job = Job(study_id=study_id, revision=revision, engine=engine,
                  max_attempts=max_attempts, next_attempt_at=now, created_at=now)
        session.add(job)
        session.flush()
        ids.append(job.id)
    return ids


def record_identity_revision(session: Session, job_id: int, revision: int) -> None:
    """Record the identity revision a job's results are re-identified with (the latest among
    the instances it read; see :func:`storage.studies.study_identity_revision`)."""
    session.execute(update(Job).where(Job.id == job_id).values(identity_revision=revision))


class JobQueue:
    """Claiming, finishing and inspecting jobs."""

    def __init__(self, db: Database):
        self.db = db

    def claim(self, worker_id: str, lease_seconds: float) -> ClaimedJob | None:
        now = utcnow()
        with self.db.session() as session:
            # Jobs whose lease expired on their last allowed attempt fail here, with a reason.
            session.execute(
                update(Job)
                .where(Job.state == "running", Job.lease_expires_at < now,
                       Job.attempts >= Job.max_attempts)
                .values(state="failed", finished_at=now, reason_code="LEASE_EXPIRED",
                        reason="the worker stopped responding on the last allowed attempt")
            )
            rows = claim_rows(
                session, Job, waiting_state="queued", running_state="running", now=now,
                lease_until=now + dt.timedelta(seconds=lease_seconds),
                owner_values={"worker_id": worker_id, "started_at": now},
                skip_locked=not self.db.is_sqlite,
            )
            if not rows:
                return None
            job = rows[0]
            # job.study_id is a non-null foreign key: the study row exists.
            study_uid = session.execute(
                select(Study.study_uid).where(Study.id == job.study_id)).scalar_one()
            return ClaimedJob(job.id, job.study_id, study_uid, job.revision, job.engine,
                              job.attempts, job.max_attempts)

    def renew(self, job_id: int, worker_id: str, lease_seconds: float) -> bool:
        with self.db.session() as session:
            res = cast(CursorResult[Any], session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                                  Job.state == "running")
                .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
            ))
            return res.rowcount == 1

    def finish(self, job_id: int, worker_id: str, state: str, *, reason_code: str | None = None,
               reason: str | None = None, summary: dict | None = None) -> bool:
        """Record a terminal state; False if this worker no longer owns the job."""
        assert state in TERMINAL
        with self.db.session() as session:
            res = cast(CursorResult[Any], session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == worker_id,
                                  Job.state == "running")
                .values(state=state, reason_code=reason_code, reason=reason,
                        finished_at=utcnow(), lease_expires_at=None,
                        summary=json.dumps(summary) if summary is not None else None)
            ))
            return res.rowcount == 1

    def fail_attempt(self, job_id: int, worker_id: str, reason_code: str, reason: str,
                     backoff_s: float, backoff_max_s: float) -> str:
        """A failed attempt: back to queued with backoff, or failed when out of attempts."""
        now = utcnow()
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.worker_id != worker_id or job.state != "running":
                return "lost"
            job.reason_code, job.reason, job.lease_expires_at = reason_code, reason, None
            if job.attempts >= job.max_attempts:
                job.state, job.finished_at = "failed", now
            else:
                job.state = "queued"
                job.next_attempt_at = now + backoff(backoff_s, backoff_max_s, job.attempts)
            return job.state

    def retry(self, job_id: int) -> bool:
        """Operator retry of a terminal job: queued again with a fresh attempt budget."""
        with self.db.session() as session:
            res = cast(CursorResult[Any], session.execute(
                update(Job).where(Job.id == job_id, Job.state.in_(("failed", "declined",
                                                                   "cancelled")))
                .values(state="queued", attempts=0, next_attempt_at=utcnow(), reason_code=None,
                        reason=None, finished_at=None, worker_id=None)
            ))
            return res.rowcount == 1

    def list(self, state: str | None = None, limit: int = 100) -> list[JobView]:
        with self.db.session() as session:
            query = select(Job, Study.study_uid).join(Study, Study.id == Job.study_id)
            if state:
                query = query.where(Job.state == state)
            rows = session.execute(query.order_by(Job.id.desc()).limit(limit)).all()
            return [_view(job, uid) for job, uid in rows]

    def get(self, job_id: int) -> JobView | None:
        with self.db.session() as session:
            row = session.execute(
                select(Job, Study.study_uid).join(Study, Study.id == Job.study_id)
                .where(Job.id == job_id)
            ).first()
            return _view(*row) if row else None


def _view(job: Job, study_uid: str) -> JobView:
    return JobView(job.id, study_uid, job.revision, job.engine, job.state, job.attempts,
                   job.max_attempts, job.reason_code, job.reason, job.worker_id, job.created_at,
                   job.started_at, job.finished_at,
                   json.loads(job.summary) if job.summary else None)


@dataclass(frozen=True)
class RevisionJob:
    """Another job of the same study revision (for engines that consume results)."""

    id: int
    engine: str
    state: str


def revision_jobs(session: Session, study_id: int, revision: int) -> list[RevisionJob]:
    """The jobs of one study revision, oldest first."""
    rows = session.execute(
        select(Job.id, Job.engine, Job.state)
        .where(Job.study_id == study_id, Job.revision == revision).order_by(Job.id)
    ).all()
    return [RevisionJob(*row) for row in rows]


def defer(db: Database, job_id: int, worker_id: str, seconds: float, reason: str = "") -> bool:
    """Put a claimed job back in the queue for ``seconds`` without spending an attempt (it
    waits for other jobs of its study; ``reason`` says for what, shown by ``jobs``); False if
    this worker no longer owns it."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.worker_id != worker_id or job.state != "running":
            return False
        job.state, job.worker_id, job.lease_expires_at = "queued", None, None
        job.reason_code, job.reason = "WAITING", reason[:500] or None
        job.attempts = max(0, job.attempts - 1)
        job.next_attempt_at = utcnow() + dt.timedelta(seconds=seconds)
        return True
