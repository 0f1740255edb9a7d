"""A C-STORE data set while it arrives: memory first, a private file past the limit."""

from __future__ import annotations

import io
import stat
import subprocess
from pathlib import Path

import pynetdicom.dimse_messages
import pytest
from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from dicom_node import incoming
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from storage import quarantine
from storage.tables import Quarantined
from tests.net import need
from tests.security.netnode import running_node


@pytest.fixture
def part10() -> bytes:
    (ds,) = ct_series_datasets(phantom_chest_hu((1, 64, 64)))
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def receive(data: bytes, folder: Path, limit: int, fragment: int = 1000) -> incoming.IncomingDataSet:
    """Write ``data`` as pynetdicom does: fragment by fragment, each followed by a flush."""
    received = incoming.IncomingDataSet(folder, limit)
    for start in range(0, len(data), fragment):
        received.write(data[start:start + fragment])
        received.file.flush()
    return received


def test_a_data_set_under_the_limit_never_touches_the_disk(tmp_path, part10):
    received = receive(part10, tmp_path, limit=len(part10))
    assert received.in_memory
    assert not any(tmp_path.iterdir())
    ds = received.dataset()
    assert ds.PixelData == dcmread(io.BytesIO(part10)).PixelData
    assert received.source() == part10
    received.close()
    assert not any(tmp_path.iterdir())


def test_a_data_set_over_the_limit_spills_to_a_private_file(tmp_path, part10):
    received = receive(part10, tmp_path, limit=len(part10) // 3)
    assert not received.in_memory
    (spilled,) = tmp_path.iterdir()
    assert spilled == Path(received.name)
    assert stat.S_IMODE(spilled.stat().st_mode) == 0o600
    source = received.source()
    assert isinstance(source, Path) and source.read_bytes() == part10
    assert received.dataset().SOPInstanceUID == dcmread(io.BytesIO(part10)).SOPInstanceUID
    received.discard()
    assert not any(tmp_path.iterdir())


def test_limit_zero_writes_a_file_from_the_first_byte(tmp_path, part10):
    received = incoming.IncomingDataSet(tmp_path, 0)
    assert not received.in_memory and Path(received.name).exists()
    received.write(part10)
    assert received.source().read_bytes() == part10  # type: ignore[union-attr]
    received.close()
    with pytest.raises(ValueError, match="closed"):
        received.write(b"x")


def test_a_request_not_received_through_the_hook_fails_closed():
    class Request:
        _dataset_file = io.BytesIO(b"")

    with pytest.raises(RuntimeError, match="receive hook"):
        incoming.of(Request())


def test_install_takes_over_pynetdicoms_temporary_file(tmp_path):
    before = pynetdicom.dimse_messages.NamedTemporaryFile
    try:
        incoming.install(tmp_path, 1234)
        # exactly how pynetdicom calls it (dimse_messages.DIMSEMessage.decode_msg)
        made = pynetdicom.dimse_messages.NamedTemporaryFile(delete=False, mode="wb",
                                                            suffix=".dcm")
        assert isinstance(made, incoming.IncomingDataSet)
        assert Path(made.name).parent == tmp_path and made.limit == 1234
    finally:
        pynetdicom.dimse_messages.NamedTemporaryFile = before


@pytest.mark.slow
@pytest.mark.parametrize("limit", [0, 4096, 16 * 1024 * 1024])
def test_storescu_series_is_stored_alike_in_memory_and_spilled(tmp_path, limit):
    """The same series through memory, a spill in mid data set and a file from the start:
    every instance stored with the same pixel data, nothing left in ``incoming``; and a
    quarantined instance keeps exactly the bytes received."""
    datasets = ct_series_datasets(phantom_chest_hu((4, 64, 64)))
    datasets[-1].BurnedInAnnotation = "YES"
    files = write_series(datasets, tmp_path / "ct")
    with running_node(tmp_path / "node", node={"dataset_memory_bytes": limit}) as node:
        sent = subprocess.run([need("storescu"), "-aet", "PACS", "-aec", node.config.node.ae_title,
                               "127.0.0.1", str(node.config.node.port), *map(str, files)],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        assert node.stored() == 3
        stored = sorted(p for p in (node.data_dir / "studies").rglob("*.dcm"))
        assert sorted(dcmread(p).PixelData for p in stored) == sorted(
            ds.PixelData for ds in datasets[:-1])
        assert not any((node.data_dir / "incoming").iterdir())
        with node.db.session() as session:
            (held,) = session.query(Quarantined).all()
            original = quarantine.open_sealed(node.receiver.files, node.receiver.quarantine_key,
                                              held.path)
        assert dcmread(io.BytesIO(original)).PixelData == datasets[-1].PixelData
