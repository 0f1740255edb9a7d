"""Retention: what the node deletes, and when, so the appliance never fills its disk.

A study is purged as a whole (its received instances, its result files, its jobs and
deliveries, its index rows) ``study_days`` after the last thing that happened to it, and
only when every result owed for it has been delivered: a study with a pending, failed or
refused delivery, or a job still queued or running, is kept however old it is (``purge``
reports it as held, so an operator can resend or purge it by hand).  Quarantined instances go
``quarantine_days`` after they arrived.  Vault rows (the encrypted identities) of a study go
``vault_days`` after they were written, and never while the study is still in the index, so
a result can always be re-identified while the node holds the study.

Files are deleted before the rows that name them: a crash in between leaves rows of an
already eligible study, which the next purge deletes; never a file without its row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select

from storage.database import Database
from storage.files import FileStore
from storage.jobs import TERMINAL
from storage.tables import Instance, Job, OutboxItem, Quarantined, Series, Study
from storage.vault import VaultStudy, VaultUid


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep each kind of data; 0 keeps it forever."""

    study_days: float = 7.0
    quarantine_days: float = 30.0
    vault_days: float = 30.0


@dataclass
class PurgeReport:
    """What a purge deleted (or, with ``dry_run``, would delete), and what it held back."""

    studies: list[str] = field(default_factory=list)
    instances: int = 0
    result_files: int = 0
    quarantined: int = 0
    vault_rows: int = 0
    bytes_freed: int = 0
    # Old enough, but kept: pseudonymous study UID -> why.
    held: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class StudyNotPurgeable(Exception):
    """A study that a forced purge still must not delete (unknown, receiving or running)."""


def _hold_reason(session, study: Study) -> str | None:  # noqa: ANN001
    """Why the study must be kept whatever its age, or None."""
    if study.state != "complete":
        return f"study is {study.state}"
    jobs = session.execute(select(Job.state).where(Job.study_id == study.id)).scalars().all()
    if any(state not in TERMINAL for state in jobs):
        return "a job is queued or running"
    owed = session.execute(
        select(OutboxItem.state, func.count()).join(Job, Job.id == OutboxItem.job_id)
        .where(Job.study_id == study.id, OutboxItem.state != "sent")
        .group_by(OutboxItem.state)).all()
    if owed:
        return "undelivered results: " + ", ".join(f"{n} {state}" for state, n in sorted(owed))
    return None


def _last_activity(session, study: Study) -> dt.datetime:  # noqa: ANN001
    moments = [study.last_received_at, study.completed_at,
               session.scalar(select(func.max(Job.finished_at)).where(Job.study_id == study.id)),
               session.scalar(select(func.max(OutboxItem.sent_at))
                              .join(Job, Job.id == OutboxItem.job_id)
                              .where(Job.study_id == study.id))]
    return max(m for m in moments if m is not None)


def _delete_study(session, files: FileStore, study: Study, report: PurgeReport,  # noqa: ANN001
                  dry_run: bool) -> None:
    instances = session.execute(
        select(Instance.path, Instance.size_bytes).join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == study.id)).all()
    job_ids = session.scalars(select(Job.id).where(Job.study_id == study.id)).all()
    results = session.scalars(select(OutboxItem.path).where(OutboxItem.job_id.in_(job_ids))
                              .distinct()).all()
    report.studies.append(study.study_uid)
    report.instances += len(instances)
    report.result_files += len(results)
    report.bytes_freed += sum(size for _, size in instances)
    report.bytes_freed += sum(files.size(path) for path in results)
    if dry_run:
        return
    for path in [p for p, _ in instances] + list(results):
        files.delete(path)
    for job_id in job_ids:
        files.remove_empty_folder(f"results/{job_id}")
    series_ids = select(Series.id).where(Series.study_id == study.id)
    session.execute(delete(OutboxItem).where(OutboxItem.job_id.in_(job_ids)))
    session.execute(delete(Job).where(Job.study_id == study.id))
    session.execute(delete(Instance).where(Instance.series_id.in_(series_ids)))
    session.execute(delete(Series).where(Series.study_id == study.id))
    session.execute(delete(Study).where(Study.id == study.id))


def purge(db: Database, files: FileStore, policy: RetentionPolicy, now: dt.datetime,
          *, dry_run: bool = False) -> PurgeReport:
    """Delete what the policy no longer keeps; see the module docstring for the rules.

    ``now`` is naive UTC, as every timestamp in the index.
    """
    report = PurgeReport()
    if policy.study_days > 0:
        cutoff = now - dt.timedelta(days=policy.study_days)
        with db.session() as session:
            candidates = session.scalars(
                select(Study).where(Study.last_received_at <= cutoff).order_by(Study.id)).all()
        for study in candidates:
            # One transaction per study: a long purge never holds the receiver's writes back.
            with db.session() as session:
                current = session.get(Study, study.id)
                if current is None:
                    continue
                reason = _hold_reason(session, current)
                if reason is None and _last_activity(session, current) > cutoff:
                    continue
                if reason is not None:
                    report.held[current.study_uid] = reason
                    continue
                _delete_study(session, files, current, report, dry_run)
    if policy.quarantine_days > 0:
        cutoff = now - dt.timedelta(days=policy.quarantine_days)
        with db.session() as session:
            rows = session.execute(select(Quarantined.id, Quarantined.path)
                                   .where(Quarantined.received_at <= cutoff)).all()
            report.quarantined = len(rows)
            report.bytes_freed += sum(files.size(path) for _, path in rows)
            if not dry_run:
                for _, path in rows:
                    files.delete(path)
                session.execute(delete(Quarantined).where(
                    Quarantined.id.in_([row_id for row_id, _ in rows])))
    if policy.vault_days > 0:
        cutoff = (now - dt.timedelta(days=policy.vault_days)).replace(tzinfo=dt.UTC)
        indexed = select(Study.study_uid)
        with db.session() as session:
            for table, study_column in ((VaultUid, VaultUid.pseudo_study_uid),
                                        (VaultStudy, VaultStudy.pseudo_study_uid)):
                condition = (table.created_at <= cutoff) & study_column.is_not(None) & \
                    study_column.not_in(indexed)
                if dry_run:
                    report.vault_rows += session.scalar(
                        select(func.count()).select_from(table).where(condition)) or 0
                else:
                    report.vault_rows += cast(CursorResult[Any], session.execute(
                        delete(table).where(condition)
                        .execution_options(synchronize_session=False))).rowcount
    return report


def purge_study(db: Database, files: FileStore, study_uid: str, *,
                dry_run: bool = False) -> PurgeReport:
    """An operator's purge of one study whatever its age and deliveries (e.g. a failed
    delivery nobody will fix).  Refused while the study is receiving or a job runs."""
    report = PurgeReport()
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise StudyNotPurgeable(f"no study {study_uid} in the index")
        reason = _hold_reason(session, study)
        if reason is not None and not reason.startswith("undelivered"):
            raise StudyNotPurgeable(f"study {study_uid} cannot be purged now: {reason}")
        _delete_study(session, files, study, report, dry_run)
    return report
