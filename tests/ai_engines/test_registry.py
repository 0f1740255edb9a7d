"""Engine registry and the framework's input selection."""

from __future__ import annotations

import numpy as np
import pytest

from ai_engines import engine as framework
from ai_engines.findings import Decline, EngineIdentity, Findings
from ai_engines.registry import EngineNotInstalled, available_engines, get_engine
from ai_engines.volume import (
    AcquisitionFacts,
    RoiContours,
    SeriesVolume,
    SliceReference,
    StudyInput,
    VolumeGeometry,
)


@pytest.mark.parametrize("name", ["mr_glioma", "bone_scan", "radiomics", "nope"])
def test_unknown_engines_are_not_installed(name):
    with pytest.raises(EngineNotInstalled) as err:
        get_engine(name)
    assert err.value.name == name
    assert "not installed" in str(err.value)


def test_available_engines():
    assert "ct_lung" in available_engines()


def mr_series(description: str, frame: str = "2.25.9", n: int = 12) -> SeriesVolume:
    origins = np.array([[0.0, 0.0, 1.0 * k] for k in range(n)])
    geometry = VolumeGeometry(origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0), 1.0)
    slices = tuple(SliceReference(framework.MR_IMAGE_STORAGE, f"2.25.{description}.{k}") for k in range(n))
    facts = AcquisitionFacts(modality="MR", series_description=description)
    return SeriesVolume(f"2.25.{abs(hash(description)) % 10**8}", frame, np.zeros((n, 8, 8), np.float32), geometry, slices, facts)


MR_GEOMETRY = framework.GeometryNeeds(min_slices=10, axial_only=True)


class GliomaLike(framework.Engine):
    """A study-level engine needing four co-registered MR series (framework test double)."""

    name, version = "glioma_like", "0"
    acceptance = framework.Acceptance(
        series=tuple(
            framework.SeriesRequirement(role, ("MR",), geometry=MR_GEOMETRY, description_pattern=pattern)
            for role, pattern in (("T1", r"t1(?!.*(gd|c\b|post))"), ("T1c", r"t1.*(gd|c\b|post)"), ("T2", r"t2(?!.*flair)"), ("FLAIR", r"flair"))
        ),
        co_registered=True,
    )

    def identity(self):
        return EngineIdentity("glioma_like", "0", "none", "0" * 64)

    def run(self, study):
        selected = self.select_inputs(study)
        if isinstance(selected, Decline):
            return self.declined("", selected)
        return Findings(self.identity(), selected["T1c"].series_uid)


def test_multi_series_selection_by_role():
    series = tuple(mr_series(d) for d in ("T1 MPRAGE", "T1 post Gd", "T2 TSE", "T2 FLAIR"))
    selected = GliomaLike().select_inputs(StudyInput("2.25.1", series))
    assert not isinstance(selected, Decline)
    assert selected["T1c"].facts.series_description == "T1 post Gd"
    assert selected["FLAIR"].facts.series_description == "T2 FLAIR"


def test_missing_role_declines():
    series = tuple(mr_series(d) for d in ("T1 MPRAGE", "T2 TSE", "T2 FLAIR"))
    result = GliomaLike().run(StudyInput("2.25.1", series))
    assert result.decline.code == framework.INPUT_MISSING_SERIES
    assert "T1c" in result.decline.reason


def test_not_co_registered_declines():
    series = (mr_series("T1 MPRAGE"), mr_series("T1 post Gd", frame="2.25.other"), mr_series("T2 TSE"), mr_series("T2 FLAIR"))
    assert GliomaLike().run(StudyInput("2.25.1", series)).decline.code == framework.INPUT_NOT_CO_REGISTERED


def test_quality_failure_surfaces_through_selection():
    series = tuple(mr_series(d, n=5) for d in ("T1 MPRAGE", "T1 post Gd", "T2 TSE", "T2 FLAIR"))
    assert GliomaLike().run(StudyInput("2.25.1", series)).decline.code == "QC_TOO_FEW_SLICES"


class RegionEngine(GliomaLike):
    acceptance = framework.Acceptance(
        series=(framework.SeriesRequirement("CT", ("MR",)),),
        regions=framework.RegionRequirement(name_pattern=r"^GTV"),
    )


def test_region_requirement():
    series = mr_series("T1")
    engine = RegionEngine()
    assert engine.select_inputs(StudyInput("2.25.1", (series,))).code == framework.INPUT_MISSING_REGION
    roi = RoiContours("GTV_1", series.series_uid, np.zeros(series.shape, bool))
    selected = engine.select_inputs(StudyInput("2.25.1", (series,), (roi,)))
    assert selected.regions == (roi,)


def test_wrong_modality_declines():
    ct = mr_series("T1")
    ct = SeriesVolume(ct.series_uid, ct.frame_of_reference_uid, ct.voxels, ct.geometry, ct.slices, AcquisitionFacts(modality="CT"))
    assert GliomaLike().run(StudyInput("2.25.1", (ct,))).decline.code == "QC_WRONG_MODALITY"


def test_threads_reach_torch():
    import torch

    before = torch.get_num_threads()
    try:
        get_engine("ct_lung", device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
