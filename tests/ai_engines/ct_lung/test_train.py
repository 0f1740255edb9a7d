"""Training: a short run writes weights the engine accepts; the loss and case mix do what they say."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ai_engines.ct_lung.engine import CtLungEngine
from ai_engines.ct_lung.train import (
    EXTENT_MODEL_NAME,
    MODEL_NAME,
    curated_training_cases,
    small_object_loss,
    train,
)
from ai_engines.models import sha256_of


def test_a_short_fine_tune_writes_weights_the_engine_loads(tmp_path):
    cases = curated_training_cases(2, 7000, small=0.5, medium=0.5, large=0.0)
    card = train(cases, tmp_path, max_steps=3, batch_size=4, progress=False, loss="small",
                 slice_first=0.5, border_share=0.5, warmup_steps=2, version="0.0.1+test")
    assert card.sha256 == sha256_of(tmp_path / "ct_lung_unet.pt")
    assert "2 cases; 3 steps of 4 crops" in card.training_data
    engine = CtLungEngine(model_dir=tmp_path, device="cpu")
    assert engine.identity().model_sha256 == card.sha256
    # A site folder without its own extent model is not paired with the packaged demo one.
    assert engine.extent is None and "extent" not in engine.identity().version


def test_a_site_extent_model_is_used_from_the_detectors_folder(tmp_path):
    cases = list(curated_training_cases(1, 7100, small=0.0, medium=0.0, large=1.0))
    detector = train(cases, tmp_path, max_steps=1, batch_size=2, progress=False, version="0.0.1+det")
    extent = train(cases, tmp_path, max_steps=1, batch_size=2, progress=False, version="0.0.1+ext",
                   model_name=EXTENT_MODEL_NAME)
    assert (detector.name, extent.name) == (MODEL_NAME, EXTENT_MODEL_NAME)
    assert "never used to detect" in extent.intended_use
    engine = CtLungEngine(model_dir=tmp_path, device="cpu")
    assert engine.files.source == "site" and engine.extent_files.source == "site"
    assert engine.extent_files.card.sha256 == sha256_of(tmp_path / f"{EXTENT_MODEL_NAME}.pt")
    assert engine.identity().version.endswith("+extent-0.0.1+ext")
    # A site-validated detector with a research-only extent model: results stay research use.
    replace(detector, research_use_only=False).to_json(tmp_path / f"{MODEL_NAME}.json")
    assert CtLungEngine(model_dir=tmp_path, device="cpu").identity().research_use_only is True
    replace(extent, research_use_only=False).to_json(tmp_path / f"{EXTENT_MODEL_NAME}.json")
    assert CtLungEngine(model_dir=tmp_path, device="cpu").identity().research_use_only is False


def test_unknown_model_name_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown model name"):
        train([], tmp_path, max_steps=1, model_name="ct_lung_unet_v2")


def test_small_object_loss_weighs_up_a_missed_small_tumour_only():
    logits = torch.zeros(2, 2, 32, 32)
    logits[:, 0] = 4.0  # confident background everywhere: every tumour pixel is missed
    small = torch.zeros(2, 32, 32, dtype=torch.long)
    small[0, 10:13, 10:13] = 1  # 9 pixels: weight sqrt(300 / 9), capped at 4
    large = torch.zeros(2, 32, 32, dtype=torch.long)
    large[0, :20, :20] = 1  # 400 pixels: weight 1
    assert small_object_loss(logits, small) > small_object_loss(logits, small, max_weight=1.0)
    assert torch.isclose(small_object_loss(logits, large), small_object_loss(logits, large, max_weight=1.0))


def test_clinical_recipe_draws_nodules_of_half_to_three_ml_in_clinical_anatomy():
    """clinical_training_cases: slab thickness from the clinical list; a nodule slab holds one
    tumour of about 0.5-3 ml (clipping by the lung may take a little), centred in the slab."""
    import numpy as np

    from ai_engines.ct_lung.train import CLINICAL_THICKNESSES, clinical_training_cases

    # Seed 20001 draws a nodule slab in clinical anatomy (the draw is deterministic by seed).
    (case,) = list(clinical_training_cases(1, 20001))
    assert case.name == "clinical-20001"
    assert case.slice_spacing in CLINICAL_THICKNESSES
    volume_ml = case.tumour.sum() * case.pixel_spacing[0] * case.pixel_spacing[1] * case.slice_spacing / 1000
    assert 0.3 < volume_ml < 3.5, volume_ml
    middle = np.nonzero(case.tumour.any(axis=(1, 2)))[0].mean() / case.tumour.shape[0]
    assert 0.2 < middle < 0.8
