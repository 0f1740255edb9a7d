"""``write_instance`` writes the bytes ``dcmwrite(..., enforce_file_format=True)`` writes.

Each case is read from a file twice as the receiver reads it (large values deferred), one copy
written by pydicom's ``dcmwrite`` and the other by ``write_instance``; the bytes must be equal,
for instances as received and as de-identified (the elements then are a mix of untouched ones,
decoded and changed ones, and new ones).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from dicom_node.config import DeidSettings
from dicom_node.deid import Pseudonymizer
from dicom_node.deid.pseudonymize import identity_payload
from dicom_node.part10 import write_instance
from dicom_node.sample_data import ct_series_datasets, phantom_chest_hu, write_series
from tests.security.test_deid_fuzz import cases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
PSEUDONYMIZER = Pseudonymizer(DeidSettings(), b"part10-test-site-secret-01234567")


def both(path: Path, *, deidentify: bool, decode: bool = False) -> tuple[bytes, bytes]:
    """(dcmwrite's bytes, write_instance's bytes) for the file at ``path``, de-identified or
    not, with every element decoded (sequences parsed) or as read."""
    out = []
    for writer in (lambda sink, ds: dcmwrite(sink, ds, enforce_file_format=True),
                   write_instance):
        ds = dcmread(path, defer_size="256 KB")
        if deidentify:
            ds = PSEUDONYMIZER.pseudonymize(ds).dataset
        if decode:
            ds.walk(lambda _ds, _elem: None)
        sink = io.BytesIO()
        writer(sink, ds)
        out.append(sink.getvalue())
    return out[0], out[1]


def assert_same(path: Path) -> None:
    for deidentify, decode in ((False, False), (False, True), (True, False)):
        expected, written = both(path, deidentify=deidentify, decode=decode)
        assert written == expected, f"differs (de-identified: {deidentify}, decoded: {decode})"
    # The vault's identity payload is written with write_data_set: as write_dataset would.
    with mock.patch("dicom_node.deid.pseudonymize.write_data_set", write_dataset):
        expected = identity_payload(dcmread(path, defer_size="256 KB"))
    assert identity_payload(dcmread(path, defer_size="256 KB")) == expected


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_ct_slices(tmp_path: Path, syntax: str) -> None:
    hu = phantom_chest_hu((3, 32, 32))
    files = write_series(ct_series_datasets(hu, pixel_spacing=(0.7, 0.7)), tmp_path / "ct")
    for path in files:
        ds = dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        dcmwrite(path, ds, enforce_file_format=True)
        expected, written = both(path, deidentify=True)
        assert written == expected
        assert len(written) > 32 * 32 * 2  # the pixel data is in it
        assert_same(path)


def _edge_case(charset: str | None, syntax: str) -> Dataset:
    """A data set with the values the fast path must get right or leave to pydicom."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.21.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.21.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.21.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.999.21"  # odd length: padded with NUL
    ds.PatientName = "Müller^Hans" if charset else "Muller^Hans"
    ds.PatientID = "PID12345"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = "20240105"
    ds.StudyTime = "101010.5"
    ds.SeriesDescription = "Thorax Kontrast ä" if charset else "Thorax odd"
    ds.ProtocolName = ""
    ds.ImageComments = "a comment of odd length"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.50"
    ds.PixelSpacing = ["0.7", "0.70"]
    ds.ImagePositionPatient = [" -12.5", "3", "1e2"]
    ds.WindowCenter = None
    ds.InstanceNumber = "7"
    ds.AcquisitionNumber = None
    ds.Rows, ds.Columns = 4, 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.add_new(0x00181000, "LO", "SN 123")  # Device Serial Number
    ds.add_new(0x00091010, "LO", "QZ VENDOR")  # private creator
    ds.add_new(0x00091011, "LO", None)  # a lone private element
    ds.add_new(0x00091012, "OB", b"\x01\x02\x03")  # odd length OB
    ds.add_new(0x00091013, "UN", b"\x01\x02")
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D3000", "SRT", "Chest"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.ReferencedImageSequence = Sequence([])
    inner, outer = Dataset(), Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.21.9"
    inner.ReferencedSOPClassUID = CTImageStorage
    inner.is_undefined_length_sequence_item = True
    outer.ReferencedSeriesSequence = Sequence([inner])
    outer.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.21.2"
    ds.ReferencedStudySequence = Sequence([outer, Dataset()])
    ds["ReferencedStudySequence"].is_undefined_length = True
    ds.PixelData = np.arange(12, dtype=np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.ImplementationVersionName = "ODD"
    return ds


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "GB18030",
                                     ["", "ISO 2022 IR 87"], "ISO 2022 IR 13"])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_edge_values(tmp_path: Path, charset: str | list[str] | None, syntax: str) -> None:
    path = tmp_path / "edge.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmwrite(path, _edge_case(charset, syntax), enforce_file_format=True)
    assert_same(path)


def test_raw_values_stay_as_received(tmp_path: Path) -> None:
    """Padding a decoder would drop (a UID padded with a space, a string with two trailing
    spaces) is written back as received, as pydicom writes an element it never decoded."""
    path = tmp_path / "raw.dcm"
    dcmwrite(path, _edge_case(None, ExplicitVRLittleEndian), enforce_file_format=True)
    data = path.read_bytes()
    data = data.replace(b"1.2.826.0.1.3680043.10.999.21\x00", b"1.2.826.0.1.3680043.10.999.21 ")
    data = data.replace(b"CHEST", b"CHE  ")
    path.write_bytes(data)
    assert_same(path)
    written = both(path, deidentify=False)[1]
    assert b"CHE  " in written


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_syntaxes_written_by_pydicom(tmp_path: Path, syntax: str) -> None:
    path = tmp_path / "other.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmwrite(path, _edge_case(None, syntax), enforce_file_format=True)
    assert_same(path)


def test_encapsulated_pixel_data(tmp_path: Path) -> None:
    ds = _edge_case(None, ExplicitVRLittleEndian)
    ds.compress(RLELossless, np.arange(12, dtype=np.int16).reshape(4, 3), encoding_plugin="pydicom")
    path = tmp_path / "rle.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    assert_same(path)


def test_data_set_made_in_memory() -> None:
    """Not read from a file: no original encoding, so pydicom writes it."""
    expected, written = io.BytesIO(), io.BytesIO()
    dcmwrite(expected, _edge_case(None, ExplicitVRLittleEndian), enforce_file_format=True)
    write_instance(written, _edge_case(None, ExplicitVRLittleEndian))
    assert written.getvalue() == expected.getvalue()


@settings(max_examples=int(os.environ.get("PART10_EXAMPLES", "300")), deadline=None,
          suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(cases())
def test_deid_fuzz_cases(tmp_path_factory, case) -> None:  # noqa: ANN001
    """The de-identification fuzz test's data sets (UN encodings, nested sequences, private
    blocks, four scripts), as received and de-identified."""
    data, _ = case
    path = tmp_path_factory.getbasetemp() / "case.dcm"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same(path)
