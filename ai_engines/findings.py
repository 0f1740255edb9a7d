"""What an engine returns: masks on the source grid, measurements, classifications, or a
coded decline.  The result-object writers (:mod:`dicom_node.results`) turn these into
DICOM-SEG, RTSTRUCT, TID 1500 SR and a secondary-capture picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ai_engines.codes import Code
from ai_engines.volume import RoiContours, SliceReference


@dataclass(frozen=True)
class EngineIdentity:
    """Who produced the findings: goes into algorithm identification and device observer."""

    name: str  # the engine's spec name, e.g. "ct_lung" (the worker enforces it)
    version: str  # engine + model version, e.g. "1.0.0+demo-weights-2026.11"
    model_name: str
    model_sha256: str
    research_use_only: bool = True
    intended_use: str = ""


@dataclass(frozen=True)
class Measurement:
    """One numeric measurement (TID 1419 row)."""

    name: Code
    value: float
    unit: Code
    # Optional modifier, e.g. Code for "Long Axis" under Diameter, or "Mean" for HU.
    modifier: Code | None = None
    description: str = ""


@dataclass(frozen=True)
class Segment:
    """A labelled region on the source grid.

    ``mask`` is boolean with the exact shape of the source series' voxels ``[slice, row, col]``.
    """

    label: str  # TG-263 style ROI name, <= 16 ASCII chars: "GTV", "Lung_L", "Lung_R"
    description: str  # human-readable segment label, e.g. "GTV primary lung tumour"
    category: Code
    property_type: Code
    rt_interpreted_type: str  # RTROIInterpretedType: GTV, ORGAN, ...
    color_rgb: tuple[int, int, int]
    mask: np.ndarray
    property_modifier: Code | None = None
    anatomic_region: Code | None = None
    tracking_id: str = ""
    measurements: tuple[Measurement, ...] = ()
    # Key slice for the picture: index of the slice with the longest axial diameter.
    key_slice: int | None = None
    # Endpoints (slice, row, col) of the longest axial diameter and its perpendicular.
    long_axis: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    short_axis: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    # The series whose grid ``mask`` lies on; None: ``Findings.source_series_uid``.
    source_series_uid: str | None = None
    # Per-lesion confidence in [0, 1] (calibrated; the model card says how), or None.
    probability: float | None = None

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_:
            raise ValueError(f"segment {self.label!r}: mask must be boolean")
        if not self.label or len(self.label) > 16 or not self.label.isascii():
            raise ValueError(f"segment label {self.label!r} must be 1-16 ASCII characters")


@dataclass(frozen=True)
class Classification:
    """A study- or image-level coded finding with a probability (TID 1501 group)."""

    finding: Code
    probability: float
    threshold: float
    positive: bool
    finding_site: Code | None = None
    tracking_id: str = ""
    # Image-level classifications name the image (and frame) they were made on; None: the
    # study as a whole.
    source: SliceReference | None = None
    source_series_uid: str | None = None


@dataclass(frozen=True)
class VoxelMap:
    """A float voxel map on a source series' grid (heat map, radiomic feature map).

    Written as a DICOM Parametric Map and drawn as a colour overlay in the picture.
    ``values`` has the exact shape of the source series' voxels ``[slice, row, col]``.
    """

    label: str  # short name, e.g. "GradCAM", "GLCM_Entropy"
    description: str
    quantity: Code  # what the values are (e.g. DCM 110807 "Field Map" or an IBSI code)
    unit: Code
    values: np.ndarray
    source_series_uid: str | None = None  # None: Findings.source_series_uid

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or not np.issubdtype(self.values.dtype, np.floating):
            raise ValueError(f"map {self.label!r}: values must be a 3-D float array")


@dataclass(frozen=True)
class RegionMeasurements:
    """Measurements of a region that arrived with the study (a received RTSTRUCT ROI or SEG
    segment): the SR references that object instead of a new copy."""

    region: RoiContours
    measurements: tuple[Measurement, ...]
    tracking_id: str = ""


@dataclass(frozen=True)
class Decline:
    """Why an engine did not produce findings: a stable code and a sentence for people."""

    code: str  # e.g. "QC_NON_UNIFORM_SPACING", "QC_TOO_FEW_SLICES", "QC_LOSSY"
    reason: str


@dataclass(frozen=True)
class Findings:
    """Everything one engine run produced for one source series."""

    engine: EngineIdentity
    source_series_uid: str  # the series the masks lie on (pseudonymous)
    segments: tuple[Segment, ...] = ()
    classifications: tuple[Classification, ...] = ()
    study_measurements: tuple[Measurement, ...] = ()
    maps: tuple[VoxelMap, ...] = ()
    region_measurements: tuple[RegionMeasurements, ...] = ()
    decline: Decline | None = None
    notes: tuple[str, ...] = ()
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def declined(self) -> bool:
        return self.decline is not None
