"""The node's clock: naive UTC datetimes, as every table stores them."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, in UTC, without a time zone (the form the index stores)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
