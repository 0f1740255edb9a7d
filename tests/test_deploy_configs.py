from pathlib import Path

import pytest

from dicom_node.config import check_config, load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("name", ["appliance.toml", "scale-out.toml"])
def test_shipped_deploy_configs_are_valid(name):
    config = load_config(DEPLOY / name)
    assert config.peers
    assert all(p.kind for p in config.peers)
    # Nothing that weakens access control (engines are checked where they are installed).
    errors, warnings = check_config(config, sorted({r.engine for r in config.routes}))
    assert errors == [] and warnings == []
