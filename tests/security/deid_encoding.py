"""Byte-level builders for the de-identification security tests: UN encodings as a gateway
or a sender with an older dictionary would produce them, and Part 10 files around them."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.deid import Pseudonymizer


def implicit_value(ds: Dataset, charset: str = "iso8859") -> bytes:
    """The elements of ``ds`` encoded as Implicit VR Little Endian (a UN value's encoding),
    text in ``charset`` (the Specific Character Set of the data set it will sit in)."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds, charset)
    return buf.getvalue()


def explicit_elements(ds: Dataset, charset: str = "iso8859") -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds, charset)
    return buf.getvalue()


def un_element(tag: int, value: bytes, *, undefined_length: bool = False) -> bytes:
    """One Explicit VR Little Endian element with VR UN."""
    length = 0xFFFFFFFF if undefined_length else len(value)
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"UN", 0, length) + value


def un_of(ds_holding_one: Dataset, charset: str = "iso8859") -> tuple[int, bytes]:
    """(tag, UN element bytes) for the single element of ``ds_holding_one``."""
    (elem,) = list(ds_holding_one)
    encoded = implicit_value(ds_holding_one, charset)
    return int(elem.tag), un_element(int(elem.tag), encoded[8:])


def part10(elements: list[tuple[int, bytes]], sop_class: str, sop_instance: str) -> bytes:
    """A Part 10 file (Explicit VR Little Endian) from encoded elements, sorted by tag."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.999.1"
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    for _, encoded in sorted(elements, key=lambda e: e[0]):
        buf.write(encoded)
    return buf.getvalue()


def elements_of(ds: Dataset, charset: str = "iso8859") -> list[tuple[int, bytes]]:
    """Each element of ``ds`` explicitly encoded, ready for :func:`part10`."""
    out = []
    for elem in ds:
        one = Dataset()
        one.add(elem)
        out.append((int(elem.tag), explicit_elements(one, charset)))
    return out


def read(data: bytes, folder: Path) -> Dataset:
    """Read as the receiver does: from a file, large values deferred."""
    path = folder / "received.dcm"
    path.write_bytes(data)
    return dcmread(path, defer_size="256 KB")


def deidentified_bytes(pseudonymizer: Pseudonymizer, ds: Dataset) -> bytes:
    """De-identify ``ds`` and return the file the node would write."""
    clean = pseudonymizer.pseudonymize(ds).dataset
    out = io.BytesIO()
    dcmwrite(out, clean, enforce_file_format=True)
    return out.getvalue()
