"""The data folder: durable writes (fsync'd file and directory) and nothing else."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class FileStore:
    """Files under one root, written atomically and durably.

    A file is first written to a temporary name in its final directory, fsync'd, renamed into
    place and the directory fsync'd, so a crash leaves either the whole file or none.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` durably at ``relative``; returns its SHA-256 hex digest."""
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        self._fsync_dir(final.parent)
        return hashlib.sha256(data).hexdigest()

    def write_stream(self, relative: str, produce: Callable[[BinaryIO], None]) -> tuple[str, int]:
        """Durably write what ``produce`` writes to the file object it is given.

        For large instances: the content streams to disk without a second copy in memory.
        Returns the SHA-256 hex digest and the size in bytes.
        """
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        digest = hashlib.sha256()
        with open(tmp, "w+b") as raw:
            produce(raw)
            raw.flush()
            os.fsync(raw.fileno())
            raw.seek(0)  # hash what is on disk (from the page cache), in chunks
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
            size = raw.tell()
        os.replace(tmp, final)
        self._fsync_dir(final.parent)
        return digest.hexdigest(), size

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def delete(self, relative: str) -> None:
        (self.root / relative).unlink(missing_ok=True)

    def list(self, relative: str) -> list[str]:
        """Files directly inside a folder of the data folder (relative paths, sorted)."""
        folder = self.root / relative
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in folder.iterdir() if p.is_file())

    def size(self, relative: str) -> int:
        """Size of a stored file in bytes; 0 when it is not there."""
        try:
            return (self.root / relative).stat().st_size
        except FileNotFoundError:
            return 0

    def remove_empty_folder(self, relative: str) -> None:
        """Remove a folder under the data folder if it is empty (retention)."""
        with contextlib.suppress(OSError):  # not there, or not empty: keep it
            (self.root / relative).rmdir()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def sweep_temporary(self) -> int:
        """Remove half-written files left by a crash; returns how many were removed."""
        removed = 0
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

