"""Peak Python memory (tracemalloc) while quarantining one large received instance.

    .venv/bin/python benchmarks/bench_quarantine_memory.py [MiB]

Compares the streamed encryption of ``storage.quarantine.keep`` with the former path (read
the whole file, encrypt it in one AES-GCM call). Prints MiB figures; asserts nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage import migrate, quarantine
from storage.database import Database
from storage.files import FileStore
from storage.keys import QUARANTINE, KeyRing


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        received = root / "received.dcm"
        with open(received, "wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
        db = Database(f"sqlite:///{root / 'node.db'}")
        migrate.upgrade(db)
        files = FileStore(root / "var")
        ring = KeyRing(QUARANTINE, {1: os.urandom(32)})

        tracemalloc.start()
        start = time.perf_counter()
        with db.session() as session:
            quarantine.keep(session, files, ring, received, calling_ae="PACS",
                            sop_class_uid="1.2.840.10008.5.1.4.1.1.7", reason_code="x",
                            reason="benchmark")
        streamed = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        tracemalloc.start()
        start = time.perf_counter()
        data = received.read_bytes()  # the former path: whole file, one AES-GCM call
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(ring.key(1)).encrypt(nonce, data, b"quarantine/x")
        files.write("quarantine/former.enc", sealed)
        former = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        db.dispose()
    print(f"instance {mib} MiB")
    print(f"streamed (storage.quarantine.keep): peak {streamed[1] / 2**20:7.1f} MiB, "
          f"{streamed[0]:.2f} s")
    print(f"former (read whole, encrypt once):  peak {former[1] / 2**20:7.1f} MiB, "
          f"{former[0]:.2f} s")


if __name__ == "__main__":
    main()
