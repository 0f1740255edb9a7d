"""The Storage SCP against real peers (dcmtk echoscu/storescu) and precise pynetdicom probes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from dicom_node.sample_data import (
    PatientIdentity,
    ct_series_datasets,
    phantom_chest_hu,
    write_series,
)
from tests.net import need
from tests.nodeproc import NodeProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("scp-node")
    with NodeProcess(root, quiet_seconds=30) as proc:
        yield proc


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory) -> tuple[PatientIdentity, list[Path]]:
    identity = PatientIdentity()
    datasets = ct_series_datasets(phantom_chest_hu((12, 64, 64)), identity=identity)
    return identity, write_series(datasets, tmp_path_factory.mktemp("ct"))


def storescu(node: NodeProcess, files: list[Path], *extra: str, aet: str = "PACS"):
    return subprocess.run(
        [need("storescu"), "-v", "-aet", aet, "-aec", node.ae_title, *extra, "127.0.0.1",
         str(node.port), *map(str, files)], capture_output=True, text=True, timeout=120)


def instances(node: NodeProcess) -> int:
    return node.status()["instances"]["stored"]


def c_store_status(node: NodeProcess, ds, transfer_syntax=ExplicitVRLittleEndian) -> int:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(ds.SOPClassUID, transfer_syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status)
    finally:
        assoc.release()


def test_echoscu_and_called_calling_checks(node):
    ok = subprocess.run([need("echoscu"), "-aet", "PACS", "-aec", node.ae_title, "127.0.0.1",
                         str(node.port)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    stranger = subprocess.run([need("echoscu"), "-aet", "STRANGER", "-aec", node.ae_title,
                               "127.0.0.1", str(node.port)], capture_output=True, text=True)
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stdout + stranger.stderr
    wrong_called = subprocess.run([need("echoscu"), "-aet", "PACS", "-aec", "NOTME",
                                   "127.0.0.1", str(node.port)], capture_output=True, text=True)
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr


def test_storescu_series_is_stored_deidentified(node, ct_files):
    identity, files = ct_files
    before = instances(node)
    out = storescu(node, files)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.count("Received Store Response (Success)") == len(files)
    assert instances(node) == before + len(files)
    stored = list((node.data_dir / "studies").rglob("*.dcm"))
    assert stored
    ds = dcmread(stored[0])
    assert ds.PatientIdentityRemoved == "YES"
    assert str(ds.PatientName) != identity.name and ds.PatientID != identity.patient_id
    assert ds.StudyInstanceUID != identity.study_uid


def test_duplicate_instances_are_idempotent(node, ct_files):
    _, files = ct_files
    storescu(node, files[:3])
    before = instances(node)
    out = storescu(node, files[:3])
    assert out.stderr.count("Received Store Response (Success)") == 3
    assert instances(node) == before


@pytest.mark.parametrize("tool,args,propose", [
    ("dcmcjpeg", ["+e1"], "-xs"),    # JPEG lossless SV1
    ("dcmcjpeg", ["+eb"], "-xy"),    # JPEG baseline (lossy, 8 bit)
    ("dcmcjpls", [], "-xt"),         # JPEG-LS lossless
    ("dcmcrle", [], "-xr"),          # RLE
])
def test_compressed_transfer_syntaxes_are_accepted(node, tmp_path, tool, args, propose):
    hu = phantom_chest_hu((2, 64, 64))
    if "+eb" in args:  # baseline JPEG is 8-bit only
        hu = (hu - hu.min()) / (hu.max() - hu.min()) * 255 - 1024
    (plain,) = write_series(ct_series_datasets(hu[:1]), tmp_path / "plain")
    packed = tmp_path / "packed.dcm"
    made = subprocess.run([need(tool), *args, str(plain), str(packed)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    before = instances(node)
    out = storescu(node, [packed], propose)  # offer the compressed syntax
    assert "Received Store Response (Success)" in out.stderr, out.stdout + out.stderr
    assert instances(node) == before + 1
    newest = max((node.data_dir / "studies").rglob("*.dcm"), key=lambda p: p.stat().st_mtime)
    stored = dcmread(newest)
    assert stored.file_meta.TransferSyntaxUID == dcmread(packed).file_meta.TransferSyntaxUID
    assert stored.pixel_array.shape == (64, 64)  # and it decodes


def test_jpeg2000_is_accepted(node, tmp_path):
    (ds,) = ct_series_datasets(phantom_chest_hu((1, 64, 64)))
    ds.compress(JPEG2000Lossless)
    assert c_store_status(node, ds, JPEG2000Lossless) == 0x0000


def test_missing_pixel_data_gets_a900(node):
    (ds,) = ct_series_datasets(phantom_chest_hu((1, 16, 16)))
    del ds.PixelData
    before = instances(node)
    assert c_store_status(node, ds) == 0xA900
    assert instances(node) == before


def test_unparsable_data_set_gets_c000(node, tmp_path):
    (ds,) = ct_series_datasets(phantom_chest_hu((1, 16, 16)))
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    # Keep the file meta, then a data element whose length runs past the end of the data.
    meta_end = raw.index(b"\x08\x00\x05\x00")
    path.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\x7f" + b"1.2")
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        status = assoc.send_c_store(path)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert int(status.Status) in (0xC000, 0xA900)
    assert node.echo()  # the node keeps serving


def test_unknown_sop_class_is_not_negotiated(node):
    ae = AE(ae_title="PACS")
    ae.add_requested_context("1.2.826.0.1.3680043.8.498.99999", ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    rejected = {cx.abstract_syntax for cx in assoc.rejected_contexts}
    assoc.release()
    assert "1.2.826.0.1.3680043.8.498.99999" in rejected and CTImageStorage in accepted


def test_burned_in_annotation_is_quarantined(node):
    (ds,) = ct_series_datasets(phantom_chest_hu((1, 16, 16)))
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    before = instances(node)
    assert c_store_status(node, ds) == 0x0000
    status = node.status()
    assert status["instances"]["stored"] == before
    assert sum(status["quarantine"].values()) >= 1


def test_disk_watermark_refuses_storage_before_data_arrives(tmp_path):
    with NodeProcess(tmp_path, extra={"node": {"min_free_disk_mb": 10**9}}) as full:
        (ds,) = ct_series_datasets(phantom_chest_hu((1, 16, 16)))
        ae = AE(ae_title="PACS")
        ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", full.port, ae_title=full.ae_title)
        assert assoc.is_rejected  # transient, local limit exceeded: the PACS retries later
        assert assoc.acceptor.primitive.result == 0x02
        assert full.echo()  # monitoring still gets its C-ECHO
        assert full.status()["instances"]["stored"] == 0
