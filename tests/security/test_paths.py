"""Defect 2 of issue 10: a UID holding "/" and ".." (under the 1.2.840.10008 root, which the
de-identifier keeps) made the node write outside its data folder.  Now every UID of a request
is checked as a UI value (PS3.5 9.1) before anything else and answered 0xC000 with a reason,
and the data folder refuses any path that resolves outside it."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config

from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu
from storage.files import FileStore, UnsafePath, is_valid_uid
from tests.security.netnode import running_node

ESCAPE = "1.2.840.10008.5/../../../escape"


def send(node, ds) -> tuple[int, str]:  # noqa: ANN001
    ae = AE(ae_title="PACS")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        rsp = assoc.send_c_store(ds)
        return int(rsp.Status), str(rsp.get("ErrorComment", ""))
    finally:
        assoc.release()


@pytest.mark.slow
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID",
                                     "FrameOfReferenceUID", "SOPInstanceUID"])
def test_uid_with_slashes_gets_failure_and_no_file_outside(tmp_path, monkeypatch, keyword):
    # pynetdicom as a (hostile) SCU sends what it is given
    monkeypatch.setattr(_config, "ENFORCE_UID_CONFORMANCE", False)
    (ds,) = ct_series_datasets(phantom_chest_hu((1, 16, 16)))
    setattr(ds, keyword, ESCAPE)
    if keyword == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = ESCAPE
    with running_node(tmp_path) as node:
        status, comment = send(node, ds)
        assert node.stored() == 0
    assert status == 0xC000
    assert "not a valid UID" in comment
    outside = [p for p in tmp_path.rglob("*") if p.is_file()
               and not p.is_relative_to(tmp_path / "var") and p.name != "node.db"]
    assert not (tmp_path / "escape").exists() and outside == []


@pytest.mark.parametrize("value,valid", [
    ("1.2.840.10008.1.2.1", True), ("2.25.0", True), ("0", True),
    ("1.2.840.10008.5/../..", False), ("1..2", False), ("1.2.", False), (".1", False),
    ("1.02", False), ("1.2 ", False), ("", False), ("1." + "1" * 63, False),
    ("1." + "1" * 62, True), ("1.2\x00", False), ("1.2\n3", False)])
def test_ui_value_rules(value, valid):
    assert is_valid_uid(value) is valid


def test_data_folder_refuses_paths_that_leave_it(tmp_path):
    files = FileStore(tmp_path / "var")
    for relative in ("../x.dcm", "studies/../../x.dcm", "/etc/passwd", "studies/a/../../../x"):
        with pytest.raises(UnsafePath):
            files.write(relative, b"x")
        with pytest.raises(UnsafePath):
            files.write_stream(relative, lambda sink: sink.write(b"x"))
        with pytest.raises(UnsafePath):
            files.read(relative)
    with pytest.raises(UnsafePath):
        files.instance_path(ESCAPE, "1.2", "1.3")
    with pytest.raises(UnsafePath):
        files.result_path(1, "../1.2")
    assert files.instance_path("1.2", "1.3", "1.4") == "studies/1.2/1.3/1.4.dcm"
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
