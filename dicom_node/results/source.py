"""What every result object takes from the source series, and the checks made first.

Identity is never put into exception messages: the datasets arriving here are pseudonymized,
but messages name only counts, shapes and attribute keywords anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ai_engines.findings import Findings
from dicom_node.elements import elements_with_vr

# PyPI-free implementation identification of the node's result writers.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"
IMPLEMENTATION_VERSION_NAME = "DICOMAINODE01"

# Patient, General Study and Patient Study attributes copied verbatim into every result,
# so dcentvfy finds the result objects consistent with the source entity.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)

# Type 1 attributes the writers need on every source slice.
_REQUIRED_SLICE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
)

# Pydicom and highdicom generate UIDs under their own roots; results use 2.25 only.
_FOREIGN_UID_ROOTS = ("1.2.826.0.1.3680043.10.511.", "1.2.826.0.1.3680043.8.498.")


def new_uid() -> str:
    """A new UID of the form ``2.25.<uuid4 as integer>`` (never derived from source UIDs)."""
    return str(generate_uid(prefix=None))


def check_source_series(findings: Findings, source_datasets: Sequence[Dataset]) -> None:
    """Check that ``source_datasets`` is the series the findings were computed on.

    Parameters
    ----------
    findings
        Engine output; every segment mask must be ``[slice, row, col]`` on the source grid.
    source_datasets
        Source slices in the engine's volume order (slice ``k`` = ``source_datasets[k]``).

    Raises
    ------
    ValueError
        If the series is empty, mixes series, studies or frames of reference, lacks a
        required attribute, or a mask shape does not match the grid.
    """
    if not isinstance(findings, Findings):
        raise ValueError("findings must be an ai_engines.findings.Findings")
    if not source_datasets:
        raise ValueError("source_datasets is empty: results need the source series")
    for index, ds in enumerate(source_datasets):
        missing = [kw for kw in _REQUIRED_SLICE_KEYWORDS if kw not in ds]
        if missing:
            raise ValueError(f"source slice {index} lacks {', '.join(missing)}")
    first = source_datasets[0]
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
                    "Rows", "Columns"):
        if len({ds[keyword].value for ds in source_datasets}) != 1:
            raise ValueError(f"source slices differ in {keyword}: one series is expected")
    if first.SeriesInstanceUID != findings.source_series_uid:
        raise ValueError("source_datasets are not the series named by findings.source_series_uid")
    if len({ds.SOPInstanceUID for ds in source_datasets}) != len(source_datasets):
        raise ValueError("source_datasets contains the same SOP instance twice")
    for ds in source_datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise ValueError("multi-frame source images are not supported by the result writers")
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    for ds in source_datasets[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), orientation,
                           atol=1e-4):
            raise ValueError("source slices differ in ImageOrientationPatient")
    grid = (len(source_datasets), int(first.Rows), int(first.Columns))
    for number, segment in enumerate(findings.segments, start=1):
        if segment.mask.shape != grid:
            raise ValueError(
                f"segment {number} ({segment.label!r}): mask shape {segment.mask.shape} "
                f"is not the source grid {grid}"
            )
    labels = [segment.label for segment in findings.segments]
    if len(set(labels)) != len(labels):
        raise ValueError("segment labels must be unique (they become ROI names)")


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy Specific Character Set, Patient and Study attributes from ``source`` verbatim.

    Type 2 attributes absent in the source are written empty so they are always present.
    """
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = source[keyword]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName"):
        if keyword not in target:
            setattr(target, keyword, "")


def ascii_text(text: str, limit: int) -> str:
    """``text`` reduced to printable ASCII without backslashes, at most ``limit`` chars."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text)
    return cleaned[:limit].strip()


def series_description(kind: str, findings: Findings) -> str:
    """SeriesDescription (LO, ASCII) saying that this is an AI result and how it may be used."""
    use = "RESEARCH USE ONLY" if findings.engine.research_use_only else "NOT VERIFIED"
    engine = ascii_text(findings.engine.name, 64)
    text = f"AI {kind} {engine} - {use}"
    if len(text) > 64:
        text = f"AI {kind} {engine[: 64 - len(kind) - len(use) - 6]} - {use}"
    return text


def content_label(findings: Findings, suffix: str = "") -> str:
    """An uppercase CS value (<= 16 chars, ``A-Z 0-9 _``) naming the engine."""
    label = re.sub(r"[^A-Z0-9_]", "_", findings.engine.name.upper())
    label = re.sub(r"_+", "_", label).strip("_") or "AI_RESULT"
    room = 16 - len(suffix)
    return (label[:room].rstrip("_") + suffix)[:16]


def set_file_meta(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> None:
    """Part 10 meta information, Explicit VR Little Endian unless told otherwise."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def _uid_elements(ds: Dataset) -> Iterator[DataElement]:
    """Every non-empty UI element of ``ds``, at any sequence depth."""
    for element in elements_with_vr(ds, _UI_OR_SQ):
        if element.VR == "SQ":
            for child in element.value:
                yield from _uid_elements(child)
        elif element.VR == "UI" and element.value:
            yield element


_UI_OR_SQ = frozenset({"UI", "SQ"})


def replace_generated_uids(ds: Dataset, keep: set[str]) -> None:
    """Replace UIDs a library generated under its own root by fresh ``2.25.`` UIDs.

    The same foreign UID gets the same replacement everywhere in ``ds``.  UIDs in ``keep``
    (source and referenced instances) are never touched.
    """
    replacements: dict[str, str] = {}
    for element in _uid_elements(ds):
        values = element.value if element.VM > 1 else [element.value]
        changed = []
        for value in values:
            value = str(value)
            if value not in keep and value.startswith(_FOREIGN_UID_ROOTS):
                value = replacements.setdefault(value, new_uid())
            changed.append(value)
        element.value = changed if element.VM > 1 else changed[0]


def uids_in(datasets: Sequence[Dataset]) -> set[str]:
    """Every UID value found at any depth of ``datasets`` (to keep them untouched)."""
    found: set[str] = set()
    for ds in datasets:
        for element in _uid_elements(ds):
            values = element.value if element.VM > 1 else [element.value]
            found.update(str(value) for value in values)
    return found
