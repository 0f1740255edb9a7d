"""Limit before trust (issue 10, item 6): quarantining a received instance must not hold two
full copies of it in memory. The old path read the whole file and encrypted it in one call
(peak > 2x the instance); now it is encrypted as a stream from the received file."""

from __future__ import annotations

import gc
import tracemalloc

from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from sqlalchemy import select

from dicom_node.node import Node
from storage import quarantine
from storage.keys import QUARANTINE, KeyFolder
from storage.tables import Quarantined
from tests.security.installation import burned_in, node_config

SIZE = 200 * 1024 * 1024


def _large_burned_in(path) -> None:  # noqa: ANN001
    ds = burned_in()
    ds.Rows = ds.Columns = 10240  # 10240 x 10240 x 16 bit = 200 MiB of pixel data
    ds.PixelData = bytes(SIZE)
    dcmwrite(path, ds, enforce_file_format=True)


def test_quarantining_200_mb_holds_no_full_copy_in_memory(tmp_path):
    config = node_config(tmp_path)
    node = Node(config, workers=0, send=False)
    received = tmp_path / "received.dcm"
    _large_burned_in(received)
    gc.collect()
    # As the receiver reads a C-STORE: large values stay in the file.
    ds = dcmread(received, defer_size="256 KB")
    tracemalloc.start()
    try:
        assert node.receiver.ingest(ds, "PACS", original=received) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"quarantine of {received.stat().st_size / 2**20:.0f} MiB: peak {peak / 2**20:.1f} MiB "
          "traced")
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB while quarantining 200 MiB"

    with node.db.session() as s:
        (relative,) = s.scalars(select(Quarantined.path)).all()
    sealed = node.files.absolute(relative)
    assert sealed.stat().st_size == received.stat().st_size + 8 + 12 + 16  # header, nonce, tag
    out = tmp_path / "opened.dcm"
    with open(out, "wb") as sink:  # an operator opens it, also as a stream
        quarantine.open_into(node.files, KeyFolder(config.keys_dir).ring(QUARANTINE), relative,
                             sink)
    with open(out, "rb") as a, open(received, "rb") as b:
        while True:
            x, y = a.read(1 << 24), b.read(1 << 24)
            assert x == y
            if not x:
                break
    node.db.dispose()
