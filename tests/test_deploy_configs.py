from pathlib import Path

import pytest

from dicom_node.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("name", ["appliance.toml", "scale-out.toml"])
def test_shipped_deploy_configs_are_valid(name):
    config = load_config(DEPLOY / name)
    assert config.peers
