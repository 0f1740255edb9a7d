"""Engine registry and the framework's input selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ai_engines import engine as framework
from ai_engines.findings import Decline, EngineIdentity, Findings
from ai_engines.registry import (
    EngineNotInstalled,
    EngineSpecError,
    available_engines,
    discover,
    engine_specs,
    get_engine,
)
from ai_engines.spec import ENTRY_POINT_GROUP
from ai_engines.volume import (
    AcquisitionFacts,
    RoiContours,
    SeriesVolume,
    SliceReference,
    StudyInput,
    VolumeGeometry,
)


@pytest.mark.parametrize("name", ["lung_screening_v9", "nope"])
def test_unknown_engines_are_not_installed(name):
    with pytest.raises(EngineNotInstalled) as err:
        get_engine(name)
    assert err.value.name == name
    assert "not installed" in str(err.value)


def test_available_engines():
    assert "ct_lung" in available_engines()


def test_the_ct_lung_engine_is_an_entry_point_package():
    from importlib.metadata import entry_points

    from ai_engines.ct_lung.engine import CtLungEngine
    from ai_engines.ct_lung.spec import SPEC

    (point,) = [p for p in entry_points(group=ENTRY_POINT_GROUP) if p.name == "ct_lung"]
    assert point.value == "ai_engines.ct_lung.spec:SPEC"
    assert engine_specs()["ct_lung"] is SPEC
    # The spec and the runtime engine say the same thing (the spec is what routing reads).
    assert (CtLungEngine.name, CtLungEngine.version) == (SPEC.name, SPEC.version)
    assert CtLungEngine.acceptance == SPEC.acceptance


def test_discovery_finds_a_separately_installed_engine_and_reports_broken_ones(tmp_path):
    from tests.platform.entry_points import installed

    engines = {
        "hotspot": "tests.platform.hotspot_engine:SPEC",
        "missing": "no_such_module.spec:SPEC",
        "mislabelled": "tests.platform.hotspot_engine:SPEC",  # the spec says "hotspot"
        "notaspec": "tests.platform.hotspot_engine:ACCEPTANCE",
    }
    with installed(tmp_path, "site-engines", engines):
        found = discover()
        assert "hotspot" in found.specs and "ct_lung" in found.specs
        assert set(found.problems) == {"missing", "mislabelled", "notaspec"}
        assert "ModuleNotFoundError" in found.problems["missing"]
        assert "holds the spec of 'hotspot'" in found.problems["mislabelled"]
        assert "not an EngineSpec" in found.problems["notaspec"]
        engine = get_engine("hotspot")
        assert type(engine).__name__ == "HotSpotEngine"
    assert "hotspot" not in available_engines()  # uninstalled again


def test_a_factory_that_disagrees_with_its_spec_is_refused(tmp_path, monkeypatch):
    from ai_engines import registry
    from tests.platform import hotspot_engine

    wrong = dataclasses.replace(hotspot_engine.SPEC,
                                factory="ai_engines.ct_lung.spec:ACCEPTANCE")
    monkeypatch.setattr(registry, "engine_specs", lambda: {"hotspot": wrong})
    with pytest.raises(EngineSpecError, match="not an Engine class"):
        get_engine("hotspot")


@pytest.mark.parametrize("name", ["CT-Lung", "ct-lung-nsclc", "1lung", ""])
def test_engine_names_are_one_identifier(name):
    from tests.platform import hotspot_engine

    with pytest.raises(ValueError, match="must match"):
        dataclasses.replace(hotspot_engine.SPEC, name=name)


def test_a_decline_may_name_no_series():
    decline = Decline(framework.INPUT_MISSING_SERIES, "nothing of ours")
    findings = GliomaLike().declined(None, decline)
    assert findings.source_series_uid == "" and findings.decline == decline


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


def shifted(series: SeriesVolume, dz: float) -> SeriesVolume:
    geometry = dataclasses.replace(series.geometry,
                                   slice_origins=series.geometry.slice_origins + [0, 0, dz])
    return dataclasses.replace(series, geometry=geometry)


def test_one_frame_of_reference_is_not_enough_when_the_volumes_do_not_meet():
    t1c = shifted(mr_series("T1 post Gd"), 500.0)  # same frame of reference, 50 cm away
    series = (mr_series("T1 MPRAGE"), t1c, mr_series("T2 TSE"), mr_series("T2 FLAIR"))
    decline = GliomaLike().run(StudyInput("2.25.1", series)).decline
    assert decline.code == framework.INPUT_NOT_CO_REGISTERED
    assert "do not overlap" in decline.reason


class SameGrid(GliomaLike):
    acceptance = dataclasses.replace(GliomaLike.acceptance, same_grid=True)


def test_same_grid_compares_the_voxel_grids():
    series = [mr_series(d) for d in ("T1 MPRAGE", "T1 post Gd", "T2 TSE", "T2 FLAIR")]
    assert SameGrid().run(StudyInput("2.25.1", tuple(series))).decline is None
    series[3] = shifted(series[3], 0.5)  # half a slice off: overlaps, but another grid
    decline = SameGrid().run(StudyInput("2.25.1", tuple(series))).decline
    assert decline.code == framework.INPUT_NOT_CO_REGISTERED
    assert "slice positions differ by up to 0.500 mm" in decline.reason
    # Co-registered without same_grid: the engine resamples (ai_engines.resample).
    assert GliomaLike().run(StudyInput("2.25.1", tuple(series))).decline is None


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
