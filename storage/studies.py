"""Index of received studies, series and instances, and their completion state."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.schema import Base
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
    # The study's identity revision in the vault this instance arrived with (storage.vault).
    identity_revision: int = 1


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


def _inserted_id(connection: Connection, statement: Insert) -> int:
    """The primary key of the one row ``statement`` inserted."""
    result = connection.execute(statement)
    return int(result.inserted_primary_key[0])  # type: ignore[index]  # one-row insert


@functools.cache
def _lookup_statement() -> Select:
    """Study, series and instance rows of three UIDs (each NULL when absent), as one row."""
    studies, series_table, instances = (cast(Table, model.__table__)
                                        for model in (Study, Series, Instance))
    one = select(literal(1).label("one")).subquery("one")
    return (
        select(studies.c.id.label("study_id"), studies.c.state.label("study_state"),
               studies.c.revision, studies.c.dispatched_revision,
               series_table.c.id.label("series_id"), series_table.c.state.label("series_state"),
               instances.c.id.label("instance_id"), instances.c.sha256,
               instances.c.identity_revision)
        .select_from(one)
        .outerjoin(studies, studies.c.study_uid == bindparam("study_uid"))
        .outerjoin(series_table, series_table.c.series_uid == bindparam("series_uid"))
        .outerjoin(instances, instances.c.sop_instance_uid == bindparam("sop_instance_uid")))


def index_instance(session: Session, item: ReceivedInstance, now: dt.datetime) -> IndexOutcome:
    """Record one instance (idempotently) and move its study back to receiving if needed.

    Runs once per received instance, so it is written as plain statements (no ORM objects or
    unit of work): one lookup of its three UIDs, then the inserts and updates that apply.

    Raises :data:`IndexConflict` when another transaction created the same study or series
    concurrently; the caller retries.
    """
    # Table statements, not ORM objects: this runs once per received instance.
    studies, series_table, instances = (cast(Table, model.__table__)
                                        for model in (Study, Series, Instance))
    # Core statements on the session's connection (same transaction): the ORM's execute adds
    # its own per-statement work that table statements do not need.
    connection = session.connection()
    # The three lookups by unique UID in one statement (one round trip, one compiled query).
    known = connection.execute(_lookup_statement(), {
        "study_uid": item.study_uid, "series_uid": item.series_uid,
        "sop_instance_uid": item.sop_instance_uid}).one()
    if known.study_id is None:
        study_id = _inserted_id(connection, insert(studies).values(
            study_uid=item.study_uid, patient_pseudonym=item.patient_pseudonym,
            calling_ae=item.calling_ae, state="receiving", revision=1, dispatched_revision=0,
            first_received_at=now, last_received_at=now))
        study_state, revision, dispatched = "receiving", 1, 0
    else:
        study_id, study_state, revision, dispatched = (
            known.study_id, known.study_state, known.revision, known.dispatched_revision)
    if known.series_id is None:
        series_id = _inserted_id(connection, insert(series_table).values(
            study_id=study_id, series_uid=item.series_uid, modality=item.modality,
            frame_of_reference_uid=item.frame_of_reference_uid, state="receiving",
            instance_count=0, last_received_at=now))
        series_state = "receiving"
    else:
        series_id, series_state = known.series_id, known.series_state
    existing = None if known.instance_id is None else known
    new_instance = existing is None
    changed = False
    stored = {"path": item.path, "size_bytes": item.size_bytes, "sha256": item.sha256,
              "received_at": now, "transfer_syntax_uid": item.transfer_syntax_uid}
    if existing is None:
        connection.execute(_insert_statement(Instance), dict(
            series_id=series_id, sop_instance_uid=item.sop_instance_uid,
            sop_class_uid=item.sop_class_uid, identity_revision=item.identity_revision,
            **stored))
    elif existing.sha256 != item.sha256:
        changed = True
        connection.execute(update(instances).where(instances.c.id == existing.instance_id).values(
            identity_revision=item.identity_revision, **stored))
    elif existing.identity_revision != item.identity_revision:
        # A re-sent instance carries the identity it was re-sent with (a demographic
        # correction changes no de-identified byte, yet later jobs must use the new identity).
        connection.execute(update(instances).where(instances.c.id == existing.instance_id).values(
            identity_revision=item.identity_revision))
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
    if series_state == "complete":
        series_values.update(state="receiving", completed_at=None)
    _update_row(connection, Series, series_id, series_values, count_instance=new_instance)
    _update_row(connection, Study, study_id, study_values)
    return IndexOutcome(study_id, new_instance, changed, late)


@functools.cache
def _insert_statement(model: type[Base]) -> Insert:
    """INSERT into ``model``'s table; its columns come from the parameters it is run with."""
    return insert(cast(Table, model.__table__))


@functools.cache
def _row_update_statement(model: type[Base], columns: tuple[str, ...], count_instance: bool) -> Update:
    """UPDATE of one row by ``row_id`` setting ``columns`` from parameters ``new_<column>`` (and
    adding one to a series' instance count): built once per shape, as it runs per instance."""
    table = cast(Table, model.__table__)
    values: dict[str, Any] = {name: bindparam(f"new_{name}", type_=table.c[name].type)
                              for name in columns}
    if count_instance:
        values["instance_count"] = table.c.instance_count + 1
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


def _update_row(connection: Connection, model: type[Base], row_id: int,
                values: dict[str, Any], *, count_instance: bool = False) -> None:
    statement = _row_update_statement(model, tuple(sorted(values)), count_instance)
    connection.execute(statement, {"row_id": row_id,
                                **{f"new_{name}": value for name, value in values.items()}})


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
        completed.append(_mark_complete(study, now))
    return completed


def _mark_complete(study: Study, now: dt.datetime) -> CompletedStudy:
    """Mark a study and its series complete and its revision dispatched."""
    modalities = set()
    for series in study.series:
        modalities.add(series.modality)
        if series.state != "complete":
            series.state = "complete"
            series.completed_at = now
    study.state = "complete"
    study.completed_at = now
    study.dispatched_revision = study.revision
    return CompletedStudy(study.id, study.study_uid, study.revision, study.calling_ae,
                          frozenset(modalities))


class StudyRefused(Exception):
    """An operator action on a study that cannot be done (unknown study, wrong state); the
    message says why and what to do instead."""


def _study(session: Session, study_uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None:
        raise StudyRefused(f"no study {study_uid} (give the pseudonymous study UID, or "
                           "--accession)")
    return study


def force_complete(session: Session, study_uid: str, now: dt.datetime) -> CompletedStudy:
    """Complete a receiving study now, without waiting for the completion rule.

    Raises
    ------
    StudyRefused
        Unknown study, or already complete (a rerun is the operation for that).
    """
    study = _study(session, study_uid)
    if study.state == "complete":
        raise StudyRefused(f"study {study_uid} is already complete (revision "
                           f"{study.revision}); 'dicom-node study rerun' runs its engines again")
    return _mark_complete(study, now)


def reopen_for_rerun(session: Session, study_uid: str, engines: set[str] | None,
                     now: dt.datetime) -> CompletedStudy:
    """A new revision of a complete study for an operator's rerun (same instances).

    The revision counts what the engines were handed, so a rerun is a new revision: its jobs
    are new rows and its results new objects, while earlier jobs and results stay as they are.
    ``engines`` (None: any) may not have a job still queued or running.

    Raises
    ------
    StudyRefused
        Unknown study, a study still receiving, or a job of these engines not finished.
    """
    study = _study(session, study_uid)
    if study.state != "complete":
        raise StudyRefused(f"study {study_uid} is still receiving; complete it first "
                           "('dicom-node study complete --force')")
    active = session.execute(select(Job.id, Job.engine).where(
        Job.study_id == study.id, Job.state.in_(("queued", "running")))).all()
    busy = [f"job {i} ({engine})" for i, engine in active if engines is None or engine in engines]
    if busy:
        raise StudyRefused(f"study {study_uid}: {', '.join(busy)} not finished yet")
    study.revision += 1
    return _mark_complete(study, now)


def study_uid_for_id(session: Session, study_id: int) -> str:
    return session.execute(select(Study.study_uid).where(Study.id == study_id)).scalar_one()


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


def study_identity_revision(session: Session, study_id: int) -> int:
    """The latest identity revision among the study's stored instances (1 when none)."""
    latest = session.scalar(
        select(func.max(Instance.identity_revision))
        .join(Series, Series.id == Instance.series_id).where(Series.study_id == study_id))
    return int(latest or 1)


def study_calling_ae(session: Session, study_id: int) -> str:
    return session.execute(select(Study.calling_ae).where(Study.id == study_id)).scalar_one()


def counts(session: Session) -> dict[str, dict[str, int]]:
    """Counts by state, for ``dicom-node status``."""
    def by_state(model) -> dict[str, int]:  # noqa: ANN001
        rows = session.execute(select(model.state, func.count()).group_by(model.state)).all()
        return {state: n for state, n in rows}

    return {
        "studies": by_state(Study),
        "series": by_state(Series),
        "instances": {"stored": session.scalar(select(func.count()).select_from(Instance)) or 0},
        "jobs": by_state(Job),
    }
