"""Fixtures for de-identification tests: a vault on a temporary SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer, Reidentifier
from storage.database import Database
from storage.vault import Vault

SECRET = b"unit-test-site-secret-0123456789"
VAULT_KEY = bytes(range(32))


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    db = Database(f"sqlite:///{tmp_path / 'vault.db'}")
    v = Vault(db, VAULT_KEY)
    v.create_tables()
    yield v
    db.dispose()


@pytest.fixture(scope="session")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(DeidSettings(), SECRET)


@pytest.fixture
def reidentifier(vault: Vault) -> Reidentifier:
    return Reidentifier(vault)
