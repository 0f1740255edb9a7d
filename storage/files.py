"""The data folder: durable writes (fsync'd file and directory) and nothing else.

Every path under the data folder is built here and checked to stay inside it: a received
value never becomes a path on its own (UIDs are checked as UI values first, PS3.5 9.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Threads that wait on fsync for written files (the wait releases the GIL): enough for every
# association the node accepts at once to have its file's fsync in flight.
SYNC_THREADS = 16

# How a temporary file is created: every file the node writes is its user's alone (0600,
# whatever the umask), and never handed to a program it starts.
_CREATE = os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

# The writing process of a temporary file (FileStore._temporary): ".<name>.<pid>.<thread>.tmp".
_TEMPORARY_WRITER = re.compile(r"\.(\d+)\.\d+\.tmp$")

# PS3.5 9.1: components of digits, no leading zero in a multi-digit component, dots between.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: object) -> bool:
    """Whether ``value`` is a UI value: digits and dots, at most 64 characters, no empty
    component, no leading zero in a multi-digit component (PS3.5 section 9.1)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.match(value) is not None


class UnsafePath(ValueError):
    """A path that would leave the data folder, or a name that is not a valid UID."""


@dataclass(frozen=True)
class PendingFile:
    """A file written and hashed whose fsync, rename and directory fsync are under way.

    Attributes
    ----------
    sha256, size
        Hex digest and size in bytes of what was written (known before it is durable).
    """

    sha256: str
    size: int
    _durable: Future[None]

    def wait(self) -> None:
        """Block until the file and its directory entry are on disk; re-raises their error."""
        self._durable.result()


class FileStore:
    """Files under one root, written atomically and durably.

    A file is first written to a temporary name in its final directory, fsync'd, renamed into
    place and the directory fsync'd, so a crash leaves either the whole file or none.  A new
    folder is made durable the same way: its parent is fsync'd once (a folder's own entry lives
    in its parent), before any file in it is reported written.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Resolved once: every path built here is checked against it (twice per instance).
        self._resolved_root = self.root.resolve()
        # Folders whose entry is known to be on disk (this process fsync'd their parent).
        self._durable_folders: set[Path] = set()
        # Relative folder -> its resolved absolute path, checked inside the root.
        self._resolved_folders: dict[str, Path] = {}
        self._folders_lock = threading.Lock()
        self._sync_pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def absolute(self, relative: str) -> Path:
        """The absolute path of ``relative``; raises ``UnsafePath`` when it leaves the root."""
        folder, _, name = relative.rpartition("/")
        if folder and name not in ("", ".", ".."):
            # A folder resolved before (a series' folder: once per series, not per instance;
            # resolving walks every component of the absolute path).  The name itself is
            # still checked: a symbolic link there takes the full resolution below.
            with self._folders_lock:
                known = self._resolved_folders.get(folder)
            if known is not None:
                candidate = known / name
                if not candidate.is_symlink():
                    return candidate
        root = self._resolved_root
        path = (root / relative).resolve()
        if path == root or not path.is_relative_to(root):
            raise UnsafePath("a path outside the data folder was refused")
        if folder and path.name == name and path.parent != root:
            with self._folders_lock:
                if len(self._resolved_folders) > 100_000:  # a bound, not a correctness need
                    self._resolved_folders.clear()
                self._resolved_folders[folder] = path.parent
        return path

    def folder(self, relative: str) -> Path:
        """A folder inside the data folder (created), e.g. ``incoming`` for C-STOREs in flight."""
        path = self.absolute(relative)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _uids(*uids: str) -> None:
        for value in uids:
            if not is_valid_uid(value):
                raise UnsafePath("not a valid UID; refusing to build a path from it")

    def instance_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        """Relative path of a stored (de-identified) instance."""
        self._uids(study_uid, series_uid, sop_instance_uid)
        relative = f"studies/{study_uid}/{series_uid}/{sop_instance_uid}.dcm"
        self.absolute(relative)
        return relative

    def result_path(self, job_id: int, sop_instance_uid: str) -> str:
        """Relative path of a result object of a job."""
        self._uids(sop_instance_uid)
        relative = f"results/{int(job_id)}/{sop_instance_uid}.dcm"
        self.absolute(relative)
        return relative

    def results_of(self, job_id: int) -> list[str]:
        """Relative paths of the result objects a job stored, sorted."""
        return self.list(f"results/{int(job_id)}")

    def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` durably at ``relative``; returns its SHA-256 hex digest."""
        final = self.absolute(relative)
        self._durable_folder(final.parent)
        self._write_durable(memoryview(data), self._temporary(final), final)
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def _temporary(final: Path) -> Path:
        """The name ``final`` is written under until it is complete and fsync'd (it names the
        writing process: see :meth:`sweep_temporary` and ``_TEMPORARY_WRITER``)."""
        return final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")

    def _write_durable(self, data: memoryview, tmp: Path, final: Path) -> None:
        """Write ``data`` to ``tmp``, then make it durable as ``final`` (:meth:`_make_durable`)."""
        raw = open(os.open(tmp, _CREATE | os.O_WRONLY, 0o600), "wb")  # noqa: SIM115 - _make_durable closes it
        try:
            raw.write(data)  # a buffered writer writes all of it
            raw.flush()
        except BaseException:
            raw.close()
            tmp.unlink(missing_ok=True)
            raise
        self._make_durable(raw, tmp, final)

    def write_stream(self, relative: str, produce: Callable[[BinaryIO], None]) -> tuple[str, int]:
        """Durably write what ``produce`` writes to the file object it is given.

        For large instances: the content streams to disk without a second copy in memory.
        Returns the SHA-256 hex digest and the size in bytes.
        """
        pending = self.start_write_stream(relative, produce)
        pending.wait()
        return pending.sha256, pending.size

    def start_write_stream(self, relative: str, produce: Callable[[BinaryIO], None], *,
                           in_memory: bool = False) -> PendingFile:
        """Write and hash what ``produce`` writes now; make it durable in the background.

        The fsync of the file, its rename into place and the fsync of its folder run in a
        sync thread, so the caller can do other work (its index statements) while the disk
        flushes; :meth:`PendingFile.wait` returns once the file is durable.  The order on disk
        is that of :meth:`write_stream`: a file replaced under the same name is replaced only
        by a complete, fsync'd one.

        With ``in_memory`` (for content known to be small, e.g. a data set received in
        memory), ``produce`` writes to memory, and the sync thread writes the file while the
        caller hashes the same bytes (neither holds the GIL): nothing is read back from the
        file to hash it.  (Hashing in a second sync thread instead was slower: the caller
        then waits for that thread to be scheduled.)
        """
        final = self.absolute(relative)
        self._durable_folder(final.parent)
        tmp = self._temporary(final)
        if in_memory:
            buffer = io.BytesIO()
            produce(buffer)
            content = buffer.getbuffer()
            durable = self._pool().submit(self._write_durable, content, tmp, final)
            return PendingFile(hashlib.sha256(content).hexdigest(), len(content), durable)
        digest = hashlib.sha256()
        # closed by _make_durable, in the sync thread
        raw = open(os.open(tmp, _CREATE | os.O_RDWR, 0o600), "w+b")  # noqa: SIM115
        try:
            produce(raw)
            raw.flush()
            raw.seek(0)  # hash what was written (from the page cache), in chunks
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
            size = raw.tell()
            durable = self._pool().submit(self._make_durable, raw, tmp, final)
        except BaseException:
            raw.close()
            tmp.unlink(missing_ok=True)
            raise
        return PendingFile(digest.hexdigest(), size, durable)

    def _make_durable(self, raw: BinaryIO, tmp: Path, final: Path) -> None:
        try:
            try:
                os.fsync(raw.fileno())
            finally:
                raw.close()
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir(final.parent)

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            # A forked child has none of its parent's threads: it starts its own pool.
            if self._sync_pool is None or self._pool_pid != os.getpid():
                self._sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="fsync")
                self._pool_pid = os.getpid()
            return self._sync_pool

    def read(self, relative: str) -> bytes:
        return self.absolute(relative).read_bytes()

    def delete(self, relative: str) -> None:
        self.absolute(relative).unlink(missing_ok=True)

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
            with self._folders_lock:
                self._durable_folders.clear()  # made again (and fsync'd) when next needed
                self._resolved_folders.clear()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def sweep_temporary(self, pid: int | None = None) -> int:
        """Remove half-written files left by a crash; returns how many were removed.

        With ``pid``, only those of that (dead) process: the others may be writing theirs.
        """
        removed = 0
        for tmp in self.root.rglob(".*.tmp"):
            if pid is not None:
                writer = _TEMPORARY_WRITER.search(tmp.name)
                if writer is None or int(writer.group(1)) != pid:
                    continue
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    def _durable_folder(self, folder: Path) -> None:
        """Create ``folder`` (with its parents) and make each new entry durable.

        Once per folder and process: the parents of ``folder`` up to the root are fsync'd,
        so a study's new folders cost a few fsyncs on its first instance, not on every one.
        """
        with self._folders_lock:
            known = folder in self._durable_folders
        if known:
            if folder.is_dir():
                return
            with self._folders_lock:  # removed under us (retention): trust no cached folder
                self._durable_folders.clear()
        folder.mkdir(parents=True, exist_ok=True)
        root = self._resolved_root
        level = folder
        while level != root and level.is_relative_to(root):
            with self._folders_lock:
                if level in self._durable_folders:
                    break
            self._fsync_dir(level.parent)
            with self._folders_lock:
                if len(self._durable_folders) > 100_000:  # a bound, not a correctness need
                    self._durable_folders.clear()
                self._durable_folders.add(level)
            level = level.parent

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

