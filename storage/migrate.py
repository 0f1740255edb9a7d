"""Schema migrations with Alembic, run at start-up (and by ``dicom-node migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from storage.database import Database

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


def pending_differences(db: Database) -> list:
    """Differences between the migrated schema and the table definitions (should be none)."""
    import storage.tables  # noqa: F401
    import storage.vault  # noqa: F401
    from storage.schema import Base

    with db.engine.connect() as connection:
        ctx = MigrationContext.configure(connection)
        return compare_metadata(ctx, Base.metadata)
