"""Model registry: cards, checksums, site overrides, loading."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from ai_engines import models
from ai_engines.models import ModelCard, ModelIntegrityError, ModelNotFound


def write_model(folder, name="tiny", tamper=False):
    folder.mkdir(parents=True, exist_ok=True)
    module = torch.nn.Linear(3, 2)
    weights = folder / f"{name}.pt"
    torch.save(module.state_dict(), weights)
    card = ModelCard(
        name=name, version="0.1", sha256=models.sha256_of(weights), intended_use="test",
        training_data="none", preprocessing_version="x",
    )
    card.to_json(folder / f"{name}.json")
    if tamper:
        with weights.open("ab") as fh:
            fh.write(b"\0")
    return weights, card


def test_card_round_trip(tmp_path):
    _, card = write_model(tmp_path)
    assert ModelCard.from_json(tmp_path / "tiny.json") == card
    assert card.research_use_only is True


def test_load_verified_state_dict(tmp_path):
    write_model(tmp_path)
    files = models.locate_model("nonexistent_engine", "tiny", tmp_path)
    assert files.source == "site"
    model = models.load_weights(files, torch.nn.Linear(3, 2), "cpu")
    assert not model.training


def test_sha256_mismatch_is_refused(tmp_path):
    write_model(tmp_path, tamper=True)
    files = models.locate_model("nonexistent_engine", "tiny", tmp_path)
    with pytest.raises(ModelIntegrityError) as err:
        models.load_weights(files, torch.nn.Linear(3, 2), "cpu")
    assert err.value.expected != err.value.actual


def test_unknown_card_field_is_an_error(tmp_path):
    write_model(tmp_path)
    data = json.loads((tmp_path / "tiny.json").read_text())
    data["surprise"] = 1
    (tmp_path / "tiny.json").write_text(json.dumps(data))
    with pytest.raises(models.ModelError):
        ModelCard.from_json(tmp_path / "tiny.json")


def test_missing_model(tmp_path):
    with pytest.raises(ModelNotFound):
        models.locate_model("ct_lung", "no_such_model", tmp_path)


@pytest.mark.parametrize("name", ["ct_lung_unet", "ct_lung_unet_extent"])
def test_packaged_demo_model_verifies(name):
    files = models.locate_model("ct_lung", name)
    assert files.source == "package"
    models.verify(files)
    assert files.card.research_use_only
    assert files.card.label == "DEMO"
    assert files.weights.stat().st_size < 5_000_000


def test_site_only_lookup_does_not_fall_back_to_the_package(tmp_path):
    with pytest.raises(ModelNotFound):
        models.locate_model("ct_lung", "ct_lung_unet_extent", tmp_path, packaged=False)
    assert models.locate_model("ct_lung", "ct_lung_unet_extent", tmp_path).source == "package"


def test_site_folder_overrides_packaged(tmp_path):
    packaged = models.locate_model("ct_lung", "ct_lung_unet")
    shutil.copy(packaged.weights, tmp_path / packaged.weights.name)
    replace(packaged.card, version="site-validated", research_use_only=False).to_json(tmp_path / packaged.card_path.name)
    files = models.locate_model("ct_lung", "ct_lung_unet", tmp_path)
    assert files.source == "site" and files.card.version == "site-validated"
    listed = {f.card.name: f for f in models.list_models(tmp_path)}
    assert listed["ct_lung_unet"].source == "site"


def test_site_weights_with_wrong_checksum_refused_by_engine(tmp_path):
    from ai_engines.registry import get_engine

    packaged = models.locate_model("ct_lung", "ct_lung_unet")
    shutil.copy(packaged.weights, tmp_path / packaged.weights.name)
    replace(packaged.card, sha256="0" * 64).to_json(tmp_path / packaged.card_path.name)
    with pytest.raises(ModelIntegrityError):
        get_engine("ct_lung", tmp_path, "cpu")


def test_device_resolution():
    assert models.resolve_device("cpu") == "cpu"
    assert models.resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(models.ModelError):
        models.resolve_device("tpu")


def test_weights_for_other_preprocessing_are_refused(tmp_path):
    _, card = write_model(tmp_path)
    card.require_preprocessing("x")
    with pytest.raises(models.ModelError, match="pre-processing x; this engine implements y"):
        card.require_preprocessing("y")
