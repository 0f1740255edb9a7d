"""A C-STORE data set while it arrives: in memory up to a limit, then in a private file.

pynetdicom, with ``_config.STORE_RECV_CHUNKED_DATASET``, writes each received data set (with a
File Meta header it makes) into a ``NamedTemporaryFile`` it creates by that module-global name
in ``pynetdicom.dimse_messages``.  :func:`install` puts :class:`IncomingDataSet` there instead:

- a data set up to ``node.dataset_memory_bytes`` (16 MiB: every CT, MR, PET or NM slice) stays
  in memory, so it is never written to disk with its identities before it is de-identified,
  and the receiver is spared a file create, ~32 writes, a read back and a delete per instance
  (2.4 ms of 21 on a 512x512 CT slice, ``benchmarks/bench_ingest.py``);
- a larger one (a whole-slide or enhanced multi-frame object) spills, once it passes the limit,
  to a file only the node's user may read, in the data folder's ``incoming`` folder, so memory
  stays bounded by ``node.max_associations`` x the limit, as before.

pynetdicom closes the object and unlinks its ``name`` after the C-STORE handler returns; a data
set cut off mid-stream is closed by the receiver (``handle_closed``).
"""

from __future__ import annotations

import io
import os
import secrets
import threading
from pathlib import Path
from typing import IO

import pynetdicom.dimse_messages
from pydicom import dcmread
from pydicom.dataset import FileDataset
from pynetdicom import _config

# Values larger than this stay in a spilled file until they are written out.
DEFER_SIZE = "256 KB"


class IncomingDataSet:
    """One data set as pynetdicom writes it: memory first, a private file past ``limit``.

    Provides what pynetdicom uses of its temporary file: ``name``, ``write``, ``file.flush``
    and ``close``.

    Parameters
    ----------
    folder
        Where a spilled data set is written (inside the data folder).
    limit
        Bytes kept in memory before the data set spills to a file; 0 spills at once.
    """

    def __init__(self, folder: Path, limit: int) -> None:
        self.name = str(folder / f"{secrets.token_hex(16)}.dcm")
        self.limit = limit
        self._memory: bytearray | bytes | None = bytearray()
        self._file: IO[bytes] | None = None
        self._closed = False
        if limit <= 0:
            self._spill()

    @property
    def file(self) -> IncomingDataSet:
        # pynetdicom flushes ``tmp.file`` after every fragment; :meth:`flush` decides.
        return self

    @property
    def in_memory(self) -> bool:
        """Whether the data set is still in memory (not spilled to a file)."""
        return self._memory is not None

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("write to a closed incoming data set")
        if isinstance(self._memory, bytearray):
            self._memory += data
            if len(self._memory) > self.limit:
                self._spill()
        else:
            assert self._file is not None
            self._file.write(data)
        return len(data)

    def flush(self) -> None:
        """Nothing per fragment: the file is flushed once, before it is read."""

    def _spill(self) -> None:
        # O_EXCL: never a file someone else made; 0600: identities are still in it.
        fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        if self._memory:
            self._file.write(self._memory)
        self._memory = None

    def dataset(self) -> FileDataset:
        """The received data set, read as the File Meta header says (the C-STORE is complete).

        A spilled one is read from its file with its large values (pixel data) left there.
        """
        if self._memory is not None:
            # Frozen once: BytesIO and source() then share these bytes, no further copy.
            self._memory = bytes(self._memory)
            return dcmread(io.BytesIO(self._memory))
        assert self._file is not None
        self._file.flush()
        return dcmread(self.name, defer_size=DEFER_SIZE)

    def source(self) -> bytes | Path:
        """The data set as received, for quarantine: its bytes, or its spilled file."""
        if self._memory is not None:
            return bytes(self._memory)  # no copy once dataset() has frozen it
        assert self._file is not None
        self._file.flush()
        return Path(self.name)

    def close(self) -> None:
        """Free the memory or close the file (pynetdicom then unlinks ``name``)."""
        self._closed = True
        self._memory = None
        if self._file is not None:
            self._file.close()

    def discard(self) -> None:
        """Close and delete: a data set cut off mid-stream holds identities."""
        self.close()
        Path(self.name).unlink(missing_ok=True)


_settings_lock = threading.Lock()
_folder: Path | None = None
_limit = 0


def _named_temporary_file(*_args: object, **_kwargs: object) -> IncomingDataSet:
    """What pynetdicom calls ``NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")``."""
    with _settings_lock:
        folder, limit = _folder, _limit
    if folder is None:
        raise RuntimeError("dicom_node.incoming.install() was not called")
    return IncomingDataSet(folder, limit)


def install(folder: Path, limit: int) -> None:
    """Have pynetdicom receive every C-STORE data set of this process as an
    :class:`IncomingDataSet` spilling to ``folder`` past ``limit`` bytes."""
    global _folder, _limit
    with _settings_lock:
        _folder, _limit = Path(folder), limit
    _config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom.dimse_messages.NamedTemporaryFile = _named_temporary_file  # type: ignore[assignment]


def of(request: object) -> IncomingDataSet:
    """The incoming data set of a C-STORE request pynetdicom has completely received.

    Raises
    ------
    RuntimeError
        When pynetdicom did not receive it through :func:`install` (the hook is gone, e.g.
        after a pynetdicom upgrade): the receiver fails closed rather than guess.
    """
    received = getattr(request, "_dataset_file", None)
    if not isinstance(received, IncomingDataSet):
        raise RuntimeError("the C-STORE data set was not received through "
                           "dicom_node.incoming (pynetdicom's receive hook changed?)")
    return received
