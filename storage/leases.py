"""Atomic claiming of queued rows with leases, shared by the job queue and the outbox.

A row is claimable when it is waiting (``state == waiting_state`` and its next attempt is
due) or when it is running under a lease that has expired (its worker died).  The claim is a
conditional UPDATE whose WHERE clause re-checks the state, so two workers can never both win:
on PostgreSQL the candidate is picked with ``SELECT ... FOR UPDATE SKIP LOCKED`` so workers
don't queue behind each other; on SQLite the database's single writer does the same job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session


def claimable(model: Any, waiting_state: str, running_state: str, now: dt.datetime):  # noqa: ANN201
    return or_(
        and_(model.state == waiting_state, model.next_attempt_at <= now),
        and_(model.state == running_state, model.lease_expires_at < now),
    )


def claim_rows(
    session: Session,
    model: Any,
    *,
    waiting_state: str,
    running_state: str,
    now: dt.datetime,
    lease_until: dt.datetime,
    owner_values: dict[str, Any],
    extra_filter: Any = None,
    limit: int = 1,
    skip_locked: bool = False,
) -> list[Any]:
    """Claim up to ``limit`` rows; returns the claimed ORM objects (state = running_state)."""
    condition = claimable(model, waiting_state, running_state, now)
    if extra_filter is not None:
        condition = and_(condition, extra_filter)
    query = select(model.id).where(condition).order_by(model.id).limit(limit)
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    claimed = []
    for row_id in session.scalars(query).all():
        # An UPDATE's result is a CursorResult (the one that counts rows).
        result = cast(CursorResult[Any], session.execute(
            update(model)
            .where(model.id == row_id, condition)
            .values(state=running_state, lease_expires_at=lease_until,
                    attempts=model.attempts + 1, **owner_values)
            .execution_options(synchronize_session=False)
        ))
        if result.rowcount == 1:
            obj = session.get(model, row_id, populate_existing=True)
            claimed.append(obj)
    return claimed


def backoff(base_s: float, max_s: float, attempts: int) -> dt.timedelta:
    """Exponential backoff: base, 2*base, 4*base ... capped at max."""
    return dt.timedelta(seconds=min(max_s, base_s * (2 ** max(0, attempts - 1))))
