"""The engine framework: what an engine accepts, how it picks its inputs, what it returns.

An engine is pure: a :class:`~ai_engines.volume.StudyInput` in, :class:`~ai_engines.findings.Findings`
out.  It declares up front what it can read (:class:`Acceptance`): one or more series *roles*
(a CT for the lung engine; T1, T1c, T2 and FLAIR, co-registered, for an MR glioma engine; an
anterior/posterior planar pair for a bone scan) and the regions it needs (an RTSTRUCT or SEG
ROI for radiomics).  :meth:`Engine.select_inputs` matches the study against that declaration
and runs the input quality checks of :mod:`ai_engines.quality`; anything that does not fit
becomes a coded :class:`~ai_engines.findings.Decline`, never a crash and never a silent guess.

Declines are for inputs.  A bug inside an engine raises: the job layer records the traceback,
so a defect is never disguised as a property of the patient's images.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ai_engines.findings import Decline, EngineIdentity, Findings
from ai_engines.volume import RoiContours, SeriesVolume, StudyInput

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

    ``co_registered`` asks that all selected series share one frame of reference (an MR
    glioma engine reading T1, T1c, T2 and FLAIR voxel by voxel).
    """

    series: tuple[SeriesRequirement, ...]
    regions: RegionRequirement | None = None
    co_registered: bool = False

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for req in self.series for m in req.modalities))


@dataclass(frozen=True)
class SelectedInputs:
    """The series (by role) and regions an engine will run on."""

    series: dict[str, SeriesVolume]
    regions: tuple[RoiContours, ...] = ()

    def __getitem__(self, role: str) -> SeriesVolume:
        return self.series[role]


class Engine(ABC):
    """Base of every engine: declarations plus input selection; subclasses implement ``run``.

    Subclasses set ``name``, ``version`` and ``acceptance`` and implement :meth:`run` and
    :meth:`identity`.  ``run`` returns :class:`Findings` with ``decline`` set when the inputs
    do not fit; genuine failures raise.
    """

    name: str
    version: str
    acceptance: Acceptance

    @abstractmethod
    def identity(self) -> EngineIdentity:
        """Who produces the findings (engine, version, model and its checksum)."""

    @abstractmethod
    def run(self, study: StudyInput) -> Findings:
        """Run on a study: findings on the source grid, or a decline."""

    def declined(self, source_series_uid: str, decline: Decline) -> Findings:
        """Findings that only carry ``decline``."""
        return Findings(engine=self.identity(), source_series_uid=source_series_uid, decline=decline)

    def select_inputs(self, study: StudyInput) -> SelectedInputs | Decline:
        """Pick one series per role (and the regions) that pass the quality checks.

        Among candidates of a role the one with the most slices that passes every check wins;
        when none passes, the decline of the best candidate is returned so the reason names
        the real problem (e.g. QC_MISSING_SLICES) rather than "no series".

        Returns
        -------
        SelectedInputs or Decline
        """
        from ai_engines.quality import QC_WRONG_MODALITY, check_series

        chosen: dict[str, SeriesVolume] = {}
        for req in self.acceptance.series:
            candidates = [s for s in study.series if s.modality in req.modalities]
            if req.sop_classes:
                candidates = [s for s in candidates if s.slices and s.slices[0].sop_class_uid in req.sop_classes]
            if req.description_pattern is not None:
                pattern = re.compile(req.description_pattern, re.IGNORECASE)
                candidates = [
                    s for s in candidates if pattern.search(s.facts.series_description or "")
                ]
            if not candidates:
                if req.optional:
                    continue
                present = sorted({s.modality for s in study.series}) or ["none"]
                # Wrong modality when nothing of it came; a missing role (e.g. no FLAIR) otherwise.
                has_modality = any(s.modality in req.modalities for s in study.series)
                code = QC_WRONG_MODALITY if study.series and not has_modality else INPUT_MISSING_SERIES
                return Decline(
                    code,
                    f"{self.name} needs a {'/'.join(req.modalities)} series for role "
                    f"{req.role!r}; the study holds {', '.join(present)}",
                )
            candidates.sort(key=lambda s: s.shape[0], reverse=True)
            first_failure: Decline | None = None
            for series in candidates:
                failures = check_series(series, req.geometry)
                if not failures:
                    chosen[req.role] = series
                    break
                first_failure = first_failure or failures[0]
            else:
                if not req.optional:
                    assert first_failure is not None
                    return first_failure
        if self.acceptance.co_registered and len({s.frame_of_reference_uid for s in chosen.values()}) > 1:
            return Decline(
                INPUT_NOT_CO_REGISTERED,
                f"{self.name} needs its series ({', '.join(chosen)}) in one frame of reference",
            )
        regions: tuple[RoiContours, ...] = ()
        if self.acceptance.regions is not None:
            pattern = re.compile(self.acceptance.regions.name_pattern, re.IGNORECASE)
            uids = {s.series_uid for s in chosen.values()}
            regions = tuple(r for r in study.regions if pattern.search(r.name) and r.series_uid in uids)
            if len(regions) < self.acceptance.regions.min_count:
                return Decline(
                    INPUT_MISSING_REGION,
                    f"{self.name} needs {self.acceptance.regions.min_count} region(s) matching "
                    f"{self.acceptance.regions.name_pattern!r} on the selected series; found {len(regions)}",
                )
        return SelectedInputs(series=chosen, regions=regions)
