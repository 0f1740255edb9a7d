"""What an engine declares it can read: series roles, geometry needs, regions.

Torch-free and import-light, so an :class:`~ai_engines.spec.EngineSpec` (and with it routing
and header-first selection in the node) never loads an engine's runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# SOP classes engines commonly accept (PS3.4 Annex B).
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"

# Decline codes of input selection (the quality-check codes live in ai_engines.quality).
INPUT_MISSING_SERIES = "INPUT_MISSING_SERIES"
INPUT_MISSING_REGION = "INPUT_MISSING_REGION"
INPUT_NOT_CO_REGISTERED = "INPUT_NOT_CO_REGISTERED"


@dataclass(frozen=True)
class GeometryNeeds:
    """What an engine's model was validated on, checked before inference.

    Ranges are inclusive ``(low, high)`` in millimetres; ``None`` means "not checked".
    """

    min_slices: int = 1
    slice_thickness_mm: tuple[float, float] | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    axial_only: bool = False
    max_obliquity_deg: float = 1.0  # orientation vs axial, and gantry tilt
    uniform_spacing: bool = True  # no gaps, no duplicates, equal steps
    spacing_tolerance: float = 0.05  # relative, of the median step (never under 0.1 mm)
    lossless_only: bool = True
    planar: bool = False  # frames are views (anterior/posterior), not a stack in space


@dataclass(frozen=True)
class SeriesRequirement:
    """One series role an engine needs, e.g. ``"CT"`` or ``"T1c"``.

    ``description_pattern`` (a case-insensitive regular expression on the series
    description) tells MR sequences apart; ``None`` accepts any description.
    """

    role: str
    modalities: tuple[str, ...]
    sop_classes: tuple[str, ...] = ()  # empty: any SOP class of those modalities
    geometry: GeometryNeeds = field(default_factory=GeometryNeeds)
    description_pattern: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class RegionRequirement:
    """Regions that must have arrived with the study (RTSTRUCT ROIs or SEG segments)."""

    name_pattern: str = ".*"  # case-insensitive regular expression on the ROI name
    min_count: int = 1


@dataclass(frozen=True)
class Acceptance:
    """Everything an engine declares it can read.

    ``co_registered`` asks that all selected series share one frame of reference and overlap
    in space (an MR glioma engine reading T1, T1c, T2 and FLAIR voxel by voxel after
    resampling them with :mod:`ai_engines.resample`); ``same_grid`` asks, besides, that they
    lie on one voxel grid already (same shape, origins, directions and spacing).
    """

    series: tuple[SeriesRequirement, ...]
    regions: RegionRequirement | None = None
    co_registered: bool = False
    same_grid: bool = False

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for req in self.series for m in req.modalities))
