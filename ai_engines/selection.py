"""Header-first input selection: which series of a study may fill an engine's roles.

The node reads each series' header (no pixel data) into a :class:`SeriesHeader`;
:func:`rank_candidates` matches them to the roles of an engine's
:class:`~ai_engines.acceptance.Acceptance` on modality, SOP class, description pattern and the
geometry a header shows (slice count, orientation), and sets aside what is not an image series
for any engine (localizers, secondary captures such as dose reports, structured reports,
presentation states, RT objects, segmentations) with a note.  Only the ranked candidates are
decoded, best first; :meth:`ai_engines.engine.Engine.select_inputs` then runs the full quality
checks on the decoded volumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ai_engines.acceptance import Acceptance, SeriesRequirement

# SOP class UID prefixes that never hold an engine's input images (PS3.4 Annex B).
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC and multi-frame SC (dose reports)
NON_IMAGE_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.481.": "RT object",
    "1.2.840.10008.5.1.4.1.1.66": "segmentation or raw data",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.30": "parametric map",
}
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
REGION_SOP_CLASSES = (RTSTRUCT_STORAGE, SEG_STORAGE)

_AXIAL_NORMAL = np.array([0.0, 0.0, 1.0])
# Image Type values of pages that are not images of the patient (vendor dose pages, screen
# captures stored under an image SOP class).
NON_PATIENT_IMAGE_TYPES = frozenset({"DOSE_INFO", "SCREEN SAVE", "SCREENSHOT", "CT_SOM5 PROT"})
# Modalities whose images always carry patient geometry (a planar NM image need not).
TOMOGRAPHIC_MODALITIES = frozenset({"CT", "MR", "PT"})


@dataclass(frozen=True)
class SeriesHeader:
    """What the header of a series (its first instance, and the instance count) shows."""

    series_uid: str
    modality: str
    sop_class_uid: str
    instances: int
    frames: int  # slices or frames in all: instances x NumberOfFrames
    description: str | None = None
    image_type: tuple[str, ...] = ()
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient, six values
    frame_of_reference_uid: str | None = None
    number: int | None = None  # Series Number

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in {v.upper() for v in self.image_type}

    def obliquity_deg(self) -> float | None:
        """Angle between the slice normal and the axial normal, or None without orientation."""
        if not self.orientation or len(self.orientation) != 6:
            return None
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        normal = np.cross(row, col)
        size = np.linalg.norm(normal)
        if size == 0:
            return None
        return float(np.degrees(np.arccos(min(1.0, float(abs(float(normal @ _AXIAL_NORMAL)) / size)))))

    def label(self) -> str:
        """How notes name the series: number and modality.  Notes reach the report, which is
        re-identified on the way out: they carry neither UIDs nor descriptions."""
        number = f" {self.number}" if self.number is not None else ""
        return f"{self.modality or 'unknown'} series{number}"


def not_an_input(header: SeriesHeader) -> str | None:
    """Why a series is never an engine input, or None when it may be one."""
    if header.is_localizer:
        return "localizer (ImageType LOCALIZER)"
    if header.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture (e.g. a dose report or screenshot)"
    for prefix, what in NON_IMAGE_PREFIXES.items():
        if header.sop_class_uid.startswith(prefix):
            return what
    kinds = {v.upper() for v in header.image_type} & NON_PATIENT_IMAGE_TYPES
    if kinds:
        return f"not an image of the patient (ImageType {', '.join(sorted(kinds))})"
    if header.modality in TOMOGRAPHIC_MODALITIES and header.orientation is None:
        return "no patient geometry (a dose page or screen capture)"
    return None


def _mismatch(req: SeriesRequirement, header: SeriesHeader) -> str | None:
    """Why ``header`` cannot fill ``req``, or None."""
    if header.modality not in req.modalities:
        return f"modality {header.modality or 'none'}, not {'/'.join(req.modalities)}"
    if req.sop_classes and header.sop_class_uid not in req.sop_classes:
        return f"SOP class {header.sop_class_uid} not accepted"
    if req.description_pattern is not None and not re.search(
            req.description_pattern, header.description or "", re.IGNORECASE):
        return "series description does not match"
    return None


def _header_geometry_fits(req: SeriesRequirement, header: SeriesHeader) -> bool:
    """The geometry facts a header shows: enough slices, axial when asked for."""
    needs = req.geometry
    if header.frames < needs.min_slices:
        return False
    if needs.axial_only and not needs.planar:
        angle = header.obliquity_deg()
        if angle is not None and angle > needs.max_obliquity_deg:
            return False
    return True


@dataclass(frozen=True)
class Candidates:
    """Series per role, best first, and the notes on the series set aside."""

    by_role: dict[str, list[SeriesHeader]]
    region_series: list[SeriesHeader] = field(default_factory=list)  # RTSTRUCT / SEG
    notes: list[str] = field(default_factory=list)

    @property
    def series_uids(self) -> set[str]:
        return {h.series_uid for headers in self.by_role.values() for h in headers}


def rank_candidates(acceptance: Acceptance, headers: list[SeriesHeader]) -> Candidates:
    """Match series headers to the roles of ``acceptance``.

    Within a role, series whose header geometry fits come first, then more slices first;
    a series that fits no role is listed in the notes with the reason.

    Returns
    -------
    Candidates
        ``region_series`` holds the RTSTRUCT and SEG series when the engine asks for regions.
    """
    by_role: dict[str, list[SeriesHeader]] = {req.role: [] for req in acceptance.series}
    regions: list[SeriesHeader] = []
    notes: list[str] = []
    for header in headers:
        if header.sop_class_uid in REGION_SOP_CLASSES:
            if acceptance.regions is not None:
                regions.append(header)
            else:
                notes.append(f"{header.label()} ignored: regions are not used by this engine")
            continue
        reason = not_an_input(header)
        if reason is not None:
            notes.append(f"{header.label()} ignored: {reason}")
            continue
        reasons = []
        for req in acceptance.series:
            mismatch = _mismatch(req, header)
            if mismatch is None:
                by_role[req.role].append(header)
            else:
                reasons.append(f"{req.role}: {mismatch}")
        if not any(header in listed for listed in by_role.values()):
            notes.append(f"{header.label()} ignored: fits no role ({'; '.join(reasons)})")
    for req in acceptance.series:
        by_role[req.role].sort(key=lambda h: (_header_geometry_fits(req, h), h.frames),
                               reverse=True)
    return Candidates(by_role, regions, notes)
