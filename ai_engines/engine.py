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
from dataclasses import dataclass
from pathlib import Path

from ai_engines.acceptance import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    ENHANCED_MR_IMAGE_STORAGE,
    INPUT_MISSING_REGION,
    INPUT_MISSING_SERIES,
    INPUT_NOT_CO_REGISTERED,
    MR_IMAGE_STORAGE,
    NM_IMAGE_STORAGE,
    Acceptance,
    GeometryNeeds,
    RegionRequirement,
    SeriesRequirement,
)
from ai_engines.findings import Decline, EngineIdentity, Findings
from ai_engines.quality import QC_WRONG_MODALITY, check_series
from ai_engines.resample import grid_mismatch, overlap_fraction
from ai_engines.volume import RoiContours, SeriesVolume, StudyInput

# Re-exported: engines import their declarations from here.
__all__ = [
    "CT_IMAGE_STORAGE", "ENHANCED_CT_IMAGE_STORAGE", "ENHANCED_MR_IMAGE_STORAGE",
    "INPUT_MISSING_REGION", "INPUT_MISSING_SERIES", "INPUT_NOT_CO_REGISTERED",
    "MR_IMAGE_STORAGE", "NM_IMAGE_STORAGE", "Acceptance", "Engine", "GeometryNeeds",
    "RegionRequirement", "SelectedInputs", "SeriesRequirement",
]


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

    def __init__(self, model_dir: Path | None = None, device: str = "auto",  # noqa: B027
                 threads: int | None = None) -> None:
        """The keywords every engine is built with (:func:`ai_engines.registry.get_engine`);
        an engine with models or torch overrides this to use them."""

    @abstractmethod
    def identity(self) -> EngineIdentity:
        """Who produces the findings (engine, version, model and its checksum)."""

    @abstractmethod
    def run(self, study: StudyInput) -> Findings:
        """Run on a study: findings on the source grid, or a decline."""

    def declined(self, source_series_uid: str | None, decline: Decline) -> Findings:
        """Findings that only carry ``decline``.

        ``source_series_uid`` names the series the decline is about; ``None`` (or ``""``)
        when there is none (e.g. no series of the right kind arrived).  The report then
        references no image series.
        """
        return Findings(engine=self.identity(), source_series_uid=source_series_uid or "",
                        decline=decline)

    def select_inputs(self, study: StudyInput) -> SelectedInputs | Decline:
        """Pick one series per role (and the regions) that pass the quality checks.

        Among candidates of a role the one with the most slices that passes every check wins;
        when none passes, the decline of the best candidate is returned so the reason names
        the real problem (e.g. QC_MISSING_SLICES) rather than "no series".

        Returns
        -------
        SelectedInputs or Decline
        """
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
        if self.acceptance.co_registered or self.acceptance.same_grid:
            problem = self._registration_problem(chosen)
            if problem:
                return Decline(INPUT_NOT_CO_REGISTERED, problem)
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

    def _registration_problem(self, chosen: dict[str, SeriesVolume]) -> str | None:
        """Why the chosen series cannot be read voxel by voxel together, or None.

        Co-registered: one frame of reference and overlapping volumes (a frame-of-reference
        UID alone is no proof the voxels meet).  ``same_grid`` also asks for one voxel grid;
        otherwise the engine brings the series onto one with :mod:`ai_engines.resample`.
        """
        roles = list(chosen)
        if len(roles) < 2:
            return None
        reference = chosen[roles[0]]
        frames = {s.frame_of_reference_uid for s in chosen.values()}
        if len(frames) > 1 or None in frames:
            return (f"{self.name} needs its series ({', '.join(roles)}) in one frame of "
                    f"reference; they have {len(frames - {None})} (and "
                    f"{sum(s.frame_of_reference_uid is None for s in chosen.values())} without one)")
        for role in roles[1:]:
            other = chosen[role]
            if overlap_fraction(other, reference) <= 0.0:
                return (f"series of roles {roles[0]!r} and {role!r} share a frame of reference "
                        f"but their volumes do not overlap")
            if self.acceptance.same_grid:
                mismatch = grid_mismatch(other, reference)
                if mismatch:
                    return f"series of roles {roles[0]!r} and {role!r} are not on one voxel grid: {mismatch}"
        return None
