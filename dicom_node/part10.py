"""Writing a received, de-identified instance as a DICOM Part 10 file, fast.

``pydicom.filewriter.dcmwrite(fp, ds, enforce_file_format=True)`` spends about 30 µs of
Python per data element (a buffer object, encoding look-ups and checks for each); a CT slice
has some 60, so encoding cost more than its disk write.  :func:`write_instance` writes the same
bytes: preamble and File Meta Information through pydicom's own functions, then each top-level
element of the data set either straight through (an element still as read, whose bytes pydicom
copies unchanged too) or encoded here for the plain cases (string values in a single-byte or
UTF-8 character set, numbers kept as their original strings, OB/OW bytes), and everything else
(sequences, person names, binary numbers, multi-byte character sets, anything odd) by
pydicom's ``write_data_element``.  A data set pydicom would re-encode as a whole (a different
transfer syntax or character set than read, big endian, deflate, encapsulated pixel data) is
written by ``dcmwrite`` itself.  ``tests/dicom_node/test_part10.py`` checks the bytes against
``dcmwrite`` for de-identified instances of every kind the de-identification tests use.
"""

from __future__ import annotations

import copy
import struct
from typing import BinaryIO

from pydicom.charset import (
    convert_encodings,
    custom_encoders,
    default_encoding,
    need_tail_escape_sequence_encodings,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO, DicomIO
from pydicom.filewriter import dcmwrite, write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

__all__ = ["write_data_set", "write_instance"]

# Transfer syntaxes written here: (implicit VR, little endian).  Others go to dcmwrite.
_PLAIN = {ExplicitVRLittleEndian: (False, True), ImplicitVRLittleEndian: (True, True)}
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# VRs whose values pydicom writes with write_string (padding " ", "\0" for UI) when str.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
# VRs written with write_text: encoded in the data set's (first) character set.
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT"})
_NUMBER_STRING_VRS = frozenset({"DS", "IS"})
_BYTES_VRS = frozenset({"OB", "OW"})
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_MULTI = (MultiValue, list, tuple)
# Unambiguous VRs of elements that are not sequences.
_FLAT_VRS = frozenset(str(vr) for vr in VR if len(str(vr)) == 2) - {"SQ"}
_IMPLICIT_HEADER = struct.Struct("<HHL")
_SHORT_HEADER = struct.Struct("<HH2sH")
_LONG_HEADER = struct.Struct("<HH2s2xL")
# Item, Item Delimitation and Sequence Delimitation (PS3.5 7.5), little endian.
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_ITEM_UNDEFINED = _ITEM_TAG + b"\xff\xff\xff\xff"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def write_instance(sink: BinaryIO, ds: Dataset) -> None:
    """Write ``ds`` to ``sink`` as ``dcmwrite(sink, ds, enforce_file_format=True)`` would.

    Like ``dcmwrite``, it reads deferred values and leaves Pixel Data loaded in ``ds``.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    encoding = _PLAIN.get(syntax) if syntax is not None else None
    preamble = getattr(ds, "preamble", None)
    tags = sorted(ds.keys())  # noqa: SIM118 - iterating a Dataset yields elements
    if (encoding is None or encoding != ds.original_encoding
            or ds.original_character_set != ds._character_set
            or (preamble is not None and len(preamble) != 128)
            or (tags and tags[0] < 0x00030000)):  # dcmwrite refuses command/meta elements
        dcmwrite(sink, ds, enforce_file_format=True)
        return
    charset = ds.get("SpecificCharacterSet", default_encoding)
    try:
        convert_encodings(charset or [default_encoding])
    except (LookupError, ValueError):
        dcmwrite(sink, ds, enforce_file_format=True)  # pydicom says what is wrong
        return

    assert meta is not None  # a transfer syntax was found in it
    # The file meta as dcmwrite makes it: a copy (of each element: its values are strings and
    # bytes, never changed in place), Media Storage UIDs from the data set.
    file_meta = FileMetaDataset({tag: copy.copy(meta.get_item(tag, keep_deferred=True))
                                 for tag in meta.keys()})  # noqa: SIM118
    # As read: pydicom then writes its unchanged elements as read, as it does for a deep copy.
    implicit_vr, little_endian = meta.original_encoding
    file_meta.set_original_encoding(implicit_vr, little_endian, meta.original_character_set)
    ds_class, ds_instance = ds.get("SOPClassUID", None), ds.get("SOPInstanceUID", None)
    meta_class = file_meta.get("MediaStorageSOPClassUID", None)
    if meta_class is None or (ds_class and ds_class != meta_class):
        file_meta.MediaStorageSOPClassUID = ds_class
    meta_instance = file_meta.get("MediaStorageSOPInstanceUID", None)
    if meta_instance is None or (ds_instance and ds_instance != meta_instance):
        file_meta.MediaStorageSOPInstanceUID = ds_instance
    validate_file_meta(file_meta, enforce_standard=True)
    if PIXEL_DATA in ds:  # uncompressed: Pixel Data has a defined length (PS3.5 A.4)
        ds[PIXEL_DATA].is_undefined_length = False

    fp = DicomIO(sink)
    fp.is_implicit_VR, fp.is_little_endian = encoding
    fp.write((preamble or b"\x00" * 128) + b"DICM")
    fp.write(_file_meta_bytes(file_meta))
    _write_data_set(fp, ds, tags, charset)


def _file_meta_bytes(file_meta: FileMetaDataset) -> bytes:
    """What ``write_file_meta_info(fp, file_meta, enforce_standard=True)`` writes, for a
    ``file_meta`` that ``validate_file_meta`` has completed."""
    if "FileMetaInformationGroupLength" not in file_meta:
        file_meta.FileMetaInformationGroupLength = 0  # the length is set below
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_set(buffer, file_meta, default_encoding)
    file_meta.FileMetaInformationGroupLength = buffer.tell() - 12
    buffer.seek(0)
    write_data_element(buffer, file_meta[0x00020000])
    return buffer.getvalue()


def write_data_set(fp: DicomIO, ds: Dataset,
                   parent_encoding: str | list[str] = default_encoding) -> None:
    """What ``pydicom.filewriter.write_dataset(fp, ds, parent_encoding)`` writes: here when
    ``ds`` keeps the encoding and character set it was read with (or is a flat item made in
    memory), else by pydicom (which then decodes every element)."""
    tags = sorted(ds.keys())  # noqa: SIM118 - iterating a Dataset yields elements
    if (ds.original_encoding != (fp.is_implicit_VR, fp.is_little_endian)
            or ds.original_character_set != ds._character_set):
        # pydicom first resolves ambiguous VRs and decodes raw elements; neither changes an
        # item made here of decoded, unambiguous, non-sequence elements (a code item).
        items = ds._dict
        if not all(type(items[tag]) is DataElement and items[tag].VR in _FLAT_VRS
                   for tag in tags):
            write_dataset(fp, ds, parent_encoding)
            return
    _write_data_set(fp, ds, tags, ds.get("SpecificCharacterSet", parent_encoding))


def _write_data_set(fp: DicomIO, ds: Dataset, tags: list, charset: str | list[str]) -> None:
    """The elements ``tags`` of ``ds`` as ``write_dataset`` writes them when the encoding is
    the one read; ``charset`` is what it passes to ``write_data_element``."""
    codecs = convert_encodings(charset or [default_encoding])
    codec: str | None = codecs[0]
    if codec in custom_encoders or codec in need_tail_escape_sequence_encodings:
        codec = None  # text values go to pydicom (escape sequences, JIS X 0201)
    implicit = fp.is_implicit_VR
    write = fp.write
    elements = ds._dict  # what get_item reads, without its key conversion per element
    for tag in tags:
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group length: dcmwrite leaves it out
        elem = elements[tag]
        if type(elem) is RawDataElement and elem.value is None:
            elem = ds.get_item(tag)  # deferred: read (and converted) as dcmwrite does
        undefined = False
        if isinstance(elem, RawDataElement):
            body = elem.value if elem.length != UNDEFINED_LENGTH else None
            if not isinstance(body, bytes):
                body = None
        elif elem.VR == "SQ" and isinstance(elem.value, Sequence):
            body, undefined = _sequence(elem, codecs, implicit), elem.is_undefined_length
        else:
            body = _encoded(elem, codec)
        vr = elem.VR
        if body is not None:
            size = UNDEFINED_LENGTH if undefined else len(body)
            if implicit:
                header = _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, size)
            elif vr in _LONG_VRS:
                header = _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), size)
            elif vr is not None and len(vr) == 2 and size <= 0xFFFF:
                header = _SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), size)
            else:
                write_data_element(fp, elem, charset)  # pydicom's VR/length handling
                continue
            if len(body) < 4096:
                write(header + body)  # one write; large values are not copied to join them
            else:
                write(header)
                write(body)
            if undefined:
                write(_SEQUENCE_DELIMITER)
            continue
        write_data_element(fp, elem, charset)  # everything not plain, as dcmwrite does


def _sequence(elem: DataElement, codecs: list[str], implicit: bool) -> bytes:
    """The items of a sequence as ``write_sequence`` writes them (without the element's own
    header and delimiter)."""
    out = []
    for item in elem.value:
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
        write_data_set(buffer, item, codecs)
        data = buffer.getvalue()
        if getattr(item, "is_undefined_length_sequence_item", False):
            out += [_ITEM_UNDEFINED, data, _ITEM_DELIMITER]
        else:
            out += [_ITEM_TAG, struct.pack("<L", len(data)), data]
    return b"".join(out)


def _encoded(elem: DataElement, codec: str | None) -> bytes | None:
    """The value bytes pydicom would write for ``elem``; ``None`` where pydicom must."""
    if elem.is_undefined_length:
        return None
    vr = elem.VR
    value = elem.value
    if value is None:
        return b"" if vr != "SQ" else None
    if vr in _ASCII_VRS:
        if isinstance(value, str):
            text = value
        elif isinstance(value, _MULTI) and all(isinstance(v, str) for v in value):
            text = "\\".join(value)
        else:
            return None
        if len(text) % 2:
            text += "\0" if vr == "UI" else " "
        try:
            return text.encode(default_encoding)
        except UnicodeError:
            return None
    if vr in _TEXT_VRS:
        if codec is None:
            return None
        try:
            if isinstance(value, str):
                data = value.encode(codec)
            elif isinstance(value, _MULTI) and all(isinstance(v, str) for v in value):
                data = b"\\".join(v.encode(codec) for v in value)
            else:
                return None
        except UnicodeError:
            return None  # pydicom tries the other character sets, or replaces
        return data + b" " if len(data) % 2 else data
    if vr in _NUMBER_STRING_VRS:
        values = value if isinstance(value, _MULTI) else None
        if values is None and not isinstance(value, str | int | float):
            return None  # e.g. a numpy array
        # As pydicom: a number read from the file keeps the string it was read from.
        parts = [v.original_string if hasattr(v, "original_string") else str(v)
                 for v in (values if values is not None else (value,))]
        text = "\\".join(parts)
        if len(text) % 2:
            text += " "
        try:
            return text.encode(default_encoding)
        except UnicodeError:
            return None
    if vr in _BYTES_VRS and isinstance(value, bytes):
        return value + b"\x00" if len(value) % 2 else value
    return None
