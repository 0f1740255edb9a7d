"""Key files: created 0600 atomically, refused when exposed or malformed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storage.keys import KeyFileError, load_or_create_key


def test_created_once_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "vault.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key


def test_group_readable_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)


def test_wrong_length_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 7)
    os.close(fd)
    with pytest.raises(KeyFileError, match="7 bytes") as info:
        load_or_create_key(path)
    assert "xxxxxxx" not in str(info.value)


def test_symlink_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    load_or_create_key(target)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(KeyFileError):
        load_or_create_key(link)
