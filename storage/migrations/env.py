"""Alembic environment: runs against the connection handed over by :mod:`storage.migrate`."""

from __future__ import annotations

from alembic import context

import storage.tables  # noqa: F401  (register tables)
import storage.vault  # noqa: F401
from storage.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("migrations run through storage.migrate, which hands over a connection")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
