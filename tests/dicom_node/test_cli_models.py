"""`dicom-node engines`, and one `train-model ENGINE` / `evaluate-model ENGINE` for every engine."""

from __future__ import annotations

import json

import pytest

from ai_engines.ct_lung import ENGINE_VERSION
from dicom_node.cli import main
from tests.platform.entry_points import installed


def test_engines_lists_installed_engines_and_their_model_cards(tmp_path, capsys):
    assert main(["engines"]) == 0
    out = capsys.readouterr().out
    assert f"ct_lung {ENGINE_VERSION}" in out
    assert "role CT: CT, >= 16 slices, axial (<= 1 deg)" in out
    assert "model ct_lung_unet 1.0.0+demo" in out and "model ct_lung_unet_extent" in out
    assert "training: dicom-node train-model ct_lung" in out

    with installed(tmp_path, "site-engines", {"hotspot": "tests.platform.hotspot_engine:SPEC",
                                              "broken": "no_such_module:SPEC"}):
        assert main(["engines", "--json"]) == 1  # a package that cannot be used is an error
    report = json.loads(capsys.readouterr().out)
    names = [e["name"] for e in report["engines"]]
    assert names == sorted(names) and {"ct_lung", "hotspot"} <= set(names)
    assert "broken" not in names
    assert "ModuleNotFoundError" in report["problems"]["broken"]


def test_training_commands_name_what_is_missing(tmp_path, capsys):
    assert main(["train-model", "lung_screening_v9", "--synthetic", "1", "--out",
                 str(tmp_path)]) == 2
    assert "not installed" in capsys.readouterr().err
    with installed(tmp_path, "site-engines", {"hotspot": "tests.platform.hotspot_engine:SPEC"}):
        assert main(["evaluate-model", "hotspot"]) == 2
    assert "declares no training hook" in capsys.readouterr().err


def test_engine_options_are_the_engines(capsys):
    with pytest.raises(SystemExit):
        main(["train-model", "ct_lung", "--help"])
    out = capsys.readouterr().out
    assert "usage: dicom-node train-model ct_lung" in out
    assert "--curated" in out and "--data-dir" in out  # the engine's and the node's options


@pytest.mark.slow
def test_train_then_evaluate_the_ct_lung_engine_through_the_one_cli(tmp_path, capsys):
    out_dir = tmp_path / "models"
    assert main(["train-model", "ct_lung", "--synthetic", "2", "--max-steps", "2",
                 "--batch-size", "2", "--out", str(out_dir), "--version", "0.0.1+test"]) == 0
    card = json.loads((out_dir / "ct_lung_unet.json").read_text())
    assert card["version"] == "0.0.1+test"
    assert "2 synthetic cases of ct_lung" in card["training_data"]
    capsys.readouterr()
    report = tmp_path / "evaluation.json"
    assert main(["evaluate-model", "ct_lung", "--synthetic", "1", "--model-dir", str(out_dir),
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["engine"] == "ct_lung" and len(result["cases"]) == 1
    assert result["cases"][0]["case"] == "synthetic-100000"
    assert "synthetic-100000: tumour=" in capsys.readouterr().out


def test_old_route_keys_still_load_and_check_config_says_what_decides(tmp_path, capsys):
    config = tmp_path / "node.toml"
    config.write_text('[[routes]]\nengine = "ct_lung"\nmodality = "CT"\n')
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "routes.0 (ct_lung): modality/requires are ignored; the installed engine accepts CT" in out
    # A route to an engine this installation lacks is refused (fail closed), naming the key.
    config.write_text('[[routes]]\nengine = "ct_lung"\n\n'
                      '[[routes]]\nengine = "lung_screening_v9"\nmodality = "CT"\n')
    assert main(["check-config", str(config)]) == 2
    assert "routes.1.engine: 'lung_screening_v9' is not an installed engine" in \
        capsys.readouterr().err
