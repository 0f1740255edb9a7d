"""Site adaptation through the real CLI path: a site's CT series with approved GTV RTSTRUCTs
(the shifted domain of ``ai_engines.ct_lung.site_domain``) -> ``train-model ct_lung --data-dir``
from the packaged weights -> weights and a model card with their SHA-256 -> ``evaluate-model
ct_lung --data-dir --model-dir`` loads and scores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from ai_engines.ct_lung import EXTENT_MODEL_NAME, MODEL_NAME
from ai_engines.ct_lung.site_domain import SITE_NOISE_HU, site_acquisition, site_case
from ai_engines.ct_lung.synthetic import synthetic_chest_ct
from ai_engines.models import sha256_of
from benchmarks.ct_lung_site_adaptation import PACKAGED, write_site_folder
from dicom_node.cli import main


def test_site_domain_keeps_the_anatomy_and_changes_the_acquisition():
    plain = synthetic_chest_ct(60_000, n_slices=20, slice_thickness=5.0, n_tumours=1, focus_tumour=True)
    site = site_case(60_000, n_slices=20)
    assert np.array_equal(site.tumour, plain.tumour) and site.tumour.any()
    assert site.slice_thickness == 5.0 and site.kernel != plain.kernel
    # Noise: the difference from the demo acquisition in the body is of the site's noise level.
    body = plain.hu > -500
    extra = (site.hu - plain.hu)[body]
    assert 0.6 * SITE_NOISE_HU < float(extra.std()) < 2.0 * SITE_NOISE_HU
    assert np.array_equal(site_acquisition(plain.hu, 1), site_acquisition(plain.hu, 1))  # reproducible


@pytest.mark.slow
def test_train_model_on_site_rtstructs_writes_weights_evaluate_model_reads(tmp_path: Path, capsys):
    from ai_engines.registry import get_engine

    train_dir, eval_dir, site = tmp_path / "train", tmp_path / "evaluate", tmp_path / "site-model"
    write_site_folder(range(60_000, 60_002), train_dir, n_slices=20)
    (eval_uid,) = write_site_folder(range(620_000, 620_001), eval_dir, n_slices=20)
    rtstruct = dcmread(train_dir / "60000" / "rtstruct.dcm")
    assert rtstruct.Modality == "RTSTRUCT" and rtstruct.ApprovalStatus == "APPROVED"
    assert rtstruct.StructureSetROISequence[0].ROIName == "GTV"

    for model in (MODEL_NAME, EXTENT_MODEL_NAME):
        assert main(["train-model", "ct_lung", "--data-dir", str(train_dir), "--model", model,
                     "--init-weights", str(PACKAGED / f"{model}.pt"), "--max-steps", "3",
                     "--threads", "1", "--lr", "3e-4", "--version", "1.0.0+site-test",
                     "--label", "SITE", "--out", str(site)]) == 0
        card = json.loads((site / f"{model}.json").read_text())
        assert card["sha256"] == sha256_of(site / f"{model}.pt")
        assert card["name"] == model and card["version"] == "1.0.0+site-test"
        assert "site data: 2 series with RTSTRUCT/SEG ground truth" in card["training_data"]
        assert "3 steps" in card["training_data"]
        # A fine-tune changes the weights.
        assert card["sha256"] != sha256_of(PACKAGED / f"{model}.pt")
    printed = capsys.readouterr().out
    assert "wrote" in printed and card["sha256"] in printed

    engine = get_engine("ct_lung", site, "cpu")
    identity = engine.identity()
    assert identity.model_sha256 == json.loads((site / f"{MODEL_NAME}.json").read_text())["sha256"]
    assert "site-test" in identity.version

    report = tmp_path / "after.json"
    assert main(["evaluate-model", "ct_lung", "--data-dir", str(eval_dir), "--model-dir", str(site),
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    (case,) = result["cases"]
    assert case["case"] == eval_uid and case["has_tumour"] and case["declined"] is None
    assert 0.0 <= case["dice"] <= 1.0 and case["truth_ml"] > 0
    assert result["summary"]["cases"] == 1
