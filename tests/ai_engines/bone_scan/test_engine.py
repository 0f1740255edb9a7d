"""BoneScanEngine: findings structure on the source grids, Grad-CAM location, hot-spot segment,
declines, model integrity, purity, and accuracy on held-out synthetic scans."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ai_engines import codes
from ai_engines.bone_scan.engine import BoneScanEngine
from ai_engines.bone_scan.evaluate import evaluate_synthetic
from ai_engines.bone_scan.synthetic import CONFOUNDERS, synthetic_scan
from ai_engines.bone_scan.views import NM_SINGLE_VIEW
from ai_engines.models import ModelIntegrityError, locate_model
from ai_engines.volume import StudyInput


@pytest.fixture(scope="module")
def engine() -> BoneScanEngine:
    return BoneScanEngine(device="cpu", threads=2)


@pytest.fixture(scope="module")
def metastatic():
    """One strong lumbar metastasis, no confounders."""
    none = {name: False for name in CONFOUNDERS}
    return synthetic_scan(100_900, metastatic=True, n_metastases=1, matrix=(1024, 256), layout="multiframe",
                          posterior_mirrored=False, energy_windows=1, confounders=none)


def test_identity_from_model_card(engine):
    identity = engine.identity()
    card = engine.files.card
    assert identity.model_sha256 == card.sha256 and identity.research_use_only
    assert card.label == "DEMO" and 0 < engine.threshold < 1
    assert len(identity.version) <= 64


def test_findings_on_the_source_grid(engine, metastatic):
    findings = engine.run(metastatic.study)
    assert not findings.declined
    series = metastatic.study.series[0]
    assert findings.source_series_uid == series.series_uid
    (c,) = findings.classifications
    assert c.finding == codes.BONY_METASTASIS and 0.0 <= c.probability <= 1.0
    assert c.positive == (c.probability >= c.threshold) and c.threshold == engine.threshold
    assert c.source == series.slices[0] and c.source.view == "ANTERIOR"
    assert c.source_series_uid == series.series_uid
    (heat,) = findings.maps
    assert heat.label == "GradCAM" and heat.values.shape == series.shape and heat.values.dtype == np.float32
    assert heat.source_series_uid == series.series_uid
    assert heat.values.min() >= 0.0 and heat.values.max() <= 1.0 + 1e-6
    assert any("energy window" in n for n in findings.notes)
    assert any("percentile" in n for n in findings.notes)
    assert {"views", "inference", "heat_map"} <= set(findings.timings_s)


def _peak_distance_mm(values: np.ndarray, row: float, col: float, spacing: float) -> float:
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    return float(np.hypot(peak[0] - row, peak[1] - col) * spacing)


def test_gradcam_peaks_at_the_planted_metastasis(engine, metastatic):
    findings = engine.run(metastatic.study)
    assert findings.classifications[0].positive
    (lesion,) = metastatic.metastases
    heat = findings.maps[0].values
    spacing = metastatic.study.series[0].geometry.pixel_spacing[0]
    # Anterior frame: canonical = stored.  The last block's grid is 32 x 8 cells (72 mm at 1024 rows).
    assert heat[0, int(lesion.row), int(lesion.col)] >= 0.5
    assert _peak_distance_mm(heat[0], lesion.row, lesion.col, spacing) < 110
    # Posterior frame is stored as acquired (mirrored): its map is mirrored back the same way.
    mirrored_col = heat.shape[2] - 1 - lesion.col
    assert heat[1, int(lesion.row), int(round(mirrored_col))] >= 0.5
    np.testing.assert_allclose(heat[1][:, ::-1], heat[0], atol=1e-5)


def test_hot_spot_segment_covers_the_metastasis(engine, metastatic):
    findings = engine.run(metastatic.study)
    (segment,) = findings.segments
    series = metastatic.study.series[0]
    assert segment.mask.shape == series.shape and segment.mask.dtype == np.bool_
    assert segment.property_type == codes.BONY_METASTASIS
    assert segment.category == codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    assert segment.source_series_uid == series.series_uid and segment.key_slice == 0
    (lesion,) = metastatic.metastases
    rows, cols = np.nonzero(segment.mask[0])
    assert np.min(np.hypot(rows - lesion.row, cols - lesion.col)) * series.geometry.pixel_spacing[0] < 20


def test_two_series_each_map_on_its_own_series(engine):
    scan = synthetic_scan(100_901, metastatic=True, n_metastases=3, matrix=(512, 128), layout="two_series",
                          posterior_mirrored=True)
    findings = engine.run(scan.study)
    ant, post = scan.study.series
    assert findings.source_series_uid == ant.series_uid
    assert [m.source_series_uid for m in findings.maps] == [ant.series_uid, post.series_uid]
    assert [m.values.shape for m in findings.maps] == [ant.shape, post.shape]
    # Stored already mirrored: the posterior map equals the anterior one on the same grid.
    np.testing.assert_allclose(findings.maps[1].values, findings.maps[0].values, atol=1e-5)
    for segment in findings.segments:
        assert segment.mask.shape == {ant.series_uid: ant.shape, post.series_uid: post.shape}[segment.source_series_uid]


def test_transposed_and_small_matrix_answer_alike(engine):
    """The same scan stored 512x128 upright or transposed gives the same probability."""
    upright = synthetic_scan(100_902, matrix=(512, 128), layout="multiframe", energy_windows=2)
    turned = synthetic_scan(100_902, matrix=(512, 128), layout="multiframe", energy_windows=2, transposed=True)
    a, b = engine.run(upright.study), engine.run(turned.study)
    assert a.classifications[0].probability == pytest.approx(b.classifications[0].probability, abs=1e-5)
    assert b.maps[0].values.shape == turned.study.series[0].shape
    np.testing.assert_allclose(b.maps[0].values[0], a.maps[0].values[0].T, atol=1e-5)


def test_declines_with_code(engine):
    series = synthetic_scan(100_903, matrix=(512, 128), layout="multiframe", energy_windows=1).study.series[0]
    single = dataclasses.replace(series, voxels=series.voxels[:1], slices=series.slices[:1],
                                 geometry=dataclasses.replace(series.geometry, slice_origins=series.geometry.slice_origins[:1]))
    findings = engine.run(StudyInput("2.25.1", (single,)))
    assert findings.declined and findings.decline.code == NM_SINGLE_VIEW
    assert findings.source_series_uid == series.series_uid
    assert not findings.classifications and not findings.maps


def test_checksum_mismatch_refuses_to_load(tmp_path):
    files = locate_model("bone_scan", "bone_scan_cnn")
    shutil.copy(files.card_path, tmp_path / files.card_path.name)
    data = bytearray(files.weights.read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / files.weights.name).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        BoneScanEngine(model_dir=tmp_path, device="cpu")


def test_runtime_engine_imports_no_training_code():
    code = (
        "import sys, ai_engines.bone_scan.engine, ai_engines.bone_scan.spec\n"
        "bad = [m for m in ('synthetic', 'train', 'evaluate', 'dataset') if 'ai_engines.bone_scan.' + m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spec_imports_no_torch():
    code = "import sys, ai_engines.bone_scan.spec as s\nassert 'torch' not in sys.modules\nprint(s.SPEC.name)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "bone_scan"


@pytest.mark.slow
def test_held_out_synthetic_auc(engine):
    """AUC >= 0.95 on the 200 held-out synthetic scans (seeds disjoint from training/validation)."""
    _, summary = evaluate_synthetic(engine, 200, progress=False)
    overall = summary["overall"]
    assert overall["declined"] == 0
    assert overall["auc"] >= 0.95, overall
    assert overall["sensitivity"] >= 0.8 and overall["specificity"] >= 0.8, overall
    assert summary["with_any_confounder"]["auc"] >= 0.9, summary["with_any_confounder"]


def test_spec_and_entry_point():
    from importlib.metadata import entry_points

    from ai_engines.bone_scan.spec import SPEC
    from ai_engines.spec import ENTRY_POINT_GROUP

    assert SPEC.name == "bone_scan" and SPEC.models == ("bone_scan_cnn",)
    assert SPEC.acceptance.modalities == ("NM",) and SPEC.acceptance.series[0].geometry.planar
    assert SPEC.factory == "ai_engines.bone_scan.engine:BoneScanEngine"
    found = {e.name: e.value for e in entry_points(group=ENTRY_POINT_GROUP)}
    assert found.get("bone_scan") == "ai_engines.bone_scan.spec:SPEC"
