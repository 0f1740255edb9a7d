"""Index of received studies, series and instances, and their completion state."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.tables import Instance, Job, Series, Study

# Raised by :func:`index_instance` when another transaction indexed the same study or series
# at the same moment; the caller retries.  Named here so callers need not import SQLAlchemy.
IndexConflict = IntegrityError


@dataclass(frozen=True)
class ReceivedInstance:
    """What the index records of one stored, de-identified instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    frame_of_reference_uid: str | None
    patient_pseudonym: str
    calling_ae: str
    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class IndexOutcome:
    study_id: int
    new_instance: bool
    changed: bool  # a duplicate SOP Instance UID with different content
    late_arrival: bool  # the study had been handed to engines; it will be re-run


@dataclass(frozen=True)
class CompletedStudy:
    study_id: int
    study_uid: str
    revision: int
    calling_ae: str
    modalities: frozenset[str]


def index_instance(session: Session, item: ReceivedInstance, now: dt.datetime) -> IndexOutcome:
    """Record one instance (idempotently) and move its study back to receiving if needed.

    Runs once per received instance, so it is written as plain statements (no ORM objects or
    unit of work): three lookups by unique UID, then the inserts and updates that apply.

    Raises :data:`IndexConflict` when another transaction created the same study or series
    concurrently; the caller retries.
    """
    studies, series_table, instances = Study.__table__, Series.__table__, Instance.__table__
    study = session.execute(
        select(studies.c.id, studies.c.state, studies.c.revision, studies.c.dispatched_revision)
        .where(studies.c.study_uid == item.study_uid)).first()
    if study is None:
        study_id = session.execute(insert(studies).values(
            study_uid=item.study_uid, patient_pseudonym=item.patient_pseudonym,
            calling_ae=item.calling_ae, state="receiving", revision=1, dispatched_revision=0,
            first_received_at=now, last_received_at=now)).inserted_primary_key[0]
        study_state, revision, dispatched = "receiving", 1, 0
    else:
        study_id, study_state, revision, dispatched = study
    series = session.execute(select(series_table.c.id, series_table.c.state)
                             .where(series_table.c.series_uid == item.series_uid)).first()
    if series is None:
        series_id = session.execute(insert(series_table).values(
            study_id=study_id, series_uid=item.series_uid, modality=item.modality,
            frame_of_reference_uid=item.frame_of_reference_uid, state="receiving",
            instance_count=0, last_received_at=now)).inserted_primary_key[0]
        series_state = "receiving"
    else:
        series_id, series_state = series
    existing = session.execute(select(instances.c.id, instances.c.sha256)
                               .where(instances.c.sop_instance_uid == item.sop_instance_uid)
                               ).first()
    new_instance = existing is None
    changed = False
    stored = {"path": item.path, "size_bytes": item.size_bytes, "sha256": item.sha256,
              "received_at": now, "transfer_syntax_uid": item.transfer_syntax_uid}
    if existing is None:
        session.execute(insert(instances).values(
            series_id=series_id, sop_instance_uid=item.sop_instance_uid,
            sop_class_uid=item.sop_class_uid, **stored))
    elif existing.sha256 != item.sha256:
        changed = True
        session.execute(update(instances).where(instances.c.id == existing.id).values(**stored))
    if not (new_instance or changed):
        return IndexOutcome(study_id, False, False, False)

    study_values: dict = {"last_received_at": now, "calling_ae": item.calling_ae}
    late = False
    if study_state == "complete":
        # Late arrival: re-open the study; the next completion re-runs every route on the
        # full series as a new revision (never a silent split).
        late = dispatched == revision
        if late:
            study_values["revision"] = revision + 1
        study_values.update(state="receiving", completed_at=None)
    series_values: dict = {"last_received_at": now}
    if new_instance:
        series_values["instance_count"] = series_table.c.instance_count + 1
    if series_state == "complete":
        series_values.update(state="receiving", completed_at=None)
    session.execute(update(series_table).where(series_table.c.id == series_id).values(**series_values))
    session.execute(update(studies).where(studies.c.id == study_id).values(**study_values))
    return IndexOutcome(study_id, new_instance, changed, late)


def complete_quiet_studies(
    session: Session, quiet_before: dt.datetime, busy_study_uids: set[str],
    stalled_before: dt.datetime, now: dt.datetime,
) -> list[CompletedStudy]:
    """Mark series and studies complete that have been quiet since ``quiet_before`` and are
    not being received on an open association (unless quiet since ``stalled_before``: an
    association left open and idle that long no longer holds completion back).  Returns the
    studies that became complete."""
    completed: list[CompletedStudy] = []
    candidates = session.scalars(
        select(Study).where(Study.state == "receiving", Study.last_received_at <= quiet_before)
    ).all()
    for study in candidates:
        if study.study_uid in busy_study_uids and study.last_received_at > stalled_before:
            continue
        modalities = set()
        for series in study.series:
            modalities.add(series.modality)
            if series.state != "complete":
                series.state = "complete"
                series.completed_at = now
        study.state = "complete"
        study.completed_at = now
        study.dispatched_revision = study.revision
        completed.append(CompletedStudy(
            study.id, study.study_uid, study.revision, study.calling_ae, frozenset(modalities)
        ))
    return completed


def study_uid_for_id(session: Session, study_id: int) -> str:
    return session.scalar(select(Study.study_uid).where(Study.id == study_id))


@dataclass(frozen=True)
class StoredSeries:
    series_uid: str
    modality: str
    frame_of_reference_uid: str | None
    paths: tuple[str, ...]


def study_series(session: Session, study_id: int) -> list[StoredSeries]:
    """Every series of a study with the relative paths of its instances."""
    out = []
    for series in session.scalars(
        select(Series).where(Series.study_id == study_id).order_by(Series.id)
    ):
        paths = session.scalars(
            select(Instance.path).where(Instance.series_id == series.id).order_by(Instance.id)
        ).all()
        out.append(StoredSeries(series.series_uid, series.modality,
                                series.frame_of_reference_uid, tuple(paths)))
    return out


def study_calling_ae(session: Session, study_id: int) -> str:
    return session.scalar(select(Study.calling_ae).where(Study.id == study_id))


def counts(session: Session) -> dict[str, dict[str, int]]:
    """Counts by state, for ``dicom-node status``."""
    def by_state(model) -> dict[str, int]:  # noqa: ANN001
        rows = session.execute(select(model.state, func.count()).group_by(model.state)).all()
        return {state: n for state, n in rows}

    return {
        "studies": by_state(Study),
        "series": by_state(Series),
        "instances": {"stored": session.scalar(select(func.count()).select_from(Instance))},
        "jobs": by_state(Job),
    }


def recent_studies(session: Session, limit: int) -> list[dict]:
    """The last ``limit`` studies received, newest first, with their series, for ``status``."""
    rows = session.scalars(select(Study).order_by(Study.id.desc()).limit(limit)).all()
    return [
        {"study": s.study_uid, "state": s.state, "revision": s.revision,
         "series": [{"series": x.series_uid, "modality": x.modality, "state": x.state,
                     "instances": x.instance_count} for x in session.scalars(
                         select(Series).where(Series.study_id == s.id).order_by(Series.id))],
         "last_received_at": s.last_received_at.isoformat() + "Z"}
        for s in rows]
