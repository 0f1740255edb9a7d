"""The radiomics engine on a synthetic CT and on the real lung1 CT with its label."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ai_engines.engine import INPUT_MISSING_REGION
from ai_engines.findings import Findings
from ai_engines.radiomics.engine import (
    CSV_COLUMNS,
    IBSI_SCHEME,
    MAP_LABEL,
    QC_SHEARED_STACK,
    RADIOMICS_NO_MEASURABLE_REGION,
    RadiomicsEngine,
    features_csv,
)
from ai_engines.radiomics.settings import IBSI_C, RadiomicsSettings
from ai_engines.radiomics.spec import SPEC
from ai_engines.volume import AcquisitionFacts

from .conftest import region_of, series_volume, study_with, synthetic_ct

ROOT = Path(__file__).resolve().parents[3]


def by_tag(findings: Findings, region: int = 0) -> dict[tuple[str, str], float]:
    out = {}
    for m in findings.region_measurements[region].measurements:
        out[(m.description, m.modifier.value if m.modifier else "DHQ4")] = m.value
    return out


@pytest.fixture(scope="module")
def synthetic_findings() -> tuple[Findings, np.ndarray]:
    series, lesion = synthetic_ct()
    engine = RadiomicsEngine(device="cpu")
    return engine.run(study_with(series, region_of(lesion, series))), lesion


def test_synthetic_ct_gives_coded_features_per_region(synthetic_findings) -> None:
    findings, _ = synthetic_findings
    assert not findings.declined
    assert len(findings.region_measurements) == 1
    region = findings.region_measurements[0]
    assert region.region.name == "GTV" and region.region.source_number == 1
    names = {m.name.value for m in region.measurements}
    # Every family is there, coded with IBSI identifiers.
    for code in ("RNU0", "Q4LE", "X6K6", "BC2M", "TU9B", "22OV", "5QRC", "0GBI", "QCDE", "SODN", "VJGA"):
        assert code in names
    assert {m.name.scheme for m in region.measurements} == {IBSI_SCHEME}
    modifiers = {m.modifier.value for m in region.measurements if m.modifier}
    assert modifiers == {"ITBB", "IAZD", "KOBO"}  # 3D averaged, 3D merged; 3D for zone families
    assert all(math.isfinite(m.value) for m in region.measurements)
    units = {m.description: m.unit.value for m in region.measurements}
    assert units["morph.vol"] == "mm3" and units["stat.mean"] == "[hnsf'U]" and units["cm.joint.entr"] == "1"
    assert any(n.startswith("radiomics settings: name=IBSI-C") for n in findings.notes)


def test_synthetic_ct_values_are_plausible(synthetic_findings) -> None:
    findings, lesion = synthetic_findings
    f = by_tag(findings)
    sphere = 4 / 3 * math.pi * 15.0**3
    assert f[("morph.vol", "DHQ4")] == pytest.approx(sphere, rel=0.05)
    assert f[("morph.sphericity", "DHQ4")] > 0.9
    assert f[("morph.diam", "DHQ4")] == pytest.approx(30.0, abs=3.0)
    assert f[("stat.mean", "DHQ4")] == pytest.approx(65.0, abs=8.0)
    assert f[("stat.min", "DHQ4")] < f[("stat.P10", "DHQ4")] < f[("stat.median", "DHQ4")]
    assert 0 < f[("cm.joint.entr", "IAZD")] < 2 * math.log2(57)


def test_entropy_map_covers_the_slab(synthetic_findings) -> None:
    findings, lesion = synthetic_findings
    (entropy,) = findings.maps
    assert entropy.label == MAP_LABEL and entropy.quantity.value == "TU9B"
    assert entropy.values.shape == lesion.shape and entropy.values.dtype == np.float32
    slab = np.flatnonzero(lesion.any(axis=(1, 2)))
    outside = np.ones(lesion.shape[0], dtype=bool)
    outside[slab[0]:slab[-1] + 1] = False
    assert not entropy.values[outside].any()
    assert (entropy.values[slab[0]:slab[-1] + 1][lesion[slab[0]:slab[-1] + 1]] > 0).mean() > 0.95


def test_csv_has_one_row_per_measurement(synthetic_findings) -> None:
    findings, _ = synthetic_findings
    text = features_csv(findings, study_uid="2.25.1")
    assert not any(line.startswith("#") for line in text.splitlines())  # plain CSV
    rows = list(csv.DictReader(io.StringIO(text)))
    measurements = findings.region_measurements[0].measurements
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(measurements)
    for row, m in zip(rows, measurements, strict=True):
        assert row["ibsi_code"] == m.name.value and float(row["value"]) == m.value
        assert row["region"] == "GTV" and row["study_uid"] == "2.25.1"
        assert row["series_uid"] == findings.source_series_uid
        assert row["settings_name"] == "IBSI-C"
        assert row["settings"].startswith("name=IBSI-C; spacing_mm=(2.0, 2.0, 2.0)")
    assert {r["aggregation_code"] for r in rows} == {"DHQ4", "ITBB", "IAZD", "KOBO"}
    assert features_csv(findings, header=False).count("\r\n") == len(measurements)


def test_lung1_voxel_volume_and_intensities(lung1) -> None:
    series, mask = lung1
    assert mask.sum() == 837
    native = RadiomicsSettings(name="native", entropy_map=False)  # no interpolation, no range
    findings = RadiomicsEngine(device="cpu", settings=native).run(study_with(series, region_of(mask, series)))
    f = by_tag(findings)
    voxel = float(np.prod(series.geometry.spacing_zyx))
    assert f[("morph.approx.vol", "DHQ4")] == pytest.approx(837 * voxel)
    # The mesh volume of a 3-slice nodule is below the voxel count but of the same size.
    assert 0.7 * 837 * voxel < f[("morph.vol", "DHQ4")] < 837 * voxel
    hu = series.voxels[mask]
    assert f[("stat.mean", "DHQ4")] == pytest.approx(hu.mean())
    assert f[("stat.max", "DHQ4")] == hu.max() and f[("stat.min", "DHQ4")] == hu.min()
    assert f[("stat.energy", "DHQ4")] == pytest.approx((hu**2).sum())
    extent = (np.ptp(np.argwhere(mask), axis=0) + 1) * np.array(series.geometry.spacing_zyx)
    assert f[("morph.diam", "DHQ4")] <= np.linalg.norm(extent)


def test_lung1_with_the_default_preset(lung1) -> None:
    series, mask = lung1
    findings = RadiomicsEngine(device="cpu").run(study_with(series, region_of(mask, series)))
    assert not findings.declined
    f = by_tag(findings)
    # IBSI-C resamples to 2 mm: the volume stays that of the label within partial-volume error.
    voxel = float(np.prod(series.geometry.spacing_zyx))
    assert f[("morph.approx.vol", "DHQ4")] == pytest.approx(837 * voxel, rel=0.3)
    assert f[("stat.min", "DHQ4")] >= -1000 and f[("stat.max", "DHQ4")] <= 400
    assert findings.maps[0].values.shape == series.shape


def test_declines_without_a_region() -> None:
    series, _ = synthetic_ct()
    findings = RadiomicsEngine(device="cpu").run(study_with(series))
    assert findings.decline.code == INPUT_MISSING_REGION


def test_declines_when_no_voxel_is_in_range() -> None:
    series, lesion = synthetic_ct()
    air = np.zeros_like(lesion)
    air[2:6, 2:8, 2:8] = True  # a corner of air (-1000 HU): nothing in [200, 400] HU
    findings = RadiomicsEngine(device="cpu", settings=replace(IBSI_C, resegmentation_range=(200.0, 400.0))).run(
        study_with(series, region_of(air, series)))
    assert findings.decline.code == RADIOMICS_NO_MEASURABLE_REGION
    assert any("re-segmentation" in note for note in findings.notes)


def test_declines_a_sheared_stack() -> None:
    series, lesion = synthetic_ct()
    origins = series.geometry.slice_origins.copy()
    origins[:, 1] += np.arange(len(origins)) * 0.2  # ~11 degrees of gantry tilt
    tilted = replace(series, geometry=replace(series.geometry, slice_origins=origins))
    findings = RadiomicsEngine(device="cpu").run(study_with(tilted, region_of(lesion, tilted)))
    assert findings.decline.code == QC_SHEARED_STACK


def test_declines_lossy_input() -> None:
    series, lesion = synthetic_ct()
    lossy = replace(series, facts=AcquisitionFacts(modality="CT", lossy_compressed=True))
    findings = RadiomicsEngine(device="cpu").run(study_with(lossy, region_of(lesion, lossy)))
    assert findings.declined and "LOSSY" in findings.decline.code


def test_mr_uses_the_modality_preset_and_arbitrary_units() -> None:
    rng = np.random.default_rng(1)
    voxels = rng.normal(500, 50, (20, 40, 40))
    mask = np.zeros(voxels.shape, dtype=bool)
    mask[5:15, 10:30, 10:30] = True
    series = series_volume(voxels, (2.0, 1.0, 1.0), modality="MR")
    findings = RadiomicsEngine(device="cpu").run(study_with(series, region_of(mask, series, "ENH")))
    assert not findings.declined
    assert any(n.startswith("radiomics settings: name=IBSI-D") for n in findings.notes)
    units = {m.description: m.unit.value for m in findings.region_measurements[0].measurements}
    assert units["stat.mean"] == "[arb'U]"


def test_two_regions_give_two_measurement_groups() -> None:
    series, lesion = synthetic_ct()
    second = np.zeros_like(lesion)
    second[30:36, 90:100, 20:30] = True
    findings = RadiomicsEngine(device="cpu", settings=replace(IBSI_C, entropy_map=False)).run(
        study_with(series, region_of(lesion, series, "GTV", 1), region_of(second, series, "NODE", 2)))
    assert [r.region.name for r in findings.region_measurements] == ["GTV", "NODE"]
    assert findings.maps == ()
    rows = [r for r in csv.DictReader(io.StringIO(features_csv(findings)))
            if r["region"] == "NODE" and r["roi_number"] == "2"]
    assert len(rows) == len(findings.region_measurements[1].measurements)


def test_spec_and_entry_point() -> None:
    assert SPEC.name == "radiomics" and SPEC.models == ()
    assert SPEC.factory == "ai_engines.radiomics.engine:RadiomicsEngine"
    assert RadiomicsEngine.acceptance is SPEC.acceptance
    engine = RadiomicsEngine(model_dir=None, device="cpu", threads=1)  # the common constructor
    assert engine.identity().name == "radiomics" and len(engine.identity().model_sha256) == 64
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = project["project"]["entry-points"]["dicom_node.engines"]
    assert entry_points["radiomics"] == "ai_engines.radiomics.spec:SPEC"


def test_spec_import_loads_no_torch() -> None:
    code = "import sys, ai_engines.radiomics.spec; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["IBSI-A", "IBSI-B", "IBSI-C", "IBSI-D", "IBSI-E"])
def test_every_ibsi_preset_runs_on_lung1(lung1, name: str) -> None:
    """The CT phantom of configurations A-E is not in the reference data (its licence is
    non-commercial), so the presets are checked for what they must do on a real CT: the
    aggregations they name, finite values, the re-segmentation range respected."""
    from ai_engines.radiomics.settings import preset

    series, mask = lung1
    settings = preset(name).with_changes(entropy_map=False)
    findings = RadiomicsEngine(device="cpu", settings=settings).run(study_with(series, region_of(mask, series)))
    assert not findings.declined
    measurements = findings.region_measurements[0].measurements
    aggregations = {m.modifier.value for m in measurements if m.modifier}
    expected = {"BTW3", "SUJT", "JJUI", "ZW7Z", "8QNN", "62GR"} if settings.dimensionality == "2D" \
        else {"ITBB", "IAZD", "KOBO"}
    assert aggregations == expected
    f = by_tag(findings)
    if settings.resegmentation_range:
        low, high = settings.resegmentation_range
        assert low <= f[("stat.min", "DHQ4")] and f[("stat.max", "DHQ4")] <= high
    voxel = float(np.prod(series.geometry.spacing_zyx))
    assert f[("morph.approx.vol", "DHQ4")] == pytest.approx(837 * voxel, rel=0.3)
    assert all(math.isfinite(m.value) for m in measurements)


def test_tiny_regions_get_notes_not_crashes() -> None:
    series, _ = synthetic_ct()
    two = np.zeros(series.shape, dtype=bool)
    two[32, 60, 60:62] = True
    native = RadiomicsSettings(name="native", entropy_map=False)
    findings = RadiomicsEngine(device="cpu", settings=native).run(study_with(series, region_of(two, series)))
    assert not findings.declined
    assert all(math.isfinite(m.value) for m in findings.region_measurements[0].measurements)
    assert any("undefined for this ROI" in note and "stat.rmad" in note for note in findings.notes)
    one = np.zeros(series.shape, dtype=bool)
    one[32, 60, 60] = True  # one 0.8 mm voxel vanishes on the 2 mm grid of IBSI-C
    findings = RadiomicsEngine(device="cpu").run(study_with(series, region_of(one, series)))
    assert findings.decline.code == RADIOMICS_NO_MEASURABLE_REGION
    assert any("empty after interpolation" in note for note in findings.notes)
