"""Schema migrations with Alembic, run at start-up (and by ``dicom-node migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from storage.database import Database, NoDatabase

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection) -> Config:  # noqa: ANN001
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(db: Database) -> None:
    """Bring the database to the newest schema (idempotent; safe on every start)."""
    with db.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")


def open_existing(url: str) -> Database:
    """Open a database the node already created, without creating or migrating anything.

    Read-only commands (``status``, ``outbox list``) use this so that a wrong ``--config``
    reports the mistake instead of leaving an empty database behind.

    Raises
    ------
    NoDatabase
        The SQLite file is missing, or the database holds no node schema.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or path == ":memory:" or not Path(path).is_file():
            raise NoDatabase(f"no node database at {path or url!r}")
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:  # driver errors differ by backend; all mean "cannot use it"
        db.dispose()
        raise NoDatabase(f"cannot open the node database: {type(exc).__name__}") from exc
    if revision is None:
        db.dispose()
        raise NoDatabase("the database holds no node schema (never started with this config?)")
    return db


def pending_differences(db: Database) -> list:
    """Differences between the migrated schema and the table definitions (should be none)."""
    import storage.tables  # noqa: F401
    import storage.vault  # noqa: F401
    from storage.schema import Base

    with db.engine.connect() as connection:
        ctx = MigrationContext.configure(connection)
        return compare_metadata(ctx, Base.metadata)
