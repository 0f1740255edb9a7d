"""Shared fixtures: databases, free ports, real DICOM peers."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import migrate
from storage.database import Database


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    migrate.upgrade(db)
    yield db
    db.dispose()
