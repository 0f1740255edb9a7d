"""Database connection: SQLite on the appliance, PostgreSQL for several worker machines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cur = dbapi_connection.cursor()
    # WAL lets readers (status, workers) run beside the receiver; synchronous=FULL makes every
    # commit durable before the C-STORE response is sent.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class NoDatabase(LookupError):
    """The configured database does not exist or was never initialised by the node."""


class Database:
    """One engine and session factory for the node's database URL."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # LIFO: the receiver gets back the connection it just committed on, whose SQLite
            # page cache is still valid (a connection idle while another wrote re-reads pages).
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=20,
                max_overflow=20, pool_use_lifo=True,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
