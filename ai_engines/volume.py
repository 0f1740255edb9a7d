"""Domain objects an engine receives: one image series as a volume, and a study of them.

These carry what an engine needs (voxels, geometry, a few header facts) and nothing about
where the data came from: no file paths, no datasets, no identities.  They are built by
:mod:`dicom_node.volumes` from the de-identified files in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SliceReference:
    """The DICOM instance a slice (or frame) of a volume came from."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None = None  # 1-based, for multi-frame sources
    # Planar (NM) frames: the view of this frame ("ANTERIOR", "POSTERIOR", "LEFT_LATERAL"...;
    # from the View Code Sequence or Detector Information), its detector and energy window
    # (1-based, as the NM multi-frame module counts them).  None for tomographic slices.
    view: str | None = None
    detector: int | None = None
    energy_window: int | None = None


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the voxels lie in the patient coordinate system (LPS, millimetres).

    Voxel ``[k, j, i]`` (slice, row, column) has its centre at
    ``slice_origins[k] + i * column_spacing * row_direction + j * row_spacing * column_direction``,
    exactly as PS3.3 C.7.6.2.1.1 defines it for each source image, so no slice position is
    ever re-derived from an assumed spacing.
    """

    slice_origins: np.ndarray  # (n_slices, 3) ImagePositionPatient of each slice, in order
    row_direction: tuple[float, float, float]  # ImageOrientationPatient[0:3]
    column_direction: tuple[float, float, float]  # ImageOrientationPatient[3:6]
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) = PixelSpacing
    slice_thickness: float | None = None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def slice_positions(self) -> np.ndarray:
        """Signed distance of each slice along the normal (mm)."""
        return self.slice_origins @ self.normal

    @property
    def slice_spacing(self) -> float:
        """Median distance between adjacent slices (0.0 for a single slice)."""
        positions = self.slice_positions
        if len(positions) < 2:
            return 0.0
        return float(np.median(np.abs(np.diff(positions))))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.slice_spacing, self.pixel_spacing[0], self.pixel_spacing[1])

    def voxel_to_patient(self, k: np.ndarray, j: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Patient coordinates (…, 3) of voxel centres given (possibly fractional) indices."""
        k = np.asarray(k)
        origin = self.slice_origins[np.clip(np.rint(k).astype(int), 0, len(self.slice_origins) - 1)]
        row = np.asarray(self.row_direction) * self.pixel_spacing[1]
        col = np.asarray(self.column_direction) * self.pixel_spacing[0]
        return origin + np.asarray(i)[..., None] * row + np.asarray(j)[..., None] * col


@dataclass(frozen=True)
class AcquisitionFacts:
    """Header facts that quality checks and reports need (never identities)."""

    modality: str
    manufacturer: str | None = None
    body_part: str | None = None
    kernel: str | None = None
    kvp: float | None = None
    lossy_compressed: bool = False
    gantry_tilt: float = 0.0
    series_description: str | None = None
    # MR sequence facts (header-first sequence identification); None when absent.
    protocol_name: str | None = None
    sequence_name: str | None = None
    scanning_sequence: str | None = None  # e.g. "GR", "SE\\IR"
    image_type: tuple[str, ...] = ()
    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None
    inversion_time_ms: float | None = None
    contrast_agent: str | None = None  # (0018,0010) Contrast/Bolus Agent, scrubbed
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesVolume:
    """One image series as a volume, voxels indexed ``[slice, row, column]``.

    ``voxels`` are in physical units where the modality has them (Hounsfield units for CT,
    rescale slope/intercept applied); ``slices[k]`` names the instance slice ``k`` came from.
    """

    series_uid: str  # pseudonymous Series Instance UID
    frame_of_reference_uid: str | None
    voxels: np.ndarray
    geometry: VolumeGeometry
    slices: tuple[SliceReference, ...]
    facts: AcquisitionFacts

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise ValueError(f"voxels must be 3-D (slice, row, column), got {self.voxels.shape}")
        if len(self.slices) != self.voxels.shape[0]:
            raise ValueError(
                f"{len(self.slices)} slice references for {self.voxels.shape[0]} slices"
            )
        if len(self.geometry.slice_origins) != self.voxels.shape[0]:
            raise ValueError("one slice origin is needed per slice")

    @property
    def modality(self) -> str:
        return self.facts.modality

    @property
    def shape(self) -> tuple[int, int, int]:
        slices, rows, cols = self.voxels.shape
        return slices, rows, cols


@dataclass(frozen=True)
class RoiContours:
    """A region that arrived with the study (RTSTRUCT ROI or SEG segment), as a mask.

    Rasterised onto the grid of ``series_uid`` by the node before an engine sees it.
    """

    name: str
    series_uid: str
    mask: np.ndarray  # bool, same shape as that series' voxels
    # Where the region came from, so results can reference the received object rather than
    # a copy: the RTSTRUCT/SEG instance and the ROI Number / Segment Number inside it.
    source_sop_class_uid: str = ""
    source_sop_instance_uid: str = ""
    source_number: int | None = None
    source_series_uid: str = ""  # the RTSTRUCT/SEG series (not the image series)


@dataclass(frozen=True)
class StudyInput:
    """Everything of one study an engine may use: its image series and any regions."""

    study_uid: str  # pseudonymous Study Instance UID
    series: tuple[SeriesVolume, ...]
    regions: tuple[RoiContours, ...] = ()

    def by_modality(self, modality: str) -> list[SeriesVolume]:
        return [s for s in self.series if s.modality == modality]
