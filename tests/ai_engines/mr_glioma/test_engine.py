"""The MR glioma engine: declines with codes, the runtime imports, synthetic and real studies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ai_engines.mr_glioma.engine import (
    MR_NO_USABLE_SEQUENCE,
    MR_NOT_BRAIN,
    MR_REGISTRATION_FAILED,
    MrGliomaEngine,
)
from ai_engines.volume import StudyInput
from tests.ai_engines.mr_glioma.series_builders import mr_series, phantom_head

REAL_DEV = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference-data" / "real-dev"
REAL_DEV = REAL_DEV if REAL_DEV.is_dir() else Path("/work/shared/reference-data/real-dev")


@pytest.fixture(scope="module")
def engine() -> MrGliomaEngine:
    return MrGliomaEngine(device="cpu", threads=1)


def test_runtime_does_not_import_training_code() -> None:
    # torch itself may pull in tqdm; the engine must add neither it nor the training modules.
    code = (
        "import sys, json; import torch; by_torch = 'tqdm' in sys.modules; "
        "import ai_engines.mr_glioma.engine, ai_engines.mr_glioma.spec; "
        "found = [m for m in sys.modules if m.endswith(('.train', '.synthetic', '.evaluate'))]; "
        "found += ['tqdm'] if 'tqdm' in sys.modules and not by_torch else []; print(json.dumps(sorted(found)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_spec_is_registered_and_names_the_engine() -> None:
    from importlib.metadata import entry_points

    from ai_engines.mr_glioma.spec import SPEC

    assert SPEC.name == "mr_glioma" and SPEC.factory == "ai_engines.mr_glioma.engine:MrGliomaEngine"
    names = {ep.name: ep.value for ep in entry_points(group="dicom_node.engines")}
    if "mr_glioma" in names:  # present once the package is (re)installed with this pyproject
        assert names["mr_glioma"] == "ai_engines.mr_glioma.spec:SPEC"


def test_weights_are_checked_and_labelled_demo(engine: MrGliomaEngine) -> None:
    identity = engine.identity()
    assert identity.research_use_only
    assert engine.files.card.label == "DEMO"
    assert engine.grade_files is not None and "AUC 0.73" in engine.grade_files.card.notes
    assert "synthetic" in engine.grade_files.card.notes.lower()
    # The T1c-only extent network is packaged and checked like the others; its card holds the chain.
    extent = engine.network_for({"T1c"}).files
    assert extent.source == "package" and extent.card.name == "mr_glioma_unet_t1c" and extent.card.label == "DEMO"
    assert engine.network_for({"T1", "T1c"}).files.card.name == "mr_glioma_unet"
    for init_sha in (engine.files.card.sha256, "ac158820ded104e4", "0462a38ef6f38158"):
        assert init_sha in extent.card.notes
    assert len(identity.version) <= 64  # the SR's algorithm version is a LO


def test_no_usable_sequence_declines_with_the_reasons(engine: MrGliomaEngine) -> None:
    study = StudyInput("1", (mr_series("a", "AX DWI b1000"), mr_series("b", "t2_tse_tra"), mr_series("c", "localizer")))
    findings = engine.run(study)
    assert findings.decline is not None and findings.decline.code == MR_NO_USABLE_SEQUENCE
    assert "diffusion" in findings.decline.reason and "localizer" in findings.decline.reason
    assert engine.run(StudyInput("2", ())).decline.code == MR_NO_USABLE_SEQUENCE


def test_a_series_failing_quality_checks_is_not_used(engine: MrGliomaEngine) -> None:
    too_thick = mr_series("a", "AX T1 POST GD", spacing=10.0)
    findings = engine.run(StudyInput("1", (too_thick,)))
    assert findings.decline.code == MR_NO_USABLE_SEQUENCE
    assert "QC_SLICE_THICKNESS_RANGE" in findings.decline.reason or "QC_" in findings.decline.reason


@pytest.mark.slow
def test_not_a_brain_declines(engine: MrGliomaEngine) -> None:
    small = phantom_head("a", "AX T1 POST GD", scale=0.35, size_mm=120.0, spacing=1.5)  # ~60 ml: not a brain
    findings = engine.run(StudyInput("1", (small,)))
    assert findings.decline is not None and findings.decline.code == MR_NOT_BRAIN, findings.notes


@pytest.mark.slow
def test_registration_failure_declines(engine: MrGliomaEngine) -> None:
    t1c = phantom_head("a", "AX T1 POST GD", seed=1, spacing=1.5)
    flair_elsewhere = phantom_head("b", "FLAIR AX", scale=0.45, shift_mm=(60.0, 60.0, 40.0), seed=3, spacing=1.5)
    findings = engine.run(StudyInput("1", (t1c, flair_elsewhere)))
    assert findings.decline is not None and findings.decline.code == MR_REGISTRATION_FAILED
    assert "head Dice" in findings.decline.reason


@pytest.mark.slow
@pytest.mark.parametrize(("roles", "target"), [
    # Not met yet by the DEMO weights: seeds 100000 / 100003 measured WT 0.891 / 0.480 (mean 0.686);
    # with the second session's generator (fainter enhancement) seed 100000 gives 0.892.
    # Met since the intracranial prior keeps lesions out of the scalp and the skull base
    # (0.889 / 0.902 measured; 0.892 / 0.48 before, docs/mr-glioma-engine.md, fourth session).
    pytest.param(("T1", "T1c", "T2", "FLAIR"), 0.85),
    # T1c alone: the all-sequence network detects (alone it under-segments: 0.40 / 0.33), the
    # packaged T1c-only network delineates within 30 mm of what it found (fifth session, docs).
    pytest.param(("T1c",), 0.75),
])
def test_held_out_synthetic_whole_tumour_dice(engine: MrGliomaEngine, roles: tuple[str, ...], target: float) -> None:
    from ai_engines.mr_glioma.evaluate import dice, masks_of, synthetic_study
    from ai_engines.mr_glioma.synthetic import labels_on, synthetic_brain

    scores = []
    for seed in (100_000, 100_003):  # held out: training used seeds < 100 000
        brain = synthetic_brain(seed, kind="hgg")
        study = synthetic_study(brain, roles, seed, shifts={"T2": (2.0, -3.0, 1.0)})
        findings = engine.run(study)
        assert not findings.declined, findings.decline
        reference = next(s for s in study.series if s.series_uid == findings.source_series_uid)
        truth = labels_on(brain, reference)
        scores.append(dice(masks_of(findings, truth.shape)["WT"], truth > 0) or 0.0)
        labels = {s.label for s in findings.segments}
        assert {"GTV", "Enhancing"} <= labels
        assert any(c.finding.value == "MRG005" for c in findings.classifications)
        if roles == ("T1c",):  # the SR names both networks of the cascade with their SHA-256
            assert any(f"(detector), sha256 {engine.files.card.sha256}" in n for n in findings.notes), findings.notes
            extent = engine.network_for({"T1c"}).files.card
            assert any(f"(extent), sha256 {extent.sha256}" in n for n in findings.notes), findings.notes
            assert findings.engine.model_sha256 == extent.sha256
    assert float(np.mean(scores)) >= target, scores


@pytest.fixture(scope="module")
def brain2_report(engine: MrGliomaEngine) -> dict:
    from ai_engines.mr_glioma.evaluate import evaluate_brain2

    if not (REAL_DEV / "brain2_image.nrrd").is_file():
        pytest.skip("brain2 reference data not on this machine")
    report = evaluate_brain2(engine, REAL_DEV)
    print(json.dumps({k: v for k, v in report.items() if k != "notes"}))
    return report


@pytest.mark.slow
def test_brain2_real_t1c_runs_without_false_lesions(brain2_report: dict) -> None:
    assert "declined" not in brain2_report, brain2_report
    assert brain2_report["false_lesion_components"] == 0, brain2_report
    assert brain2_report["false_lesion_ml_away_from_label"] == 0.0, brain2_report
    assert any("T1c: series" in note for note in brain2_report["notes"])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="DEMO weights miss brain2's 1.8 ml cortical enhancing lesion (Dice 0.0, also end "
                   "to end): the T1c-only cascade's detector (the all-sequence network) does not see it (mean tumour "
                   "probability 0.023 over the label), so nothing is reported; it lies 4.2 mm below the brain-mask "
                   "surface on average, under the 6 mm depth check; and the packaged T1c-only extent network puts it "
                   "inside cortex-wide false tumour (fifth session: 8.2 ml beyond it at a 15 mm margin, dropped by the "
                   "depth check from 20 mm; docs/mr-glioma-engine.md)")
def test_brain2_real_t1c_tumour_found(brain2_report: dict) -> None:
    assert (brain2_report["enhancing_dice"] or 0.0) > 0.3, brain2_report
