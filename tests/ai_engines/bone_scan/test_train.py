"""Training writes weights and a model card the engine loads from a site folder."""

from __future__ import annotations

import pytest

from ai_engines.bone_scan.dataset import synthetic_scans
from ai_engines.bone_scan.engine import BoneScanEngine
from ai_engines.bone_scan.synthetic import synthetic_scan
from ai_engines.bone_scan.train import train, youden_threshold
from ai_engines.models import sha256_of


def test_youden_threshold():
    import numpy as np

    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.25, 0.8, 0.85, 0.9])
    t = youden_threshold(labels, scores)
    assert 0.3 < t < 0.8  # sensitivity 3/4 + specificity 1 beats every other cut


@pytest.mark.slow
def test_train_writes_a_loadable_model(tmp_path):
    card = train(synthetic_scans(12, 50_000, matrix=(512, 128)), tmp_path, validation=synthetic_scans(6, 250_000, matrix=(512, 128)),
                 max_steps=3, batch_size=4, threads=1, version="0.0.1+test", progress=False)
    weights = tmp_path / "bone_scan_cnn.pt"
    assert card.sha256 == sha256_of(weights)
    assert 0 <= card.architecture["operating_threshold"] <= 1
    assert "12 training scans" in card.training_data
    engine = BoneScanEngine(model_dir=tmp_path, device="cpu")
    assert engine.files.source == "site" and engine.identity().version.endswith("0.0.1+test")
    findings = engine.run(synthetic_scan(50_100, matrix=(512, 128)).study)
    assert not findings.declined
