"""Defect 3d: pydicom's own warnings carried element values; a malformed birth date and an
original UID reached ``node.log`` and the journal. The node's handlers now redact pydicom and
pynetdicom records (and route ``warnings`` through them) and every exception message."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from dicom_node.config import DeidSettings, NodeConfig, NodeSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.logredaction import ValueRedaction, redact
from dicom_node.node import configure_logging
from tests.nodeproc import NodeProcess

SECRET = b"security-test-site-secret-012345"
BAD_BIRTH_DATE = "19Q7-13-45"
BAD_UID = "1.2.840.10008.1/../../quorvex"
ORIGINAL_STUDY_UID = "1.2.826.0.1.3680043.10.999.10.4242"
BAD_SIZE = "QUORVEXKG"
SECRETS = (BAD_BIRTH_DATE, BAD_UID, ORIGINAL_STUDY_UID, "quorvex", "QUORVEX", "4242")


def _hostile(sop_uid: str = BAD_UID) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.999.10.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = ORIGINAL_STUDY_UID
    ds.SeriesInstanceUID = BAD_UID
    ds.PatientID = "PID-LOG-1"
    ds.Modality = "CT"
    ds.add_new(0x00100030, "DA", BAD_BIRTH_DATE)
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\x00" * 8
    return ds


def test_redact_keeps_the_shape_not_the_values() -> None:
    text = redact(f"Invalid value for VR DA: '{BAD_BIRTH_DATE}' in (0010,0030) "
                  f"uid {ORIGINAL_STUDY_UID} name Doe^John")
    assert BAD_BIRTH_DATE not in text and ORIGINAL_STUDY_UID not in text
    assert "Doe^John" not in text
    assert text.startswith("Invalid value for VR DA:") and "(0010,0030)" in text


@pytest.fixture
def node_logging(tmp_path: Path):
    config = NodeConfig(node=NodeSettings(data_dir=tmp_path))
    configure_logging(config)
    yield tmp_path / "logs" / "node.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_dicom_node", False):
            root.removeHandler(handler)
            handler.close()
    logging.captureWarnings(False)


def test_malformed_values_never_reach_the_log(node_logging: Path, tmp_path: Path,
                                              capfd: pytest.CaptureFixture) -> None:
    path = tmp_path / "hostile.dcm"
    _hostile().save_as(path, enforce_file_format=True)
    ds = dcmread(path, defer_size="256 KB")
    for elem in ds:  # pydicom validates on access and warns, quoting the value
        _ = elem.value
    Pseudonymizer(DeidSettings(), SECRET).pseudonymize(ds)
    try:
        float(BAD_SIZE)
    except ValueError:
        logging.getLogger("dicom_node.scp").exception("could not store an instance from PACS")
    for handler in logging.getLogger().handlers:
        handler.flush()
    log = node_logging.read_text(encoding="utf-8")
    captured = capfd.readouterr()
    assert "Invalid value for VR DA" in log  # pydicom did warn, redacted
    assert "could not store an instance" in log and "ValueError" in log
    for text in (log, captured.err, captured.out):
        for secret in SECRETS:
            assert secret not in text, secret


def test_third_party_debug_records_dropped() -> None:
    record = logging.LogRecord("pynetdicom.dsutils", logging.DEBUG, __file__, 1,
                               "(0010,0010) PN [%s]", ("Doe^John",), None)
    assert ValueRedaction().filter(record) is False
    ours = logging.LogRecord("dicom_node.scp", logging.INFO, __file__, 1, "stored %d", (3,),
                             None)
    assert ValueRedaction().filter(ours) is True and ours.getMessage() == "stored 3"


@pytest.mark.slow
def test_real_receive_path_logs_no_values(tmp_path: Path) -> None:
    with NodeProcess(tmp_path / "node", quiet_seconds=30) as node:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established
        for sop_uid in (BAD_UID, "1.2.826.0.1.3680043.10.999.10.2"):
            assoc.send_c_store(_hostile(sop_uid))
        assoc.release()
        time.sleep(1.0)
    logs = [node.log_path.read_text(encoding="utf-8", errors="replace")]
    logs += [p.read_text(encoding="utf-8", errors="replace")
             for p in (node.data_dir / "logs").glob("*.log")]
    joined = "\n".join(logs)
    assert joined.strip()
    for secret in SECRETS:
        assert secret not in joined, secret
